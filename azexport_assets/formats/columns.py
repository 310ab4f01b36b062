"""The query's columns, and SQL expressions that turn one value into its text form.

Every text format (CSV, JSON, XML) writes a value the same way, decided here once:

- TIMESTAMP (any precision) is taken as UTC, TIMESTAMPTZ is converted to UTC, and both are
  written `YYYY-MM-DDTHH:MM:SS.ffffffZ` (always six fractional digits, fixed width).
- DATE `YYYY-MM-DD` (before year 1 DuckDB's `0044-03-15 (BC)`); BOOLEAN `true`/`false`;
  DECIMAL with its full scale and a digit before the point (`12.50`, `0.125`: DuckDB prints
  a DECIMAL(p,p) as `.125`, which JSON does not allow); integers and finite floating point as
  DuckDB prints them (`0.1`, `1e+20`, `-0.0`).
- NaN and infinities as `NaN`, `Infinity`, `-Infinity`: the spellings Spark's CSV reader
  takes by default (its `nanValue` is `NaN`; Java parses `Infinity`), and pandas, Polars,
  DuckDB and Python's `float()` read as well (`nan`/`inf` become NULL or text in Spark).
- LIST, STRUCT, MAP, ARRAY, UNION and JSON values as JSON text (DuckDB's `to_json`, which
  also drops a JSON value's insignificant whitespace), the form every reader can parse back
  into arrays and objects (`from_json`, `str.json_decode`, `json.loads`).
- BLOB as base64; everything else (UUID, TIME, INTERVAL, ENUM…) as DuckDB's own VARCHAR cast.

The expressions never depend on the session's TimeZone setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import duckdb

from azexport_assets.sql_text import quote_ident

ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"

_INTEGER_IDS = {
    "tinyint",
    "smallint",
    "integer",
    "bigint",
    "hugeint",
    "utinyint",
    "usmallint",
    "uinteger",
    "ubigint",
    "uhugeint",
}
_FLOAT_IDS = {"float", "double"}
_NAIVE_TIMESTAMP_IDS = {"timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"}
_NESTED_IDS = {"list", "struct", "map", "array", "union"}
_DECIMAL_RE = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


@dataclass(frozen=True)
class Column:
    """One result column: its name and DuckDB type (id such as 'decimal', full text, and the
    type object itself when known, for the parts of nested types)."""

    name: str
    type_id: str
    type_text: str
    duck_type: duckdb.DuckDBPyType | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """The column as a quoted SQL identifier (names may hold spaces or quotes)."""
        return quote_ident(self.name)

    @property
    def is_string(self) -> bool:
        return self.type_id == "varchar" and not self.is_json

    @property
    def is_json(self) -> bool:
        """DuckDB's JSON type: a VARCHAR underneath (same type id), compared and cast as JSON."""
        return self.type_id == "varchar" and self.type_text == "JSON"

    @property
    def is_integer(self) -> bool:
        return self.type_id in _INTEGER_IDS

    @property
    def is_float(self) -> bool:
        return self.type_id in _FLOAT_IDS

    @property
    def is_decimal(self) -> bool:
        return self.type_id == "decimal"

    @property
    def is_nested(self) -> bool:
        return self.type_id in _NESTED_IDS

    @property
    def is_naive_timestamp(self) -> bool:
        return self.type_id in _NAIVE_TIMESTAMP_IDS

    @property
    def is_timestamptz(self) -> bool:
        return self.type_id == "timestamp with time zone"

    @property
    def text_is_plain(self) -> bool:
        """True when the text form holds only digits, signs, '.', ':', letters of
        'true/false/NaN/Infinity/infinity/e/T/Z' — never quotes, spaces, line breaks or markup."""
        return (
            self.is_integer
            or self.is_float
            or self.is_decimal
            or self.is_naive_timestamp
            or self.is_timestamptz
            or self.type_id in {"boolean", "date", "uuid"}
        )


def strip_query(query: str) -> str:
    """The query without trailing semicolons/whitespace, so it can be used as a subquery."""
    return query.strip().rstrip(";").strip()


def describe(con: duckdb.DuckDBPyConnection, query: str) -> list[Column]:
    """The query's columns, from DuckDB's binder (the query is not run)."""
    rel = con.sql(strip_query(query))
    return [Column(n, t.id, str(t), t) for n, t in zip(rel.columns, rel.types, strict=True)]


def utc_timestamp(col: Column, ref: str | None = None) -> str:
    """SQL for the column as a naive TIMESTAMP (microseconds) holding UTC wall time.

    `make_timestamp(epoch_us(x))` maps an instant to UTC wall time without the ICU time zone
    machinery (`timezone('UTC', x)` does the same, ~2x slower) and without the session zone.
    `epoch_us` of 'infinity' is NULL, so infinite values take the plain cast, which keeps them
    infinite (and is exact for them: an infinity has no time zone).
    """
    ref = ref or col.ref
    if col.is_timestamptz:
        return (
            f"CASE WHEN isinf({ref}) THEN CAST({ref} AS TIMESTAMP) "
            f"ELSE make_timestamp(epoch_us({ref})) END"
        )
    return f"CAST({ref} AS TIMESTAMP)"


def utc_timestamptz(col: Column, value: str | None = None) -> str:
    """SQL for a naive TIMESTAMP column (taken as UTC) as a TIMESTAMPTZ instant; `value` is an
    expression to use instead of the column itself. Finite values only (`epoch_us` of
    'infinity' is NULL): Parquet refuses infinite ones before this conversion."""
    return f"make_timestamptz(epoch_us(CAST({value or col.ref} AS TIMESTAMP)))"


def float_text(ref: str) -> str:
    """SQL for a DOUBLE/FLOAT value as text: DuckDB's shortest round-trip form when finite,
    else `NaN`, `Infinity`, `-Infinity` (NULL stays NULL)."""
    return (
        f"CASE WHEN isfinite({ref}) THEN CAST({ref} AS VARCHAR) WHEN isnan({ref}) THEN 'NaN' "
        f"WHEN {ref} > 0 THEN 'Infinity' WHEN {ref} < 0 THEN '-Infinity' END"
    )


def nested_json(ref: str) -> str:
    """SQL for a LIST/STRUCT/MAP/ARRAY/UNION/JSON value as JSON text (NULL stays NULL)."""
    return f"CAST(to_json({ref}) AS VARCHAR)"


def decimal_text(col: Column) -> str:
    """SQL for a DECIMAL value with its full scale and a digit before the point: DuckDB
    prints a DECIMAL(p,p) (only a fraction) as `.125` / `-.5`, without the leading zero."""
    cast = f"CAST({col.ref} AS VARCHAR)"
    found = _DECIMAL_RE.fullmatch(col.type_text)
    if found and found.group(1) == found.group(2):
        return f"regexp_replace({cast}, '^(-?)\\.', '\\10.')"
    return cast


def text_expr(col: Column) -> str:
    """SQL for the column's value as VARCHAR text (NULL stays NULL)."""
    if col.is_string:
        return col.ref
    if col.is_float:
        return float_text(col.ref)
    if col.is_nested or col.is_json:
        return nested_json(col.ref)
    if col.is_decimal:
        return decimal_text(col)
    if col.is_naive_timestamp or col.is_timestamptz:
        return f"strftime({utc_timestamp(col)}, '{ISO_UTC}')"
    if col.type_id == "blob":
        return f"to_base64({col.ref})"
    return f"CAST({col.ref} AS VARCHAR)"
