"""Run metadata shown in the Dagster UI: schemas, previews, file tables."""

from __future__ import annotations

from typing import Any

import dagster as dg
import duckdb

from azexport_assets.sql_text import quote_ident

PREVIEW_ROWS = 10


def table_schema(columns: list[tuple[str, str]]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=t) for n, t in columns])


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def markdown_table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def table_metadata(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    """Row count, column schema and a Markdown preview of a warehouse table."""
    rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
    preview = con.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}").fetchall()
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": table_schema(columns),
        "preview": dg.MetadataValue.md(markdown_table([c for c, _ in columns], preview)),
        "table": dg.MetadataValue.text(table),
    }


def describe(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> list[tuple[str, str]]:
    rows = con.execute(f"DESCRIBE {schema}.{quote_ident(name)}").fetchall()
    return [(r[0], r[1]) for r in rows]
