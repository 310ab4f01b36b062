"""`python -m benchmarks [--rows N]` (or `make bench`): every benchmark, one after another.

Each prints ratios against a baseline measured in the same run on the same machine:
- export:  our export (format + upload) vs DuckDB COPY + one parallel upload, per format;
- formats: our writers vs DuckDB COPY to a local file (and peak RSS per format);
- delta:   compute_change_set vs a bare FULL OUTER JOIN on key + hash;
- upload:  upload_file vs a bare upload_blob(max_concurrency=4).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

SUITES = ("export", "formats", "delta", "upload")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(SUITES), help="e.g. export,delta")
    args = parser.parse_args()
    failed = 0
    for suite in args.only.split(","):
        extra = [] if suite == "upload" else ["--rows", str(args.rows)]
        print(f"\n=== benchmarks.{suite} {' '.join(extra)}", flush=True)
        failed += (
            subprocess.run([sys.executable, "-m", f"benchmarks.{suite}", *extra]).returncode != 0
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
