"""Parquet files: DuckDB's own writer, plus a byte-exact split into parts when needed.

- Types are kept (integers, DOUBLE, DECIMAL(p,s), BOOLEAN, VARCHAR, DATE…). TIMESTAMP of any
  precision is taken as UTC and, like TIMESTAMPTZ, written as a Parquet TIMESTAMP with
  `isAdjustedToUTC=true` in microseconds (Arrow: `timestamp[us, tz=UTC]`), so every reader
  sees the same instant whatever its time zone.
- Row groups of 122,880 rows (DuckDB's default): large enough for good compression and
  column statistics, small enough to read one at a time.
- With `max_file_size`, DuckDB writes the whole result once (it is 2x faster than pyarrow).
  If that file is within the limit it is the only part. Otherwise it is split with pyarrow
  into parts that each hold a contiguous row range; a compressed size is only known after
  writing, so a part that comes out too large is rewritten with fewer rows. The limit is
  therefore hard, like for the text formats (only a single row larger than it is exempt).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from azexport_assets import naming
from azexport_assets.formats.columns import Column, quote_literal, strip_query, utc_timestamp
from azexport_assets.formats.spec import WrittenFile

ROW_GROUP_ROWS = 122_880
_DUCKDB_CODEC = {"zstd": "zstd", "snappy": "snappy", "gzip": "gzip", "none": "uncompressed"}
_ARROW_CODEC = {"zstd": "zstd", "snappy": "snappy", "gzip": "gzip", "none": "none"}
_FILL = 0.97  # aim a little under the limit so a rewrite is rarely needed


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


def select_sql(query: str, columns: list[Column]) -> str:
    """The query with naive timestamps turned into UTC TIMESTAMPTZ (microseconds)."""
    exprs = []
    for col in columns:
        if col.is_naive_timestamp:
            exprs.append(f"timezone('UTC', {utc_timestamp(col)}) AS {col.ref}")
        else:
            exprs.append(col.ref)
    return f"SELECT {', '.join(exprs)} FROM ({strip_query(query)}) AS _q"


def write_parquet(
    con: duckdb.DuckDBPyConnection,
    query: str,
    columns: list[Column],
    compression: str,
    out_dir: Path,
    max_bytes: int | None,
) -> list[WrittenFile]:
    """Write the query as one Parquet file, or as parts of at most `max_bytes` each."""
    whole = Path(out_dir) / f"export{naming.part_suffix(1)}.parquet"
    con.execute(
        f"COPY ({select_sql(query, columns)}) TO {quote_literal(str(whole))} "
        f"(FORMAT parquet, COMPRESSION {_DUCKDB_CODEC[compression]}, "
        f"ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )
    if max_bytes is None or whole.stat().st_size <= max_bytes:
        return [_written(whole)]
    source = whole.rename(whole.with_name("whole.parquet.tmp"))
    try:
        return split_parquet(source, Path(out_dir), compression, max_bytes)
    finally:
        source.unlink()


def _row_range(source: pq.ParquetFile, start: int, stop: int) -> Iterator[pa.RecordBatch]:
    """Rows start..stop-1 of the file, one row group at a time."""
    first = 0
    meta = source.metadata
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if first + n > start and first < stop:
            table = source.read_row_group(g)
            lo, hi = max(start - first, 0), min(stop - first, n)
            yield from table.slice(lo, hi - lo).to_batches()
        first += n
        if first >= stop:
            return


def _write_range(
    source: pq.ParquetFile, path: Path, start: int, stop: int, compression: str
) -> int:
    with pq.ParquetWriter(
        path, source.schema_arrow, compression=_ARROW_CODEC[compression]
    ) as writer:
        for batch in _row_range(source, start, stop):
            writer.write_batch(batch, row_group_size=ROW_GROUP_ROWS)
    return path.stat().st_size


def split_parquet(
    source_path: Path, out_dir: Path, compression: str, max_bytes: int
) -> list[WrittenFile]:
    """Split a Parquet file into parts of contiguous rows, each at most `max_bytes`."""
    source = pq.ParquetFile(source_path)
    total = source.metadata.num_rows
    bytes_per_row = os.path.getsize(source_path) / max(total, 1)
    files: list[WrittenFile] = []
    start = 0
    while start < total:
        path = out_dir / f"export{naming.part_suffix(len(files) + 1)}.parquet"
        rows = min(total - start, max(1, int(max_bytes * _FILL / bytes_per_row)))
        size = _write_range(source, path, start, start + rows, compression)
        while size > max_bytes and rows > 1:
            rows = max(1, int(rows * max_bytes * _FILL / size))
            size = _write_range(source, path, start, start + rows, compression)
        files.append(WrittenFile(path, rows, size, md5_of(path)))
        bytes_per_row = size / rows
        start += rows
    return files
