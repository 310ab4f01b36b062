"""Format benchmark: `write_export` vs DuckDB's own `COPY ... TO` of the same rows.

A DuckDB file with N rows x 12 mixed columns (BIGINT, INTEGER, VARCHAR with commas/quotes/
markup and NULLs, DECIMAL(18,2), DOUBLE, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ) is generated
once; then every measurement runs in a fresh subprocess that opens it read-only, so each peak
RSS (VmHWM, or `resource.getrusage` where /proc is missing) belongs to one measurement only.
DuckDB's memory_limit is capped (default 256MB, `--memory-limit`): DuckDB keeps scanned
blocks cached up to its limit (80% of RAM by default), which would make any writer's RSS
grow with the table. Baselines:

- csv / json / jsonl / parquet / csv.gz: DuckDB `COPY` of the table to a local file of that
  format (DuckDB's own defaults: its timestamps and decimals differ slightly from ours).
- xml: DuckDB has no XML writer; the reference is our own CSV time (target: <= 2x).
- "split" rows: the same format with `max_file_size` forcing parts, against the same COPY.

    .venv/bin/python benchmarks/formats.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/formats.py --rows 10000000
    .venv/bin/python benchmarks/formats.py --only csv,xml   # a subset

`run(rows)` returns the rows of the table as dicts (importable by other benchmarks).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from azexport_assets.formats import FormatSpec, write_export

MB = 1_000_000
MEMORY_LIMIT = "256MB"  # the warehouse's cap; see run()
QUERY = "SELECT * FROM bench"  # no ORDER BY: a sort would dominate time and memory

# name -> (our FormatSpec, max_file_size, baseline COPY options or None, reference name)
CASES: dict[str, tuple[FormatSpec, int | None, str | None, str | None]] = {
    "csv": (FormatSpec("csv"), None, "FORMAT csv, HEADER true", None),
    "json": (FormatSpec("json"), None, "FORMAT json, ARRAY true", None),
    "jsonl": (FormatSpec("json", json_style="lines"), None, "FORMAT json", None),
    "xml": (FormatSpec("xml"), None, None, "csv"),
    "parquet": (FormatSpec("parquet"), None, "FORMAT parquet, COMPRESSION zstd", None),
    "csv.gz": (FormatSpec("csv", compression="gzip"), None, "FORMAT csv, COMPRESSION gzip", None),
    "csv split": (FormatSpec("csv"), 40 * MB, "FORMAT csv, HEADER true", None),
    "xml.zst split": (FormatSpec("xml", compression="zstd"), 10 * MB, None, "csv"),
    "parquet split": (FormatSpec("parquet"), 10 * MB, "FORMAT parquet, COMPRESSION zstd", None),
}
_SUFFIX = {"csv": ".csv", "json": ".json", "jsonl": ".jsonl", "parquet": ".parquet"}


# The benchmark table (every suite uses it): ints, VARCHAR with commas, quotes, markup and
# NULLs, DECIMAL, DOUBLE, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ.
ROWS_SQL = """
SELECT
    i::BIGINT AS id,
    (i % 100000)::INTEGER AS customer_id,
    'Customer ' || i AS name,
    CASE WHEN i % 7 = 0 THEN NULL
         ELSE 'City, "' || (i % 997) || '" <' || (i % 13) || '> & co' END AS city,
    ((i % 1000000) * 1.25)::DECIMAL(18, 2) AS amount,
    (hash(i) % 1000000) / 1000.0 AS score,
    i % 3 = 0 AS active,
    DATE '2000-01-01' + (i % 9000)::INTEGER AS signup,
    TIMESTAMP '2020-01-01' + to_microseconds(i * 1234567) AS updated_at,
    TIMESTAMPTZ '2021-06-01 00:00:00+00' + to_microseconds(i * 7654321) AS seen_at,
    'user' || i || '@example.com' AS email,
    CASE WHEN i % 5 = 0 THEN NULL ELSE md5(i::VARCHAR) END AS note
FROM range({start}, {stop}) AS r(i)
"""


def generate(path: Path, rows: int) -> None:
    """The benchmark table: deterministic values, ~12 columns of the types exports carry."""
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE bench AS {ROWS_SQL.format(start=0, stop=rows)}")
    con.close()


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux keeps `getrusage`'s ru_maxrss across fork+exec, so a
    child would report its parent's peak if larger; VmHWM belongs to this process only."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _cpu_seconds() -> float:
    """User + system CPU of this process, DuckDB's threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(db: str, case: str, which: str, out: str, memory_limit: str) -> dict:
    """One measurement, in this (fresh) process."""
    spec, limit, copy_options, _ = CASES[case]
    con = duckdb.connect(db, read_only=True)
    if memory_limit != "none":
        con.execute(f"SET memory_limit = '{memory_limit}'")
    out_dir = Path(out)
    cpu = _cpu_seconds()
    started = time.perf_counter()
    if which == "ours":
        result = write_export(con, QUERY, spec, out_dir, max_file_size=limit)
        files, size = len(result.files), result.bytes
    else:
        target = out_dir / f"baseline{_SUFFIX.get(spec.format, '.out')}"
        con.execute(f"COPY ({QUERY}) TO '{target}' ({copy_options})")
        files, size = 1, target.stat().st_size
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    return {"seconds": seconds, "cpu": cpu, "bytes": size, "files": files, "rss_mb": peak_rss_mb()}


def _measure(db: Path, case: str, which: str, memory_limit: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix="azexport-fmt-"))
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(db), case, which, str(out), memory_limit],
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run(
    rows: int = 1_000_000, only: list[str] | None = None, memory_limit: str = MEMORY_LIMIT
) -> list[dict]:
    """Measure every case (or `only` those) on `rows` rows; return one dict per case.

    `memory_limit` caps DuckDB's buffer pool in each measurement ("none": DuckDB's default,
    80% of RAM); without a cap DuckDB keeps the blocks of the table it scanned cached, so peak
    RSS grows with the table for any writer, ours and COPY alike.
    """
    workdir = Path(tempfile.mkdtemp(prefix="azexport-fmt-bench-"))
    db = workdir / "bench.duckdb"
    try:
        # In a subprocess, so this process stays small: children inherit its RSS at fork.
        subprocess.run([sys.executable, __file__, "--generate", str(db), str(rows)], check=True)
        results: list[dict] = []
        ours_by_case: dict[str, dict] = {}
        for case in only or list(CASES):
            _, limit, copy_options, reference = CASES[case]
            ours = _measure(db, case, "ours", memory_limit)
            ours_by_case[case] = ours
            if copy_options:
                base, base_name = _measure(db, case, "copy", memory_limit), "DuckDB COPY"
            else:
                ref = ours_by_case.get(reference) or _measure(db, reference, "ours", memory_limit)
                base, base_name = ref, f"our {reference}"
            results.append(
                {
                    "case": case,
                    "rows": rows,
                    "max_file_size": limit,
                    "files": ours["files"],
                    "ours_s": round(ours["seconds"], 2),
                    "baseline": base_name,
                    "baseline_s": round(base["seconds"], 2),
                    "ratio": round(ours["seconds"] / base["seconds"], 2),
                    "ours_cpu_s": round(ours["cpu"], 2),
                    "baseline_cpu_s": round(base["cpu"], 2),
                    "cpu_ratio": round(ours["cpu"] / base["cpu"], 2),
                    "ours_mb": round(ours["bytes"] / MB, 1),
                    "baseline_mb": round(base["bytes"] / MB, 1),
                    "ours_rss_mb": round(ours["rss_mb"]),
                    "baseline_rss_mb": round(base["rss_mb"]),
                }
            )
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def format_table(results: list[dict]) -> str:
    """A Markdown table of `run`'s results."""
    lines = [
        "| case | rows | files | baseline | ours s | baseline s | ratio | ours CPU s "
        "| baseline CPU s | CPU ratio | ours MB | baseline MB | ours peak RSS MB "
        "| baseline peak RSS MB |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['rows']:,} | {r['files']} | {r['baseline']} | {r['ours_s']} "
            f"| {r['baseline_s']} | {r['ratio']} | {r['ours_cpu_s']} | {r['baseline_cpu_s']} "
            f"| {r['cpu_ratio']} | {r['ours_mb']} | {r['baseline_mb']} "
            f"| {r['ours_rss_mb']} | {r['baseline_rss_mb']} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        generate(Path(sys.argv[2]), int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(*sys.argv[2:7])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", help="comma-separated cases, e.g. csv,xml")
    parser.add_argument(
        "--memory-limit", default=MEMORY_LIMIT, help="DuckDB memory_limit, or 'none'"
    )
    args = parser.parse_args()
    only = args.only.split(",") if args.only else None
    print(
        f"format benchmark: {args.rows:,} rows, {os.cpu_count()} CPUs, "
        f"DuckDB memory_limit {args.memory_limit}",
        flush=True,
    )
    print(format_table(run(args.rows, only, args.memory_limit)))


if __name__ == "__main__":
    main()
