"""Declared sources on a warehouse connection: DuckDB files attached read-only, globs as views,
database schemas (Postgres, the warehouse's lake) attached read-only (`dbsources`).

Both backends attach sources the same way, before the connection is sandboxed.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from azexport_assets.sql_text import quote_ident, quote_literal
from azexport_assets.warehouse.base import SourceEncodingError, WarehouseConfigError
from azexport_assets.warehouse.confinement import check_confined
from azexport_assets.warehouse.dbsources import attach_database_source
from azexport_assets.warehouse.remote import attach_remote, is_remote

if TYPE_CHECKING:  # the configuration layer may depend on Dagster; the warehouse does not
    from azexport_assets.config import SourceConfig


def resolve_path(location: str, base: Path) -> str:
    """Expand ~ and $VARS; relative paths are relative to the project root. A URL in Azure
    (az://, abfss://) is returned as written."""
    if is_remote(location):
        return location
    expanded = os.path.expanduser(os.path.expandvars(location))
    return expanded if os.path.isabs(expanded) else str(base / expanded)


def source_files(source: SourceConfig, base: Path) -> list[str]:
    """The files a Parquet/CSV source's glob matches now, sorted (`**` recurses); none for a
    source in Azure (its blobs are listed by `remote.list_remote` when a step reads them) or a
    database source."""
    if source.is_database or is_remote(source.location):
        return []
    pattern = resolve_path(source.location, base)
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def reader_options(source: SourceConfig) -> str:
    """The reader's options after its file list. Parquet files are matched by column name
    (`union_by_name`): by default DuckDB takes the first file's schema, so a column that only
    later files have was dropped without a word, and a column missing from a later file failed
    the read. A CSV source's encoding (DuckDB's own default is UTF-8)."""
    if source.kind == "parquet":
        return ", union_by_name = true"
    if source.kind == "csv" and source.encoding:
        return f", encoding = {quote_literal(source.encoding)}"
    return ""


NO_QUOTE = ("", "(empty)")  # how sniff_csv says "no quote character"


def quote_for_glob(sniffed_quote: str, file_count: int) -> bool:
    """Whether a CSV glob is read with `"` as its quote although its first file has none: the
    sniffer looks at the first file only, and without a quote character DuckDB keeps a later
    file's RFC 4180 quoting (`"Smith"`, `"O""Neil"`) as part of the values."""
    return file_count > 1 and sniffed_quote in NO_QUOTE


def _csv_quote_option(
    con: duckdb.DuckDBPyConnection, source: SourceConfig, files: list[str] | None
) -> str:
    if source.kind != "csv" or not files or len(files) < 2:
        return ""
    encoding = f", encoding = {quote_literal(source.encoding)}" if source.encoding else ""
    try:
        ((quote,),) = con.execute(
            f"SELECT Quote FROM sniff_csv({quote_literal(files[0])}{encoding})"
        ).fetchall()
    except duckdb.Error:
        return ""  # the read itself reports what is wrong with the file
    return ", quote = '\"', escape = '\"'" if quote_for_glob(str(quote), len(files)) else ""


def create_file_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    listed: str,
    files: list[str] | None = None,
) -> None:
    """The temp view `name` over `listed` (a DuckDB list of files, or a glob; `files` when
    local, for the quote a CSV glob is read with). A CSV file that is not text in the
    source's encoding is named with the fix (DuckDB's own advice, a reader option, is not
    something a source can set)."""
    reader = "read_parquet" if source.kind == "parquet" else "read_csv"
    options = reader_options(source) + _csv_quote_option(con, source, files)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS "
            f"SELECT * FROM {reader}({listed}{options})"
        )
    except duckdb.InvalidInputException as error:
        file = _file_not_in_encoding(error)
        if source.kind != "csv" or file is None:
            raise
        raise SourceEncodingError(name, source.location, file or "a file") from None


def _file_not_in_encoding(error: BaseException) -> str | None:
    """The file DuckDB's CSV reader found not to be text in its encoding ('' when it names
    none), or None for any other error. Read through an Arrow stream (an export), DuckDB's
    error arrives as an OSError with the same text."""
    text = str(error)
    if not isinstance(error, (duckdb.InvalidInputException, OSError)) or (
        "not utf-8 encoded" not in text.lower()
    ):
        return None
    file = re.search(r"^\s*file = (.+)$", text, re.MULTILINE)
    return file.group(1).strip() if file else ""


def source_encoding_error(
    error: BaseException, sources: Mapping[str, SourceConfig], base: Path
) -> SourceEncodingError | None:
    """The error of a query that read a CSV file not in its source's encoding, as the same
    one line as at load, naming the source and the file; None for any other error. Creating
    the view over a glob reads only the start of its files (DuckDB's sniffing sample), so a
    file whose later rows are not in the encoding is found this way, while rows are read
    (DuckDB's own advice, reader options, would not help)."""
    file = _file_not_in_encoding(error)
    if file is None:
        return None
    csv_sources = {n: s for n, s in sources.items() if s.kind == "csv" and not s.is_database}
    if file:
        named = os.path.realpath(file)
        for name, source in csv_sources.items():
            if named in {os.path.realpath(f) for f in source_files(source, base)}:
                return SourceEncodingError(name, source.location, file)
    if len(csv_sources) == 1:  # the file is not named (or no longer matches): the only one
        ((name, source),) = csv_sources.items()
        return SourceEncodingError(name, source.location, file or "a file")
    return None


def attach_source(
    con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig, base: Path
) -> list[str]:
    """Make one source visible under its name: a DuckDB file read-only, a glob as a temp view
    over the files it matches now, a database schema read-only. Returns the files the sandbox
    must keep readable (none for a database: its connection is open before the lock-down)."""
    if source.is_database:
        attach_database_source(con, name, source)
        return []
    if is_remote(source.location):
        return attach_remote(con, name, source, create_file_view)
    location = resolve_path(source.location, base)
    if source.kind == "duckdb":
        check_confined(name, source, location, base)  # again at run time: files can change
        if not os.path.exists(location):
            raise WarehouseConfigError(
                f"source '{name}': the DuckDB file {location} does not exist; create it, or "
                "fix the source's path in its defs.yaml. Nothing was read"
            )
        con.execute(f"ATTACH {quote_literal(location)} AS {quote_ident(name)} (READ_ONLY)")
        return [location]
    # The view lists the files rather than the glob: the sandbox grants exactly these files,
    # and a glob would need the whole folder.
    files = source_files(source, base)
    if not files:
        raise WarehouseConfigError(
            f"source '{name}': no file matches {location}; add the {source.kind.upper()} "
            "files, or fix the source's path in its defs.yaml. Nothing was read"
        )
    check_confined(name, source, location, base, files)
    listed = f"[{', '.join(quote_literal(f) for f in files)}]"
    create_file_view(con, name, source, listed, files)
    return files


def attach_sources(
    con: duckdb.DuckDBPyConnection, sources: Mapping[str, SourceConfig], base: Path
) -> list[str]:
    """Attach every source (see `attach_source`); returns the files they read."""
    files: list[str] = []
    for name, source in sources.items():
        files += attach_source(con, name, source, base)
    return files
