"""Every value is written exactly or refused: HUGEINT/UHUGEINT and infinite dates/timestamps,
the two kinds of value DuckDB's own Parquet writer would change silently.

Written with `write_export` on a real DuckDB, read back with pyarrow (`pq.read_table` +
`to_pylist`) or, for text formats, csv/json/defusedxml, and compared value by value.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from defusedxml import ElementTree

from azexport_assets.formats import FormatSpec, UnrepresentableValueError, write_export

D38 = 10**38 - 1  # the largest integer DECIMAL(38,0) holds
HUGEINT_MAX = 2**127 - 1
HUGEINT_MIN = -(2**127)
UHUGEINT_MAX = 2**128 - 1


def parquet_rows(con, query: str, tmp_path: Path, **limit) -> tuple[pa.Schema, list[dict]]:
    result = write_export(con, query, FormatSpec(format="parquet"), tmp_path, **limit)
    tables = [pq.read_table(f.path) for f in result.files]
    return tables[0].schema, [row for t in tables for row in t.to_pylist()]


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


# --------------------------------------------------------------------------- HUGEINT, UHUGEINT


def test_hugeint_and_uhugeint_round_trip_exactly_as_decimal_38_0(con, tmp_path: Path) -> None:
    values = [D38, -D38, 2**63, -(2**63) - 1, 2**64 + 1, 123456789012345678901234567890, 0, None]
    con.execute("CREATE TABLE h (i INTEGER, h HUGEINT, u UHUGEINT)")
    for i, v in enumerate(values):
        h, u = ("NULL", "NULL") if v is None else (str(v), str(abs(v)))
        con.execute(f"INSERT INTO h VALUES ({i}, {h}::HUGEINT, {u}::UHUGEINT)")
    schema, rows = parquet_rows(con, "SELECT * FROM h ORDER BY i", tmp_path)
    assert schema.field("h").type == pa.decimal128(38, 0)
    assert schema.field("u").type == pa.decimal128(38, 0)
    expected = [(v, None if v is None else abs(v)) for v in values]
    got = [(r["h"], r["u"]) for r in rows]
    assert got == [
        (None if h is None else Decimal(h), None if u is None else Decimal(u)) for h, u in expected
    ]
    # every digit survives (a DOUBLE would have turned 2**64 + 1 into 2**64)
    assert rows[4]["h"] == Decimal(18446744073709551617)
    # DuckDB reads the file back to the same numbers
    back = con.execute(
        f"SELECT CAST(h AS HUGEINT), CAST(u AS UHUGEINT) FROM read_parquet('{tmp_path}/*.parquet')"
    ).fetchall()
    assert [tuple(r) for r in back] == [(v, None if v is None else abs(v)) for v in values]


def test_hugeint_inside_nested_values_is_exact(con, tmp_path: Path) -> None:
    query = f"""SELECT [{D38}::HUGEINT, NULL, -7] AS l,
                       {{'a b': {2**100}::UHUGEINT}} AS s,
                       MAP {{1::HUGEINT: {2**90}::HUGEINT}} AS m,
                       [5::HUGEINT, 6]::HUGEINT[2] AS arr"""
    schema, rows = parquet_rows(con, query, tmp_path)
    assert schema.field("l").type == pa.list_(pa.decimal128(38, 0))
    assert rows == [
        {
            "l": [Decimal(D38), None, Decimal(-7)],
            "s": {"a b": Decimal(2**100)},
            "m": [(Decimal(1), Decimal(2**90))],
            "arr": [Decimal(5), Decimal(6)],
        }
    ]


@pytest.mark.parametrize(
    ("type_name", "value"),
    [
        ("HUGEINT", D38 + 1),
        ("HUGEINT", HUGEINT_MAX),
        ("HUGEINT", HUGEINT_MIN),
        ("UHUGEINT", UHUGEINT_MAX),
    ],
)
def test_an_integer_of_more_than_38_digits_is_refused_naming_the_column(
    con, tmp_path: Path, type_name: str, value: int
) -> None:
    query = (
        f'SELECT 1::HUGEINT AS fine, CAST(x AS {type_name}) AS "big value" '
        f"FROM (VALUES (NULL), ('{value}')) t(x)"
    )
    with pytest.raises(UnrepresentableValueError) as caught:
        write_export(con, query, FormatSpec(format="parquet"), tmp_path)
    message = str(caught.value)
    assert caught.value.column == "big value"
    assert f"column 'big value' ({type_name})" in message
    assert "more than 38 digits" in message and "DECIMAL(38,0)" in message
    assert "cast the column to VARCHAR" in message
    # The cap is DuckDB's DECIMAL, not Parquet's: the message says so and offers the cast.
    assert "DuckDB, which writes the file, has no wider exact type" in message
    assert "its DECIMAL stops at 38 digits; Parquet's own decimals could be wider" in message
    assert "or to DECIMAL(38,0) if its values should fit" in message
    assert "Parquet's widest" not in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    assert con.execute("SELECT 42").fetchall() == [(42,)]  # the connection is usable again


def test_a_too_large_integer_inside_a_list_is_refused(con, tmp_path: Path) -> None:
    query = f"SELECT [1::HUGEINT, {HUGEINT_MAX}::HUGEINT] AS amounts"
    with pytest.raises(UnrepresentableValueError, match=r"column 'amounts' \(HUGEINT\[\]\)"):
        write_export(con, query, FormatSpec(format="parquet"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "json", "xml"])
def test_text_formats_write_every_digit_of_hugeint(con, tmp_path: Path, fmt: str) -> None:
    query = f"SELECT '{HUGEINT_MIN}'::HUGEINT AS h, '{UHUGEINT_MAX}'::UHUGEINT AS u"
    result = write_export(con, query, FormatSpec(format=fmt), tmp_path)
    text = result.files[0].path.read_text()
    if fmt == "csv":
        assert list(csv.reader(text.splitlines())) == [
            ["h", "u"],
            [str(HUGEINT_MIN), str(UHUGEINT_MAX)],
        ]
    elif fmt == "json":
        assert json.loads(text) == [{"h": HUGEINT_MIN, "u": UHUGEINT_MAX}]  # Python ints are exact
    else:
        row = ElementTree.fromstring(text.encode())[0]
        assert [row.find("h").text, row.find("u").text] == [str(HUGEINT_MIN), str(UHUGEINT_MAX)]


# --------------------------------------------------------------------------- infinite dates


INFINITE = [
    ("DATE", "infinity"),
    ("DATE", "-infinity"),
    ("TIMESTAMP", "infinity"),
    ("TIMESTAMP_S", "-infinity"),
    ("TIMESTAMP_MS", "infinity"),
    ("TIMESTAMP_NS", "-infinity"),
    ("TIMESTAMPTZ", "infinity"),
    ("TIMESTAMPTZ", "-infinity"),
]


@pytest.mark.parametrize(("type_name", "value"), INFINITE)
def test_an_infinite_date_or_timestamp_is_refused_in_parquet(
    con, tmp_path: Path, type_name: str, value: str
) -> None:
    query = (
        f"SELECT i, CASE WHEN i = 3 THEN '{value}'::{type_name} "
        f"ELSE '2024-01-01'::{type_name} END AS \"valid until\" FROM range(5) t(i)"
    )
    with pytest.raises(UnrepresentableValueError) as caught:
        write_export(con, query, FormatSpec(format="parquet"), tmp_path)
    message = str(caught.value)
    assert caught.value.column == "valid until"
    assert "column 'valid until'" in message and "'infinity' or '-infinity'" in message
    assert 'isinf("valid until")' in message  # what to do, ready to paste into the model
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "query",
    [
        "SELECT {'x': [DATE '2020-01-01', '-infinity'::DATE]} AS nested",
        "SELECT MAP {'infinity'::TIMESTAMP: 1} AS nested",
        "SELECT ['infinity'::TIMESTAMPTZ]::TIMESTAMPTZ[1] AS nested",
    ],
)
def test_an_infinite_value_inside_a_nested_value_is_refused(
    con, tmp_path: Path, query: str
) -> None:
    with pytest.raises(UnrepresentableValueError, match="column 'nested'"):
        write_export(con, query, FormatSpec(format="parquet"), tmp_path)


def test_finite_extreme_dates_and_timestamps_round_trip_exactly(con, tmp_path: Path) -> None:
    """The refusal is for infinities only: the far ends of the finite range are written exactly."""
    first, last = "0001-01-01 00:00:00", "9999-12-31 23:59:59.999999"
    query = f"""SELECT * FROM (VALUES
        (1, DATE '0001-01-01', TIMESTAMP '{first}', TIMESTAMPTZ '{first}+00'),
        (2, DATE '9999-12-31', TIMESTAMP '{last}', TIMESTAMPTZ '{last}+00'),
        (3, NULL, NULL, NULL)) t(i, d, ts, tz) ORDER BY i"""
    schema, rows = parquet_rows(con, query, tmp_path)
    utc = timezone.utc
    assert rows == [
        {
            "i": 1,
            "d": date(1, 1, 1),
            "ts": datetime(1, 1, 1, tzinfo=utc),
            "tz": datetime(1, 1, 1, tzinfo=utc),
        },
        {
            "i": 2,
            "d": date(9999, 12, 31),
            "ts": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc),
            "tz": datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc),
        },
        {"i": 3, "d": None, "ts": None, "tz": None},
    ]


def test_refusal_also_applies_when_splitting_into_parts(con, tmp_path: Path) -> None:
    query = (
        "SELECT i, md5(i::VARCHAR) AS pad, CASE WHEN i = 49999 THEN 'infinity'::DATE "
        "ELSE DATE '2024-01-01' END AS d FROM range(50000) t(i)"
    )
    with pytest.raises(UnrepresentableValueError, match="column 'd'"):
        write_export(con, query, FormatSpec(format="parquet"), tmp_path, max_file_size=200_000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["csv", "json", "xml"])
@pytest.mark.parametrize(("type_name", "value"), INFINITE)
def test_text_formats_write_infinite_values_as_infinity(
    con, tmp_path: Path, fmt: str, type_name: str, value: str
) -> None:
    query = f"SELECT '{value}'::{type_name} AS v"
    result = write_export(con, query, FormatSpec(format=fmt), tmp_path)
    text = result.files[0].path.read_text()
    if fmt == "csv":
        assert text == f"v\n{value}\n"
    elif fmt == "json":
        assert json.loads(text) == [{"v": value}]
    else:
        assert ElementTree.fromstring(text.encode())[0].find("v").text == value
