"""`python -m benchmarks [--rows N] [--only suites] [run options]` (or `make bench`).

Every benchmark, one after another; each prints ratios against a baseline measured in the
same run on the same machine:
- export:  our export (format + upload) vs DuckDB COPY + one parallel upload, per format;
- formats: our writers vs DuckDB COPY to a local file (and peak RSS per format);
- delta:   compute_change_set vs a bare FULL OUTER JOIN on key + hash;
- upload:  upload_file vs a bare upload_blob(max_concurrency=4);
- model_step: the model step rebuilt vs unchanged (kept, with its stored counts);
- lakehouse: a Delta table snapshot vs COPY parquet + upload, a 1% MERGE vs deltalake's own;
- synclog: what `sync_log: true` adds to the baseline commit, against the whole export;
- partitions: a snapshot in 365 daily partitions (sorted copy, and read per partition) vs
           the same export as one file;
- run:     the whole `dagster job execute` a user waits for vs COPY + upload, dlt, the
           code location's import time and a bare delta join (docs/benchmarks.md).

Options not listed here (e.g. --quick, --reps, --formats) go to the `run` suite.
Without --rows each suite uses its own default sizes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

SUITES = (
    "export",
    "formats",
    "delta",
    "upload",
    "model_step",
    "lakehouse",
    "synclog",
    "partitions",
    "run",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="rows per table (run: comma-separated sizes)")
    parser.add_argument("--only", default=",".join(SUITES), help="e.g. export,run")
    args, run_options = parser.parse_known_args()
    failed = 0
    for suite in args.only.split(","):
        extra = [] if suite == "upload" or not args.rows else ["--rows", args.rows]
        if suite == "run":
            extra += run_options
        print(f"\n=== benchmarks.{suite} {' '.join(extra)}", flush=True)
        failed += (
            subprocess.run([sys.executable, "-m", f"benchmarks.{suite}", *extra]).returncode != 0
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
