"""End-to-end export benchmark: our export (format + upload) vs DuckDB COPY + one upload.

For each format, in one run on the same rows and the same local Azurite:
- ours:     `write_export` (our exact formatting, streamed) + `upload_file` of each file
            (staged blocks, MD5-verified) — exactly what `activations/<a>/export` does;
- baseline: DuckDB `COPY ... TO` a local file + one `BlobClient.upload_blob(max_concurrency=4)`,
            the pair the brief names as the bar to beat (dlt ~2.4x and pandas ~5x of it).
XML has no DuckDB writer: its reference is our own CSV export (target <= 2x).
Every measurement runs in a fresh subprocess, so its peak RSS is its own.

    .venv/bin/python -m benchmarks.export --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.formats import generate, peak_rss_mb

# DuckDB caches scanned blocks up to its memory_limit (80% of RAM by default), which would
# make every process's RSS grow with the table; both sides get the same cap
# (AZEXPORT_DUCKDB_MEMORY_LIMIT does the same for real exports).
MEMORY_LIMIT = "256MB"

FORMATS = ("csv", "json", "xml", "parquet")
COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true",
    "json": "FORMAT json, ARRAY true",
    "parquet": "FORMAT parquet, COMPRESSION zstd",
}
QUERY = "SELECT * FROM bench"
CONTAINER = "bench"


def measure(kind: str, fmt: str, db: Path, account_url: str, workdir: Path) -> dict:
    """One measurement in this (fresh) process."""
    from azure.storage.blob import BlobServiceClient

    from azexport_assets.demo.azurite import DEV_ACCOUNT, DEV_KEY
    from azexport_assets.formats import FormatSpec, write_export
    from azexport_assets.storage import BlobStorage, upload_file

    con = duckdb.connect(str(db), read_only=True)
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    started = time.perf_counter()
    if kind == "ours":
        spec = FormatSpec(fmt)
        result = write_export(con, QUERY, spec, workdir)
        written = time.perf_counter()
        storage = BlobStorage(account_url, credential_type="key", secret=DEV_KEY)
        with storage.container(CONTAINER) as container:
            for index, local in enumerate(result.files):
                upload_file(
                    container,
                    f"ours/{fmt}/{index}{spec.extension}",
                    local.path,
                    content_type=spec.content_type,
                    md5_hex=local.md5_hex,
                )
        size = sum(f.bytes for f in result.files)
    else:
        path = workdir / f"baseline.{fmt}"
        con.execute(f"COPY ({QUERY}) TO '{path}' ({COPY_OPTIONS[fmt]})")
        written = time.perf_counter()
        service = BlobServiceClient(
            account_url, credential={"account_name": DEV_ACCOUNT, "account_key": DEV_KEY}
        )
        with open(path, "rb") as handle:
            service.get_blob_client(CONTAINER, f"baseline/{fmt}").upload_blob(
                handle, overwrite=True, max_concurrency=4
            )
        size = path.stat().st_size
    done = time.perf_counter()
    con.close()
    return {
        "write_s": round(written - started, 2),
        "upload_s": round(done - written, 2),
        "total_s": round(done - started, 2),
        "bytes": size,
        "peak_rss_mib": round(peak_rss_mb()),
    }


def _measure_in_subprocess(kind: str, fmt: str, db: Path, account_url: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as workdir:
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.export", "--measure", kind, "--format", fmt]
            + ["--db", str(db), "--account-url", account_url, "--workdir", workdir],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return json.loads(output.strip().splitlines()[-1])


def run(rows: int, formats: tuple[str, ...] = FORMATS) -> list[dict]:
    from azure.storage.blob import BlobServiceClient

    from azexport_assets.demo.azurite import start_azurite

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as data:
        db = Path(data) / "bench.duckdb"
        generate(db, rows)
        azurite = start_azurite(location=Path(data) / "azurite")
        try:
            BlobServiceClient.from_connection_string(azurite.connection_string).create_container(
                CONTAINER
            )
            url = azurite.account_url
            ours = {fmt: _measure_in_subprocess("ours", fmt, db, url) for fmt in formats}
            for fmt in formats:
                if fmt in COPY_OPTIONS:
                    base = _measure_in_subprocess("baseline", fmt, db, url)
                    reference = f"COPY {fmt} + upload"
                else:
                    base, reference = ours["csv"], "our csv export"
                results.append(
                    {
                        "format": fmt,
                        "rows": rows,
                        "ours_s": ours[fmt]["total_s"],
                        "ours_write_s": ours[fmt]["write_s"],
                        "ours_upload_s": ours[fmt]["upload_s"],
                        "reference": reference,
                        "reference_s": base["total_s"],
                        "ratio": round(ours[fmt]["total_s"] / base["total_s"], 2),
                        "ours_mib": round(ours[fmt]["bytes"] / 2**20, 1),
                        "peak_rss_mib": ours[fmt]["peak_rss_mib"],
                        "reference_rss_mib": base["peak_rss_mib"],
                    }
                )
        finally:
            azurite.stop()
    return results


def print_table(results: list[dict]) -> None:
    header = (
        f"{'format':<8} {'rows':>11} {'ours s':>8} {'(write+upload)':>15} "
        f"{'reference':<20} {'ref s':>7} {'ratio':>6} {'MiB':>8} {'RSS MiB':>8} {'ref RSS':>8}"
    )
    print(header)
    for r in results:
        split = f"{r['ours_write_s']}+{r['ours_upload_s']}"
        print(
            f"{r['format']:<8} {r['rows']:>11,} {r['ours_s']:>8} {split:>15} "
            f"{r['reference']:<20} {r['reference_s']:>7} {r['ratio']:>6} {r['ours_mib']:>8} "
            f"{r['peak_rss_mib']:>8} {r['reference_rss_mib']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(FORMATS))
    parser.add_argument("--measure", choices=["ours", "baseline"])
    parser.add_argument("--format")
    parser.add_argument("--db")
    parser.add_argument("--account-url")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.measure:
        result = measure(
            args.measure, args.format, Path(args.db), args.account_url, Path(args.workdir)
        )
        print(json.dumps(result))
        return
    print_table(run(args.rows, tuple(args.only.split(","))))


if __name__ == "__main__":
    main()
