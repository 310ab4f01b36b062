"""Parquet files: DuckDB's own writer, plus a byte-exact split into parts when needed.

- Types are kept (integers, DOUBLE, DECIMAL(p,s), BOOLEAN, VARCHAR, DATE…). TIMESTAMP of any
  precision is taken as UTC and, like TIMESTAMPTZ, written as a Parquet TIMESTAMP with
  `isAdjustedToUTC=true` in microseconds (Arrow: `timestamp[us, tz=UTC]`), so every reader
  sees the same instant whatever its time zone.
- Values are exact or refused (`parquet_values`): HUGEINT/UHUGEINT become DECIMAL(38,0);
  infinite dates/timestamps and integers of more than 38 digits raise
  `UnrepresentableValueError` naming the column.
- A full disk raises `LocalDiskFullError` (naming the folder and `AZEXPORT_TEMP_DIR`) and the
  files written so far are removed.
- The file's key-value metadata holds `org.apache.spark.version` (`SPARK_CALENDAR_METADATA`):
  Spark 3.x and 4.x take a file that has it, without `org.apache.spark.legacyDateTime`, as
  written in the proleptic Gregorian calendar, which DuckDB's dates are. Without it Spark's
  default (`datetimeRebaseModeInRead=EXCEPTION`) refuses a whole file holding a date before
  1582-10-15 or a timestamp before 1900, and `LEGACY` would shift such dates by days.
- Row groups of 122,880 rows (DuckDB's default): large enough for good compression and
  column statistics, small enough to read one at a time.
- With `max_file_size`, DuckDB writes the whole result once to a local file. If that file is
  within the limit it is the only part. Otherwise DuckDB copies contiguous row ranges of it
  into parts (`file_row_number` filters skip the row groups outside each range, so this is
  linear). A compressed size is only known after writing, so a part that comes out too large
  is rewritten with fewer rows: the limit is hard, like for the text formats (only a single
  row larger than the limit is exempt). Parts are written by the same DuckDB writer, so they
  compress like the single file and keep every type as it has it (INTERVAL, TIME WITH TIME
  ZONE, ...), also when a column is itself named `file_row_number`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from azexport_assets import naming
from azexport_assets.formats.columns import Column
from azexport_assets.formats.errors import LocalDiskFullError, disk_full_errno
from azexport_assets.formats.parquet_values import parquet_select, unrepresentable_error
from azexport_assets.formats.spec import WrittenFile
from azexport_assets.sql_text import quote_literal

ROW_GROUP_ROWS = 122_880
# Spark reads a file's dates and timestamps as proleptic Gregorian (no rebase, no error on
# ancient values) when this key says a Spark version of 3.0 or later wrote it and
# `org.apache.spark.legacyDateTime` is absent (DataSourceUtils.datetimeRebaseSpec); 3.1+ also
# keeps INT96 timestamps unrebased, which azexport does not write. Other readers ignore it.
SPARK_CALENDAR_METADATA = {"org.apache.spark.version": "3.5.0"}
_DUCKDB_CODEC = {"zstd": "zstd", "snappy": "snappy", "gzip": "gzip", "none": "uncompressed"}
_FILL = 0.97  # aim a little under the limit so a rewrite is rarely needed


def _kv_metadata() -> str:
    """`SPARK_CALENDAR_METADATA` as a DuckDB struct literal for COPY's KV_METADATA."""
    items = ", ".join(
        f"{quote_literal(k)}: {quote_literal(v)}" for k, v in SPARK_CALENDAR_METADATA.items()
    )
    return "{" + items + "}"


def md5_of(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 (hex) of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _written(path: Path) -> WrittenFile:
    rows = pq.ParquetFile(path).metadata.num_rows
    return WrittenFile(path, rows, path.stat().st_size, md5_of(path))


def write_parquet(
    con: duckdb.DuckDBPyConnection,
    query: str,
    columns: list[Column],
    compression: str,
    out_dir: Path,
    max_bytes: int | None,
) -> list[WrittenFile]:
    """Write the query as one Parquet file, or as parts of at most `max_bytes` each.

    `out_dir` is empty on entry; if the disk fills up, every file written here is removed and
    `LocalDiskFullError` is raised.
    """
    out_dir = Path(out_dir)
    try:
        return _write_parquet(con, query, columns, compression, out_dir, max_bytes)
    except (OSError, duckdb.IOException) as error:
        code = disk_full_errno(error)
        if code is None:
            raise
        written = [p for p in out_dir.iterdir() if p.is_file()]
        full = LocalDiskFullError.for_files(out_dir, written, code)
        for path in written:
            path.unlink(missing_ok=True)  # free the space now; the folder is the caller's
        raise full from error


def _write_parquet(
    con: duckdb.DuckDBPyConnection,
    query: str,
    columns: list[Column],
    compression: str,
    out_dir: Path,
    max_bytes: int | None,
) -> list[WrittenFile]:
    whole = out_dir / f"export{naming.part_suffix(1)}.parquet"
    try:
        con.execute(
            f"COPY ({parquet_select(query, columns)}) TO {quote_literal(str(whole))} "
            f"(FORMAT parquet, COMPRESSION {_DUCKDB_CODEC[compression]}, "
            f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}, KV_METADATA {_kv_metadata()})"
        )
    except duckdb.Error as error:
        whole.unlink(missing_ok=True)
        if isinstance(error, duckdb.IOException):
            raise
        unrepresentable_error(error, columns)
    rows = pq.ParquetFile(whole).metadata.num_rows
    # Zero rows or one row cannot be split: such a file is the only part whatever its size.
    if max_bytes is None or whole.stat().st_size <= max_bytes or rows <= 1:
        return [_written(whole)]
    source = whole.rename(whole.with_name("whole.parquet.tmp"))
    try:
        numbered = not any(c.name.lower() == "file_row_number" for c in columns)
        return split_parquet_duckdb(source, out_dir, compression, max_bytes, numbered)
    finally:
        source.unlink()


def split_parquet_duckdb(
    source_path: Path, out_dir: Path, compression: str, max_bytes: int, numbered: bool = True
) -> list[WrittenFile]:
    """Split a Parquet file into parts of contiguous rows, each at most `max_bytes`, with
    DuckDB (a private in-memory connection: this is local file work only).

    `numbered`: select each part's rows by `file_row_number`, which skips the row groups
    outside the range. A column of that very name hides it; then a part is `LIMIT`/`OFFSET`
    of the scan (insertion order is kept: DuckDB's default), which reads the rows before the
    part again but keeps DuckDB's writer, and so every type exactly as the single file has it.
    """
    con = duckdb.connect()
    source = quote_literal(str(source_path))
    options = (
        f"FORMAT parquet, COMPRESSION {_DUCKDB_CODEC[compression]}, "
        f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}, KV_METADATA {_kv_metadata()}"
    )

    def rows_of(start: int, stop: int) -> str:
        if numbered:
            return (
                f"SELECT * EXCLUDE (file_row_number) "
                f"FROM read_parquet({source}, file_row_number = true) "
                f"WHERE file_row_number >= {start} AND file_row_number < {stop}"
            )
        return f"SELECT * FROM read_parquet({source}) LIMIT {stop - start} OFFSET {start}"

    def write_range(path: Path, start: int, stop: int) -> int:
        con.execute(f"COPY ({rows_of(start, stop)}) TO {quote_literal(str(path))} ({options})")
        return path.stat().st_size

    try:
        total = pq.ParquetFile(source_path).metadata.num_rows
        return _split(total, os.path.getsize(source_path), out_dir, max_bytes, write_range)
    finally:
        con.close()


def _split(
    total: int,
    source_bytes: int,
    out_dir: Path,
    max_bytes: int,
    write_range: Callable[[Path, int, int], int],
) -> list[WrittenFile]:
    """Cut rows 0..total-1 into consecutive parts of at most `max_bytes` each.

    The rows of a part are estimated from the bytes per row seen so far; a part that comes out
    too large is rewritten with proportionally fewer rows (rarely more than once).
    """
    bytes_per_row = source_bytes / max(total, 1)
    files: list[WrittenFile] = []
    start = 0
    while start < total:
        path = out_dir / f"export{naming.part_suffix(len(files) + 1)}.parquet"
        rows = min(total - start, max(1, int(max_bytes * _FILL / bytes_per_row)))
        size = write_range(path, start, start + rows)
        while size > max_bytes and rows > 1:
            rows = max(1, int(rows * max_bytes * _FILL / size))
            size = write_range(path, start, start + rows)
        files.append(WrittenFile(path, rows, size, md5_of(path)))
        bytes_per_row = size / rows
        start += rows
    return files
