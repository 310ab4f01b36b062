"""The bound: what the same export costs with DuckDB's own writer and one SDK upload.

Run as a fresh process by `benchmarks.run` (its whole wall time is the figure):

    python -m benchmarks.run_bound copy  DB FORMAT WORKDIR ACCOUNT_URL SAS BLOB
    python -m benchmarks.run_bound delta DB BASELINE_DB WORKDIR ACCOUNT_URL SAS BLOB

- copy:  `COPY (SELECT * FROM bench) TO <local file>` (csv with header / json lines /
         parquet zstd), then one `BlobClient.upload_blob(max_concurrency=4)`.
- delta: a bare FULL OUTER JOIN on key + hash of the other columns (baseline copy vs current
         source), the changed rows COPY'd to CSV, then one upload: the least a delta export
         must do. Upsert semantics: added and updated rows are sent, removed ones are not.

Prints one JSON line (inner timings, bytes, rows).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb
from azure.storage.blob import BlobClient

from benchmarks.run_project import CONTAINER

COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true",
    "jsonl": "FORMAT json",  # newline-delimited: DuckDB's default json style
    "parquet": "FORMAT parquet, COMPRESSION zstd",
}


def upload(path: Path, account_url: str, sas: str, blob: str) -> None:
    client = BlobClient(account_url, CONTAINER, blob, credential=sas)
    with path.open("rb") as handle:
        client.upload_blob(handle, overwrite=True, max_concurrency=4)


def copy(db: str, fmt: str, workdir: str, account_url: str, sas: str, blob: str) -> dict:
    started = time.perf_counter()
    path = Path(workdir) / f"bound.{fmt}"
    con = duckdb.connect(db, read_only=True)
    con.execute(f"COPY (SELECT * FROM bench) TO '{path}' ({COPY_OPTIONS[fmt]})")
    con.close()
    written = time.perf_counter()
    upload(path, account_url, sas, blob)
    done = time.perf_counter()
    return {
        "write_s": written - started,
        "upload_s": done - written,
        "bytes": path.stat().st_size,
    }


def delta(db: str, baseline: str, workdir: str, account_url: str, sas: str, blob: str) -> dict:
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"ATTACH '{db}' AS cur (READ_ONLY)")
    con.execute(f"ATTACH '{baseline}' AS base (READ_ONLY)")
    columns = [row[0] for row in con.execute("DESCRIBE cur.bench").fetchall()]
    others = ", ".join(f'"{c}"' for c in columns if c != "id")
    con.execute(
        f"""
        CREATE TEMP TABLE changed AS
        SELECT CASE WHEN b.id IS NULL THEN 'added' WHEN c.id IS NULL THEN 'removed'
                    ELSE 'updated' END AS kind,
               c.* EXCLUDE (h)
        FROM (SELECT *, hash({others}) AS h FROM cur.bench) AS c
        FULL OUTER JOIN (SELECT id, hash({others}) AS h FROM base.bench) AS b ON c.id = b.id
        WHERE c.h IS DISTINCT FROM b.h
        """
    )
    joined = time.perf_counter()
    path = Path(workdir) / "bound_delta.csv"
    con.execute(
        f"COPY (SELECT * EXCLUDE (kind) FROM changed WHERE kind <> 'removed') "
        f"TO '{path}' (FORMAT csv, HEADER true)"
    )
    kinds = dict(con.execute("SELECT kind, count(*) FROM changed GROUP BY kind").fetchall())
    con.close()
    written = time.perf_counter()
    upload(path, account_url, sas, blob)
    done = time.perf_counter()
    return {
        "join_s": joined - started,
        "write_s": written - joined,
        "upload_s": done - written,
        "bytes": path.stat().st_size,
        "kinds": kinds,
        "rows": kinds.get("added", 0) + kinds.get("updated", 0),
    }


def main() -> None:
    command, *args = sys.argv[1:]
    result = copy(*args) if command == "copy" else delta(*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
