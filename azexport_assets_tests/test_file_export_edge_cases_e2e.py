"""File exports at their edges: real Dagster runs into Azurite, every file parsed back with a
standard reader (csv, json, xml.etree, pyarrow) and compared with the model's rows."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import math
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from azexport_assets_tests.project_kit import ProjectKit, export_metadata
from azexport_assets_tests.test_encryption_e2e import private_key  # noqa: F401

T0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"


def at(hour: int) -> datetime:
    return T0 + timedelta(hours=hour)


def one_activation(fmt_options: str, extra: str = "", sql: str = "SELECT * FROM src.t") -> str:
    return f"""
models:
  m:
    sql: "{sql}"
    primary_key: id
activations:
  out:
    source: m
    destination: lake
    file_name: "out/{{YYYY}}{{MM}}{{DD}}_{{HH}}"
{fmt_options}
{extra}
"""


def csv_rows(data: bytes) -> list[list[str]]:
    csv.field_size_limit(1 << 30)
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def xml_rows(data: bytes) -> list[dict[str, str | None]]:
    root = ET.fromstring(data)
    return [
        {c.tag: (None if c.get(NIL) == "true" else (c.text or "")) for c in row} for row in root
    ]


def failure_text(result) -> str:
    return "\n".join(
        str(event.event_specific_data.error.message)
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE"
    )


# ------------------------------------------------------------------ DECIMAL(p, p) in JSON


@pytest.mark.parametrize(("style", "ext"), [("array", "json"), ("lines", "jsonl")])
def test_json_decimal_whose_scale_equals_its_precision_is_valid_json(
    project: ProjectKit, style: str, ext: str
):
    """A rate stored as DECIMAL(4,4) (0.1250) must be a JSON number with its leading zero."""
    project.source_sql(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, 0.1250::DECIMAL(4,4), -0.5::DECIMAL(3,3)),"
        " (2, 0::DECIMAL(4,4), 0.001::DECIMAL(3,3))) AS v(id, rate, delta)"
    )
    project.write_defs(one_activation(f"    format: json\n    json: {{style: {style}}}"))
    project.run("out", logical_time=at(0))
    data = project.download(f"out/20250414_06.{ext}").decode()
    if style == "array":
        rows = json.loads(data, parse_float=Decimal)
    else:
        rows = [json.loads(line, parse_float=Decimal) for line in data.split("\n") if line]
    assert rows == [
        {"id": 1, "rate": Decimal("0.1250"), "delta": Decimal("-0.500")},
        {"id": 2, "rate": Decimal("0.0000"), "delta": Decimal("0.001")},
    ]


def test_text_formats_write_decimal_p_p_with_a_leading_zero(project: ProjectKit):
    """docs/formats.md: DECIMAL(p,s) 'all digits with the full scale: 12.50, 0.0000000000'."""
    project.source_sql("CREATE TABLE t AS SELECT 1 AS id, 0.5::DECIMAL(2,2) AS rate")
    project.write_defs(one_activation("    format: csv"))
    project.run("out", logical_time=at(0))
    assert csv_rows(project.download("out/20250414_06.csv")) == [["id", "rate"], ["1", "0.50"]]


# ------------------------------------------------------------------ JSON-typed columns


JSON_SOURCE = (
    "CREATE TABLE t AS SELECT * FROM (VALUES (1, json_object('k', 'v, \"q\"')), "
    "(2, NULL::JSON), (3, '[1, 2]'::JSON)) AS v(id, attrs)"
)


@pytest.mark.parametrize("fmt", ["csv", "xml"])
def test_a_json_typed_column_exports_as_json_text(project: ProjectKit, fmt: str):
    """A model column of DuckDB type JSON (json_object, to_json, json_extract, ...) is text:
    CSV and XML should carry the JSON text, as they do for nested values."""
    project.source_sql(JSON_SOURCE)
    project.write_defs(one_activation(f"    format: {fmt}"))
    result = project.run("out", logical_time=at(0), raise_on_error=False)
    assert result.success, failure_text(result)
    data = project.download(f"out/20250414_06.{fmt}")
    if fmt == "csv":
        rows = csv_rows(data)
        assert rows[0] == ["id", "attrs"]
        assert json.loads(rows[1][1]) == {"k": 'v, "q"'}
        assert rows[2] == ["2", ""]
        assert json.loads(rows[3][1]) == [1, 2]
    else:
        rows = xml_rows(data)
        assert json.loads(rows[0]["attrs"]) == {"k": 'v, "q"'}
        assert rows[1]["attrs"] is None
        assert json.loads(rows[2]["attrs"]) == [1, 2]


def test_a_json_typed_column_in_json_and_parquet(project: ProjectKit):
    """JSON embeds a JSON value as JSON; Parquet keeps its text."""
    project.source_sql(JSON_SOURCE)
    project.write_defs(
        one_activation("    format: json").replace(
            "activations:\n",
            "activations:\n  pq:\n    source: m\n    destination: lake\n"
            "    file_name: pq/x\n    format: parquet\n",
        )
    )
    project.run("out", logical_time=at(0))
    project.run("pq", logical_time=at(0))
    rows = json.loads(project.download("out/20250414_06.json"))
    assert rows == [
        {"id": 1, "attrs": {"k": 'v, "q"'}},
        {"id": 2, "attrs": None},
        {"id": 3, "attrs": [1, 2]},
    ]
    table = pq.read_table(io.BytesIO(project.download("pq/x.parquet"))).to_pylist()
    assert [json.loads(r["attrs"]) if r["attrs"] else None for r in table] == [
        {"k": 'v, "q"'},
        None,
        [1, 2],
    ]


# ------------------------------------------------------------------ awkward column names

# source column -> destination name (mapping): delimiter, quotes, a line break, a leading
# digit, spaces at both ends, markup, non-ASCII, U+2028.
AWKWARD = {
    "id": "id",
    "a": "a,b",
    "b": 'say "hi"',
    "c": "line\nbreak",
    "d": "2024 total",
    "e": " padded ",
    "f": "<&>",
    "g": "prénom",
    "h": "x\u2028y",
}


def awkward_defs(fmt: str) -> str:
    mapping = "\n".join(f"      {json.dumps(s)}: {json.dumps(d)}" for s, d in AWKWARD.items())
    return one_activation(f"    format: {fmt}", "    mapping:\n" + mapping)


AWKWARD_SOURCE = (
    "CREATE TABLE t AS SELECT 1 AS id, 'v,1' AS a, 'q\"2' AS b, 'l\n3' AS c, 4 AS d, "
    "' 5 ' AS e, '<6&>' AS f, 'é7' AS g, 'u\u20288' AS h"
)
AWKWARD_VALUES = ["1", "v,1", 'q"2', "l\n3", "4", " 5 ", "<6&>", "é7", "u\u20288"]


@pytest.mark.parametrize("fmt", ["csv", "json", "xml", "parquet"])
def test_awkward_destination_names_read_back(project: ProjectKit, fmt: str):
    project.source_sql(AWKWARD_SOURCE)
    project.write_defs(awkward_defs(fmt))
    project.run("out", logical_time=at(0))
    data = project.download(f"out/20250414_06.{fmt}")
    names = list(AWKWARD.values())
    if fmt == "csv":
        assert csv_rows(data) == [names, AWKWARD_VALUES]
    elif fmt == "json":
        rows = json.loads(data)
        assert [list(r) for r in rows] == [names]
        assert [str(v) for v in rows[0].values()] == AWKWARD_VALUES
    elif fmt == "parquet":
        table = pq.read_table(io.BytesIO(data))
        assert table.column_names == names
        assert [str(v) for v in table.to_pylist()[0].values()] == AWKWARD_VALUES
    else:
        rows = xml_rows(data)
        assert list(rows[0]) == [
            "id", "a_b", "say__hi_", "line_break", "_2024_total", "_padded_", "___",
            "pr_nom", "x_y",
        ]  # fmt: skip
        assert list(rows[0].values()) == AWKWARD_VALUES


# ------------------------------------------------------------------ hard values

HARD_SOURCE = r"""
CREATE TABLE t AS SELECT * FROM (VALUES
  (1, '', NULL::VARCHAR, 'a' || chr(13) || 'b', 'p' || chr(8232) || 'q' || chr(8233) || 'r',
   -0.0::DOUBLE, 'NaN'::DOUBLE, 'Infinity'::DOUBLE,
   99999999999999999999999999.999999999999::DECIMAL(38,12), '\x00\xFFab'::BLOB,
   TIMESTAMP '1900-01-01 00:00:00', DATE '1969-12-31', 'tab	x'),
  (2, NULL, '', chr(10), chr(0) || 'z', 1e308::DOUBLE, '-Infinity'::DOUBLE, NULL,
   -99999999999999999999999999.999999999999::DECIMAL(38,12), ''::BLOB,
   TIMESTAMP '9999-12-31 23:59:59.999999', DATE '0001-01-01', ' ')
) AS v(id, s1, s2, cr, seps, d1, d2, d3, dec, bl, ts, dt, tb)
"""


def test_hard_values_csv(project: ProjectKit):
    project.source_sql(HARD_SOURCE)
    project.write_defs(one_activation("    format: csv"))
    project.run("out", logical_time=at(0))
    data = project.download("out/20250414_06.csv")
    rows = csv_rows(data)
    assert rows[1] == [
        "1", "", "", "a\rb", "p\u2028q\u2029r", "-0.0", "NaN", "Infinity",
        "99999999999999999999999999.999999999999", base64.b64encode(b"\x00\xffab").decode(),
        "1900-01-01T00:00:00.000000Z", "1969-12-31", "tab\tx",
    ]  # fmt: skip
    assert rows[2] == [
        "2", "", "", "\n", "\x00z", "1e+308", "-Infinity", "",
        "-99999999999999999999999999.999999999999", "",
        "9999-12-31T23:59:59.999999Z", "0001-01-01", " ",
    ]  # fmt: skip
    # NULL is an empty field, '' is "" (docs/formats.md)
    lines = data.decode().split("\n")
    assert lines[1].startswith('1,"",,')
    assert lines[2].startswith('2,,"",')


@pytest.mark.parametrize("style", ["array", "lines"])
def test_hard_values_json(project: ProjectKit, style: str):
    project.source_sql(HARD_SOURCE)
    project.write_defs(one_activation(f"    format: json\n    json: {{style: {style}}}"))
    project.run("out", logical_time=at(0))
    ext = "json" if style == "array" else "jsonl"
    data = project.download(f"out/20250414_06.{ext}").decode()

    def strict(text: str):
        def refuse(name):
            raise ValueError(f"not valid JSON: {name}")

        return json.loads(text, parse_float=Decimal, parse_constant=refuse)

    if style == "array":
        rows = strict(data)
    else:
        assert data.endswith("\n")
        rows = [strict(line) for line in data[:-1].split("\n")]
    assert rows[0] == {
        "id": 1, "s1": "", "s2": None, "cr": "a\rb", "seps": "p\u2028q\u2029r",
        "d1": Decimal("-0.0"), "d2": None, "d3": None,
        "dec": Decimal("99999999999999999999999999.999999999999"),
        "bl": base64.b64encode(b"\x00\xffab").decode(), "ts": "1900-01-01T00:00:00.000000Z",
        "dt": "1969-12-31", "tb": "tab\tx",
    }  # fmt: skip
    assert rows[1]["s1"] is None and rows[1]["s2"] == "" and rows[1]["cr"] == "\n"
    assert rows[1]["seps"] == "\x00z" and rows[1]["d2"] is None and rows[1]["bl"] == ""
    assert float(rows[1]["d1"]) == 1e308


def test_hard_values_xml(project: ProjectKit):
    project.source_sql(HARD_SOURCE)
    project.write_defs(one_activation("    format: xml"))
    project.run("out", logical_time=at(0))
    rows = xml_rows(project.download("out/20250414_06.xml"))
    assert rows[0]["s1"] == "" and rows[0]["s2"] is None
    assert rows[0]["cr"] == "a\rb" and rows[0]["seps"] == "p\u2028q\u2029r"
    assert rows[0]["d1"] == "-0.0" and rows[0]["d2"] == "NaN" and rows[0]["tb"] == "tab\tx"
    assert rows[1]["s1"] is None and rows[1]["s2"] == "" and rows[1]["cr"] == "\n"
    assert rows[1]["seps"] == "z"  # U+0000 is removed (documented)
    assert rows[1]["tb"] == " "


def test_hard_values_parquet(project: ProjectKit):
    project.source_sql(HARD_SOURCE)
    project.write_defs(one_activation("    format: parquet"))
    project.run("out", logical_time=at(0))
    rows = pq.read_table(io.BytesIO(project.download("out/20250414_06.parquet"))).to_pylist()
    assert rows[0]["s1"] == "" and rows[0]["s2"] is None and rows[0]["bl"] == b"\x00\xffab"
    assert math.copysign(1, rows[0]["d1"]) == -1 and math.isnan(rows[0]["d2"])
    assert rows[0]["dec"] == Decimal("99999999999999999999999999.999999999999")
    assert rows[0]["ts"] == datetime(1900, 1, 1, tzinfo=timezone.utc)
    assert rows[1]["seps"] == "\x00z" and rows[1]["bl"] == b""


def test_a_one_megabyte_cell_in_every_text_format(project: ProjectKit):
    project.source_sql(
        "CREATE TABLE t AS SELECT 1 AS id, repeat('a,\"<&>' || chr(10), 180000) AS big "
        "UNION ALL SELECT 2, 'small'"
    )
    big = 'a,"<&>\n' * 180000
    body = one_activation("    format: csv\n    max_file_size: 100000")
    project.write_defs(body)
    project.run("out", logical_time=at(0))
    names = project.blob_names("out/")
    assert names == ["out/20250414_06_part-00001.csv", "out/20250414_06_part-00002.csv"]
    first = csv_rows(project.download(names[0]))
    second = csv_rows(project.download(names[1]))
    assert first == [["id", "big"], ["1", big]]  # a single row larger than the limit: alone
    assert second == [["id", "big"], ["2", "small"]]


# ------------------------------------------------------------------ parts + compression

PARTS_SOURCE = (
    "CREATE TABLE t AS SELECT range AS id, 'name ' || range || ', \"x\" <&>' AS name, "
    "md5(range::VARCHAR) AS noise FROM range(1500)"
)


def decompress(name: str, data: bytes) -> bytes:
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


@pytest.mark.parametrize(
    ("options", "ext"),
    [
        ("format: json\n    compression: gzip", ".json.gz"),
        ("format: json\n    json: {style: lines}\n    compression: zstd", ".jsonl.zst"),
        ("format: csv\n    compression: gzip", ".csv.gz"),
        ("format: xml\n    compression: zstd", ".xml.zst"),
        ("format: json", ".json"),
        ("format: parquet\n    parquet: {compression: none}", ".parquet"),
    ],
)
def test_compressed_parts_each_parse_and_add_up(project: ProjectKit, options: str, ext: str):
    limit = 4096
    project.source_sql(PARTS_SOURCE)
    project.write_defs(one_activation(f"    {options}\n    max_file_size: {limit}"))
    project.run("out", logical_time=at(0))
    names = project.blob_names("out/")
    assert len(names) > 3
    ids = []
    for i, name in enumerate(names, start=1):
        assert name == f"out/20250414_06_part-{i:05d}{ext}"
        data = project.download(name)
        assert len(data) <= limit, (name, len(data))
        text = decompress(name, data)
        if ".jsonl" in ext:
            rows = [json.loads(line) for line in text.decode().split("\n") if line]
        elif ".json" in ext:
            rows = json.loads(text)
        elif ".csv" in ext:
            parsed = csv_rows(text)
            assert parsed[0] == ["id", "name", "noise"]
            rows = [dict(zip(parsed[0], r, strict=True)) for r in parsed[1:]]
        elif ".xml" in ext:
            rows = xml_rows(text)
        else:
            rows = pq.read_table(io.BytesIO(text)).to_pylist()
        assert rows, name
        for r in rows:
            assert r["name"] == f'name {r["id"]}, "x" <&>'
        ids += [int(r["id"]) for r in rows]
    assert ids == list(range(1500))


def test_encrypted_parts_respect_max_file_size(
    project: ProjectKit,
    private_key,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    """Parts are never larger than max_file_size, also encrypted: the encryption's overhead is
    kept free in every part (parts were ~300 bytes over the limit before)."""
    monkeypatch.setenv("PARTNER_PGP_KEY", str(private_key.pubkey))
    limit = 4096
    project.source_sql(PARTS_SOURCE)
    project.write_defs(
        one_activation(
            f"    format: csv\n    max_file_size: {limit}",
            "    encryption: {pgp_public_key: {env: PARTNER_PGP_KEY}}",
        )
    )
    project.run("out", logical_time=at(0))
    names = project.blob_names("out/")
    assert len(names) > 3 and all(n.endswith(".csv.pgp") for n in names)
    sizes = {n: len(project.download(n)) for n in names}
    assert all(size <= limit for size in sizes.values()), sizes


# ------------------------------------------------------------------ schema changes (deltas)

PEOPLE = (
    "CREATE TABLE t AS SELECT * FROM (VALUES (1, 'Ann', 10, 1.50::DECIMAL(6,2)), "
    "(2, 'Bob', 20, 2.50::DECIMAL(6,2)), (3, 'Cid', 30, 3.50::DECIMAL(6,2))) "
    "AS v(id, name, score, price)"
)


def delta_defs(mode: str, mapping: str = "", sql: str = "SELECT * FROM src.t") -> str:
    return one_activation(
        "    format: csv",
        f"    run_type: full_then_delta\n    sync_mode: {mode}\n    manifest: true\n{mapping}",
        sql=sql,
    )


def read_csv_dicts(project: ProjectKit, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(project.download(name).decode(), newline="")))


@pytest.mark.parametrize(
    ("alter", "expected"),
    [
        (  # INTEGER -> VARCHAR, same digits: a new layout for the consumer
            ["ALTER TABLE t ALTER score TYPE VARCHAR"],
            [("1", "Ann", "10", "1.50"), ("2", "Bob", "20", "2.50"), ("3", "Cid", "30", "3.50")],
        ),
        (  # DECIMAL scale change: values reformat
            ["ALTER TABLE t ALTER price TYPE DECIMAL(8,3)"],
            [("1", "Ann", "10", "1.500"), ("2", "Bob", "20", "2.500"), ("3", "Cid", "30", "3.500")],
        ),
    ],
    ids=["int-to-varchar", "decimal-scale"],
)
def test_a_type_change_makes_the_next_upsert_a_full_export(project, alter, expected):
    project.source_sql(PEOPLE)
    project.write_defs(delta_defs("upsert"))
    project.run("out", logical_time=at(0))
    project.source_sql(*alter)
    result = project.run("out", logical_time=at(1))
    rows = read_csv_dicts(project, "out/20250414_07.csv")
    assert [tuple(r.values()) for r in rows] == expected
    assert export_metadata(result, "out")["full_export"] is True
    manifest = json.loads(project.download("out/20250414_07_manifest.json"))
    assert manifest["rows"] == 3 if "rows" in manifest else True
    # then an ordinary delta again
    project.source_sql("UPDATE t SET name = 'Bea' WHERE id = 2")
    project.run("out", logical_time=at(2))
    rows = read_csv_dicts(project, "out/20250414_08.csv")
    assert [tuple(r.values()) for r in rows] == [expected[1][:1] + ("Bea",) + expected[1][2:]]


def test_an_added_column_in_difference_mode_is_a_full_export_with_the_new_column(project):
    project.source_sql(PEOPLE)
    project.write_defs(delta_defs("difference"))
    project.run("out", logical_time=at(0))
    project.source_sql(
        "ALTER TABLE t ADD COLUMN tier VARCHAR DEFAULT 'gold'", "DELETE FROM t WHERE id = 3"
    )
    project.run("out", logical_time=at(1))
    added = read_csv_dicts(project, "out/20250414_07_added.csv")
    assert [list(r.values()) for r in added] == [
        ["1", "Ann", "10", "1.50", "gold"],
        ["2", "Bob", "20", "2.50", "gold"],
    ]
    manifest = json.loads(project.download("out/20250414_07_manifest.json"))
    assert [c["name"] for c in manifest["columns"]] == ["id", "name", "score", "price", "tier"]


def test_a_mapped_column_dropped_from_the_model_is_named_and_nothing_moves(project):
    project.source_sql(PEOPLE)
    mapping = "    mapping: {id: id, name: Name, score: Score}\n"
    project.write_defs(delta_defs("upsert", mapping))
    project.run("out", logical_time=at(0))
    project.source_sql(
        "ALTER TABLE t RENAME score TO points", "UPDATE t SET name = 'Ann2' WHERE id = 1"
    )
    with pytest.raises(Exception) as caught:
        project.run("out", logical_time=at(1))
    message = str(caught.value)
    assert "score" in message and "'out'" in message and "mapping" in message, message
    assert project.blob_names("out/20250414_07") == []
    # the model gets its column back under the old name: the next run is an exact delta
    project.source_sql("ALTER TABLE t RENAME points TO score")
    project.run("out", logical_time=at(2))
    rows = read_csv_dicts(project, "out/20250414_08.csv")
    assert rows == [{"id": "1", "Name": "Ann2", "Score": "10"}]


def test_a_primary_key_change_is_a_full_export(project):
    project.source_sql(PEOPLE, "ALTER TABLE t ADD COLUMN code VARCHAR",
                       "UPDATE t SET code = 'c' || id")  # fmt: skip
    project.write_defs(delta_defs("upsert"))
    project.run("out", logical_time=at(0))
    project.write_defs(delta_defs("upsert").replace("primary_key: id", "primary_key: code"))
    result = project.run("out", logical_time=at(1))
    rows = read_csv_dicts(project, "out/20250414_07.csv")
    assert [r["code"] for r in rows] == ["c1", "c2", "c3"]
    assert export_metadata(result, "out")["full_export"] is True


def test_a_failed_export_after_a_schema_change_does_not_advance_the_baseline(project):
    """A type change whose full export fails at the export step (here more partitions than
    max_partitions): no blob, and once fixed the next run delivers the rows exactly."""
    project.source_sql(PEOPLE)
    project.write_defs(delta_defs("upsert"))
    project.run("out", logical_time=at(0))
    project.write_defs(
        delta_defs(
            "upsert",
            "    partition_by: [name]\n    max_partitions: 2\n",
            sql="SELECT id, name, CAST(score AS VARCHAR) AS score, price FROM src.t",
        )
    )
    failed = project.run("out", logical_time=at(1), raise_on_error=False)
    assert not failed.success
    assert "gives 3 partitions in this run, more than max_partitions (2)" in failure_text(failed)
    assert project.blob_names("out/20250414_07") == []
    project.write_defs(delta_defs("upsert"))  # back to the committed layout
    project.source_sql("UPDATE t SET score = 21 WHERE id = 2")
    project.run("out", logical_time=at(2))
    rows = read_csv_dicts(project, "out/20250414_08.csv")
    assert rows == [{"id": "2", "name": "Bob", "score": "21", "price": "2.50"}]


# ------------------------------------------------------------------ CSV dialect


def test_space_delimited_csv_quotes_a_bc_date(project: ProjectKit):
    """docs/formats.md: 'Numbers, dates and timestamps are quoted only if the delimiter itself
    can occur in them'. DuckDB writes a date before year 1 as '0044-03-15 (BC)'."""
    project.source_sql("CREATE TABLE t AS SELECT 1 AS id, DATE '0044-03-15 (BC)' AS d, 'x' AS s")
    project.write_defs(one_activation('    format: csv\n    csv: {delimiter: " "}'))
    project.run("out", logical_time=at(0))
    rows = list(
        csv.reader(io.StringIO(project.download("out/20250414_06.csv").decode()), delimiter=" ")
    )
    assert rows == [["id", "d", "s"], ["1", "0044-03-15 (BC)", "x"]]


# ------------------------------------------------------------------ Parquet parts


@pytest.mark.parametrize("key", ["id", "file_row_number"])
def test_parquet_parts_keep_the_column_types_of_the_single_file(project: ProjectKit, key):
    """Parts are split by DuckDB, also when a column is named `file_row_number` (it used to
    be pyarrow then, which wrote INTERVAL as BLOB): a part has the single file's types."""
    import duckdb

    project.source_sql(
        f"CREATE TABLE t AS SELECT range AS {key}, md5(range::VARCHAR) AS s, "
        "INTERVAL (range) DAY AS iv FROM range(3000)"
    )
    body = one_activation("    format: parquet\n    max_file_size: 20000").replace(
        "primary_key: id", f"primary_key: {key}"
    )
    project.write_defs(body)
    project.run("out", logical_time=at(0))
    names = project.blob_names("out/")
    assert len(names) > 1
    con = duckdb.connect()
    total = 0
    for name in names:
        path = project.root / name.replace("/", "_")
        path.write_bytes(project.download(name))
        rel = con.sql(f"SELECT * FROM read_parquet('{path}')")
        assert [str(t) for t in rel.types] == ["BIGINT", "VARCHAR", "INTERVAL"], name
        total += len(rel.fetchall())
    assert total == 3000


def test_a_value_parquet_cannot_hold_fails_in_one_line_without_retries(project: ProjectKit):
    """A HUGEINT of more than 38 digits exported as Parquet: the step fails with the one-line
    refusal naming the column (it was a traceback, and the run was retried), nothing is
    written."""
    project.source_sql(
        "CREATE TABLE t AS SELECT 1 AS id, 170141183460469231731687303715884105727::HUGEINT AS big"
    )
    project.write_defs(one_activation("    format: parquet"))
    result = project.run("out", logical_time=at(0), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    user = failure.step_failure_data.user_failure_data
    assert user is not None and user.description.startswith(
        "activation 'out': The Parquet export cannot hold column 'big' (HUGEINT) exactly"
    ), failure.step_failure_data
    assert user.description.endswith("Nothing was written and the baseline was not advanced.")
    assert project.blob_names("out/") == []
