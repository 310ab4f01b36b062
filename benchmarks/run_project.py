"""The throw-away project the whole-run benchmark exports: source data, defs.yaml, Dagster home.

Layout of `workdir` (one per benchmark invocation):

    project/src.duckdb        source table `bench` (N rows of one shape, benchmarks/data.py)
                              and `tiny` (its first 10 rows)
    project/defs/bench/defs.yaml, project/entry.py   the code location (`-f entry.py`)
    project_large/            the same plus 20 folders of 5 activations each, for the
                              fixed cost of a larger project (its src.duckdb is a link)
    project/warehouse.duckdb  the warehouse ($AZEXPORT_WAREHOUSE)
    dagster_home/             $DAGSTER_HOME (telemetry off, storage migrated once)
    azurite/                  Azurite's on-disk store (`--location`)

Data changes run in a subprocess (`python -m benchmarks.run_project generate|mutate`) so the
benchmark's own process stays small.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import yaml

from azexport_assets.asset_keys import delta_key, op_name
from azexport_assets.demo.instance import dagster_yaml
from benchmarks.data import create_table, describe

URL_ENV = "AZEXPORT_BENCH_ACCOUNT_URL"
SAS_ENV = "AZEXPORT_BENCH_SAS"
CONTAINER = "bench"  # ours and the bound write here
DLT_CONTAINER = "dlt"

# benchmark format -> its YAML format options
FORMATS = {
    "csv": "format: csv",
    "jsonl": "format: json\n    json: {style: lines}",
    "parquet": "format: parquet",
    "xml": "format: xml",
}
MODELS = ("table", "view")  # how the exported model is materialized
EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "xml": ".xml"}
TINY_ACTIVATION = "tiny_csv"
EXTRA_FOLDERS = 20  # the larger project: this many more folders ...
PER_FOLDER = 5  # ... of this many activations each


def full_activation(fmt: str, model: str) -> str:
    """The full snapshot of the `bench` table in `fmt` through a `model`-materialized model."""
    return f"full_{fmt}" + ("_view" if model == "view" else "")


def delta_activation(model: str) -> str:
    return "delta_csv" + ("_view" if model == "view" else "")


DEFS_HEADER = f"""\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    src: {{duckdb: src.duckdb}}
  destinations:
    lake:
      account_url: {{env: {URL_ENV}}}
      container: {CONTAINER}
      sas_token: {{env: {SAS_ENV}}}
  models:
    bench: {{sql: "SELECT * FROM src.bench", primary_key: id}}
    bench_view: {{sql: "SELECT * FROM src.bench", primary_key: id, materialized: view}}
    tiny: {{sql: "SELECT * FROM src.tiny", primary_key: id}}
  activations:
"""
ACTIVATION = """\
    {name}:
      source: {source}
      destination: lake
      file_name: ours/{name}
      {options}
      run_type: {run_type}
      sync_mode: {sync_mode}
"""
ENTRY = """\
from pathlib import Path

from azexport_assets.components.build import project_definitions

defs = project_definitions(Path(__file__).parent / "defs", Path(__file__).parent)
"""


def write_project(root: Path) -> None:
    """defs.yaml (a full snapshot per format and model kind, the 10-row activation and a
    delta per model kind), entry.py (the code location `dagster job execute -f entry.py`
    loads) and resync_<model>.json (run config forcing a delta activation's full resync)."""
    body = DEFS_HEADER
    for model in MODELS:
        for fmt, options in FORMATS.items():
            body += ACTIVATION.format(
                name=full_activation(fmt, model),
                source="bench" if model == "table" else "bench_view",
                options=options.replace("\n    ", "\n      "),
                run_type="full_only",
                sync_mode="snapshot",
            )
    body += ACTIVATION.format(
        name=TINY_ACTIVATION,
        source="tiny",
        options="format: csv",
        run_type="full_only",
        sync_mode="snapshot",
    )
    for model in MODELS:
        body += ACTIVATION.format(
            name=delta_activation(model),
            source="bench" if model == "table" else "bench_view",
            options="format: csv",
            run_type="full_then_delta",
            sync_mode="upsert",
        )
    defs = root / "defs" / "bench" / "defs.yaml"
    defs.parent.mkdir(parents=True, exist_ok=True)
    defs.write_text(body)
    (root / "entry.py").write_text(ENTRY)
    for model in MODELS:
        op = op_name(delta_key(delta_activation(model)))
        resync = {"ops": {op: {"config": {"full_resync": True}}}}
        (root / f"resync_{model}.json").write_text(json.dumps(resync))


def write_large_project(small: Path, large: Path) -> int:
    """`small`'s code location plus EXTRA_FOLDERS folders of PER_FOLDER activations (each
    folder its own component, model and destination over the same source file); returns the
    number of activations it has."""
    shutil.rmtree(large, ignore_errors=True)
    shutil.copytree(small / "defs", large / "defs")
    shutil.copyfile(small / "entry.py", large / "entry.py")
    (large / "src.duckdb").symlink_to(small / "src.duckdb")
    formats = list(FORMATS.items())
    for folder in range(EXTRA_FOLDERS):
        # Names are unique across the project's folders: each has its own source,
        # destination and model (the same file and container).
        tag = f"{folder:02d}"
        header = DEFS_HEADER.split("  models:")[0].replace("    src:", f"    src_{tag}:")
        body = header.replace("    lake:", f"    lake_{tag}:")
        model = f'extra_{tag}: {{sql: "SELECT * FROM src_{tag}.tiny", primary_key: id}}'
        body += f"  models:\n    {model}\n  activations:\n"
        for index in range(PER_FOLDER):
            _, options = formats[index % len(formats)]
            body += ACTIVATION.format(
                name=f"extra_{tag}_{index}",
                source=f"extra_{tag}",
                options=options.replace("\n    ", "\n      "),
                run_type="full_then_delta" if index % 2 else "full_only",
                sync_mode="upsert" if index % 2 else "snapshot",
            ).replace("destination: lake", f"destination: lake_{tag}")
        defs = large / "defs" / f"extra_{tag}" / "defs.yaml"
        defs.parent.mkdir(parents=True)
        defs.write_text(body)
    return count_activations(large)


def count_activations(project: Path) -> int:
    """Activations across the project's defs.yaml files (the figure printed beside it)."""
    return sum(
        len(yaml.safe_load(path.read_text())["attributes"].get("activations") or {})
        for path in (project / "defs").rglob("defs.yaml")
    )


def write_dagster_home(home: Path) -> None:
    """The instance the project documents (run queue read every second, no telemetry)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(dagster_yaml(home))


def run_env(
    project: Path, home: Path, account_url: str, sas: str, memory_limit: str | None
) -> dict[str, str]:
    """The environment every run (and the import timing) gets."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AZEXPORT_WAREHOUSE": str(project / "warehouse.duckdb"),
        URL_ENV: account_url,
        SAS_ENV: sas,
    }
    env.pop("AZEXPORT_DUCKDB_MEMORY_LIMIT", None)
    if memory_limit:
        env["AZEXPORT_DUCKDB_MEMORY_LIMIT"] = memory_limit
    return env


def migrate_instance(env: dict[str, str]) -> None:
    """Create Dagster's storage once, before any timed run (not part of a user's wait)."""
    subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )


def _generate(db: Path, rows: int, shape: str) -> dict:
    con = duckdb.connect(str(db))
    try:
        create_table(con, "bench", shape, rows)
        con.execute("CREATE OR REPLACE TABLE tiny AS SELECT * FROM bench ORDER BY id LIMIT 10")
        con.execute("CHECKPOINT")
        return {"rows": rows, "shape": describe(con, "bench")}
    finally:
        con.close()


# The delta benchmark's updates, per shape: one text and one numeric column, both exported.
UPDATES = {
    "bench": "city = coalesce(city, '') || ' (moved)', amount = amount + 1",
    "customers": "country = country || ' (moved)', balance = balance + 1",
}


def _mutate(db: Path, rows: int, shape: str) -> dict[str, int]:
    """1% updates (exported columns), 0.1% deletes, 0.1% inserts (copies of existing rows
    under new ids); the rows an upsert sends."""
    con = duckdb.connect(str(db))
    try:
        (updated,) = con.execute(f"UPDATE bench SET {UPDATES[shape]} WHERE id % 100 = 7").fetchone()
        (removed,) = con.execute("DELETE FROM bench WHERE id % 1000 = 9").fetchone()
        (added,) = con.execute(
            f"INSERT INTO bench SELECT * REPLACE (id + {rows} AS id) FROM bench "
            f"WHERE id < {max(rows // 1000, 1)}"
        ).fetchone()
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return {"updated": updated, "removed": removed, "added": added, "exported": updated + added}


def generate(db: Path, rows: int, shape: str) -> dict:
    """(Re)create `bench` with `rows` rows of `shape` and `tiny` with 10, in a subprocess;
    returns the table's shape as printed with the figures."""
    return _in_subprocess("generate", db, rows, shape)


def mutate(db: Path, rows: int, shape: str) -> dict[str, int]:
    """Apply the delta benchmark's changes to `bench`, in a subprocess; returns the counts."""
    return _in_subprocess("mutate", db, rows, shape)


def _in_subprocess(command: str, db: Path, rows: int, shape: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_project", command, str(db), str(rows), shape],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    command, db, rows, shape = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    if command == "generate":
        print(json.dumps(_generate(db, rows, shape)))
    elif command == "mutate":
        print(json.dumps(_mutate(db, rows, shape)))
    else:
        raise SystemExit(textwrap.dedent(f"unknown command {command!r}: generate or mutate"))


if __name__ == "__main__":
    main()
