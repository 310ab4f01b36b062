"""XML rows rendered by DuckDB (vectorised string functions, no Python per row).

A file is `<?xml version="1.0" encoding="UTF-8"?>`, then `<root xmlns:xsi=…>`, one line per
row `<row><col>value</col>…</row>`, then `</root>`. Values:

- `& < > " '` are escaped as entities, and CR as `&#13;` (parsers would turn a raw CR into LF);
- characters XML 1.0 forbids (U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+FFFE, U+FFFF)
  are removed and counted (DuckDB strings are valid UTF-8, so lone surrogates cannot occur);
- NULL is `<col xsi:nil="true"/>` (the XML Schema convention); an empty string `<col></col>`;
- numbers, dates, timestamps and booleans use the same text as CSV (see `columns.py`).

Element names follow `xml_names.py`.
"""

from __future__ import annotations

from azexport_assets.formats.columns import Column, quote_literal, strip_query, text_expr
from azexport_assets.formats.text import RowText

XSI = "http://www.w3.org/2001/XMLSchema-instance"
FORBIDDEN = "[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x{FFFE}\\x{FFFF}]"
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&apos;"))


def _escape(expr: str) -> str:
    escaped = expr
    for char, entity in _ESCAPES:
        escaped = f"replace({escaped}, {quote_literal(char)}, {quote_literal(entity)})"
    escaped = f"replace({escaped}, chr(13), '&#13;')"
    return f"CASE WHEN regexp_matches({expr}, '[&<>\"''\\r]') THEN {escaped} ELSE {expr} END"


def _cleaned(expr: str) -> str:
    return (
        f"CASE WHEN regexp_matches({expr}, '{FORBIDDEN}') "
        f"THEN regexp_replace({expr}, '{FORBIDDEN}', '', 'g') ELSE {expr} END"
    )


def xml_rows(
    query: str, columns: list[Column], elements: list[str], root: str, row: str
) -> RowText:
    """The `RowText` of an XML file; `line` is one `<row>…</row>\\n`, `removed` a count."""
    # Inner query: each value as cleaned text (_vN) and, where cleaning can remove characters,
    # its original length (_nN). Only these aliases leave it, so the outer query cannot
    # confuse them with the user's column names.
    inner, outer, removed = [], [quote_literal(f"<{row}>")], []
    for i, (col, element) in enumerate(zip(columns, elements, strict=True)):
        value, length = f"_v{i}", f"_n{i}"
        text = text_expr(col)
        if col.text_is_plain:
            inner.append(f"{text} AS {value}")
            rendered = value
        else:
            inner.append(f"{_cleaned(text)} AS {value}")
            inner.append(f"length({text}) AS {length}")
            removed.append(f"coalesce({length} - length({value}), 0)")
            rendered = _escape(value)
        nil = quote_literal(f'<{element} xsi:nil="true"/>')
        open_tag, close_tag = quote_literal(f"<{element}>"), quote_literal(f"</{element}>")
        outer.append(
            f"CASE WHEN {value} IS NULL THEN {nil} ELSE {open_tag} || {rendered} || {close_tag} END"
        )
    outer.append(quote_literal(f"</{row}>") + " || chr(10)")
    sql = (
        f"SELECT {' || '.join(outer)} AS line, {' + '.join(removed) or '0'} AS removed "
        f"FROM (SELECT {', '.join(inner)} FROM ({strip_query(query)}) AS _q) AS _r"
    )
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns:xsi="{XSI}">\n'
    return RowText(sql=sql, head=head.encode(), tail=f"</{root}>\n".encode(), counts_removed=True)
