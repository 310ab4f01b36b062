"""The dlt side: the same table into dlt's `filesystem` destination on the same Azurite.

Runs in its own venv (dlt is not a dependency of the project), as a fresh process:

    <dlt-venv>/bin/python benchmarks/run_dlt.py DB FORMAT BUCKET_URL DATASET PIPELINES_DIR

The resource yields Arrow record batches straight from a DuckDB cursor: dlt's fast path
(no per-row Python objects; the same as its sql_database source with backend="pyarrow").
dlt reaches Azurite through the environment the caller sets:
DESTINATION__FILESYSTEM__KWARGS (a JSON with an Azurite connection string) and
DESTINATION__FILESYSTEM__CREDENTIALS__AZURE_STORAGE_ACCOUNT_NAME / _KEY. The caller also sets
DATA_WRITER__DISABLE_COMPRESSION (dlt gzips csv/jsonl by default; ours and the bound do not)
and DATA_WRITER__COMPRESSION=zstd (dlt's Parquet default is snappy), so all sides write the
same kind of file.
Prints one JSON line: inner timings and dlt's own count of written files.
"""

from __future__ import annotations

import json
import sys
import time

BATCH_ROWS = 100_000


def main() -> None:
    db, fmt, bucket_url, dataset, pipelines_dir = sys.argv[1:6]
    started = time.perf_counter()
    import dlt
    import duckdb

    imported = time.perf_counter()
    con = duckdb.connect(db, read_only=True)

    @dlt.resource(name="bench", write_disposition="replace")
    def bench():
        yield from con.sql("SELECT * FROM bench").to_arrow_reader(BATCH_ROWS)

    pipeline = dlt.pipeline(
        pipeline_name=f"azexport_bench_{fmt}",
        destination=dlt.destinations.filesystem(bucket_url=bucket_url),
        dataset_name=dataset,
        pipelines_dir=pipelines_dir,
    )
    info = pipeline.run(bench(), loader_file_format=fmt)
    info.raise_on_failed_jobs()
    done = time.perf_counter()
    jobs = [job for package in info.load_packages for job in package.jobs["completed_jobs"]]
    print(
        json.dumps(
            {
                "import_s": imported - started,
                "pipeline_s": done - imported,
                "completed_jobs": len(jobs),
                "dlt_version": dlt.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
