"""DuckDB types as Delta Lake types: exact, or refused naming the column.

Delta has no unsigned integers, no 128-bit integers, no TIME, no INTERVAL and microsecond
timestamps only. Every exported column is brought to a Delta type that holds each of its values
exactly, or refused before anything is written:

| DuckDB | Delta |
|---|---|
| BOOLEAN, TINYINT, SMALLINT, INTEGER, BIGINT | boolean, byte, short, integer, long |
| FLOAT, DOUBLE | float, double |
| UTINYINT, USMALLINT, UINTEGER | short, integer, long (the next wider signed type) |
| UBIGINT | decimal(20,0) |
| HUGEINT, UHUGEINT | decimal(38,0); a value of more than 38 digits stops the export |
| DECIMAL(p,s) | decimal(p,s) |
| VARCHAR, JSON, ENUM, UUID | string (JSON text, the enum's label, the canonical UUID text) |
| BLOB | binary |
| DATE | date; 'infinity' / '-infinity' stop the export |
| TIMESTAMP, TIMESTAMP_S, TIMESTAMP_MS | timestamp_ntz (microseconds, no zone: as DuckDB holds it) |
| TIMESTAMPTZ | timestamp (a UTC instant) |
| LIST, ARRAY, STRUCT, MAP | array, array, struct, map of the above |
| TIME, TIMETZ, INTERVAL, TIMESTAMP_NS, BIT, UNION, BIGNUM, NULL | refused: cast in the model |

The checks of values (infinite dates, 128-bit integers beyond 38 digits) run inside the query
that feeds the table (DuckDB's `error()` in a CASE), so the rows are read once and a refusal
stops the export before the Delta commit.
"""

from __future__ import annotations

import re
from typing import NoReturn

import duckdb

from azexport_assets.formats.columns import Column, strip_query
from azexport_assets.formats.parquet_values import infinity_test
from azexport_assets.sql_text import quote_ident, quote_literal

EXACT_INTEGER = "DECIMAL(38,0)"

_AS_IS = {
    "boolean",
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "float",
    "double",
    "decimal",
    "varchar",
    "blob",
    "date",
    "timestamp",
    "timestamp with time zone",
}
_WIDENED = {
    "utinyint": "SMALLINT",
    "usmallint": "INTEGER",
    "uinteger": "BIGINT",
    "ubigint": "DECIMAL(20,0)",
    "hugeint": EXACT_INTEGER,
    "uhugeint": EXACT_INTEGER,
    "timestamp_s": "TIMESTAMP",
    "timestamp_ms": "TIMESTAMP",
    "enum": "VARCHAR",
    "uuid": "VARCHAR",
}
_HUGE_IDS = {"hugeint", "uhugeint"}
_REFUSED = {
    "time": "Delta has no time-of-day type: cast it to VARCHAR, or combine it with a date "
    "into a TIMESTAMP",
    "time with time zone": "Delta has no time-of-day type: cast it to VARCHAR",
    "interval": "Delta has no interval type: cast it to VARCHAR, or to a number of seconds "
    "(e.g. epoch(x))",
    "timestamp_ns": "Delta timestamps hold microseconds: cast it to TIMESTAMP (microseconds) "
    "if that precision is enough, or to VARCHAR",
    "bit": "Delta has no bit-string type: cast it to VARCHAR",
    "union": "Delta has no union type: pick the member in the model or cast it to VARCHAR",
    "bignum": "Delta integers stop at 38 digits: cast it to DECIMAL(38,0) or VARCHAR",
    "null": "its type is NULL (an untyped NULL literal): give it a type with CAST",
}

_MARK = "azexport-delta-unrepresentable"
_MARK_RE = re.compile(rf"{_MARK} (\d+) (infinite|digits)")


class DeltaTypeError(ValueError):
    """A column Delta cannot hold exactly; the message names it and what to do."""

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


def _children(t: duckdb.DuckDBPyType) -> list[tuple[str, duckdb.DuckDBPyType]]:
    return [(str(name), child) for name, child in t.children]


def _part(t: duckdb.DuckDBPyType, name: str) -> duckdb.DuckDBPyType:
    return dict(_children(t))[name]


def refusal(t: duckdb.DuckDBPyType) -> str | None:
    """Why Delta cannot hold values of type `t` (also somewhere inside it), or None."""
    if str(t) == "JSON" or t.id in _AS_IS or t.id in _WIDENED:
        return None
    if t.id in ("list", "array"):
        return refusal(_part(t, "child"))
    if t.id == "map":
        return refusal(_part(t, "key")) or refusal(_part(t, "value"))
    if t.id == "struct":
        for _, child in _children(t):
            found = refusal(child)
            if found:
                return found
        return None
    return _REFUSED.get(t.id, f"Delta has no type for DuckDB's {t}: cast it in the model")


def delta_sql_type(t: duckdb.DuckDBPyType) -> str | None:
    """The DuckDB type to cast `t` to so that its Arrow form is the Delta type of the table
    above; None when `t` is fine as it is. Assumes `refusal(t)` is None."""
    if str(t) == "JSON":
        return "VARCHAR"
    if t.id in _WIDENED:
        return _WIDENED[t.id]
    if t.id in ("list", "array"):
        child = _part(t, "child")
        inner = delta_sql_type(child)
        if t.id == "array":
            return f"{inner or child}[]"
        return None if inner is None else f"{inner}[]"
    if t.id == "map":
        key, value = _part(t, "key"), _part(t, "value")
        new_key, new_value = delta_sql_type(key), delta_sql_type(value)
        if new_key is None and new_value is None:
            return None
        return f"MAP({new_key or key}, {new_value or value})"
    if t.id == "struct":
        fields = _children(t)
        if all(delta_sql_type(child) is None for _, child in fields):
            return None
        parts = ", ".join(f"{quote_ident(n)} {delta_sql_type(c) or c}" for n, c in fields)
        return f"STRUCT({parts})"
    return None


def type_refusal_message(column: str, type_text: str, reason: str) -> str:
    return (
        f"column '{column}' ({type_text}) cannot be held exactly by a Delta table: {reason}; "
        "or export it as csv/json/xml"
    )


def check_column_types(columns: list[tuple[str, str]]) -> None:
    """Raise DeltaTypeError for the first (name, DuckDB type text) Delta cannot hold."""
    for name, type_text in columns:
        reason = refusal(duckdb.type(type_text))
        if reason:
            raise DeltaTypeError(type_refusal_message(name, type_text, reason), name)


def _refuse(index: int, reason: str) -> str:
    return f"error({quote_literal(f'{_MARK} {index} {reason}')})"


def _value(col: Column, index: int) -> str:
    """The column's value as the Delta table holds it (an expression, without alias)."""
    t = col.duck_type
    assert t is not None
    ref = col.ref
    if t.id in _HUGE_IDS:
        exact = f"TRY_CAST({ref} AS {EXACT_INTEGER})"
        return (
            f"CASE WHEN {ref} IS NOT NULL AND {exact} IS NULL "
            f"THEN {_refuse(index, 'digits')} ELSE {exact} END"
        )
    value = ref
    infinite = infinity_test(ref, t)
    if infinite is not None:
        value = f"CASE WHEN {infinite} THEN {_refuse(index, 'infinite')} ELSE {ref} END"
    target = delta_sql_type(t)
    return value if target is None else f"CAST({value} AS {target})"


def table_columns(con: duckdb.DuckDBPyConnection, query: str) -> list[Column]:
    """The query's columns (from DuckDB's binder), refused when Delta cannot hold one."""
    rel = con.sql(strip_query(query))
    columns = [Column(n, t.id, str(t), t) for n, t in zip(rel.columns, rel.types, strict=True)]
    check_column_types([(c.name, c.type_text) for c in columns])
    return columns


def table_select(query: str, columns: list[Column], passthrough: int = 0) -> str:
    """The query as the Delta table holds it: exact types, finite dates. The first
    `passthrough` columns (bookkeeping such as the change kind) are kept as they are."""
    exprs = []
    for index, col in enumerate(columns):
        value = col.ref if index < passthrough else _value(col, index)
        exprs.append(col.ref if value == col.ref else f"{value} AS {col.ref}")
    return f"SELECT {', '.join(exprs)} FROM ({strip_query(query)}) AS _q"


def unrepresentable_error(error: BaseException, columns: list[Column]) -> NoReturn:
    """Re-raise one of our value refusals as DeltaTypeError naming the column; else as is."""
    found = _MARK_RE.search(str(error))
    if found:
        col = columns[int(found.group(1))]
        raise DeltaTypeError(_value_message(col, found.group(2)), col.name) from None
    nested_huge = [c for c in columns if c.duck_type is not None and _has_huge(c.duck_type)]
    if isinstance(error, duckdb.ConversionException) and nested_huge:
        col = nested_huge[0]
        raise DeltaTypeError(_value_message(col, "digits"), col.name) from None
    raise error


def _has_huge(t: duckdb.DuckDBPyType) -> bool:
    if t.id in _HUGE_IDS:
        return True
    if t.id in ("list", "array", "map", "struct"):
        # An ARRAY's children also hold its size (an int); DuckDB's type class has no stable
        # public name across versions, so a child type is told by its `id`.
        parts = [child for _, child in _children(t) if hasattr(child, "id")]
        return any(_has_huge(child) for child in parts)
    return False


def _value_message(col: Column, reason: str) -> str:
    where = f"column '{col.name}' ({col.type_text})"
    if reason == "infinite":
        return (
            f"The Delta table cannot hold {where}: it contains 'infinity' or '-infinity', and "
            "Delta dates and timestamps are finite. In the model, replace them (e.g. with NULL "
            "or a sentinel date) or cast the column to VARCHAR. Nothing was committed."
        )
    return (
        f"The Delta table cannot hold {where} exactly: a value has more than 38 digits "
        f"(HUGEINT/UHUGEINT are written as {EXACT_INTEGER}, Delta's widest exact number). In "
        "the model, cast the column to VARCHAR (exact text) or DOUBLE (approximate). Nothing "
        "was committed."
    )
