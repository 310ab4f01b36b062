"""The step's log says how DuckDB reads each `csv:` source, and warns when it skips lines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import duckdb

from azexport_assets.config import SourceConfig
from azexport_assets.warehouse.csv_dialect import check_same_header, sniff_csv_sources
from azexport_assets.warehouse.sources import source_files


def log_csv_dialects(
    context: dg.AssetExecutionContext,
    con: duckdb.DuckDBPyConnection,
    sources: Mapping[str, SourceConfig],
    project_root: Path,
) -> None:
    """One info line per CSV source the step attached (delimiter, quote, escape, header,
    skipped lines, columns), and a warning when the sniffer skips lines: they are not read.
    Raises `WarehouseConfigError` when a file of a glob lacks the first file's header."""
    for dialect in sniff_csv_sources(con, sources, project_root):
        context.log.info(dialect.describe())
        warning = dialect.warning()
        if warning:
            context.log.warning(warning)
        source = sources[dialect.source]
        check_same_header(dialect, source_files(source, project_root), source.encoding)
