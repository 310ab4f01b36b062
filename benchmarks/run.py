"""Whole-run benchmark: the wall time a user waits for `dagster job execute`, against bounds.

For each table size and format (csv, jsonl, parquet, xml), interleaved, median of `--reps`:

- ours:     `dagster job execute -f entry.py -j activate_<a>` (model -> delta -> export, one
            process per step), the whole process;
- launched: the same job submitted over GraphQL to a running `dagster dev` and launched by
            its daemon (QueuedRunCoordinator + DefaultRunLauncher), from submit to the run's end;
- bound:    DuckDB `COPY` to a local file + one `upload_blob(max_concurrency=4)`, a fresh
            Python process (XML has no DuckDB writer: its reference is our CSV run);
- dlt:      a dlt pipeline (own venv) from the same DuckDB table into its `filesystem`
            destination on the same Azurite;

each with the peak RSS of its whole process tree. Then a 10-row run against the time Python
takes to load the code location, and a delta run (1% updates, 0.1% inserts, 0.1% deletes)
against a bare FULL OUTER JOIN on key + hash plus the export of the changed rows.
Results: a Markdown table on stdout and in `.azexport/bench/run-results.md`, and the raw
measurements in `.azexport/bench/run-results.json`. See docs/benchmarks.md.

    .venv/bin/python -m benchmarks.run                      # 1M and 5M rows, 3 reps
    .venv/bin/python -m benchmarks.run --quick              # a smoke run (20k rows, 1 rep)
    .venv/bin/python -m benchmarks.run --rows 1000000 --formats csv --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import run_project as project_kit
from benchmarks.data import SHAPES
from benchmarks.run_project import FORMATS, MODELS, delta_activation, full_activation
from benchmarks.run_sides import (
    REPO,
    Context,
    DevServer,
    SideFailed,
    bound_copy,
    bound_delta,
    dlt_load,
    ours_cli,
    python_import,
    validate_definitions,
)

STATE = REPO / ".azexport" / "bench"
DLT_VENV = STATE / "dlt-venv"
DLT_REQUIREMENTS = ("dlt[az]==1.31.0", "duckdb>=2.0.1,<2.1", "pyarrow>=26,<27")
SIDES = ("ours", "launched", "bound", "dlt")
IMPORT_CODE = {
    # The project's packaged code location: Python, Dagster, azexport, its definitions.
    "import_definitions": "from azexport_assets.definitions import defs; defs()",
    # The code location the runs themselves load (the benchmark project's defs.yaml).
    "import_entry": "import runpy; runpy.run_path('entry.py')",
}
# Targets (stated at 5M rows; evaluated at every size so the trend shows), per format and
# model kind: ours / bound (XML: ours / our CSV run of the same model).
# `table_rebuilt`: the table model rebuilt in the run (as after a source change); `table`:
# the same run when nothing the model reads changed since its last build (it is kept).
BOUND_TARGET = {
    ("csv", "table"): 1.25,
    ("csv", "view"): 1.15,
    ("jsonl", "table"): 1.2,
    ("jsonl", "view"): 1.1,
    ("parquet", "table"): 1.6,
    ("parquet", "view"): 1.4,
    ("xml", "table"): 1.5,
    ("xml", "view"): 1.5,
}
for (_fmt, _model), _limit in list(BOUND_TARGET.items()):
    if _model == "table":
        BOUND_TARGET[(_fmt, "table_rebuilt")] = _limit
FORCE_REBUILD = {"azexport/force_rebuild": "true"}


def measured_models(models: list[str]) -> list[str]:
    """The model variants measured: a table model both kept and rebuilt."""
    return [v for m in models for v in ((m, "table_rebuilt") if m == "table" else (m,))]


DLT_TARGET = 1.0  # dlt must take at least this many times our time: faster than dlt
RSS_TARGET_MB = 1000.0
FIXED_TARGET = 1.5  # a 10-row run vs loading the code location
LARGE_PROJECT_TARGET = 1.2  # the 10-row run in the larger project vs in the small one
# Bytes per row of each format's file, a little above both shapes' (customers: CSV 172,
# JSON lines 400, Parquet 9-60, XML 408). Azurite frees an overwritten blob's space only when
# its garbage collection catches up, which it did not within a 5M-row CSV + XML invocation.
FILE_BYTES_PER_ROW = {"csv": 200, "jsonl": 420, "parquet": 60, "xml": 450}
VALIDATE_TARGET = 1.5  # `dagster definitions validate`, larger project vs small one
DELTA_TARGET = 2.0


def ensure_dlt_venv() -> Path:
    """dlt in its own venv (cached): it is no dependency of the project."""
    python = DLT_VENV / "bin" / "python"
    marker = DLT_VENV / ".requirements"
    wanted = "\n".join(DLT_REQUIREMENTS)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"installing dlt into {DLT_VENV} (once) ...", flush=True)
    shutil.rmtree(DLT_VENV, ignore_errors=True)
    STATE.mkdir(parents=True, exist_ok=True)
    log = STATE / "dlt-venv-install.log"
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-m", "venv", str(DLT_VENV)], check=True)
        for args in (["--upgrade", "pip"], list(DLT_REQUIREMENTS)):
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *args],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
    marker.write_text(wanted)
    return python


def rotated(items: list[str], by: int) -> list[str]:
    """Interleave: each rep starts with a different side."""
    by %= max(len(items), 1)
    return items[by:] + items[:by]


def human(rows: int) -> str:
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows >= 1000 and rows % 1000 == 0:
        return f"{rows // 1000}k"
    return str(rows)


class Bench:
    """Setup, the measurement loops and their raw results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.workdir = STATE / "run-work"
        self.measurements: list[dict] = []
        self.failures: list[str] = []

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> None:
        from azure.storage.blob import BlobServiceClient

        from azexport_assets.demo.azurite import container_sas, start_azurite

        shutil.rmtree(self.workdir, ignore_errors=True)
        self.project = self.workdir / "project"
        self.project.mkdir(parents=True)
        self.warn_if_disk_short()
        self.src = self.project / "src.duckdb"
        home = self.workdir / "dagster_home"
        project_kit.write_project(self.project)
        self.large = self.workdir / "project_large"
        self.activations = {
            "small": project_kit.count_activations(self.project),
            "large": project_kit.write_large_project(self.project, self.large),
        }
        self.shapes: dict[str, str] = {}  # shape -> its description at the last size
        project_kit.write_dagster_home(home)
        dlt_python = None if self.args.no_dlt else ensure_dlt_venv()
        self.azurite = start_azurite(location=self.workdir / "azurite")
        service = BlobServiceClient.from_connection_string(self.azurite.connection_string)
        for name in (project_kit.CONTAINER, project_kit.DLT_CONTAINER):
            service.create_container(name)
        sas = container_sas(self.azurite.account_url, project_kit.CONTAINER)
        env = project_kit.run_env(
            self.project, home, self.azurite.account_url, sas, self.args.memory_limit
        )
        project_kit.migrate_instance(env)
        os.environ["DAGSTER_HOME"] = str(home)  # this process reads run records and metadata
        import dagster as dg

        self.ctx = Context(
            workdir=self.workdir,
            project=self.project,
            env=env,
            account_url=self.azurite.account_url,
            sas=sas,
            connection_string=self.azurite.connection_string,
            dlt_python=dlt_python,
            service=service,
            instance=dg.DagsterInstance.get(),
        )
        self.dev: DevServer | None = None

    def warn_if_disk_short(self) -> None:
        """Azurite frees a deleted or overwritten blob's space only when its garbage collection
        runs, so its store can grow to everything the invocation uploads (tens of GB at 5M
        rows): say so before starting rather than fail cells with 'No space left on device'."""
        if not self.args.formats:
            return
        models = len(measured_models(self.args.models))
        needed = 0
        for fmt in self.args.formats:
            # Every side of a cell uploads the whole table: ours per model, the bound, dlt.
            others = 0 if fmt == "xml" else 1 + (not self.args.no_dlt)
            sides = models + (fmt in self.args.launched) + others
            needed += FILE_BYTES_PER_ROW[fmt] * sides * self.args.reps
        needed *= sum(self.args.rows) * len(self.args.shapes)
        free = shutil.disk_usage(self.workdir).free
        if free < needed:
            print(
                f"warning: {free / 1e9:.0f} GB free under {self.workdir}; this invocation "
                f"uploads about {needed / 1e9:.0f} GB, and Azurite keeps an overwritten blob's "
                "space until its garbage collection runs: cells may fail with 'No space left "
                "on device' (fewer --reps, --formats or --shapes need less)",
                flush=True,
            )

    def start_dev(self) -> None:
        from azexport_assets.demo.azurite import free_port

        print("starting dagster dev (webserver + daemon) for the launched runs ...", flush=True)
        self.dev = DevServer(self.ctx, free_port())
        self.dev.start()

    def teardown(self) -> None:
        if getattr(self, "dev", None):
            self.dev.stop()
        if getattr(self, "azurite", None):
            self.azurite.stop()
        if not self.args.keep and not self.failures:
            for name in (
                "project",
                "project_large",
                "azurite",
                "dagster_home",
                "tmp-bound",
                "dlt-pipelines",
            ):
                shutil.rmtree(self.workdir / name, ignore_errors=True)

    # -- measurements ----------------------------------------------------------------------
    def record(self, label: str, base: dict, fn, *fn_args) -> dict | None:
        self.ctx.clear_containers()
        try:
            result = fn(*fn_args)
        except SideFailed as error:
            message = f"{label}: {error}"
            print(f"  FAILED {message}", flush=True)
            self.failures.append(message)
            self.measurements.append(base | {"error": str(error)[:2000]})
            return None
        entry = base | {k: v for k, v in result.items() if k != "inner"}
        if "inner" in result:
            entry["inner"] = result["inner"]
        self.measurements.append(entry)
        extra = ""
        if result.get("to_run_start_s"):
            extra += f", {result['to_run_start_s']:.1f} s to RUN_START"
        if result.get("breakdown"):
            breakdown = result["breakdown"]
            steps = " + ".join(
                f"{step.split('__')[-1]} {times['work_s'] or 0:.1f}"
                for step, times in breakdown["steps"].items()
            )
            extra += (
                f", {breakdown['step_work_s']:.1f} s inside steps ({steps}), "
                f"{breakdown['step_startup_s']:.1f} s starting step processes"
            )
        rows = f", {result['rows']:,} rows" if "rows" in result else ""
        print(
            f"  {label}: {result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB"
            f"{rows}{extra}",
            flush=True,
        )
        return entry

    def use_table(self, rows: int, shape: str) -> None:
        """The source's `bench` table holds `rows` rows of `shape` (regenerated if not)."""
        if (self.src_rows, self.src_shape) != (rows, shape):
            info = project_kit.generate(self.src, rows, shape)
            self.shapes[shape] = info["shape"]
            self.src_rows, self.src_shape = rows, shape
            print(f"  table `{shape}`: {info['shape']}", flush=True)

    def full_exports(self, rows: int, shape: str) -> None:
        print(f"\n== full exports, {rows:,} rows of `{shape}`", flush=True)
        self.use_table(rows, shape)
        if self.launched and self.dev is None:
            self.start_dev()
        if "table" in self.args.models:
            # The table model is built once, untimed: `table` then measures a run whose
            # model is kept, `table_rebuilt` one that rebuilds it.
            base = {"kind": "warmup", "shape": shape, "rows": rows, "side": "build"}
            fmt = self.args.formats[0]
            activation = full_activation(fmt, "table")
            label = f"[{human(rows)} {shape}] table model built (untimed)"
            self.record(label, base, ours_cli, self.ctx, activation, fmt, rows)
        for rep in range(self.args.reps):
            for index, fmt in enumerate(self.args.formats):
                sides = [("ours", model) for model in measured_models(self.args.models)]
                if fmt in self.launched:
                    sides.append(("launched", "table"))
                if fmt != "xml":
                    sides.append(("bound", ""))
                    if self.ctx.dlt_python:
                        sides.append(("dlt", ""))
                for side, model in rotated(sides, rep + index):
                    base = {
                        "kind": "full",
                        "shape": shape,
                        "rows": rows,
                        "format": fmt,
                        "side": side,
                        "model": model,
                        "rep": rep,
                    }
                    label = f"[{human(rows)} {shape} {fmt} rep {rep + 1}] {side} {model}".strip()
                    activation = full_activation(fmt, "view" if model == "view" else "table")
                    if side == "ours":
                        tags = FORCE_REBUILD if model == "table_rebuilt" else None
                        self.record(
                            label, base, ours_cli, self.ctx, activation, fmt, rows, None, tags
                        )
                    elif side == "launched":
                        self.record(label, base, self.dev.run, activation, fmt, rows)
                    elif side == "bound":
                        self.record(label, base, bound_copy, self.ctx, self.src, fmt, rows)
                    else:
                        self.record(label, base, dlt_load, self.ctx, self.src, fmt, rows)

    def fixed_cost(self) -> None:
        small, large = self.activations["small"], self.activations["large"]
        print(
            f"\n== 10-row run vs loading the code location; project of {small} vs {large} "
            "activations",
            flush=True,
        )
        if self.src_rows < 0:
            # `--formats ""` (only the fixed cost): the 10-row `tiny` table still needs a source.
            self.use_table(self.args.rows[0], self.args.shapes[0])
        large_ctx = self.ctx.elsewhere(self.large)
        sides = [
            "tiny_run",
            "tiny_run_large",
            *IMPORT_CODE,
            "validate",
            "validate_large",
        ]
        tiny = project_kit.TINY_ACTIVATION
        for rep in range(self.args.reps):
            for side in rotated(sides, rep):
                base = {"kind": "fixed", "rows": 10, "format": "csv", "side": side, "rep": rep}
                label = f"[10 rows rep {rep + 1}] {side}"
                if side == "tiny_run":
                    self.record(label, base, ours_cli, self.ctx, tiny, "csv", 10)
                elif side == "tiny_run_large":
                    self.record(label, base, ours_cli, large_ctx, tiny, "csv", 10)
                elif side == "validate":
                    self.record(label, base, validate_definitions, self.ctx)
                elif side == "validate_large":
                    self.record(label, base, validate_definitions, large_ctx)
                else:
                    self.record(label, base, python_import, self.ctx, IMPORT_CODE[side], side)

    def delta(self, rows: int, shape: str) -> None:
        print(f"\n== delta runs, {rows:,} rows of `{shape}`", flush=True)
        pristine = self.workdir / "pristine.duckdb"
        baseline = self.workdir / "baseline.duckdb"
        self.use_table(rows, shape)
        shutil.copyfile(self.src, pristine)
        for rep in range(self.args.reps):
            shutil.copyfile(pristine, self.src)
            label = f"[{human(rows)} {shape} delta rep {rep + 1}]"
            base = {"kind": "delta", "shape": shape, "rows": rows, "format": "csv", "rep": rep}
            for model in self.args.models:
                first = self.record(
                    f"{label} first full run, {model} (untimed)",
                    base | {"side": "delta_first_full", "model": model},
                    ours_cli,
                    self.ctx,
                    delta_activation(model),
                    "csv",
                    rows,
                    self.project / f"resync_{model}.json",
                )
                if first is None:
                    return
            shutil.copyfile(self.src, baseline)
            changes = project_kit.mutate(self.src, rows, shape)
            print(f"  {label} source changed: {changes}", flush=True)
            expected = changes["exported"]
            sides = [("ours", model) for model in self.args.models] + [("bound", "")]
            for side, model in rotated(sides, rep):
                entry = base | {"side": side, "model": model, "changes": changes}
                if side == "ours":
                    activation = delta_activation(model)
                    self.record(
                        f"{label} ours {model}",
                        entry,
                        ours_cli,
                        self.ctx,
                        activation,
                        "csv",
                        expected,
                    )
                else:
                    self.record(
                        f"{label} join+export",
                        entry,
                        bound_delta,
                        self.ctx,
                        self.src,
                        baseline,
                        expected,
                    )
        self.src_rows = -1  # the table was changed

    def run(self) -> None:
        self.launched = set(self.args.launched)
        self.dev = None
        self.src_rows, self.src_shape = -1, ""
        if self.args.formats:
            for shape in self.args.shapes:
                for rows in self.args.rows:
                    self.full_exports(rows, shape)
        if self.dev is not None:
            self.dev.stop()  # the rest is CLI runs only: no idle server beside them
            self.dev = None
        if not self.args.no_fixed:
            self.fixed_cost()
        if not self.args.no_delta:
            self.delta(self.args.delta_rows or max(self.args.rows), self.args.shapes[0])


# -- summary -------------------------------------------------------------------------------
def _median(measurements: list[dict], key: str = "seconds", **where) -> float | None:
    values = [
        m[key]
        for m in measurements
        if "error" not in m
        and m.get(key) is not None
        and all(m.get(k) == v for k, v in where.items())
    ]
    return statistics.median(values) if values else None


def _peak(measurements: list[dict], **where) -> float | None:
    values = [
        m["peak_rss_mb"]
        for m in measurements
        if "error" not in m and all(m.get(k) == v for k, v in where.items())
    ]
    return max(values) if values else None


def _in_steps(measurements: list[dict], **where) -> float | None:
    """Median seconds spent inside the steps' own code (from the runs' event logs)."""
    with_steps = [
        m | {"in_steps_s": m["breakdown"]["step_work_s"]} for m in measurements if "breakdown" in m
    ]
    return _median(with_steps, "in_steps_s", **where)


# The fixed-cost ratios: name -> (numerator side, denominator side).
FIXED_RATIOS = {
    "ratio": ("tiny_run", "import_definitions"),
    "large_ratio": ("tiny_run_large", "tiny_run"),
    "validate_ratio": ("validate_large", "validate"),
}


def _by_rep(measurements: list[dict], a: str, b: str) -> list[tuple[float, float]]:
    """(side a's seconds, side b's seconds) of each rep that measured both."""
    by_rep: dict[int, dict[str, float]] = {}
    for m in measurements:
        if "error" not in m and m.get("side") in (a, b):
            by_rep.setdefault(m["rep"], {})[m["side"]] = m["seconds"]
    return [(rep[a], rep[b]) for rep in by_rep.values() if rep.get(a) and rep.get(b)]


def _paired_ratio(measurements: list[dict], a: str, b: str) -> float | None:
    """Median over reps of side a / side b measured in the same rep."""
    ratios = [x / y for x, y in _by_rep(measurements, a, b)]
    return statistics.median(ratios) if ratios else None


def _paired_difference(measurements: list[dict], a: str, b: str) -> float | None:
    """Median over reps of side a - side b (seconds) measured in the same rep."""
    differences = [x - y for x, y in _by_rep(measurements, a, b)]
    return statistics.median(differences) if differences else None


def _target(name: str, value: float | None, limit: float, at_most: bool = True) -> dict:
    met = None if value is None else (value <= limit if at_most else value >= limit)
    return {"target": name, "value": value, "limit": limit, "met": met}


def summarize(measurements: list[dict], config: dict) -> dict:
    full = [m for m in measurements if m["kind"] == "full"]
    rows_out = []
    for shape in config["shapes"]:
        for rows in config["rows"]:
            for fmt in config["formats"]:
                where = {"shape": shape, "rows": rows, "format": fmt}
                shared = {
                    f"{side}_{what}": fn(full, side=side, **where)
                    for side in ("bound", "dlt")
                    for what, fn in (
                        ("s", _median),
                        ("rss_mb", _peak),
                        ("cpu_s", lambda ms, **w: _median(ms, "cpu_s", **w)),
                    )
                }
                for model in measured_models(config["models"]):
                    cell = {**where, "model": model, **shared}
                    mine = where | {"model": model}
                    for side in ("ours", "launched"):
                        cell[f"{side}_s"] = _median(full, side=side, **mine)
                        cell[f"{side}_rss_mb"] = _peak(full, side=side, **mine)
                        cell[f"{side}_cpu_s"] = _median(full, "cpu_s", side=side, **mine)
                    cell["launched_to_run_start_s"] = _median(
                        full, "to_run_start_s", side="launched", **mine
                    )
                    cell["ours_in_steps_s"] = _in_steps(full, side="ours", **mine)
                    if fmt == "xml":
                        cell["reference"] = "our csv run"
                        cell["bound_s"] = _median(full, side="ours", **(mine | {"format": "csv"}))
                    else:
                        cell["reference"] = "COPY + upload"
                    ours, bound, dlt = cell["ours_s"], cell["bound_s"], cell["dlt_s"]
                    cell["ours_over_bound"] = ours / bound if ours and bound else None
                    launched = cell["launched_s"]
                    cell["launched_over_bound"] = launched / bound if launched and bound else None
                    cell["dlt_over_ours"] = dlt / ours if dlt and ours else None
                    limit = BOUND_TARGET[(fmt, model)]
                    reference = "our csv" if fmt == "xml" else "bound"
                    targets = [_target(f"<= {limit}x {reference}", cell["ours_over_bound"], limit)]
                    if fmt != "xml" and cell["dlt_s"]:
                        targets.append(
                            _target("faster than dlt", cell["dlt_over_ours"], DLT_TARGET, False)
                        )
                    targets.append(_target("peak RSS <= 1 GB", cell["ours_rss_mb"], RSS_TARGET_MB))
                    cell["targets"] = targets
                    rows_out.append(cell)
    fixed_rows = [m for m in measurements if m["kind"] == "fixed"]
    fixed = None
    if fixed_rows:
        sides = ("tiny_run", "tiny_run_large", *IMPORT_CODE, "validate", "validate_large")
        fixed = {side: _median(fixed_rows, side=side) for side in sides}
        fixed["tiny_run_rss_mb"] = _peak(fixed_rows, side="tiny_run")
        fixed["tiny_run_in_steps_s"] = _in_steps(fixed_rows, side="tiny_run")
        for side in ("tiny_run", "import_definitions"):
            fixed[f"{side}_cpu_s"] = _median(fixed_rows, "cpu_s", side=side)

        def ratio(a: str, b: str) -> float | None:
            return fixed[a] / fixed[b] if fixed[a] and fixed[b] else None

        # Each ratio is also taken rep by rep (the two sides ran seconds apart, in the same
        # rotation), then its median: a machine whose speed drifts within minutes moves both
        # sides of a pair alike, while the ratio of two medians mixes different moments.
        # The targets are judged on the paired figure; both are printed.
        for key, (a, b) in FIXED_RATIOS.items():
            fixed[key] = ratio(a, b)
            fixed[f"{key}_paired"] = _paired_ratio(fixed_rows, a, b)
        # What the run adds to loading the code location, in seconds: unlike the ratio it
        # does not grow when loading gets faster.
        fixed["run_adds_s"] = _paired_difference(fixed_rows, "tiny_run", "import_definitions")
        fixed["activations"] = config.get("activations") or {}
        fixed["targets"] = [
            _target(f"run <= {FIXED_TARGET}x the import", fixed["ratio_paired"], FIXED_TARGET),
            _target(
                f"larger project <= {LARGE_PROJECT_TARGET}x",
                fixed["large_ratio_paired"],
                LARGE_PROJECT_TARGET,
            ),
            _target(
                f"validate larger <= {VALIDATE_TARGET}x",
                fixed["validate_ratio_paired"],
                VALIDATE_TARGET,
            ),
        ]
    delta_rows = [m for m in measurements if m["kind"] == "delta"]
    delta = []
    if delta_rows:
        bound = _median(delta_rows, side="bound")
        changes = next((m["changes"] for m in delta_rows if "changes" in m), None)
        for model in config["models"]:
            ours = _median(delta_rows, side="ours", model=model)
            ratio = ours / bound if ours and bound else None
            delta.append(
                {
                    "shape": delta_rows[0].get("shape"),
                    "model": model,
                    "rows": delta_rows[0]["rows"],
                    "changes": changes,
                    "ours_s": ours,
                    "ours_in_steps_s": _in_steps(delta_rows, side="ours", model=model),
                    "ours_cpu_s": _median(delta_rows, "cpu_s", side="ours", model=model),
                    "join_export_cpu_s": _median(delta_rows, "cpu_s", side="bound"),
                    "join_export_s": bound,
                    "first_full_run_s": _median(delta_rows, side="delta_first_full", model=model),
                    "ours_rss_mb": _peak(delta_rows, side="ours", model=model),
                    "join_export_rss_mb": _peak(delta_rows, side="bound"),
                    "ratio": ratio,
                    "target": _target(f"<= {DELTA_TARGET}x join+export", ratio, DELTA_TARGET),
                }
            )
    return {"full": rows_out, "fixed": fixed, "delta": delta}


def _s(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratios(fixed: dict, key: str) -> str:
    """'1.62 (paired 1.55)': a fixed-cost ratio of medians and its paired median."""
    return f"{_s(fixed.get(key))} (paired {_s(fixed.get(f'{key}_paired'))})"


def _met(target: dict) -> str:
    return {True: "met", False: "**missed**", None: "–"}[target["met"]]


def markdown(summary: dict, info: dict) -> str:
    lines = [
        f"Whole-run benchmark — {info['when']}, {info['cpus']} CPUs, Dagster {info['dagster']}, "
        f"DuckDB {info['duckdb']}, dlt {info.get('dlt') or '–'}, load average "
        f"{info['load_avg_1m_before_after'][0]} before / {info['load_avg_1m_before_after'][1]} "
        f"after, reps {info['reps']}, DuckDB memory limit "
        f"{info.get('memory_limit') or 'the default (512MB)'} (median; peak RSS = max over "
        "reps of the process tree's RSS sum)",
        "",
        "Tables (`bench` in the source, `SELECT *` through a model materialized as a table or "
        "a view):",
        "",
        *(f"- `{shape}`: {text}" for shape, text in (info.get("shapes") or {}).items()),
        "",
        "| table | rows | format | model | ours s | in steps | launched s | bound s | dlt s "
        "| ours/bound | launched/bound | dlt/ours | CPU s ours / bound / dlt | RSS MB ours "
        "| bound | dlt | targets |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for c in summary["full"]:
        bound = _s(c["bound_s"]) + (" (our csv)" if c["format"] == "xml" else "")
        targets = "; ".join(f"{t['target']}: {_met(t)}" for t in c["targets"])
        lines.append(
            f"| {c['shape']} | {c['rows']:,} | {c['format']} | {c['model']} | {_s(c['ours_s'])} "
            f"| {_s(c['ours_in_steps_s'])} | {_s(c['launched_s'])} "
            f"| {bound} | {_s(c['dlt_s'])} | {_s(c['ours_over_bound'])} "
            f"| {_s(c['launched_over_bound'])} | {_s(c['dlt_over_ours'])} "
            f"| {_s(c['ours_cpu_s'], 1)} / {_s(c['bound_cpu_s'], 1)} / {_s(c['dlt_cpu_s'], 1)} "
            f"| {_s(c['ours_rss_mb'], 0)} "
            f"| {_s(c['bound_rss_mb'], 0)} | {_s(c['dlt_rss_mb'], 0)} | {targets} |"
        )
    lines += [
        "",
        "*in steps*: of ours, the seconds spent inside the steps' own code (model, delta, "
        "export; from the run's event log); the rest is process start-up and Dagster.",
    ]
    queued = [c["launched_to_run_start_s"] for c in summary["full"] if c["launched_to_run_start_s"]]
    if queued:
        lines.append(
            f"Launched runs took {min(queued):.1f}–{max(queued):.1f} s (median per cell) from "
            "submit to RUN_START: the run queue (read every second with the project's "
            "`run_coordinator` settings), the launch and the run worker's start-up; that is "
            "part of the launched figure."
        )
    fixed = summary["fixed"]
    if fixed:
        counts = fixed.get("activations") or {}
        small, large = counts.get("small", "?"), counts.get("large", "?")
        targets = "; ".join(f"{t['target']}: {_met(t)}" for t in fixed["targets"])
        lines += [
            "",
            f"Fixed cost, on a project of {small} activations (1 folder) and one of {large} "
            "(the same plus 20 folders); the 10-row run is of the `tiny` table:",
            "",
            "| 10-row run s | in steps | import `azexport_assets.definitions` + `defs()` s "
            "| load `entry.py` s | run/import | 10-row run, larger project s | larger/small "
            "| `definitions validate` small / larger s | larger/small | RSS MB | targets |",
            "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
            f"| {_s(fixed['tiny_run'])} | {_s(fixed['tiny_run_in_steps_s'])} "
            f"| {_s(fixed['import_definitions'])} "
            f"| {_s(fixed['import_entry'])} | {_ratios(fixed, 'ratio')} "
            f"| {_s(fixed['tiny_run_large'])} | {_ratios(fixed, 'large_ratio')} "
            f"| {_s(fixed['validate'])} / {_s(fixed['validate_large'])} "
            f"| {_ratios(fixed, 'validate_ratio')} "
            f"| {_s(fixed['tiny_run_rss_mb'], 0)} | {targets} |",
            "",
            "Ratios: of the medians (paired: the median of each rep's ratio, the two sides run "
            "seconds apart; the targets are judged on it).",
            "",
            f"The 10-row run adds {_s(fixed.get('run_adds_s'))} s to the import of the code "
            "location (median of each rep's difference): Dagster importing its run storage, "
            "the run record and events, and the steps.",
        ]
    if summary["delta"]:
        first = summary["delta"][0]
        ch = first["changes"] or {}
        lines += [
            "",
            f"Delta runs on `{first['shape']}`, {first['rows']:,} rows, changes "
            f"{ch.get('updated', 0):,} updated / {ch.get('added', 0):,} inserted / "
            f"{ch.get('removed', 0):,} deleted (upsert: updated + inserted rows exported):",
            "",
            "| model | ours delta run s | in steps | join+export s | ratio "
            "| CPU s ours / join+export | RSS MB ours | join+export | first full run s | target |",
            "|---|---:|---:|---:|---:|---|---:|---:|---:|---|",
        ]
        for delta in summary["delta"]:
            lines.append(
                f"| {delta['model']} | {_s(delta['ours_s'])} | {_s(delta['ours_in_steps_s'])} "
                f"| {_s(delta['join_export_s'])} | {_s(delta['ratio'])} "
                f"| {_s(delta['ours_cpu_s'], 1)} / {_s(delta['join_export_cpu_s'], 1)} "
                f"| {_s(delta['ours_rss_mb'], 0)} | {_s(delta['join_export_rss_mb'], 0)} "
                f"| {_s(delta['first_full_run_s'])} "
                f"| {delta['target']['target']}: {_met(delta['target'])} |"
            )
    checks = info.get("checks")
    if checks:
        lines += ["", checks]
    return "\n".join(lines)


def verification_note(measurements: list[dict]) -> str:
    """One sentence on how the landed files were checked (dlt's in particular)."""
    dlt = [m for m in measurements if m.get("side") == "dlt" and "error" not in m]
    ours = [m for m in measurements if m.get("side") in ("ours", "launched") and "error" not in m]
    parts = []
    if ours:
        kinds = sorted({m.get("checked", "") for m in ours} - {""})
        parts.append(
            f"Every run of ours was checked: its blobs exist with the sizes the export reported "
            f"and hold the expected rows ({', '.join(kinds)})."
        )
    if dlt:
        files = sum(m["files"] for m in dlt)
        mb = sum(m["bytes"] for m in dlt) / 1e6
        kinds = sorted({m.get("checked", "") for m in dlt})
        parts.append(
            f"dlt landed {files} data file(s), {mb:,.0f} MB in all, in Azurite "
            f"(listed after each load; rows {', '.join(kinds)})."
        )
    return " ".join(parts)


def machine_info(args: argparse.Namespace, dlt_version: str | None) -> dict:
    import dagster
    import duckdb

    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "dagster": dagster.__version__,
        "duckdb": duckdb.__version__,
        "dlt": dlt_version,
        "reps": args.reps,
        "memory_limit": args.memory_limit,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated sizes")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--formats", default=",".join(FORMATS), help="csv,jsonl,parquet,xml")
    parser.add_argument(
        "--launched", default="csv", help="formats also run via dagster dev ('all', 'none')"
    )
    parser.add_argument("--delta-rows", type=int, help="default: the largest --rows")
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 rep: a smoke run")
    parser.add_argument("--no-dlt", action="store_true")
    parser.add_argument("--no-fixed", action="store_true", help="skip the 10-row run")
    parser.add_argument("--no-delta", action="store_true")
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="how the exported model is materialized: table (the default, one copy), view",
    )
    parser.add_argument(
        "--shapes",
        default=",".join(SHAPES),
        help="tables to run on (benchmarks/data.py): customers (make_data.py), bench",
    )
    parser.add_argument(
        "--memory-limit",
        help="DuckDB memory_limit of our runs (default: the warehouse's, 512MB; the bound "
        "always runs with DuckDB's own default)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--out", default=str(STATE / "run-results.json"))
    parser.add_argument(
        "--report", metavar="JSON", help="only print the Markdown table of an earlier results file"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.reps = "20000", 1
    args.rows = sorted(int(r.replace("_", "")) for r in args.rows.split(","))
    args.formats = [f for f in args.formats.split(",") if f]
    args.models = [m for m in args.models.split(",") if m]
    args.shapes = [s for s in args.shapes.split(",") if s]
    for what, given, known in (
        ("format", args.formats, FORMATS),
        ("model", args.models, MODELS),
        ("table shape", args.shapes, SHAPES),
    ):
        unknown = set(given) - set(known)
        if unknown:
            parser.error(f"unknown {what}(s) {sorted(unknown)}; known: {', '.join(known)}")
    if not args.shapes or not args.models:
        parser.error("--shapes and --models need at least one value each")
    launched = {"all": args.formats, "none": []}.get(args.launched, args.launched.split(","))
    args.launched = [f for f in launched if f in args.formats]
    return args


def report(path: Path) -> str:
    """The Markdown table of a results file written by an earlier run."""
    saved = json.loads(path.read_text())
    saved["info"].setdefault("load_avg_1m_before_after", ["?", "?"])
    return markdown(summarize(saved["measurements"], saved["info"]["config"]), saved["info"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(report(Path(args.report)))
        return 0
    print(
        f"whole-run benchmark: tables {args.shapes}, rows {args.rows}, formats {args.formats}, "
        f"models {args.models}, reps {args.reps}, launched {args.launched or 'none'}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    bench = Bench(args)
    load_before = os.getloadavg()
    try:
        bench.setup()
        bench.run()
    finally:
        bench.teardown()
    dlt_version = next(
        (
            m["inner"]["dlt_version"]
            for m in bench.measurements
            if m.get("side") == "dlt" and "inner" in m
        ),
        None,
    )
    info = machine_info(args, dlt_version)
    info["config"] = {
        "rows": args.rows,
        "formats": args.formats,
        "models": args.models,
        "shapes": args.shapes,
        "launched": args.launched,
        "activations": getattr(bench, "activations", {}),
    }
    info["shapes"] = getattr(bench, "shapes", {})
    # Other work on the machine slows every side; the load average says how busy it was.
    info["load_avg_1m_before_after"] = [round(load_before[0], 1), round(os.getloadavg()[0], 1)]
    summary = summarize(bench.measurements, info["config"])
    info["checks"] = verification_note(bench.measurements)
    table = markdown(summary, info)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "info": info,
                "summary": summary,
                "measurements": bench.measurements,
                "failures": bench.failures,
            },
            indent=2,
            default=str,
        )
    )
    out.with_suffix(".md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nresults: {out} and {out.with_suffix('.md')}; logs: {bench.workdir / 'logs'}")
    if bench.failures:
        print(f"{len(bench.failures)} measurement(s) failed:", *bench.failures, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
