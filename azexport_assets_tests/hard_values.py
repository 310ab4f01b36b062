"""A table of values that readers get wrong, and the source's own values to compare with.

`HARD_TABLE_SQL` creates `hard` in a DuckDB file: rows 1..len(longest list) cycle through every
column's hard values (so each value occurs at least once, next to every kind of neighbour),
then `FILLER_ROWS` ordinary rows. `source_rows` reads the table back through DuckDB as the
truth: Python ints, `Decimal`, floats, `date`, UTC instants as epoch microseconds, lists and
dicts.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

# Column name -> (DuckDB type, SQL literals cycled over the hard rows).
COLUMNS: dict[str, tuple[str, list[str]]] = {
    "first name": (
        "VARCHAR",
        [
            "'plain'",
            "'say \"hi\", then ''bye'''",
            "'a,b;c|d'",
            "'line1' || chr(10) || 'line2'",
            "'line1' || chr(13) || chr(10) || 'line2'",
            "'cr' || chr(13) || 'only'",
            "'sep' || chr(8232) || 'par' || chr(8233) || 'end'",
            "'tab' || chr(9) || 'here'",
            "'emoji 😀👍🏽 🇫🇷'",
            "'RTL שלום مرحبا'",
            "''",
            "NULL",
            "'\\N'",
            "'trailing backslash\\'",
            "'back\\\"slash quote'",
            "'\"'",
            "'\"\"'",
            "'  spaced  '",
            "'NaN'",
            "'null'",
            "'#N/A'",
            "'<x a=\"1\">&amp;</x>'",
            "'ends with quote\"'",
            "'\\'",
        ],
    ),
    "tiny": ("TINYINT", ["-128", "127", "0", "NULL"]),
    "big": ("BIGINT", ["-9223372036854775808", "9223372036854775807", "0", "NULL", "-1"]),
    "ubig": ("UBIGINT", ["18446744073709551615", "0", "NULL", "9223372036854775808"]),
    # The widest HUGEINT Parquet holds exactly (DECIMAL(38,0)); wider values are refused there.
    "huge": (
        "HUGEINT",
        [
            "99999999999999999999999999999999999999",
            "-99999999999999999999999999999999999999",
            "18446744073709551616",
            "NULL",
            "0",
        ],
    ),
    "dec18": (
        "DECIMAL(18,4)",
        ["99999999999999.9999", "-99999999999999.9999", "0.0000", "0.0001", "NULL", "-0.0001"],
    ),
    "dec38": (
        "DECIMAL(38,10)",
        [
            "9999999999999999999999999999.9999999999",
            "-9999999999999999999999999999.9999999999",
            "0.0000000001",
            "NULL",
            "0",
        ],
    ),
    "dbl": (
        "DOUBLE",
        [
            "'nan'",
            "'inf'",
            "'-inf'",
            "-0.0",
            "0.0",
            "1.7976931348623157e308",
            "-1.7976931348623157e308",
            "5e-324",
            "2.2250738585072014e-308",
            "0.1",
            "1e20",
            "123456789.12345679",
            "NULL",
        ],
    ),
    "flag": ("BOOLEAN", ["true", "false", "NULL"]),
    "day": (
        "DATE",
        [
            "'0001-01-01'",
            "'1582-10-04'",
            "'1582-10-15'",
            "'1899-12-30'",
            "'1900-01-01'",
            "'1970-01-01'",
            "'2024-02-29'",
            "'9999-12-31'",
            "NULL",
        ],
    ),
    "ts": (
        "TIMESTAMP",
        [
            "'0001-01-01 00:00:00'",
            "'1582-10-04 23:59:59.999999'",
            "'1899-12-30 00:00:00'",
            "'1969-12-31 23:59:59.999999'",
            "'2038-01-19 03:14:08'",
            "'9999-12-31 23:59:59.999999'",
            "NULL",
        ],
    ),
    "tstz": (
        "TIMESTAMPTZ",
        [
            "'2025-03-30 02:30:00.123456+05:45'",
            "'1900-01-01 00:00:00-09:30'",
            "'2024-12-31 23:59:59.999999+14:00'",
            "'0001-01-02 00:00:00+01:00'",
            "'9999-12-31 10:00:00-12:00'",
            "'1582-10-10 12:00:00+00:00'",
            "NULL",
        ],
    ),
    "ints": (
        "INTEGER[]",
        ["[]", "[NULL, 1]", "[-2147483648, 2147483647]", "NULL", "[1, 2, 3]"],
    ),
    "rec": (
        "STRUCT(a INTEGER, b VARCHAR)",
        [
            "{'a': 1, 'b': 'x \"q\", y'}",
            "{'a': NULL, 'b': NULL}",
            "NULL",
            "{'a': -1, 'b': ''}",
            "{'a': 2, 'b': 'line' || chr(10) || 'break ✓'}",
        ],
    ),
}
HARD_ROWS = max(len(values) for _, values in COLUMNS.values())
FILLER_ROWS = 2000

FLOAT_COLUMNS = {"dbl"}
DECIMAL_COLUMNS = {"ubig", "huge", "dec18", "dec38"}
TIMESTAMP_COLUMNS = {"ts", "tstz"}
NESTED_COLUMNS = {"ints", "rec"}


def _filler(name: str, sql_type: str) -> str:
    """An ordinary value for filler row `i` (ids HARD_ROWS+1..)."""
    expr = {
        "first name": "'customer ' || i",
        "tiny": "CAST(i % 100 AS TINYINT)",
        "big": "i * 1000003",
        "ubig": "CAST(i AS UBIGINT) * 7",
        "huge": "CAST(i AS HUGEINT) * 1000000000000",
        "dec18": "CAST(i AS DECIMAL(18,4)) / 8",
        "dec38": "CAST(i AS DECIMAL(38,10)) / 3",
        "dbl": "i / 7.0",
        "flag": "i % 2 = 0",
        "day": "DATE '2020-01-01' + CAST(i AS INTEGER)",
        "ts": "TIMESTAMP '2020-01-01' + to_seconds(i * 3601)",
        "tstz": "TIMESTAMPTZ '2020-01-01 00:00:00+00' + to_microseconds(i * 1000003)",
        "ints": "[CAST(i AS INTEGER), NULL]",
        "rec": "{'a': CAST(i AS INTEGER), 'b': 'v' || i}",
    }[name]
    return f"CAST(({expr}) AS {sql_type})"


def hard_table_sql(table: str = "hard") -> list[str]:
    """The statements that create and fill the table (`id` is the primary key)."""
    defs = ", ".join(f'"{name}" {sql_type}' for name, (sql_type, _) in COLUMNS.items())
    statements = [f"CREATE TABLE {table} (id BIGINT, {defs})"]
    for row in range(HARD_ROWS):
        values = ", ".join(
            f"CAST({values[row % len(values)]} AS {sql_type})"
            for sql_type, values in COLUMNS.values()
        )
        statements.append(f"INSERT INTO {table} VALUES ({row + 1}, {values})")
    fillers = ", ".join(_filler(name, sql_type) for name, (sql_type, _) in COLUMNS.items())
    statements.append(
        f"INSERT INTO {table} SELECT {HARD_ROWS} + i AS id, {fillers} "
        f"FROM (SELECT range AS i FROM range(1, {FILLER_ROWS} + 1))"
    )
    return statements


def source_rows(database: Path, table: str = "hard") -> dict[int, dict[str, Any]]:
    """{id: {column: value}} as the source holds them, timestamps as UTC epoch microseconds."""
    con = duckdb.connect(str(database), read_only=True)
    try:
        columns = ["id", *COLUMNS]
        items = ", ".join(
            f'epoch_us("{c}") AS "{c}"' if c in TIMESTAMP_COLUMNS else f'"{c}"' for c in columns
        )
        rows = con.execute(f"SELECT {items} FROM {table} ORDER BY id").fetchall()
    finally:
        con.close()
    return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}


def same(expected: Any, actual: Any) -> bool:
    """Exact equality of value and Python type, with NaN equal to NaN and -0.0 told apart
    from 0.0."""
    if isinstance(expected, float) and isinstance(actual, float):
        if math.isnan(expected) or math.isnan(actual):
            return math.isnan(expected) and math.isnan(actual)
        return expected == actual and math.copysign(1, expected) == math.copysign(1, actual)
    if isinstance(expected, Decimal) and isinstance(actual, Decimal):
        # Equal values; the scale is the column's type (readers print 1E-10 or 1.00E-10).
        return expected == actual
    if type(expected) is not type(actual) and not (
        isinstance(expected, int) and isinstance(actual, int) and not isinstance(actual, bool)
    ):
        return False
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(
            same(e, a) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict):
        return expected.keys() == actual.keys() and all(
            same(expected[k], actual[k]) for k in expected
        )
    return expected == actual


def differences(
    expected: dict[int, dict[str, Any]], actual: dict[int, dict[str, Any]], limit: int = 20
) -> list[str]:
    """Every (id, column) whose value differs, as readable lines (at most `limit`)."""
    problems = []
    if expected.keys() != actual.keys():
        missing = sorted(expected.keys() - actual.keys())[:10]
        extra = sorted(actual.keys() - expected.keys())[:10]
        problems.append(f"ids differ: missing {missing}, unexpected {extra}")
    for key in sorted(expected.keys() & actual.keys()):
        for column, value in expected[key].items():
            got = actual[key].get(column, "<missing column>")
            if not same(value, got):
                problems.append(f"id {key} column {column!r}: expected {value!r}, read {got!r}")
    return problems[:limit]
