"""Column names -> XML element names: one deterministic rule.

Element names are restricted to ASCII `[A-Za-z_][A-Za-z0-9_.-]*`, the same rule the
configuration applies to `xml.root` / `xml.row`. XML 1.0 (5th edition) allows many more
Unicode characters, but widely used parsers (expat, hence Python's ElementTree, and others)
still implement the 4th edition's narrower tables, so a name like `豈` breaks some consumers.

1. Every character outside `A-Z a-z 0-9 _ . -` (spaces, `:`, `/`, `é`, emoji…) becomes `_`.
2. If the result does not start with a letter or `_` (e.g. starts with a digit, `-` or `.`),
   is empty, or starts with `xml` in any case (reserved), `_` is put in front.
3. Names already valid keep their spelling. A converted name that equals one already taken
   (XML names are case-sensitive) gets the first free suffix `_2`, `_3`, … .

Examples: `first name` -> `first_name`, `2024 total` -> `_2024_total`, `xmlId` -> `_xmlId`,
`prénom` -> `pr_nom`, `a/b` -> `a_b` (and `a b` after it -> `a_b_2`).
"""

from __future__ import annotations

import re

_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9_.\-]")
_NAME_START = re.compile(r"[A-Za-z_]")


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
