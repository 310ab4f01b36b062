"""CSV rows rendered by DuckDB: RFC 4180 with any one-character delimiter.

- A field is quoted when it contains the delimiter, a double quote, CR or LF; quotes inside
  are doubled. Leading/trailing spaces are kept verbatim and do not cause quoting.
- NULL is an empty field; an empty string is `""`, so the two stay distinguishable
  (the same convention as DuckDB's own CSV writer and reader).
- UTF-8 without BOM, `\\n` line ends, optional header line quoted by the same rule.
"""

from __future__ import annotations

from azexport_assets.formats.columns import Column, strip_query, text_expr
from azexport_assets.formats.text import RowText
from azexport_assets.sql_text import quote_literal

# Characters the text of a "plain" column can contain: numbers (`1e+20`, `NaN`, `-Infinity`),
# booleans, UUIDs (lowercase hex), ISO timestamps, and dates, which DuckDB writes
# `0044-03-15 (BC)` before year 1 (a space-delimited file must quote those).
_PLAIN_CHARS = set("0123456789+-.:eETZnaiftrulsyNIF" + "abcdef" + " ()BC")


def quote_field(value: str, delimiter: str) -> str:
    """One field as RFC 4180 text (used for the header; rows use the same rule in SQL)."""
    if value == "" or any(c in value for c in (delimiter, '"', "\r", "\n")):
        return '"' + value.replace('"', '""') + '"'
    return value


def header_line(columns: list[Column], delimiter: str) -> str:
    return delimiter.join(quote_field(c.name, delimiter) for c in columns) + "\n"


def field_expr(col: Column, delimiter: str) -> str:
    """SQL for the column's CSV field text (never NULL)."""
    text = text_expr(col)
    if col.text_is_plain and delimiter not in _PLAIN_CHARS:
        return f"coalesce({text}, '')"
    # A chain of contains() is about twice as fast as one regexp_matches() on short values.
    needs_quotes = " OR ".join(
        f"contains({text}, {c})" for c in (quote_literal(delimiter), "'\"'", "chr(13)", "chr(10)")
    )
    return (
        f"CASE WHEN {text} IS NULL THEN '' "
        f"WHEN {text} = '' THEN '\"\"' "
        f"WHEN {needs_quotes} "
        f"THEN '\"' || replace({text}, '\"', '\"\"') || '\"' "
        f"ELSE {text} END"
    )


def csv_rows(query: str, columns: list[Column], delimiter: str, header: bool) -> RowText:
    """The `RowText` of a CSV file: one `line` per row, ending with `\\n`."""
    sep = quote_literal(delimiter)
    fields = f", {sep}, ".join(field_expr(c, delimiter) for c in columns)
    # concat() of many arguments is twice as fast as a chain of `||`; no field is NULL.
    sql = f"SELECT concat({fields}, chr(10)) AS line FROM ({strip_query(query)}) AS _q"
    head = header_line(columns, delimiter).encode() if header else b""
    return RowText(sql=sql, head=head, tail=b"")
