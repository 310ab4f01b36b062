"""The format layer: rows of a DuckDB query -> local CSV / JSON / XML / Parquet files.

    spec = FormatSpec.from_activation(activation)
    result = write_export(con, "SELECT ...", spec, out_dir, max_file_size=activation.max_file_size)
    for f in result.files: upload(f.path, content_type=spec.content_type, md5=f.md5_hex)

Text formats are rendered row by row *inside DuckDB* (vectorised SQL) and streamed to disk as
Arrow buffers; Parquet is written by DuckDB's COPY. Python memory does not grow with rows.
See `docs/formats.md` for every byte-level decision.

Two failures are raised while writing, i.e. before anything is uploaded:
`UnrepresentableValueError` (a value the format cannot hold exactly, e.g. an infinite DATE in
Parquet; names the column) and `LocalDiskFullError` (an `OSError`: the work folder's disk is
full; names the folder and the `AZEXPORT_TEMP_DIR` environment variable that moves it).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from azexport_assets.formats.columns import Column, describe
from azexport_assets.formats.csv import csv_rows
from azexport_assets.formats.errors import (
    TEMP_DIR_VARIABLE,
    LocalDiskFullError,
    UnrepresentableValueError,
)
from azexport_assets.formats.json import json_rows
from azexport_assets.formats.parquet import write_parquet
from azexport_assets.formats.sink import PartObserver
from azexport_assets.formats.spec import FormatSpec, WriteResult, WrittenFile
from azexport_assets.formats.text import RowText, write_text
from azexport_assets.formats.xml import xml_rows
from azexport_assets.formats.xml_names import element_names

__all__ = [
    "TEMP_DIR_VARIABLE",
    "FormatSpec",
    "LocalDiskFullError",
    "PartObserver",
    "UnrepresentableValueError",
    "WriteResult",
    "WrittenFile",
    "element_names",
    "write_export",
]


def _text_rows(query: str, columns: list[Column], spec: FormatSpec) -> tuple[RowText, list[str]]:
    if spec.format == "csv":
        return csv_rows(query, columns, spec.csv_delimiter, spec.csv_header), []
    if spec.format == "json":
        return json_rows(query, columns, spec.json_style), []
    elements = element_names([c.name for c in columns])
    return xml_rows(query, columns, elements, spec.xml_root, spec.xml_row), elements


def write_export(
    con: duckdb.DuckDBPyConnection,
    query: str,
    spec: FormatSpec,
    out_dir: Path,
    max_file_size: int | None = None,
    observer: PartObserver | None = None,
) -> WriteResult:
    """Run `query` (a SELECT whose columns are already the destination names, in export order,
    possibly with spaces) and write it to files under out_dir (which exists and is empty):
    one file, or parts when max_file_size (bytes, as uploaded i.e. after compression) is set
    and exceeded. Each part is a complete valid file of its format; no part is larger than
    max_file_size unless a single row is. Zero rows -> one valid empty file (CSV header only /
    `[]` / XML root with no rows / Parquet with schema, no rows). Caller decides on_empty.

    `observer` hears about each text part as it is opened, grows and is closed (Parquet files
    are written by DuckDB in one go: it hears nothing, the caller uploads them afterwards).

    The query runs on `con` itself (so it may use the connection's TEMP tables); the
    connection is free again when this returns or raises.

    Raises `UnrepresentableValueError` (Parquet: a value that cannot be written exactly) and
    `LocalDiskFullError` (out_dir's disk is full; the files written are removed first).
    """
    out_dir = Path(out_dir)
    columns = describe(con, query)
    column_types = [(c.name, c.type_text) for c in columns]
    if spec.format == "parquet":
        files = write_parquet(con, query, columns, spec.parquet_compression, out_dir, max_file_size)
        return WriteResult(files=files, columns=column_types)
    rows, elements = _text_rows(query, columns, spec)
    output = write_text(
        con, rows, out_dir, spec.extension, spec.compression, max_file_size, observer
    )
    renamed = {c.name: e for c, e in zip(columns, elements, strict=False) if c.name != e}
    return WriteResult(
        files=output.files,
        columns=column_types,
        xml_removed_chars=output.removed,
        xml_element_names=renamed,
    )
