"""Benchmark: the delta step (compute_change_set) against a bare key + hash join, same run.

Data: the shared generator `make_data.py` (table `customers`, 12 columns of mixed types),
called by path: `--make-data PATH`, else `$AZEXPORT_BENCH_MAKE_DATA`, else
`benchmarks/make_data.py`. Its table is copied into a temporary warehouse as
`src.customers` and exported through two models: `models.customers_table` (a table, the
default materialization) and `models.customers_view` (a view over the source). Every column
is exported, key `id`, sync mode `difference`.

After a committed first (full) run of both activations, 1% of the rows get a changed e-mail,
0.1% are deleted and 0.1% inserted (the table model is then rebuilt, untimed, as the model
step would). Timed, on one connection with the project's default DuckDB memory limit
(512MB; `--memory-limit`), interleaved and rotated, median of `--repeat` (at least 3):

- delta (table / view): `compute_change_set`: everything the delta step does in the
  warehouse (fingerprint, candidate join, confirmation, counts, key check, state row);
- join (table / view): the bare reference: FULL OUTER JOIN on `id` of `(id, hash(other
  columns))` of the model and of a copy of the previous rows, materialising the changed keys
  and their kind;
- exact join (table): the same join carrying every column and comparing them all with
  IS DISTINCT FROM (how the delta compared rows before it stored row hashes): what comparing
  every row exactly costs.

Run: .venv/bin/python -m benchmarks.delta --rows 5000000 [--repeat 3] [--memory-limit 1GB]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from azexport_assets.delta import DeltaSpec, commit_baseline, compute_change_set
from azexport_assets.warehouse import DEFAULT_MEMORY_LIMIT
from benchmarks.data import make_data_script, run_make_data

MODELS = ("table", "view")
SIDES = ("delta_table", "join_table", "delta_view", "join_view", "exact_table")
TARGET = 2.0


def generate(script: Path, out: Path, rows: int) -> None:
    run_make_data(out, rows, script)


def shape(con: duckdb.DuckDBPyConnection, table: str) -> dict:
    columns = con.execute(f"DESCRIBE {table}").fetchall()
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return {"rows": rows, "columns": [(c[0], c[1]) for c in columns]}


def shape_line(info: dict) -> str:
    types = ", ".join(f"{name} {kind}" for name, kind in info["columns"])
    return f"customers: {info['rows']:,} rows x {len(info['columns'])} columns ({types})"


def spec_for(model: str, columns: list[str]) -> DeltaSpec:
    return DeltaSpec(
        activation=f"bench_{model}",
        source_table=f"models.customers_{model}",
        primary_key=("id",),
        columns=tuple((c, c) for c in columns),
        run_type="full_then_delta",
        sync_mode="difference",
    )


def mutate(con: duckdb.DuckDBPyConnection, rows: int) -> dict[str, int]:
    """1% updated (an exported column), 0.1% deleted, 0.1% inserted (new ids)."""
    table = "src.customers"
    updated = con.execute(
        f"UPDATE {table} SET email = 'changed.' || email WHERE id % 100 = 7"
    ).fetchone()[0]
    removed = con.execute(f"DELETE FROM {table} WHERE id % 1000 = 9").fetchone()[0]
    added = con.execute(
        f"INSERT INTO {table} SELECT id + {rows} AS id, * EXCLUDE (id) FROM {table} "
        f"WHERE id < {rows // 1000}"
    ).fetchone()[0]
    return {"added": added, "updated": updated, "removed": removed}


def join_sql(model: str, others: list[str], exact: bool) -> str:
    """The bare reference: narrow (key + hash) or exact (every column) FULL OUTER JOIN."""
    kind = (
        "CASE WHEN b.id IS NULL THEN 'added' WHEN c.id IS NULL THEN 'removed' "
        "ELSE 'updated' END AS kind"
    )
    source = f"models.customers_{model}"
    if exact:
        values = ", ".join(
            f"CASE WHEN c.id IS NULL THEN b.{x} ELSE c.{x} END AS {x}" for x in others
        )
        differs = " OR ".join(f"c.{x} IS DISTINCT FROM b.{x}" for x in others)
        return (
            f"CREATE OR REPLACE TABLE bench.ref AS SELECT {kind}, coalesce(c.id, b.id) AS id, "
            f"{values} FROM {source} AS c FULL OUTER JOIN bench.prev AS b ON c.id = b.id "
            f"WHERE b.id IS NULL OR c.id IS NULL OR {differs}"
        )
    digest = f"hash({', '.join(others)})"
    return (
        f"CREATE OR REPLACE TABLE bench.ref AS SELECT {kind}, coalesce(c.id, b.id) AS id "
        f"FROM (SELECT id, {digest} AS h FROM {source}) AS c "
        f"FULL OUTER JOIN (SELECT id, {digest} AS h FROM bench.prev) AS b ON c.id = b.id "
        "WHERE c.h IS DISTINCT FROM b.h"
    )


def run(
    rows: int = 1_000_000,
    repeat: int = 3,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    make_data: str | None = None,
    workdir: str | None = None,
) -> dict:
    script = make_data_script(make_data)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="bench-delta-") as tmp:
        data = Path(tmp) / "customers.duckdb"
        started = time.perf_counter()
        generate(script, data, rows)
        con = duckdb.connect(str(Path(tmp) / "w.duckdb"))
        con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("SET temp_directory = ?", [str(Path(tmp) / "spill")])
        con.execute(f"ATTACH '{data}' AS gen (READ_ONLY)")
        con.execute("CREATE SCHEMA src; CREATE SCHEMA models; CREATE SCHEMA bench")
        con.execute("CREATE TABLE src.customers AS SELECT * FROM gen.customers")
        con.execute("DETACH gen")
        result: dict = {"rows": rows, "memory_limit": memory_limit, "generator": str(script)}
        result["shape"] = shape(con, "src.customers")
        columns = [name for name, _ in result["shape"]["columns"]]
        others = [c for c in columns if c != "id"]
        con.execute("CREATE TABLE models.customers_table AS SELECT * FROM src.customers")
        con.execute("CREATE VIEW models.customers_view AS SELECT * FROM src.customers")
        result["setup_s"] = time.perf_counter() - started
        specs = {model: spec_for(model, columns) for model in MODELS}
        for model, spec in specs.items():
            start = time.perf_counter()
            compute_change_set(con, spec, "first")
            commit_baseline(con, spec.activation, "first")
            result[f"first_run_{model}_s"] = time.perf_counter() - start
        con.execute("CREATE TABLE bench.prev AS SELECT * FROM src.customers")
        expected = mutate(con, rows)
        con.execute("CREATE OR REPLACE TABLE models.customers_table AS SELECT * FROM src.customers")
        con.execute("CHECKPOINT")  # everything on disk, as between two scheduled runs
        wall: dict[str, list[float]] = {side: [] for side in SIDES}
        cpu: dict[str, list[float]] = {side: [] for side in SIDES}
        found: dict[str, tuple[int, int, int]] = {}
        for rep in range(repeat):
            shift = rep % len(SIDES)
            order = SIDES[shift:] + SIDES[:shift]  # rotate, so no side always goes first
            for side in order if rep % 2 == 0 else order[::-1]:
                what, model = side.split("_")
                start, start_cpu = time.perf_counter(), time.process_time()
                if what == "delta":
                    change = compute_change_set(con, specs[model], f"delta-{rep}")
                    counts = (change.added, change.updated, change.removed)
                else:
                    con.execute(join_sql(model, others, exact=what == "exact"))
                wall[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
                if what != "delta":
                    by_kind = dict(
                        con.execute("SELECT kind, count(*) FROM bench.ref GROUP BY kind").fetchall()
                    )
                    counts = tuple(by_kind.get(k, 0) for k in ("added", "updated", "removed"))
                found[side] = counts
        con.close()
    want = (expected["added"], expected["updated"], expected["removed"])
    wrong = {side: counts for side, counts in found.items() if counts != want}
    if wrong:
        raise SystemExit(f"benchmarks.delta: wrong change counts {wrong}, expected {want}")
    result["changes"] = expected
    for side in SIDES:
        result[f"{side}_wall_median_s"] = statistics.median(wall[side])
        result[f"{side}_cpu_median_s"] = statistics.median(cpu[side])
        result[f"{side}_wall_s"] = wall[side]
    for model in MODELS:
        for measure in ("wall_median", "cpu_median"):
            result[f"ratio_{model}_{measure}"] = (
                result[f"delta_{model}_{measure}_s"] / result[f"join_{model}_{measure}_s"]
            )
        ratio = result[f"ratio_{model}_wall_median"]
        result[f"target_{model}"] = f"<= {TARGET}x: {'met' if ratio <= TARGET else 'missed'}"
    result["ratio_exact_table_wall_median"] = (
        result["exact_table_wall_median_s"] / result["join_table_wall_median_s"]
    )
    result["repeat"] = repeat
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def report(result: dict) -> str:
    line = shape_line(result["shape"])
    ch = result["changes"]
    lines = [
        f"{line}; memory_limit {result['memory_limit']}; "
        f"changes: {ch['updated']:,} updated / {ch['added']:,} added / {ch['removed']:,} removed; "
        f"median of {result['repeat']} interleaved reps",
        f"{'side':<12} {'wall median':>12} {'cpu median':>11}   shape",
    ]
    for side in SIDES:
        lines.append(
            f"{side:<12} {result[f'{side}_wall_median_s']:>11.2f}s "
            f"{result[f'{side}_cpu_median_s']:>10.2f}s   {result['shape']['rows']:,} x "
            f"{len(result['shape']['columns'])}"
        )
    for model in MODELS:
        lines.append(
            f"delta / bare key+hash join, {model} model: "
            f"{result[f'ratio_{model}_wall_median']:.2f}x wall, "
            f"{result[f'ratio_{model}_cpu_median']:.2f}x cpu (target {result[f'target_{model}']}) "
            f"[{line}]"
        )
    lines.append(
        f"exact full-row join / bare key+hash join, table model: "
        f"{result['ratio_exact_table_wall_median']:.2f}x wall [{line}]"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="at least 3 (medians)")
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT)
    parser.add_argument(
        "--make-data",
        default=None,
        help="default: $AZEXPORT_BENCH_MAKE_DATA, else benchmarks/make_data.py",
    )
    parser.add_argument("--workdir", default=None, help="where the temp warehouse goes")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3: the figures are medians")
    result = run(args.rows, args.repeat, args.memory_limit, args.make_data, args.workdir)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(report(result))


if __name__ == "__main__":
    main()
