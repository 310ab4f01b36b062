"""Round trips of the format layer on real DuckDB: write with `write_export`, read back with an
independent reader (csv / json / defusedxml / pyarrow, and DuckDB's own readers), compare cell
by cell with the source rows fetched from DuckDB."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import random
import string
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from defusedxml import ElementTree

from azexport_assets.config import ActivationConfig
from azexport_assets.formats import FormatSpec, WriteResult, WrittenFile, write_export
from azexport_assets.formats.xml_names import element_names

XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
FORBIDDEN = "\x00\x01\x08\x0b\x0c\x0e\x1f\ufffe\uffff"
LONG = "x" * 99_990 + 'é😀,"\n<&>'

# Hard values for one VARCHAR column; row i of the table takes TEXTS[i % len(TEXTS)].
TEXTS: list[str | None] = [
    "plain",
    "comma, semicolon; pipe| tab\tend",
    'say "hi" and ""twice""',
    "crlf\r\nline",
    "cr\ronly",
    "lf\nonly",
    "  leading and trailing  ",
    "",
    None,
    "emoji 😀 café naïve Ωmega 日本",
    "<tag attr=\"x\">&amp; ]]> 'apos'",
    "forbidden:" + FORBIDDEN + ":end",
    LONG,
    "\\ backslash / slash \u2028 sep",
]

HARD_TABLE = """
CREATE TABLE hard (
    id BIGINT,
    "text value" VARCHAR,
    amount DECIMAL(38,10),
    price DECIMAL(10,2),
    qty INTEGER,
    big BIGINT,
    ratio DOUBLE,
    flag BOOLEAN,
    day DATE,
    ts TIMESTAMP,
    tstz TIMESTAMPTZ,
    "2024 total" VARCHAR
)"""

AMOUNTS = [
    Decimal("123456789012345678.1234567890"),
    Decimal("-99999999999999999999999999.9999999999"),
    Decimal("0E-10"),
    None,
    Decimal("12.5000000000"),
    Decimal("-0.0000000001"),
]
PRICES = [Decimal("12.50"), Decimal("-0.01"), None, Decimal("0.00"), Decimal("99999999.99")]
QTYS = [0, -1, 2147483647, -2147483648, None, 42]
BIGS = [9223372036854775807, -9223372036854775808, None, 0, -5]
RATIOS = [0.1, -1.5e300, 1e-7, None, 2.0, -0.0, 1e20]
FLAGS = [True, False, None]
DAYS = [date(1, 1, 1), date(9999, 12, 31), date(2025, 4, 14), None, date(2000, 2, 29)]
TIMESTAMPS = [
    datetime(1, 1, 1, 0, 0, 0),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2025, 4, 14, 12, 0, 0, 123456),
    None,
    datetime(1970, 1, 1),
]
TSTZ = [  # TIMESTAMPTZ input in various offsets; written as UTC
    "2025-04-14 12:00:00.5+02",
    None,
    "1999-12-31 23:59:59.999999-08",
    "2025-01-01 00:00:00+00",
]


def _pick(values: list[Any], i: int) -> Any:
    return values[i % len(values)]


def hard_rows(n: int, texts: list[str | None] = TEXTS) -> list[tuple[Any, ...]]:
    return [
        (
            i,
            _pick(texts, i),
            _pick(AMOUNTS, i),
            _pick(PRICES, i),
            _pick(QTYS, i),
            _pick(BIGS, i),
            _pick(RATIOS, i),
            _pick(FLAGS, i),
            _pick(DAYS, i),
            _pick(TIMESTAMPS, i),
            _pick(TSTZ, i),
            None if i % 4 == 0 else f"t{i}",
        )
        for i in range(n)
    ]


def make_connection(rows: list[tuple[Any, ...]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # A non-UTC session zone proves that nothing depends on it.
    con.execute("SET TimeZone = 'America/New_York'")
    con.execute(HARD_TABLE)
    # Through Arrow: executemany is far too slow for 20k rows. DuckDB casts into the table's
    # types (TIMESTAMPTZ from text with offsets).
    columns = list(zip(*rows, strict=True))
    source = pa.table(
        {f"c{i}": pa.array(values, type=_arrow_type(values)) for i, values in enumerate(columns)}
    )
    con.register("_source", source)
    con.execute("INSERT INTO hard SELECT * FROM _source")
    con.unregister("_source")
    return con


def _arrow_type(values: tuple[Any, ...]) -> pa.DataType | None:
    """Decimals of mixed scales need an explicit type; the rest is inferred."""
    if any(isinstance(v, Decimal) for v in values):
        return pa.decimal128(38, 10)
    return None


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = make_connection(hard_rows(3 * len(TEXTS)))
    yield connection
    connection.close()


QUERY = "SELECT * FROM hard ORDER BY id"


def source_rows(con: duckdb.DuckDBPyConnection, query: str = QUERY) -> list[tuple[Any, ...]]:
    # Fetched as UTC so TIMESTAMPTZ values compare as instants.
    return con.execute(query).fetchall()


def columns_of(con: duckdb.DuckDBPyConnection, query: str = QUERY) -> list[tuple[str, str]]:
    rel = con.sql(query)
    return [(n, str(t)) for n, t in zip(rel.columns, rel.types, strict=True)]


# ----------------------------------------------------------------------------- expectations


def iso_utc(value: datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )


def expected_text(value: Any) -> str | None:
    """The text a CSV field / XML element must hold for a source value (None for NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    return str(value)


def same_cell(actual: str | None, expected: Any) -> bool:
    """Text read back vs the source value; doubles compare as numbers (their text is DuckDB's)."""
    if isinstance(expected, float):
        return actual is not None and float(actual) == expected
    return actual == expected_text(expected)


def assert_rows_equal(actual: list[list[Any]], expected: list[tuple[Any, ...]], names) -> None:
    assert len(actual) == len(expected)
    for r, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert len(got) == len(want), f"row {r}"
        for c, (a, e) in enumerate(zip(got, want, strict=True)):
            assert same_cell(a, e), f"row {r} column {names[c]!r}: {a!r:.80} != {e!r:.80}"


# ----------------------------------------------------------------------------- readers


def file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def read_csv_python(path: Path, delimiter: str, header: bool) -> tuple[list[str], list[list]]:
    """Python's csv module (it cannot tell "" from an empty field, so both read as '')."""
    text = file_bytes(path).decode("utf-8")
    records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    return (records[0], records[1:]) if header else ([], records)


def read_csv_duckdb(path: Path, delimiter: str, header: bool, n_cols: int) -> list[tuple]:
    """DuckDB's reader: an unquoted empty field is NULL, a quoted one ("") an empty string."""
    reader = duckdb.connect()
    names = [f"c{i}" for i in range(n_cols)]
    return reader.execute(
        "SELECT * FROM read_csv(?, delim = ?, header = ?, quote = '\"', escape = '\"', "
        "auto_detect = false, new_line = '\\n', allow_quoted_nulls = false, columns = ?, "
        "strict_mode = true)",
        [str(path), delimiter, header, dict.fromkeys(names, "VARCHAR")],
    ).fetchall()


def read_json(path: Path, style: str) -> list[dict[str, Any]]:
    text = file_bytes(path).decode("utf-8")
    if style == "array":
        return json.loads(text, parse_float=Decimal)
    assert text == "" or text.endswith("\n")
    # NDJSON lines end with "\n" only (not str.splitlines(): U+2028 is valid inside strings).
    return [json.loads(line, parse_float=Decimal) for line in text.split("\n")[:-1]]


def read_xml(path: Path, root: str = "rows", row: str = "row") -> tuple[list[str], list[list]]:
    tree = ElementTree.fromstring(file_bytes(path))
    assert tree.tag == root
    names: list[str] = []
    rows = []
    for element in tree:
        assert element.tag == row
        names = [child.tag for child in element]
        rows.append(
            [None if child.get(XSI_NIL) == "true" else (child.text or "") for child in element]
        )
    return names, rows


def check_md5(files: list[WrittenFile]) -> None:
    for f in files:
        data = f.path.read_bytes()
        assert f.bytes == len(data)
        assert f.md5_hex == hashlib.md5(data).hexdigest()


def export(con, spec: FormatSpec, out: Path, query: str = QUERY, limit=None) -> WriteResult:
    out.mkdir(parents=True, exist_ok=True)
    result = write_export(con, query, spec, out, max_file_size=limit)
    check_md5(result.files)
    assert [f.path for f in result.files] == sorted(out.iterdir())  # nothing else left behind
    assert result.columns == columns_of(con, query)
    return result


# ----------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(con, tmp_path: Path, delimiter: str, header: bool) -> None:
    spec = FormatSpec("csv", csv_delimiter=delimiter, csv_header=header)
    result = export(con, spec, tmp_path)
    expected = source_rows(con)
    names = [n for n, _ in result.columns]
    (file,) = result.files
    assert file.rows == len(expected)
    got_header, records = read_csv_python(file.path, delimiter, header)
    assert got_header == (names if header else [])
    # Python's reader: "" and NULL both read as ''.
    flattened = [tuple("" if v is None else v for v in row) for row in expected]
    assert len(records) == len(flattened)
    for got, want in zip(records, flattened, strict=True):
        assert [same_cell(a, e) for a, e in zip(got, want, strict=True)] == [True] * len(want)
    # DuckDB's reader keeps NULL and "" apart.
    rows = read_csv_duckdb(file.path, delimiter, header, len(names))
    assert_rows_equal([list(r) for r in rows], expected, names)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_csv_compressed(con, tmp_path: Path, compression: str) -> None:
    plain = export(con, FormatSpec("csv"), tmp_path / "plain")
    packed = export(con, FormatSpec("csv", compression=compression), tmp_path / "packed")
    assert packed.files[0].path.name.endswith(".csv" + {"gzip": ".gz", "zstd": ".zst"}[compression])
    assert file_bytes(packed.files[0].path) == plain.files[0].path.read_bytes()
    rows = read_csv_duckdb(packed.files[0].path, ",", True, len(plain.columns))
    assert_rows_equal([list(r) for r in rows], source_rows(con), [n for n, _ in plain.columns])


def test_csv_exact_bytes(tmp_path: Path) -> None:
    """The decisions, byte for byte: quoting, NULL vs "", spaces, booleans, dates, decimals."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'Asia/Tokyo'")
    query = """SELECT * FROM (VALUES
        (1, 'a,b', ' sp ', '', NULL, true, DATE '2025-04-14',
         TIMESTAMP '2025-04-14 12:00:00.123456',
         TIMESTAMPTZ '2025-04-14 12:00:00+02', 12.50::DECIMAL(10,2), 'q"t', 'x' || chr(13) || 'y'),
        (2, 'plain', 'a b', 'c', 'd', false, DATE '0001-01-01', TIMESTAMP '1970-01-01 00:00:00',
         NULL, -1.5::DECIMAL(10,2), 'e;f', 'n' || chr(10))
        ) AS t(id, "a,b", sp, empty, nul, flag, day, ts, tstz, dec, q, crlf) ORDER BY id"""
    result = export(con, FormatSpec("csv"), tmp_path / "c", query)
    assert result.files[0].path.read_bytes() == (
        b'id,"a,b",sp,empty,nul,flag,day,ts,tstz,dec,q,crlf\n'
        b'1,"a,b", sp ,"",,true,2025-04-14,2025-04-14T12:00:00.123456Z,'
        b'2025-04-14T10:00:00.000000Z,12.50,"q""t","x\ry"\n'
        b'2,plain,a b,c,d,false,0001-01-01,1970-01-01T00:00:00.000000Z,,-1.50,e;f,"n\n"\n'
    )
    result = export(
        con, FormatSpec("csv", csv_delimiter=";", csv_header=False), tmp_path / "s", query
    )
    assert result.files[0].path.read_bytes().split(b"\n")[1].startswith(b"2;plain;a b;c;d;false;")
    assert b'"e;f"' in result.files[0].path.read_bytes()


def test_csv_delimiter_inside_numbers_is_quoted(tmp_path: Path) -> None:
    con = duckdb.connect()
    query = "SELECT 1.5::DECIMAL(4,2) AS a, -3 AS b, DATE '2025-04-14' AS c"
    result = export(con, FormatSpec("csv", csv_delimiter="."), tmp_path / "dot", query)
    assert result.files[0].path.read_bytes() == b'a.b.c\n"1.50".-3.2025-04-14\n'
    result = export(con, FormatSpec("csv", csv_delimiter="-"), tmp_path / "dash", query)
    assert result.files[0].path.read_bytes() == b'a-b-c\n1.50-"-3"-"2025-04-14"\n'


# ----------------------------------------------------------------------------- JSON


def json_expected(value: Any) -> Any:
    """What json.loads(parse_float=Decimal) must return for a source value."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, datetime | date):
        return expected_text(value)
    return value


def assert_json_rows(objects: list[dict[str, Any]], expected, names: list[str]) -> None:
    assert len(objects) == len(expected)
    for obj, row in zip(objects, expected, strict=True):
        assert list(obj) == names
        for name, value in zip(names, row, strict=True):
            got = obj[name]
            want = json_expected(value)
            if isinstance(want, float):
                assert isinstance(got, Decimal | int) and float(got) == want, name
            elif isinstance(want, Decimal):
                # exact digits and scale
                assert (got, got.as_tuple().exponent) == (want, want.as_tuple().exponent), name
            else:
                assert got == want and type(got) is type(want), name


@pytest.mark.parametrize("style", ["array", "lines"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_json_round_trip(con, tmp_path: Path, style: str, compression: str) -> None:
    spec = FormatSpec("json", json_style=style, compression=compression)
    result = export(con, spec, tmp_path)
    (file,) = result.files
    assert file.path.name.endswith(spec.extension)
    names = [n for n, _ in result.columns]
    expected = source_rows(con)
    assert file.rows == len(expected)
    assert_json_rows(read_json(file.path, style), expected, names)
    if compression == "none":  # DuckDB's reader agrees on the values it can represent
        fmt = "array" if style == "array" else "newline_delimited"
        reader = duckdb.connect()
        got = reader.execute(
            'SELECT count(*), count("text value"), sum(qty) FROM read_json(?, format = ?)',
            [str(file.path), fmt],
        ).fetchall()[0]
        want = con.execute('SELECT count(*), count("text value"), sum(qty) FROM hard').fetchall()[0]
        assert got == want


def test_json_exact_bytes(tmp_path: Path) -> None:
    con = duckdb.connect()
    query = """SELECT 1 AS "a b", 12.50::DECIMAL(10,2) AS dec, NULL::VARCHAR AS n, '' AS e,
        'q"\\' || chr(10) AS s, true AS f, 'nan'::DOUBLE AS nan, 0.1::DOUBLE AS d,
        DATE '2025-04-14' AS day, TIMESTAMPTZ '2025-04-14 12:00:00+02' AS ts"""
    row = (
        b'{"a b":1,"dec":12.50,"n":null,"e":"","s":"q\\"\\\\\\n","f":true,"nan":null,"d":0.1,'
        b'"day":"2025-04-14","ts":"2025-04-14T10:00:00.000000Z"}'
    )
    lines = export(con, FormatSpec("json", json_style="lines"), tmp_path / "l", query)
    assert lines.files[0].path.read_bytes() == row + b"\n"
    array = export(con, FormatSpec("json"), tmp_path / "a", query + " UNION ALL " + query)
    assert array.files[0].path.read_bytes() == b"[\n" + row + b",\n" + row + b"\n]\n"


# ----------------------------------------------------------------------------- XML


def xml_expected(value: Any) -> Any:
    if isinstance(value, str):
        return value.translate({ord(c): None for c in FORBIDDEN})
    return value


@pytest.mark.parametrize(("root", "row"), [("rows", "row"), ("Customers", "customer.item")])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_xml_round_trip(con, tmp_path: Path, root: str, row: str, compression: str) -> None:
    spec = FormatSpec("xml", xml_root=root, xml_row=row, compression=compression)
    result = export(con, spec, tmp_path)
    (file,) = result.files
    names, rows = read_xml(file.path, root, row)
    columns = [n for n, _ in result.columns]
    assert names == element_names(columns)
    assert result.xml_element_names == {"text value": "text_value", "2024 total": "_2024_total"}
    expected = source_rows(con)
    assert file.rows == len(expected)
    assert_rows_equal(rows, [tuple(xml_expected(v) for v in r) for r in expected], columns)
    forbidden_per_row = sum(1 for r in expected if r[1] is not None and FORBIDDEN in r[1])
    assert result.xml_removed_chars == forbidden_per_row * len(FORBIDDEN)
    text = file_bytes(file.path).decode("utf-8")
    assert text.startswith(f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} ')
    assert "]]>" not in text


def test_xml_exact_bytes(tmp_path: Path) -> None:
    con = duckdb.connect()
    query = """SELECT 1 AS id, 'a<b>&"c''' || chr(13) || chr(1) AS "my text", NULL::INT AS n,
        '' AS e, 12.50::DECIMAL(10,2) AS dec"""
    result = export(con, FormatSpec("xml", xml_root="list", xml_row="item"), tmp_path, query)
    assert result.files[0].path.read_bytes() == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<list xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        b"<item><id>1</id><my_text>a&lt;b&gt;&amp;&quot;c&apos;&#13;</my_text>"
        b'<n xsi:nil="true"/><e></e><dec>12.50</dec></item>\n'
        b"</list>\n"
    )
    assert result.xml_removed_chars == 1
    assert result.xml_element_names == {"my text": "my_text"}


def test_xml_removes_forbidden_characters_per_value_of_a_row(tmp_path: Path) -> None:
    """A row is searched once for forbidden characters; each of its values is then cleaned
    and counted on its own, NULLs included (a NULL next to a cleaned value counts 0)."""
    con = duckdb.connect()
    query = """SELECT * FROM (VALUES
        (1, NULL, 'b' || chr(2) || chr(3), 'ok'),
        (2, 'x' || chr(65535), NULL, 'a&' || chr(31)),
        (3, 'clean', 'also <clean>', NULL)) AS t(id, first, second, third)"""
    result = export(con, FormatSpec("xml", xml_root="r", xml_row="i"), tmp_path, query)
    lines = result.files[0].path.read_bytes().split(b"\n")[2:5]
    nil = b' xsi:nil="true"/>'
    assert lines == [
        b"<i><id>1</id><first" + nil + b"<second>b</second><third>ok</third></i>",
        b"<i><id>2</id><first>x</first><second" + nil + b"<third>a&amp;</third></i>",
        b"<i><id>3</id><first>clean</first><second>also &lt;clean&gt;</second>"
        b"<third" + nil + b"</i>",
    ]
    assert result.xml_removed_chars == 4


def test_xml_nested_and_blob_values_are_escaped(tmp_path: Path) -> None:
    con = duckdb.connect()
    query = "SELECT ['<a>', NULL] AS l, {'k': 'x&y'} AS s, '<>'::BLOB AS b, uuid() AS u"
    result = export(con, FormatSpec("xml"), tmp_path, query)
    names, rows = read_xml(result.files[0].path)
    assert rows[0][:3] == ['["<a>",null]', '{"k":"x&y"}', "PD4="]  # nested: JSON text


# ----------------------------------------------------------------------------- Parquet


def parquet_expected(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # naive TIMESTAMP is UTC
    return value


@pytest.mark.parametrize("compression", ["zstd", "snappy", "gzip", "none"])
def test_parquet_round_trip(con, tmp_path: Path, compression: str) -> None:
    result = export(con, FormatSpec("parquet", parquet_compression=compression), tmp_path)
    (file,) = result.files
    meta = pq.ParquetFile(file.path).metadata
    codec = {"none": "UNCOMPRESSED"}.get(compression, compression.upper())
    assert meta.row_group(0).column(1).compression == codec
    table = pq.read_table(file.path)
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema == {
        "id": "int64",
        "text value": "string",
        "amount": "decimal128(38, 10)",
        "price": "decimal128(10, 2)",
        "qty": "int32",
        "big": "int64",
        "ratio": "double",
        "flag": "bool",
        "day": "date32[day]",
        "ts": "timestamp[us, tz=UTC]",
        "tstz": "timestamp[us, tz=UTC]",
        "2024 total": "string",
    }
    expected = [tuple(parquet_expected(v) for v in r) for r in source_rows(con)]
    got = [tuple(r.values()) for r in table.to_pylist()]
    assert got == expected
    assert file.rows == len(expected)
    # DuckDB reads the same instants back.
    assert duckdb.connect().execute(
        "SELECT count(*) FROM read_parquet(?)", [str(file.path)]
    ).fetchall() == [(len(expected),)]


# ----------------------------------------------------------------------------- empty results

EMPTY_CASES = [
    (FormatSpec("csv"), b"id,text value,amount\n"),
    (FormatSpec("csv", csv_header=False), b""),
    (FormatSpec("json"), b"[\n]\n"),
    (FormatSpec("json", json_style="lines"), b""),
    (
        FormatSpec("xml"),
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<rows xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n</rows>\n',
    ),
]


@pytest.mark.parametrize(("spec", "content"), EMPTY_CASES)
@pytest.mark.parametrize("limit", [None, 1024])
def test_empty_text(con, tmp_path: Path, spec: FormatSpec, content: bytes, limit) -> None:
    query = 'SELECT id, "text value", amount FROM hard WHERE false'
    result = export(con, spec, tmp_path, query, limit)
    (file,) = result.files
    assert (file.rows, file.path.read_bytes()) == (0, content)
    gz = export(con, FormatSpec(**{**spec.__dict__, "compression": "gzip"}), tmp_path / "gz", query)
    assert gzip.decompress(gz.files[0].path.read_bytes()) == content


def test_empty_parquet(con, tmp_path: Path) -> None:
    query = "SELECT * FROM hard WHERE false"
    result = export(con, FormatSpec("parquet"), tmp_path, query, 1024)
    (file,) = result.files
    table = pq.read_table(file.path)
    assert (file.rows, table.num_rows) == (0, 0)
    assert table.schema.names == [n for n, _ in result.columns]
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"


# ----------------------------------------------------------------------------- API


def test_spec_from_activation_and_properties() -> None:
    activation = ActivationConfig.model_validate(
        {
            "source": "m",
            "destination": "d",
            "file_name": "x/{YYYY}",
            "format": "json",
            "json": {"style": "lines"},
            "compression": "zstd",
        }
    )
    spec = FormatSpec.from_activation(activation)
    assert spec == FormatSpec("json", json_style="lines", compression="zstd")
    assert (spec.extension, spec.content_type, spec.stored_content_type) == (
        ".jsonl.zst",
        "application/x-ndjson",
        "application/zstd",
    )
    assert FormatSpec("csv", compression="gzip").stored_content_type == "application/gzip"
    assert FormatSpec("csv").stored_content_type == "text/csv; charset=utf-8"
    assert FormatSpec("csv", csv_delimiter="\t").content_type == "text/csv; charset=utf-8"
    assert FormatSpec("json").content_type == "application/json"
    assert FormatSpec("xml", compression="gzip").extension == ".xml.gz"
    assert FormatSpec("parquet").content_type == "application/vnd.apache.parquet"
    with pytest.raises(ValueError):
        FormatSpec("parquet", compression="gzip")


def test_connection_is_free_after_success_and_error(tmp_path: Path) -> None:
    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE t AS SELECT range AS i FROM range(100000)")
    result = export(con, FormatSpec("csv"), tmp_path / "ok", "SELECT i FROM t;")
    assert result.files[0].rows == 100000
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(100000,)]
    (tmp_path / "bad").mkdir()
    # Fails mid-stream: DuckDB's error arrives through the Arrow reader as an OSError.
    with pytest.raises((duckdb.Error, OSError), match="boom"):
        write_export(
            con,
            "SELECT CASE WHEN i = 90000 THEN error('boom') ELSE i END AS i FROM t",
            FormatSpec("json"),
            tmp_path / "bad",
        )
    assert con.execute("SELECT 42").fetchall() == [(42,)]


# ----------------------------------------------------------------------------- parts


@pytest.fixture(scope="module")
def many() -> Iterator[duckdb.DuckDBPyConnection]:
    """20,000 rows of hard values (without the 100k-character string)."""
    connection = make_connection(hard_rows(20_000, [t for t in TEXTS if t != LONG]))
    yield connection
    connection.close()


def parse_part(spec: FormatSpec, path: Path, names: list[str]) -> list[list[Any]]:
    """One part read alone, as rows of text cells (None for NULL) in column order."""
    if spec.format == "csv":
        rows = read_csv_duckdb(path, spec.csv_delimiter, spec.csv_header, len(names))
        if spec.csv_header:
            assert file_bytes(path).startswith(spec.csv_delimiter.join(names).encode() + b"\n")
        return [list(r) for r in rows]
    if spec.format == "json":
        objects = read_json(path, spec.json_style)
        return [[o[n] for n in names] for o in objects]
    if spec.format == "xml":
        return read_xml(path, spec.xml_root, spec.xml_row)[1]
    return [list(r.values()) for r in pq.read_table(path).to_pylist()]


PART_SPECS = [
    FormatSpec("csv"),
    FormatSpec("csv", csv_delimiter="\t", csv_header=False),
    FormatSpec("csv", compression="gzip"),
    FormatSpec("json"),
    FormatSpec("json", json_style="lines", compression="zstd"),
    FormatSpec("xml"),
    FormatSpec("xml", xml_root="list", xml_row="item", compression="gzip"),
    FormatSpec("parquet"),
    FormatSpec("parquet", parquet_compression="none"),
]


@pytest.mark.parametrize("spec", PART_SPECS, ids=lambda s: f"{s.format}{s.extension}")
def test_parts_are_complete_files_under_the_limit(many, tmp_path: Path, spec: FormatSpec) -> None:
    whole = export(many, spec, tmp_path / "whole")
    size = whole.files[0].bytes
    limit = max(1024, size // 4)
    result = export(many, spec, tmp_path / "parts", limit=limit)
    files = result.files
    assert len(files) >= 3, [f.bytes for f in files]
    assert [f.path.name for f in files] == [
        f"export_part-{i:05d}{spec.extension}" for i in range(1, len(files) + 1)
    ]
    assert all(f.bytes <= limit for f in files), (limit, [f.bytes for f in files])
    # Parts are well filled (no degenerate tiny parts except the last one).
    assert all(f.bytes >= limit // 2 for f in files[:-1]), (limit, [f.bytes for f in files])
    names = [n for n, _ in result.columns]
    joined: list[list[Any]] = []
    for f in files:
        rows = parse_part(spec, f.path, names)
        assert len(rows) == f.rows > 0
        joined.extend(rows)
    expected = source_rows(many)
    assert sum(f.rows for f in files) == len(expected) == whole.files[0].rows
    # Exactly the source rows, in order: none lost or duplicated.
    assert joined == parse_part(spec, whole.files[0].path, names)
    assert [int(r[0]) for r in joined] == [r[0] for r in expected]


@pytest.mark.parametrize("spec", [FormatSpec("csv"), FormatSpec("xml", compression="zstd")])
def test_a_row_larger_than_the_limit_gets_a_part_alone(tmp_path: Path, spec: FormatSpec) -> None:
    rng = random.Random(7)  # 100k characters that do not compress
    noise = "".join(rng.choices(string.ascii_letters + string.digits, k=100_000))
    con = make_connection(hard_rows(40, TEXTS[:12] + [noise]))  # rows 12, 25 and 38
    result = export(con, spec, tmp_path, limit=4096)
    oversized = [f for f in result.files if f.bytes > 4096]
    assert len(oversized) == 3
    assert all(f.rows == 1 for f in oversized)
    assert sum(f.rows for f in result.files) == 40


def test_no_split_when_output_fits(many, tmp_path: Path) -> None:
    for spec in (FormatSpec("csv"), FormatSpec("parquet")):
        result = export(many, spec, tmp_path / spec.format, limit=10**9)
        assert len(result.files) == 1 and result.files[0].rows == 20_000


def test_parquet_split_with_a_column_named_file_row_number(many, tmp_path: Path) -> None:
    """That name would clash with DuckDB's row-range filter: the pyarrow splitter takes over."""
    query = 'SELECT id AS file_row_number, "text value", amount, ts FROM hard ORDER BY id'
    whole = export(many, FormatSpec("parquet"), tmp_path / "whole", query)
    limit = max(4096, whole.files[0].bytes // 4)
    result = export(many, FormatSpec("parquet"), tmp_path / "parts", query, limit)
    assert len(result.files) >= 3
    assert all(f.bytes <= limit for f in result.files)
    tables = [pq.read_table(f.path) for f in result.files]
    assert [t.num_rows for t in tables] == [f.rows for f in result.files]
    joined = [row for t in tables for row in t.to_pylist()]
    assert joined == pq.read_table(whole.files[0].path).to_pylist()
    assert all(t.schema.field("ts").type == tables[0].schema.field("ts").type for t in tables)


def test_parquet_zero_or_one_row_over_the_limit_is_one_file(tmp_path: Path) -> None:
    con = duckdb.connect()
    wide = ", ".join(f"repeat('x', 300) || {i} AS c{i}" for i in range(300))
    for n in (0, 1):
        query = f"SELECT {wide} FROM range({n})"
        result = export(con, FormatSpec("parquet"), tmp_path / str(n), query, 1024)
        (file,) = result.files
        assert file.rows == n and file.bytes > 1024
        assert pq.read_table(file.path).num_rows == n


# ----------------------------------------------------------------------------- readers' defaults


def test_nan_and_infinity_are_spelled_as_spark_pandas_and_polars_read_them(tmp_path: Path) -> None:
    """`NaN`, `Infinity`, `-Infinity`: Spark's CSV default `nanValue` and Java's spelling of the
    infinities; pandas, Polars, DuckDB and Python's float() read them too."""
    con = duckdb.connect()
    query = (
        "SELECT * FROM (VALUES (1, 'nan'::DOUBLE, 'inf'::FLOAT), (2, 'inf'::DOUBLE, '-inf'::FLOAT),"
        " (3, '-inf'::DOUBLE, 'nan'::FLOAT), (4, -0.0::DOUBLE, NULL), (5, NULL, 0.5::FLOAT))"
        " AS t(id, d, f) ORDER BY id"
    )
    csv_file = export(con, FormatSpec("csv"), tmp_path / "csv", query).files[0].path
    assert csv_file.read_text() == (
        "id,d,f\n1,NaN,Infinity\n2,Infinity,-Infinity\n3,-Infinity,NaN\n4,-0.0,\n5,,0.5\n"
    )
    xml_file = export(con, FormatSpec("xml"), tmp_path / "xml", query).files[0].path
    _, rows = read_xml(xml_file)
    assert [r[1:] for r in rows[:3]] == [
        ["NaN", "Infinity"],
        ["Infinity", "-Infinity"],
        ["-Infinity", "NaN"],
    ]
    read_back = con.sql(f"SELECT d FROM read_csv('{csv_file}', header = true) ORDER BY id")
    values = [v for (v,) in read_back.fetchall()]
    assert math.isnan(values[0]) and values[1:4] == [math.inf, -math.inf, 0.0]
    assert math.copysign(1, values[3]) == -1
    json_file = export(con, FormatSpec("json"), tmp_path / "json", query).files[0].path
    assert [o["d"] for o in json.loads(json_file.read_text())][:3] == [None, None, None]


def test_nested_values_are_json_text_in_csv_and_xml(tmp_path: Path) -> None:
    con = duckdb.connect()
    query = (
        "SELECT [NULL, 1] AS l, {'a': 1, 'b': 'say \"hi\", ok'} AS s,"
        " {'d': 12345678901234567890.1234567890::DECIMAL(38,10)} AS d, MAP {'k': [2]} AS m,"
        " NULL::INTEGER[] AS n"
    )
    expected = [
        [None, 1],
        {"a": 1, "b": 'say "hi", ok'},
        {"d": Decimal("12345678901234567890.1234567890")},
    ]
    csv_file = export(con, FormatSpec("csv"), tmp_path / "csv", query).files[0].path
    _, rows = read_csv_python(csv_file, ",", True)
    parsed = [json.loads(v, parse_float=Decimal) for v in rows[0][:4]]
    assert parsed == [*expected, {"k": [2]}]
    assert rows[0][4] == ""  # NULL is an empty field, not the text null
    _, xml_rows = read_xml(export(con, FormatSpec("xml"), tmp_path / "xml", query).files[0].path)
    assert [json.loads(v, parse_float=Decimal) for v in xml_rows[0][:3]] == expected
    assert xml_rows[0][4] is None


SPARK_VERSION_KEY = b"org.apache.spark.version"


def test_parquet_files_and_parts_tell_spark_their_calendar(many, tmp_path: Path) -> None:
    """Every Parquet file, whole or split by either splitter, carries the key that makes
    Spark read its dates as proleptic Gregorian (and no legacy-calendar key)."""
    whole = export(many, FormatSpec("parquet"), tmp_path / "whole")
    limit = max(4096, whole.files[0].bytes // 3)
    parts = export(many, FormatSpec("parquet"), tmp_path / "parts", limit=limit)
    query = 'SELECT id AS file_row_number, "text value", ts FROM hard ORDER BY id'
    arrow_parts = export(many, FormatSpec("parquet"), tmp_path / "arrow", query, limit // 2)
    assert len(parts.files) >= 2 and len(arrow_parts.files) >= 2
    for f in whole.files + parts.files + arrow_parts.files:
        metadata = pq.ParquetFile(f.path).metadata.metadata or {}
        assert metadata.get(SPARK_VERSION_KEY) == b"3.5.0", (f.path, metadata)
        assert b"org.apache.spark.legacyDateTime" not in metadata
