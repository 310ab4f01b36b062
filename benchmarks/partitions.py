"""Benchmark: a partitioned export against the same export as one file.

Data: the shared generator `make_data.py` (table `customers`, 12 columns; `--make-data PATH`,
else `$AZEXPORT_BENCH_MAKE_DATA`, else `benchmarks/make_data.py`), copied into a file
warehouse as `models.customers` (key `id`) with a DATE column `day` of `--partitions`
values (`id % partitions` days after 2025-01-01): daily folders over a year by default.

Three snapshots of it (`--format`, default CSV), written and uploaded to a local Azurite
with `compute_changes` + `run_export` (no Dagster), interleaved, median of `--repeat` (at
least 3), at the default 512MB memory limit:

- one file: no `partition_by` (the baseline);
- sorted copy: `partition_by: [day]` as it runs (more than `CLUSTER_ABOVE_PARTITIONS`
  partitions: the change set is sorted by partition once, each partition reads its rows);
- read per partition: the same with the sorted copy turned off (each partition's files read
  the whole change set), which is what every partitioned export did before.

Printed: seconds and each ratio to the one-file export.

Run: .venv/bin/python -m benchmarks.partitions --rows 1000000 [--partitions 365] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from azexport_assets import export as exporting
from azexport_assets.config import ActivationConfig
from azexport_assets.warehouse import open_warehouse
from benchmarks.data import (
    customers_warehouse,
    describe,
    local_blob_storage,
    make_data_script,
)

CONTAINER = "bench-partitions"
SIDES = ("one file", "sorted copy", "read per partition")
CLUSTER_ABOVE_PARTITIONS = exporting.CLUSTER_ABOVE_PARTITIONS  # as it runs


def activation(side: str, fmt: str) -> ActivationConfig:
    return ActivationConfig(
        source="customers",
        destination="bench",
        file_name=f"partitions/{side.replace(' ', '_')}",
        format=fmt,
        run_type="full_only",
        sync_mode="snapshot",
        partition_by=[] if side == "one file" else ["day"],
    )


def export_once(store, storage, side: str, fmt: str) -> tuple[float, int]:
    """Seconds of one whole export (change set, files written and uploaded, commit), files."""
    act = activation(side, fmt)
    name = side.replace(" ", "_")
    run_id = str(uuid.uuid4())
    # The sorted copy is used past this many partitions; "read per partition" never uses it.
    exporting.CLUSTER_ABOVE_PARTITIONS = (
        1_000_000 if side == "read per partition" else CLUSTER_ABOVE_PARTITIONS
    )
    started = time.perf_counter()
    delta = exporting.DeltaRun(
        name=name,
        source_table="models.customers",
        primary_key=("id",),
        run_type=act.run_type,
        sync_mode=act.sync_mode,
        exported=lambda columns: [(c, c) for c, _ in columns],
    )
    exporting.compute_changes(delta, store, delta_id=run_id)
    run = exporting.ExportRun(
        name=name,
        activation=act,
        source_table="models.customers",
        container=CONTAINER,
        path_prefix="",
        logical_time=datetime.now(timezone.utc),
        run_id=run_id,
    )
    outcome = exporting.run_export(run, store, storage)
    seconds = time.perf_counter() - started
    return seconds, len(outcome.report.files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--make-data")
    parser.add_argument("--format", default="csv", choices=["csv", "json", "xml", "parquet"])
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset")
    args = parser.parse_args()
    sides = tuple(side for side in SIDES if side in args.sides.split(","))
    repeat = max(args.repeat, 3)

    script = make_data_script(args.make_data)
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        day = f"DATE '2025-01-01' + CAST(id % {args.partitions} AS INTEGER) AS day"
        warehouse = customers_warehouse(Path(tmp), args.rows, script, extra=day)
        with duckdb.connect(str(warehouse), read_only=True) as con:
            shape = describe(con, "models.customers")
        print(
            f"table customers (make_data.py) + day: {shape}; {args.partitions} partitions, "
            f"{args.format}, {repeat} reps",
            flush=True,
        )
        store = open_warehouse(str(warehouse), project_root=Path(tmp))
        with local_blob_storage(Path(tmp), CONTAINER) as storage:
            times: dict[str, list[float]] = {side: [] for side in sides}
            for index in range(repeat):
                order = sides[index % len(sides) :] + sides[: index % len(sides)]
                for side in order:
                    seconds, files = export_once(store, storage, side, args.format)
                    times[side].append(seconds)
                    print(f"  rep {index + 1} {side}: {seconds:.2f}s, {files} files", flush=True)
            base = statistics.median(times["one file"]) if "one file" in times else None
            for side in sides:
                median = statistics.median(times[side])
                ratio = f"  {median / base:5.2f}x the one-file export" if base else ""
                print(f"{side:<20} {median:7.2f}s{ratio}")


if __name__ == "__main__":
    main()
