"""Column names -> XML element names: one deterministic rule.

1. Every character that may not appear in an XML 1.0 Name (5th edition), and ':' (it would
   mean a namespace prefix), becomes `_`. Unicode letters such as `é` are valid and kept.
2. If the result does not start with a name-start character (e.g. it starts with a digit,
   `-` or `.`), is empty, or starts with `xml` in any case (reserved), `_` is put in front.
3. Names already valid keep their spelling. A converted name that equals one already taken
   (XML names are case-sensitive) gets the first free suffix `_2`, `_3`, … .

Examples: `first name` -> `first_name`, `2024 total` -> `_2024_total`, `xmlId` -> `_xmlId`,
`a/b` -> `a_b` (and `a b` next to it -> `a_b_2`).
"""

from __future__ import annotations

import re

# XML 1.0 (5th edition) NameStartChar without ':' and NameChar additions.
_START = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_MORE = r"\-.0-9\u00b7\u0300-\u036f\u203f-\u2040"
_NOT_NAME_CHAR = re.compile(f"[^{_START}{_MORE}]")
_NAME_START = re.compile(f"[{_START}]")


def is_xml_name(name: str) -> bool:
    """True if `name` can be used unchanged as an element name (no ':' and no 'xml' prefix)."""
    return bool(
        name
        and _NAME_START.match(name)
        and not _NOT_NAME_CHAR.search(name)
        and not name.lower().startswith("xml")
    )


def _convert(name: str) -> str:
    converted = _NOT_NAME_CHAR.sub("_", name)
    if not converted or not _NAME_START.match(converted) or converted.lower().startswith("xml"):
        converted = "_" + converted
    return converted


def element_names(columns: list[str]) -> list[str]:
    """The element name of each column, in order (see the module docstring for the rule)."""
    taken = {c for c in columns if is_xml_name(c)}
    result = []
    for column in columns:
        if is_xml_name(column):
            result.append(column)
            continue
        base = _convert(column)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        result.append(name)
    return result
