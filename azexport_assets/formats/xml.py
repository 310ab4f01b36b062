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

from azexport_assets.formats.columns import Column, strip_query, text_expr
from azexport_assets.formats.text import RowText
from azexport_assets.sql_text import quote_literal

XSI = "http://www.w3.org/2001/XMLSchema-instance"
FORBIDDEN = "[\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x{FFFE}\\x{FFFF}]"
_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("'", "&apos;"))
# Characters that trigger escaping of a value (CR: parsers would turn a raw CR into LF).
_SPECIAL = ("'&'", "'<'", "'>'", "'\"'", "''''", "chr(13)")


def _escape(expr: str) -> str:
    """SQL escaping a non-NULL text value for element content."""
    escaped = expr
    for char, entity in _ESCAPES:
        escaped = f"replace({escaped}, {quote_literal(char)}, {quote_literal(entity)})"
    escaped = f"replace({escaped}, chr(13), '&#13;')"
    # A chain of contains() is about twice as fast as one regexp_matches() on short values.
    special = " OR ".join(f"contains({expr}, {c})" for c in _SPECIAL)
    return f"CASE WHEN {special} THEN {escaped} ELSE {expr} END"


def xml_rows(
    query: str, columns: list[Column], elements: list[str], root: str, row: str
) -> RowText:
    """The `RowText` of an XML file; `line` is one `<row>…</row>\\n`, `removed` a count.

    Three projections, so that each value's text is computed once: (1) the text `_tN` of each
    value and `_bad`, whether any value of the row that can hold any character has a
    forbidden one; (2) the cleaned text `_vN` and the count removed `_rN` (only computed in
    rows where `_bad`); (3) the row. Only these aliases leave each subquery, so user column
    names cannot shadow them.
    """
    texts, cleaned, removed, free_texts = [], [], [], []
    parts = [quote_literal(f"<{row}>")]
    for i, (col, element) in enumerate(zip(columns, elements, strict=True)):
        t, v = f"_t{i}", f"_v{i}"
        texts.append(f"{text_expr(col)} AS {t}")
        if col.text_is_plain:  # digits, dates, true/false: nothing to clean or escape
            cleaned.append(f"{t} AS {v}")
            rendered = v
        else:
            free_texts.append(t)
            strip = f"regexp_replace({t}, '{FORBIDDEN}', '', 'g')"
            cleaned.append(f"CASE WHEN _bad THEN {strip} ELSE {t} END AS {v}")
            count = f"length({t}) - length({strip})"
            cleaned.append(f"CASE WHEN _bad AND {t} IS NOT NULL THEN {count} ELSE 0 END AS _r{i}")
            removed.append(f"_r{i}")
            rendered = _escape(v)
        nil = quote_literal(f'<{element} xsi:nil="true"/>')
        open_tag, close_tag = quote_literal(f"<{element}>"), quote_literal(f"</{element}>")
        # concat() of many arguments is twice as fast as a chain of `||`; no part is NULL.
        parts.append(
            f"CASE WHEN {v} IS NULL THEN {nil} ELSE concat({open_tag}, {rendered}, {close_tag}) END"
        )
    parts.append(quote_literal(f"</{row}>\n"))
    # One search per row over its free-text values joined (concat() skips NULLs) instead of
    # one per value: 11-15% less rendering. Forbidden characters are rare, so rows without
    # any skip the cleaning altogether.
    bad = "false"
    if free_texts:
        bad = f"regexp_matches(concat({', '.join(free_texts)}), '{FORBIDDEN}')"
    step1 = f"SELECT {', '.join(texts)} FROM ({strip_query(query)}) AS _q"
    step1 = f"SELECT *, {bad} AS _bad FROM ({step1}) AS _s0"
    step2 = f"SELECT {', '.join(cleaned)} FROM ({step1}) AS _s1"
    sql = (
        f"SELECT concat({', '.join(parts)}) AS line, {' + '.join(removed) or '0'} AS removed "
        f"FROM ({step2}) AS _s2"
    )
    head = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns:xsi="{XSI}">\n'
    return RowText(sql=sql, head=head.encode(), tail=f"</{root}>\n".encode(), counts_removed=True)
