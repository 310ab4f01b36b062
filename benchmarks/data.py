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

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from benchmarks.formats import ROWS_SQL

if TYPE_CHECKING:
    from azexport_assets.storage import BlobStorage

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


def customers_warehouse(folder: Path, rows: int, script: Path, extra: str = "") -> Path:
    """A file warehouse in `folder` whose `models.customers` is make_data.py's table with
    `rows` rows (plus `extra`: more SELECT items over it, e.g. a partition column)."""
    data = folder / "customers.duckdb"
    run_make_data(data, rows, script)
    warehouse = folder / "warehouse.duckdb"
    con = duckdb.connect(str(warehouse))
    try:
        con.execute("CREATE SCHEMA models")
        con.execute(f"ATTACH '{data}' AS generated (READ_ONLY)")
        items = f"*, {extra}" if extra else "*"
        con.execute(f"CREATE TABLE models.customers AS SELECT {items} FROM generated.customers")
    finally:
        con.close()
    return warehouse


@contextlib.contextmanager
def local_blob_storage(folder: Path, container: str) -> Iterator[BlobStorage]:
    """A local Azurite storing under `folder`, with `container`, as the project's
    `BlobStorage` (account key); stopped on exit."""
    from azure.storage.blob import BlobServiceClient

    from azexport_assets.demo.azurite import DEV_KEY, start_azurite
    from azexport_assets.storage import BlobStorage

    azurite = start_azurite(location=folder / "azurite")
    try:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container(container)
        yield BlobStorage(azurite.account_url, credential_type="key", secret=DEV_KEY)
    finally:
        azurite.stop()
