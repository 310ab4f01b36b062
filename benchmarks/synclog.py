"""Benchmark: what the sync log adds to an export, at 5M rows.

Data: the shared generator `make_data.py` (table `customers`, 12 columns; `--make-data PATH`,
else `$AZEXPORT_BENCH_MAKE_DATA`, else `benchmarks/make_data.py`), copied into a file
warehouse as `models.customers` (key `id`). Two activations export it as CSV into the same
local Azurite with `run_export` (no Dagster): one without and one with `sync_log: true`.

Measured, interleaved, median of `--repeat` (at least 3), at the default 512MB memory limit:

- export: `compute_changes` + `run_export` of the activation without a sync log (the change
  set, the files written and uploaded, the baseline commit);
- log: the commit's extra time with a sync log: `commit_run` with the log minus without it,
  on the same committed change set kind. Each run's change set is computed afresh and
  committed, so the log insert is the set-based `INSERT ... SELECT` of every exported key.

Two cases: a full snapshot (`full_only`: every one of the 5M keys is logged on every run,
the worst case) and a 1% `upsert` delta after a full run. Target: log <= 10% of export.

Run: .venv/bin/python -m benchmarks.synclog --rows 5000000 [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from azexport_assets import export as exporting
from azexport_assets.config import ActivationConfig
from azexport_assets.warehouse import open_warehouse
from benchmarks.data import customers_warehouse, local_blob_storage, make_data_script

TARGET = 0.10
CONTAINER = "bench-synclog"


def activation(sync_mode: str, sync_log: bool) -> ActivationConfig:
    return ActivationConfig(
        source="customers",
        destination="bench",
        file_name=f"synclog/{sync_mode}_{'log' if sync_log else 'plain'}",
        format="csv",
        run_type="full_only" if sync_mode == "snapshot" else "full_then_delta",
        sync_mode=sync_mode,
        sync_log=sync_log,
    )


def delta_run(name: str, act: ActivationConfig) -> exporting.DeltaRun:
    return exporting.DeltaRun(
        name=name,
        source_table="models.customers",
        primary_key=("id",),
        run_type=act.run_type,
        sync_mode=act.sync_mode,
        exported=lambda columns: [(c, c) for c, _ in columns],
    )


def export_once(store, storage, name: str, act: ActivationConfig) -> tuple[float, float]:
    """(whole export seconds, commit seconds) of one change set of `name`."""
    run_id = str(uuid.uuid4())
    started = time.perf_counter()
    change = exporting.compute_changes(delta_run(name, act), store, delta_id=run_id)
    run = exporting.ExportRun(
        name=name,
        activation=act,
        source_table="models.customers",
        container=CONTAINER,
        path_prefix="",
        logical_time=datetime.now(timezone.utc),
        run_id=run_id,
    )
    # What run_export does before its commit (files written and uploaded), then the commit
    # alone, timed.
    with storage.container(CONTAINER) as container:
        change, report, _ = exporting._write_change_set(
            run, store, container, exporting.stem_name(act, "", run.logical_time), None
        )
        assert report is not None and report.rows == change.added + change.updated
    committed = time.perf_counter()
    advanced, logged = exporting.commit_run(run, store, change)
    finished = time.perf_counter()
    assert advanced
    if act.sync_log:
        assert logged is not None and logged.rows == report.rows, (logged, report.rows)
    return finished - started, finished - committed


def churn(store, percent: float) -> None:
    with store.connect(holder="bench churn") as con:
        step = max(int(100 / percent), 1)
        con.execute(f"UPDATE models.customers SET email = email || 'x' WHERE id % {step} = 0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--make-data")
    args = parser.parse_args()
    repeat = max(args.repeat, 3)

    script = make_data_script(args.make_data)
    with tempfile.TemporaryDirectory(prefix="bench-synclog-") as tmp:
        warehouse = customers_warehouse(Path(tmp), args.rows, script)
        store = open_warehouse(str(warehouse), project_root=Path(tmp))
        with local_blob_storage(Path(tmp), CONTAINER) as storage:
            for sync_mode in ("snapshot", "upsert"):
                plain, logged = activation(sync_mode, False), activation(sync_mode, True)
                names = {False: f"{sync_mode}_plain", True: f"{sync_mode}_log"}
                if sync_mode == "upsert":  # first (full) runs, then 1% changes
                    for flag, act in ((False, plain), (True, logged)):
                        export_once(store, storage, names[flag], act)
                totals: dict[bool, list[float]] = {False: [], True: []}
                commits: dict[bool, list[float]] = {False: [], True: []}
                for index in range(repeat):
                    if sync_mode == "upsert":
                        churn(store, 1.0)
                    order = (False, True) if index % 2 == 0 else (True, False)
                    for flag in order:
                        total, commit = export_once(
                            store, storage, names[flag], logged if flag else plain
                        )
                        totals[flag].append(total)
                        commits[flag].append(commit)
                export_s = statistics.median(totals[False])
                log_s = statistics.median(commits[True]) - statistics.median(commits[False])
                print(
                    f"{sync_mode:<9} rows={args.rows:,} export={export_s:.2f}s "
                    f"(with log {statistics.median(totals[True]):.2f}s) "
                    f"commit={statistics.median(commits[False]):.3f}s "
                    f"commit+log={statistics.median(commits[True]):.3f}s "
                    f"log={log_s:.3f}s = {log_s / export_s:.1%} of the export "
                    f"(target <= {TARGET:.0%}: {'met' if log_s <= TARGET * export_s else 'missed'})"
                )


if __name__ == "__main__":
    main()
