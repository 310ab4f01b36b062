"""Stream rows rendered as text by DuckDB into a `PartWriter`.

A text format is described by a `RowText`: a SELECT that yields one VARCHAR per row (the row's
complete bytes, separators included), plus the head/tail of a file. The rows arrive as Arrow
string arrays, whose values are one contiguous UTF-8 buffer: each batch is written with one
slice of that buffer, without touching rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from azexport_assets.formats.sink import Compression, PartObserver, PartWriter
from azexport_assets.formats.spec import WrittenFile

# Rows per Arrow batch: large enough that per-batch Python work is negligible, small enough
# that a batch of wide rows stays a few tens of MB.
BATCH_ROWS = 32_768


@dataclass(frozen=True)
class RowText:
    """How a text format renders: `sql` yields column `line` (and `removed` if counted)."""

    sql: str
    head: bytes
    tail: bytes
    lead: int = 0  # bytes to drop from the first row of each part (see PartWriter)
    counts_removed: bool = False  # `sql` also yields `removed`: characters dropped per row


@dataclass(frozen=True)
class TextOutput:
    files: list[WrittenFile]
    removed: int


def _offsets_view(array: pa.Array) -> memoryview:
    """The array's offsets buffer as a sequence of ints (int32 or int64 offsets)."""
    code = "q" if pa.types.is_large_string(array.type) else "i"
    return memoryview(array.buffers()[1]).cast(code)


def write_text(
    con: duckdb.DuckDBPyConnection,
    rows: RowText,
    out_dir: Path,
    extension: str,
    compression: Compression,
    max_bytes: int | None,
    observer: PartObserver | None = None,
) -> TextOutput:
    """Run `rows.sql` and write its lines to one file, or parts of at most `max_bytes`."""
    writer = PartWriter(
        out_dir,
        extension,
        rows.head,
        rows.tail,
        lead=rows.lead,
        compression=compression,
        max_bytes=max_bytes,
        observer=observer,
    )
    removed = 0
    # The stream runs on the caller's connection (a cursor would not see its TEMP tables);
    # the reader is always closed so the connection is free again when we return.
    reader = con.sql(rows.sql).to_arrow_reader(BATCH_ROWS)
    try:
        for batch in reader:
            if not batch.num_rows:
                continue
            lines = batch.column(0)
            if lines.null_count:
                raise ValueError("internal error: a rendered row is NULL")
            if lines.type not in (pa.string(), pa.large_string()):
                lines = lines.cast(pa.large_string())
            data = memoryview(lines.buffers()[2]) if lines.buffers()[2] else memoryview(b"")
            writer.write_rows(data, _offsets_view(lines), lines.offset, len(lines))
            if rows.counts_removed:
                removed += pc.sum(batch.column(1)).as_py() or 0
        files = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    return TextOutput(files, removed)
