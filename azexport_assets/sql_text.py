"""Quoting for SQL text we build: every name and literal goes through these two functions."""


def quote_ident(name: str) -> str:
    """A DuckDB identifier for any name (embedded double quotes are doubled)."""
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A SQL string literal (embedded single quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"
