"""What DuckDB's CSV sniffer decided for a `csv:` source, so a step can say it out loud.

A `csv:` source is a view over `read_csv([files])` with DuckDB's automatic detection: the
delimiter, quote, escape, header, the column types, and how many lines to skip before the
header. Skipped lines are not read, and the first file's dialect (skip count included) is
applied to every file of the glob, so a preamble line, or a file whose first rows have fewer
columns than the rest, can silently drop rows. `sniff_csv_sources` runs `sniff_csv()` once on
the first file of each CSV source (a sample, not the whole file) and returns the facts; the
Dagster layer logs them and warns, and `check_same_header` fails a step whose glob holds a file
that does not start with the first file's header line. Rows that do not parse are never
dropped silently: the views read with `ignore_errors` off, so such a row fails the step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from azexport_assets.sql_text import quote_literal
from azexport_assets.warehouse.base import WarehouseConfigError
from azexport_assets.warehouse.sources import quote_for_glob, source_files

if TYPE_CHECKING:  # the configuration layer may depend on Dagster; the warehouse does not
    from azexport_assets.config import SourceConfig

_EMPTY = "(empty)"  # how sniff_csv shows "no quote / no escape"


@dataclass(frozen=True)
class CsvDialect:
    """The dialect DuckDB detected in the first file of a CSV source, used for all its files."""

    source: str
    file: str
    file_count: int
    delimiter: str
    quote: str
    escape: str
    header: bool
    skip_rows: int
    columns: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        """One line for the step's log: every choice the sniffer made."""
        columns = ", ".join(f"{name} {kind}" for name, kind in self.columns)
        others = (
            f"; the other {self.file_count - 1} file(s) of the glob are read the same way"
            if self.file_count > 1
            else ""
        )
        return (
            f"source '{self.source}' (csv): DuckDB reads {self.file} with delimiter "
            f"{_shown(self.delimiter)}, quote {_shown(self.quote)}, escape "
            f"{_shown(self.escape)}, header {'yes' if self.header else 'no'}, "
            f"{self.skip_rows} line(s) skipped before it, {len(self.columns)} column(s): "
            f"{columns}{others}"
        )

    def warning(self) -> str | None:
        """Why some lines are not read, or None when every line is."""
        if self.skip_rows <= 0:
            return None
        others = (
            f", and as many at the top of each of the other {self.file_count - 1} file(s) "
            "the glob matches (DuckDB reads every file with the first one's layout)"
            if self.file_count > 1
            else ""
        )
        return (
            f"source '{self.source}' (csv): DuckDB's CSV sniffer skips the first "
            f"{self.skip_rows} line(s) of {self.file}{others}; those lines are not read. If "
            "they hold data (not a title or a comment), fix the file: a csv source takes no "
            "reader options"
        )


def _shown(value: str) -> str:
    return "none" if value in ("", _EMPTY) else repr(value)


def sniff_csv_source(
    con: duckdb.DuckDBPyConnection, name: str, files: list[str], encoding: str | None = None
) -> CsvDialect | None:
    """The dialect of `files[0]` as DuckDB's sniffer sees it (in the source's `encoding`);
    None when there is no file or it cannot be sniffed (the query over the source then
    reports the problem itself)."""
    if not files:
        return None
    options = f", encoding = {quote_literal(encoding)}" if encoding else ""
    try:
        row = con.execute(
            "SELECT Delimiter, Quote, Escape, SkipRows, HasHeader, Columns "
            f"FROM sniff_csv({quote_literal(files[0])}{options})"
        ).fetchone()
    except duckdb.Error:
        return None
    if row is None:
        return None
    delimiter, quote, escape, skip, header, columns = row
    if quote_for_glob(str(quote), len(files)):  # as `create_file_view` reads the glob
        quote = escape = '"'
    return CsvDialect(
        source=name,
        file=files[0],
        file_count=len(files),
        delimiter=str(delimiter),
        quote=str(quote),
        escape=str(escape),
        header=bool(header),
        skip_rows=int(skip or 0),
        columns=tuple((str(c["name"]), str(c["type"])) for c in columns or ()),
    )


def check_same_header(dialect: CsvDialect, files: list[str], encoding: str | None) -> None:
    """Every file of the glob starts (after the skipped lines) with the first file's header
    line. DuckDB reads them all with the first file's layout: a file without the header would
    lose its first row, a file with more columns those columns, both silently. Reads one line
    per file; raises `WarehouseConfigError` naming the first file that differs."""
    if not dialect.header or len(files) < 2:
        return
    expected = _first_line(files[0], dialect.skip_rows, encoding)
    for path in files[1:]:
        found = _first_line(path, dialect.skip_rows, encoding)
        if found != expected:
            raise WarehouseConfigError(
                f"source '{dialect.source}' (csv): {path} starts with {_cut(found)}, not the "
                f"header of {files[0]} ({_cut(expected)}); DuckDB reads every file of a glob "
                "with the first file's layout, so its first row or its other columns would be "
                "lost. Give every file the same header line. Nothing was read"
            )


def _first_line(path: str, skip: int, encoding: str | None) -> str | None:
    try:
        with open(path, encoding=encoding or "utf-8-sig", errors="replace", newline="") as f:
            for _ in range(skip):
                f.readline()
            return f.readline().rstrip("\r\n")
    except OSError:
        return None  # gone or unreadable: the read itself reports it


def _cut(line: str | None) -> str:
    if line is None:
        return "nothing readable"
    return repr(line if len(line) <= 80 else line[:77] + "...")


def sniff_csv_sources(
    con: duckdb.DuckDBPyConnection, sources: Mapping[str, SourceConfig], base: Path
) -> list[CsvDialect]:
    """The dialect of every `csv:` source in `sources` (one sniff of one file per source).
    Works on a sandboxed connection: the files are the ones the step was granted."""
    found: list[CsvDialect] = []
    for name, source in sources.items():
        if source.kind != "csv":
            continue
        dialect = sniff_csv_source(con, name, source_files(source, base), source.encoding)
        if dialect is not None:
            found.append(dialect)
    return found
