"""Benchmark: activations per second on the DuckLake backend vs the DuckDB file, from 1, 2 and
3 processes at once (the lake takes concurrent writers, the file serialises them).

One activation run is what the warehouse sees of a real run: materialize the activation's
model from a source file, compute its change set, write the change rows to a local CSV (the
export's read), commit the baseline; each step opens its own connection, as steps do. Round 0
is a full run; later rounds change 1% of the rows first. The activations are dealt out to
the processes, which start together; throughput is activation runs per second of wall time.

The lake's catalog is a throw-away PostgreSQL started here (as in the tests), its data in a
local folder. Run: `make bench-lake`, or
  .venv-lake/bin/python -m benchmarks.lake [--activations 6] [--rows 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from azexport_assets.delta import DeltaSpec, change_rows_query, commit_baseline, compute_change_set
from azexport_assets.warehouse import WarehouseBackend, open_warehouse

PROCESS_COUNTS = (1, 2, 3)
SOURCE_SQL = """
CREATE TABLE people AS
SELECT i AS id, 'user' || i || '@example.com' AS email, 'city_' || (i % 997) AS city,
       (i % 1013) / 7.0 AS score, i % 11 = 0 AS is_vip
FROM range({rows}) AS r(i)
"""
COLUMNS = ("id", "email", "city", "score", "is_vip")


def spec(k: int) -> DeltaSpec:
    return DeltaSpec(
        activation=f"a{k}",
        source_table=f"models.m{k}",
        primary_key=("id",),
        columns=tuple((c, c) for c in COLUMNS),
        run_type="full_then_delta",
        sync_mode="upsert",
    )


def activation_run(
    warehouse: WarehouseBackend, sources: dict, k: int, round_: int, out: Path
) -> None:
    """Model, delta, export read, commit: four connections, like the steps of a run."""
    with warehouse.connect(holder=f"bench a{k}", sources=sources) as con:
        # 1% of the rows change each round after the first.
        score = f"CASE WHEN id % 100 = {round_ % 100} THEN score + {round_} ELSE score END"
        con.execute(
            f"CREATE OR REPLACE TABLE models.m{k} AS SELECT id, email, city, "
            f"{score if round_ else 'score'} AS score, is_vip FROM src.people"
        )
    with warehouse.connect(holder=f"bench a{k}") as con:
        change = compute_change_set(con, spec(k), delta_id=f"r{round_}")
    with warehouse.connect(holder=f"bench a{k}") as con:
        cursor = con.cursor()
        query = change_rows_query(spec(k), ("added", "updated"))
        cursor.execute(f"COPY ({query}) TO '{out / f'a{k}_r{round_}.csv'}' (HEADER)")
        cursor.close()
    with warehouse.connect(holder=f"bench a{k}") as con:
        assert commit_baseline(con, f"a{k}", change.delta_id)


def worker(args: argparse.Namespace) -> None:
    from azexport_assets.config import SourceConfig

    job = json.loads(args.worker)
    root = Path(job["root"])
    warehouse = open_warehouse(project_root=root)
    sources = {"src": SourceConfig.model_validate({"duckdb": str(root / "src.duckdb")})}
    warehouse.init()  # the deployment's init step; not timed
    print("ready", flush=True)
    go = root / "go"
    while not go.exists():
        time.sleep(0.01)
    for round_ in range(job["rounds"]):
        for k in job["activations"]:
            activation_run(warehouse, sources, k, round_, root)


def run_processes(root: Path, env: dict[str, str], processes: int, args) -> float:
    """Wall seconds for every activation's rounds, dealt out to `processes` workers."""
    (root / "go").unlink(missing_ok=True)
    children = []
    for p in range(processes):
        job = {
            "root": str(root),
            "rounds": args.rounds,
            "activations": [k for k in range(args.activations) if k % processes == p],
        }
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.lake", "--worker", json.dumps(job)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:  # every worker imported, set up and waits at the start line
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"worker failed to start:\n{child.communicate()[1][-3000:]}")
    started = time.perf_counter()
    (root / "go").touch()
    for child in children:
        out, err = child.communicate(timeout=3600)
        if child.returncode != 0:
            raise RuntimeError(f"worker failed:\n{err[-3000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activations", type=int, default=6)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from azexport_assets_tests.lake_kit import PASSWORD, start_postgres

    server = start_postgres()
    runs = args.activations * args.rounds
    print(
        f"{args.activations} activations x {args.rounds} rounds ({runs} activation runs), "
        f"{args.rows:,} rows each; DuckDB {duckdb.__version__}, {os.cpu_count()} cores"
    )
    print(f"{'processes':>9} {'file runs/s':>12} {'lake runs/s':>12} {'lake/file':>10}")
    try:
        for processes in PROCESS_COUNTS:
            results = {}
            for backend in ("file", "lake"):
                root = Path(tempfile.mkdtemp(prefix=f"azexport-bench-{backend}-"))
                con = duckdb.connect(str(root / "src.duckdb"))
                con.execute(SOURCE_SQL.format(rows=args.rows))
                con.close()
                env = dict(os.environ, AZEXPORT_TEMP_DIR=str(root))
                if backend == "file":
                    env["AZEXPORT_WAREHOUSE"] = str(root / "warehouse.duckdb")
                else:
                    env["AZEXPORT_WAREHOUSE"] = "ducklake:postgres:" + server.conninfo(
                        server.create_database("bench")
                    )
                    env["AZEXPORT_LAKE_DATA_PATH"] = str(root / "lake-data")
                    env["PGPASSWORD"] = PASSWORD
                results[backend] = runs / run_processes(root, env, processes, args)
            print(
                f"{processes:>9} {results['file']:>12.2f} {results['lake']:>12.2f} "
                f"{results['lake'] / results['file']:>10.2f}",
                flush=True,
            )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
