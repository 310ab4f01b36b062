"""Delta table benchmark: `format: delta` exports vs their bounds, on one local Azurite.

- snapshot: `apply_change_set` of a full change set (DuckDB streams Arrow batches into
  delta-rs, which writes Parquet and commits) vs the Parquet bound: DuckDB `COPY` to a local
  zstd Parquet file + one `upload_blob(max_concurrency=4)`. Target <= 1.5x.
- merge: 1 % of the rows updated, then `apply_change_set` of that delta change set (read
  from the warehouse, MERGE on the key, the commit with its application transaction) vs
  `deltalake`'s own merge of the same change set, already in memory as an Arrow table, into
  an identical table. Target <= 1.3x.

Both sides run in this process, one after the other, on the same data (the benchmark table of
`benchmarks.formats`: 12 columns), with DuckDB's memory_limit at the project default.

    .venv/bin/python -m benchmarks.lakehouse --rows 5000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.formats import generate, peak_rss_mb

MEMORY_LIMIT = "512MB"
CONTAINER = "bench"


def _storage_options(account_url: str) -> dict[str, str]:
    from azexport_assets.demo.azurite import DEV_KEY
    from azexport_assets.storage import BlobStorage

    return BlobStorage(account_url, credential_type="key", secret=DEV_KEY).object_store_options()


def run(rows: int) -> list[dict]:
    from azure.storage.blob import BlobServiceClient
    from deltalake import DeltaTable, write_deltalake

    from azexport_assets.delta import (
        DeltaSpec,
        change_rows_query,
        commit_baseline,
        compute_change_set,
    )
    from azexport_assets.demo.azurite import start_azurite
    from azexport_assets.lakehouse import DeltaTarget, TableCare, apply_change_set

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as data:
        db = Path(data) / "bench.duckdb"
        generate(db, rows)
        azurite = start_azurite(location=Path(data) / "azurite")
        try:
            service = BlobServiceClient.from_connection_string(azurite.connection_string)
            service.create_container(CONTAINER)
            options = _storage_options(azurite.account_url)
            con = duckdb.connect(str(db))
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            columns = tuple((c, c) for c in con.sql("SELECT * FROM bench").columns)

            # Snapshot: ours vs COPY + upload.
            snap = DeltaSpec("bench_snap", "bench", ("id",), columns, "full_only", "snapshot")
            change = compute_change_set(con, snap, delta_id="snap-1")
            target = DeltaTarget.at(azurite.account_url, CONTAINER, "ours/snapshot", options)
            started = time.perf_counter()
            apply_change_set(con, snap, change, target, TableCare(), run_id="snap-1")
            ours_snapshot = time.perf_counter() - started
            started = time.perf_counter()
            local = Path(data) / "bound.parquet"
            con.execute(f"COPY bench TO '{local}' (FORMAT parquet, COMPRESSION zstd)")
            with open(local, "rb") as handle:
                service.get_blob_client(CONTAINER, "bound/bench.parquet").upload_blob(
                    handle, overwrite=True, max_concurrency=4
                )
            bound_snapshot = time.perf_counter() - started
            results.append(
                {
                    "case": "snapshot",
                    "rows": rows,
                    "ours_s": round(ours_snapshot, 2),
                    "reference": "DuckDB COPY parquet + upload",
                    "reference_s": round(bound_snapshot, 2),
                    "ratio": round(ours_snapshot / bound_snapshot, 2),
                    "target": "<= 1.5x",
                }
            )

            # Merge: a first full run, the reference table from the same rows, 1 % updated.
            upsert = DeltaSpec("bench_up", "bench", ("id",), columns, "full_then_delta", "upsert")
            ours = DeltaTarget.at(azurite.account_url, CONTAINER, "ours/merge", options)
            first = compute_change_set(con, upsert, delta_id="up-1")
            apply_change_set(con, upsert, first, ours, TableCare(), run_id="up-1")
            commit_baseline(con, "bench_up", "up-1")
            reference_uri = f"az://{CONTAINER}/reference/merge"
            write_deltalake(
                reference_uri,
                con.sql("SELECT * FROM bench").to_arrow_reader(65_536),
                mode="overwrite",
                storage_options=options,
            )
            con.execute("UPDATE bench SET email = 'changed-' || email WHERE id % 100 = 0")
            change = compute_change_set(con, upsert, delta_id="up-2")
            time.sleep(0.01)  # a later change set: a larger application transaction version
            started = time.perf_counter()
            commit = apply_change_set(con, upsert, change, ours, TableCare(), run_id="up-2")
            ours_merge = time.perf_counter() - started
            source = con.sql(change_rows_query(upsert, ("added", "updated"))).arrow()
            started = time.perf_counter()
            metrics = (
                DeltaTable(reference_uri, storage_options=options)
                .merge(source, "t.id = s.id", source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
            reference_merge = time.perf_counter() - started
            assert commit.rows_updated == metrics["num_target_rows_updated"] == change.updated
            results.append(
                {
                    "case": f"merge {change.updated:,} updated",
                    "rows": rows,
                    "ours_s": round(ours_merge, 2),
                    "reference": "deltalake merge of the same rows",
                    "reference_s": round(reference_merge, 2),
                    "ratio": round(ours_merge / reference_merge, 2),
                    "target": "<= 1.3x",
                }
            )
            con.close()
        finally:
            azurite.stop()
    for result in results:
        result["peak_rss_mib"] = round(peak_rss_mb())
    return results


def print_table(results: list[dict]) -> None:
    header = ["case", "rows", "ours_s", "reference", "reference_s", "ratio", "target"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print("| " + " | ".join(f"{r[h]:,}" if h == "rows" else str(r[h]) for h in header) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    results = run(args.rows)
    print_table(results)
    print(f"peak RSS of the process: {results[-1]['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
