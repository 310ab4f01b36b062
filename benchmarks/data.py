"""The tables benchmarks run on, and how to describe their shape next to every figure.

Two shapes, both 12 columns, made by deterministic SQL over `range()`:

- `customers`: the reference generator `benchmarks/make_data.py` (`python make_data.py
  OUT.duckdb N` writes table `customers`: BIGINT, INTEGER, BOOLEAN, DECIMAL(10,2),
  TIMESTAMP, DATE and text with commas, quotes, non-ASCII and, every 97th row, a newline).
  `$AZEXPORT_BENCH_MAKE_DATA` points at another copy of the generator.
- `bench`: the project's own mix (`benchmarks/formats.py` ROWS_SQL): NULLs every 5th/7th
  row, DOUBLE, TIMESTAMPTZ, XML markup characters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb

from benchmarks.formats import ROWS_SQL

MAKE_DATA = Path(__file__).with_name("make_data.py")
SHAPES = ("customers", "bench")


def make_data_script(explicit: str | None = None) -> Path:
    """The reference generator, or a clear error saying where it was looked for."""
    path = Path(explicit or os.environ.get("AZEXPORT_BENCH_MAKE_DATA") or MAKE_DATA)
    if not path.is_file():
        raise SystemExit(
            f"benchmarks: the data generator {path} does not exist. Pass its path with "
            "--make-data PATH or $AZEXPORT_BENCH_MAKE_DATA (make_data.py writes table "
            "`customers` into OUT.duckdb: `python make_data.py OUT.duckdb N`)."
        )
    return path


def run_make_data(out: Path, rows: int, script: Path | None = None) -> None:
    """`python make_data.py OUT N`; a failure stops the benchmark with the generator's error."""
    script = script or make_data_script()
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(rows)], capture_output=True, text=True
    )
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"benchmarks: {script} failed ({done.returncode}): {done.stderr.strip()}")


def create_table(con: duckdb.DuckDBPyConnection, table: str, shape: str, rows: int) -> None:
    """CREATE OR REPLACE `table` with `rows` rows of `shape` on `con`."""
    if shape == "bench":
        con.execute(f"CREATE OR REPLACE TABLE {table} AS {ROWS_SQL.format(start=0, stop=rows)}")
        return
    if shape != "customers":
        raise SystemExit(f"benchmarks: unknown table shape {shape!r}; known: {', '.join(SHAPES)}")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        generated = Path(tmp) / "customers.duckdb"
        run_make_data(generated, rows)
        con.execute(f"ATTACH '{generated}' AS generated (READ_ONLY)")
        try:
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM generated.customers")
        finally:
            con.execute("DETACH generated")


def describe(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """'N rows x 12 columns (id BIGINT, ...)': printed with every figure measured on it."""
    (rows,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    columns = con.execute(f"DESCRIBE {table}").fetchall()
    listed = ", ".join(f"{name} {kind}" for name, kind, *_ in columns)
    return f"{rows:,} rows x {len(columns)} columns ({listed})"
