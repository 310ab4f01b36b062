"""JSON rows rendered by DuckDB: one object per row, as an array or as NDJSON lines.

Objects are concatenated text, not DuckDB's `to_json` of a struct, because `to_json` turns
DECIMAL into a double (`12.50` -> `12.5`, and 38-digit values lose precision). Values:

- keys are the column names, escaped by Python's `json` once per column;
- NULL -> `null`; integers, doubles and booleans -> JSON numbers / `true` / `false`;
- DECIMAL -> a JSON *number* with its exact digits and scale (`12.50`); parse it with a
  decimal-aware reader (e.g. Python `json.loads(s, parse_float=Decimal)`) to keep every digit;
- NaN and ±Infinity (not valid JSON) -> `null`;
- DATE / TIMESTAMP -> ISO 8601 strings (see `columns.py`); strings via DuckDB's `to_json`;
- LIST / STRUCT / MAP and JSON values -> DuckDB's `to_json` of the value (nested JSON).

`array` files look like `[\\n{...},\\n{...}\\n]\\n` (an empty one is `[\\n]\\n`); `lines` files
hold one object per line, each ending with `\\n`.
"""

from __future__ import annotations

import json

from azexport_assets.formats.columns import (
    Column,
    decimal_text,
    nested_json,
    strip_query,
    text_expr,
)
from azexport_assets.formats.text import RowText
from azexport_assets.sql_text import quote_literal


def value_expr(col: Column) -> str:
    """SQL for the column's JSON value text (never NULL)."""
    ref = col.ref
    if col.is_integer or col.type_id == "boolean":
        value = f"CAST({ref} AS VARCHAR)"
    elif col.is_decimal:
        value = decimal_text(col)
    elif col.is_float:
        value = f"CASE WHEN isfinite({ref}) THEN CAST({ref} AS VARCHAR) END"
    elif col.is_nested or col.is_json:
        value = nested_json(ref)
    elif col.text_is_plain or col.type_id == "blob":
        # ISO dates/timestamps, UUIDs, base64: nothing to escape inside the quotes.
        value = f"'\"' || {text_expr(col)} || '\"'"
    else:
        value = f"CAST(to_json({text_expr(col)}) AS VARCHAR)"
    return f"coalesce({value}, 'null')"


def object_parts(columns: list[Column]) -> list[str]:
    """SQL parts whose concatenation is one row as a JSON object (none is NULL)."""
    parts = []
    for i, col in enumerate(columns):
        key = json.dumps(col.name, ensure_ascii=False) + ":"
        parts.append(quote_literal(("{" if i == 0 else ",") + key))
        parts.append(value_expr(col))
    parts.append("'}'" if columns else "'{}'")
    return parts


def json_rows(query: str, columns: list[Column], style: str) -> RowText:
    """The `RowText` of a JSON array file or an NDJSON file."""
    parts = object_parts(columns)
    source = f"FROM ({strip_query(query)}) AS _q"
    # concat() of many arguments is twice as fast as a chain of `||`.
    if style == "lines":
        sql = f"SELECT concat({', '.join(parts)}, chr(10)) AS line {source}"
        return RowText(sql=sql, head=b"", tail=b"")
    # Each item carries its separator in front (",\n{...}"); the writer drops the ','
    # of the first item of each part, so every part is `[` + items + `\n]\n`.
    sql = f"SELECT concat(',', chr(10), {', '.join(parts)}) AS line {source}"
    return RowText(sql=sql, head=b"[", tail=b"\n]\n", lead=1)
