"""The SELECT that feeds Parquet: every value written exactly, or a clear refusal.

DuckDB's Parquet writer would change two kinds of values silently; this projection prevents it:

- HUGEINT / UHUGEINT (also inside LIST/STRUCT/MAP/ARRAY/UNION) are written as DOUBLE by
  DuckDB, losing digits. They are cast to DECIMAL(38,0), the widest exact type DuckDB can
  write (its DECIMAL stops at 38 digits, though Parquet's fixed-length decimals go further),
  which readers (pyarrow, Spark, pandas) accept. A value with more than 38 digits does not
  fit: the export stops with `UnrepresentableValueError` naming the column (cast it in the
  model).
- DATE and TIMESTAMP 'infinity' / '-infinity' have no Parquet form: DuckDB would write the
  largest/smallest number of the physical type, i.e. a real date millions of years away (or,
  after the UTC conversion below, NULL). The export stops instead, naming the column.

The checks run inside the same COPY (DuckDB's `error()` in a CASE), so the query runs once;
a refused export stops while writing the local file, before anything is uploaded.
Naive TIMESTAMPs become UTC instants (`TIMESTAMPTZ`, microseconds), as documented in parquet.py.
"""

from __future__ import annotations

import re
from typing import NoReturn

import duckdb

from azexport_assets.formats.columns import Column, strip_query, utc_timestamptz
from azexport_assets.formats.errors import UnrepresentableValueError
from azexport_assets.sql_text import quote_ident, quote_literal

EXACT_INTEGER = "DECIMAL(38,0)"
_HUGE_IDS = {"hugeint", "uhugeint"}
_TEMPORAL_IDS = {
    "date",
    "timestamp",
    "timestamp_s",
    "timestamp_ms",
    "timestamp_ns",
    "timestamp with time zone",
}
_MARK = "azexport-unrepresentable"
_MARK_RE = re.compile(rf"{_MARK} (\d+) (infinite|digits)")


def _children(t: duckdb.DuckDBPyType) -> list[tuple[str, duckdb.DuckDBPyType]]:
    """A nested type's parts: LIST ('child', T); ARRAY ('child', T), ('size', n); MAP ('key',
    K), ('value', V); STRUCT its fields; UNION ('', tag type) then its members."""
    return [(str(name), child) for name, child in t.children]


def _part(t: duckdb.DuckDBPyType, name: str) -> duckdb.DuckDBPyType:
    return dict(_children(t))[name]


def exact_type(t: duckdb.DuckDBPyType) -> str | None:
    """The SQL type to cast a value of type `t` to so Parquet holds it exactly: `t` with every
    HUGEINT/UHUGEINT replaced by DECIMAL(38,0); None when `t` contains neither."""
    if t.id in _HUGE_IDS:
        return EXACT_INTEGER
    if t.id == "list":
        inner = exact_type(_part(t, "child"))
        return None if inner is None else f"{inner}[]"
    if t.id == "array":
        inner = exact_type(_part(t, "child"))
        return None if inner is None else f"{inner}[{dict(_children(t))['size']}]"
    if t.id == "map":
        key, value = _part(t, "key"), _part(t, "value")
        if exact_type(key) is None and exact_type(value) is None:
            return None
        return f"MAP({exact_type(key) or key}, {exact_type(value) or value})"
    if t.id in ("struct", "union"):
        members = _children(t)[1:] if t.id == "union" else _children(t)  # union: [0] is the tag
        if all(exact_type(child) is None for _, child in members):
            return None
        fields = ", ".join(f"{quote_ident(n)} {exact_type(c) or c}" for n, c in members)
        return f"{t.id.upper()}({fields})"
    return None


def infinity_test(expr: str, t: duckdb.DuckDBPyType, depth: int = 0) -> str | None:
    """SQL that is true when the value `expr` of type `t` is, or contains, an infinite DATE or
    TIMESTAMP; None when `t` holds no such type (a UNION's members are not inspected)."""
    if t.id in _TEMPORAL_IDS:
        return f"isinf({expr})"
    if t.id in ("list", "array", "map"):
        if t.id == "map":
            parts = [
                infinity_test(f"map_keys({expr})", duckdb.list_type(_part(t, "key")), depth),
                infinity_test(f"map_values({expr})", duckdb.list_type(_part(t, "value")), depth),
            ]
            found = [p for p in parts if p]
            return f"({' OR '.join(found)})" if found else None
        var = f"_azx{depth}"
        inner = infinity_test(var, _part(t, "child"), depth + 1)
        if inner is None:
            return None
        return f"list_bool_or(list_transform({expr}, lambda {var}: {inner}))"
    if t.id == "struct":
        found = [
            infinity_test(f"struct_extract({expr}, {quote_literal(name)})", child, depth)
            for name, child in _children(t)
        ]
        found = [f for f in found if f]
        return f"({' OR '.join(found)})" if found else None
    return None


def _refuse(index: int, reason: str) -> str:
    """SQL that stops the query with a marker `unrepresentable_error` turns into a message."""
    return f"error({quote_literal(f'{_MARK} {index} {reason}')})"


def _checked(col: Column, index: int) -> str:
    """The column's value as written to Parquet (an expression, without alias)."""
    ref = col.ref
    if col.type_id in _HUGE_IDS:
        exact = f"TRY_CAST({ref} AS {EXACT_INTEGER})"
        return (
            f"CASE WHEN {ref} IS NOT NULL AND {exact} IS NULL "
            f"THEN {_refuse(index, 'digits')} ELSE {exact} END"
        )
    value = ref
    t = col.duck_type  # None for a Column built by hand: then only its top level is known
    infinite = f"isinf({ref})" if col.type_id in _TEMPORAL_IDS else None
    if t is not None:
        infinite = infinity_test(ref, t)
    if infinite is not None:
        value = f"CASE WHEN {infinite} THEN {_refuse(index, 'infinite')} ELSE {ref} END"
    if col.is_naive_timestamp:
        return utc_timestamptz(col, value)
    nested = exact_type(t) if t is not None else None
    if nested is not None:
        value = f"CAST({value} AS {nested})"
    return value


def parquet_select(query: str, columns: list[Column]) -> str:
    """The query as Parquet will hold it: exact integers, finite dates, UTC instants."""
    exprs = []
    for index, col in enumerate(columns):
        value = _checked(col, index)
        exprs.append(col.ref if value == col.ref else f"{value} AS {col.ref}")
    return f"SELECT {', '.join(exprs)} FROM ({strip_query(query)}) AS _q"


def unrepresentable_error(error: duckdb.Error, columns: list[Column]) -> NoReturn:
    """Re-raise DuckDB's `error` as `UnrepresentableValueError` when it is one of our
    refusals (or a too-large HUGEINT inside a nested value); otherwise re-raise it as is."""
    found = _MARK_RE.search(str(error))
    if found:
        col = columns[int(found.group(1))]
        raise UnrepresentableValueError(_message(col, found.group(2)), col.name) from None
    nested_huge = [c for c in columns if c.duck_type is not None and exact_type(c.duck_type)]
    nested_huge = [c for c in nested_huge if c.type_id not in _HUGE_IDS]
    if isinstance(error, duckdb.ConversionException) and nested_huge:
        col = nested_huge[0]
        raise UnrepresentableValueError(_message(col, "digits"), col.name) from None
    raise error


def _message(col: Column, reason: str) -> str:
    where = f"column '{col.name}' ({col.type_text})"
    if reason == "infinite":
        if col.is_nested:
            fix = "replace the infinite dates/timestamps inside its values (e.g. with NULL)"
        else:
            fix = (
                f"replace them (e.g. `CASE WHEN isinf({col.ref}) THEN NULL ELSE {col.ref} END`, "
                "or a sentinel date)"
            )
        return (
            f"Parquet cannot hold {where}: it contains 'infinity' or '-infinity', and Parquet "
            f"dates and timestamps are finite. In the model, {fix}, cast the column to "
            "VARCHAR, or export as CSV/JSON/XML, which write 'infinity'."
        )
    return (
        f"The Parquet export cannot hold {where} exactly: a value has more than 38 digits. "
        f"azexport writes HUGEINT/UHUGEINT as {EXACT_INTEGER} because DuckDB, which writes "
        "the file, has no wider exact type (its DECIMAL stops at 38 digits; Parquet's own "
        "decimals could be wider). In the model, cast the column to VARCHAR (exact text), or "
        f"to {EXACT_INTEGER} if its values should fit (the model step then fails on the "
        "out-of-range rows, to be fixed upstream), or to DOUBLE (approximate); or export as "
        "CSV/JSON/XML, which write every digit."
    )
