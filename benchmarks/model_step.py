"""Benchmark: the model step alone, rebuilt vs unchanged, in real Dagster runs.

Materializes one model `SELECT * FROM src.<table>` (primary key `id`) over a DuckDB source
with `dg.materialize`, and times the step itself (from its STEP_START to its STEP_SUCCESS
event). Modes, interleaved round by round, median of `--rounds`:

- rebuild:   the run tag `azexport/force_rebuild: true`: CREATE TABLE AS (or VIEW), then the
             row count and key check in one aggregate pass, then the stored record;
- unchanged: nothing it reads changed: the relation, its key check and its counts are kept.

Run: .venv/bin/python -m benchmarks.model_step [--source file.duckdb --table customers]
     [--rows 1000000] [--materialized table|view] [--modes rebuild,unchanged] [--rounds 5]
Without --source a table of --rows rows x 12 columns (`benchmarks.formats.ROWS_SQL`) is made.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import dagster as dg
import duckdb

from azexport_assets.asset_keys import model_key
from azexport_assets.components.build import project_definitions
from azexport_assets.resources import WarehouseResource
from benchmarks.formats import ROWS_SQL

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    src: {{duckdb: {source}}}
  models:
    bench:
      sql: SELECT * FROM src.{table}
      primary_key: id
      materialized: {materialized}
"""
FORCE = {"azexport/force_rebuild": "true"}


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> float:
    """Seconds from the model step's start to its success, as the run's log records them."""
    times = {
        record.dagster_event.event_type_value: record.timestamp
        for record in instance.all_logs(run_id)
        if record.dagster_event is not None
        and record.dagster_event.event_type_value in ("STEP_START", "STEP_SUCCESS")
    }
    return times["STEP_SUCCESS"] - times["STEP_START"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="a DuckDB file (default: one made with --rows)")
    parser.add_argument("--table", default="customers")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--materialized", choices=("table", "view"), default="table")
    parser.add_argument("--modes", default="rebuild,unchanged")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="azexport-model-step-") as tmp:
        root = Path(tmp)
        source = Path(args.source).resolve() if args.source else root / "src.duckdb"
        if not args.source:
            con = duckdb.connect(str(source))
            con.execute(f"CREATE TABLE {args.table} AS {ROWS_SQL.format(start=0, stop=args.rows)}")
            con.close()
        (root / "defs" / "bench").mkdir(parents=True)
        (root / "defs" / "bench" / "defs.yaml").write_text(
            DEFS.format(source=source, table=args.table, materialized=args.materialized)
        )
        warehouse = WarehouseResource(path=str(root / "warehouse.duckdb"))
        definitions = project_definitions(root / "defs", root, warehouse)
        asset = definitions.resolve_assets_def(model_key("bench"))
        instance = dg.DagsterInstance.ephemeral()

        def run(tags: dict) -> float:
            result = dg.materialize([asset], instance=instance, tags=tags)
            return step_seconds(instance, result.run_id)

        run(FORCE)  # the first build
        modes = args.modes.split(",")
        seconds: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(args.rounds):
            for mode in modes:
                seconds[mode].append(run(FORCE if mode == "rebuild" else {}))
        rows = duckdb.connect(str(source), read_only=True)
        count, columns = rows.execute(
            f"SELECT count(*), (SELECT count(*) FROM duckdb_columns() "
            f"WHERE table_name = '{args.table}') FROM {args.table}"
        ).fetchone()
        rows.close()
    summary = {
        "shape": f"{count:,} rows x {columns} columns, {args.materialized} model, key id",
        **{
            mode: {
                "median_s": round(statistics.median(values), 3),
                "all_s": [round(v, 3) for v in values],
            }
            for mode, values in seconds.items()
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
