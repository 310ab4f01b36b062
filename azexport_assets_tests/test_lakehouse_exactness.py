"""`format: delta`: every DuckDB type the table can hold reads back exactly (deltalake and
Polars); a value it cannot hold fails the run before the Delta commit, leaving the table and
the baseline as they were; storage errors never show the secret."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from azexport_assets.delta import baseline_info
from azexport_assets.demo.azurite import DEV_ACCOUNT, DEV_KEY, container_sas
from azexport_assets.lakehouse import table_schema
from azexport_assets_tests.project_kit import SAS_ENV, ProjectKit, export_metadata
from azexport_assets_tests.test_source_confinement import failure_message

UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")

SOURCE = f"""
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE things AS SELECT * FROM (VALUES
  (1, 99999999999999999999999999999999999999::HUGEINT, 18446744073709551615::UBIGINT,
   255::UTINYINT, 4294967295::UINTEGER, 'happy'::mood, '{UUID}'::UUID, '{{"a": [1, 2]}}'::JSON,
   '\\xAA\\x00'::BLOB, MAP {{'k': [1.5::DOUBLE]}}, [1, 2, 3]::INTEGER[3],
   {{'inner': {{'deep': [DATE '2024-02-29']}}, 'n': 1.25::DECIMAL(38, 10)}},
   TIMESTAMP_MS '2025-01-02 03:04:05.678', -1.5::FLOAT, (-128)::TINYINT, true),
  (2, NULL, 0::UBIGINT, 0::UTINYINT, 0::UINTEGER, NULL, NULL, NULL, ''::BLOB,
   MAP {{}}::MAP(VARCHAR, DOUBLE[]), NULL, NULL, NULL, NULL, NULL, NULL)
) AS t(id, huge, ubig, utiny, uint, feeling, uid, doc, raw, weights, triple, nested, at_ms,
       small_float, tiny, flag);
CREATE TABLE events AS SELECT * FROM (VALUES
  (1, DATE '2024-01-01'), (2, DATE '2024-06-30')) AS t(id, day);
"""

DEFS = """
models:
  things:
    sql: SELECT * FROM src.things
    primary_key: id
  events:
    sql: SELECT * FROM src.events
    primary_key: id
activations:
  things_lake:
    source: things
    destination: lake
    file_name: lake/things
    format: delta
  events_lake:
    source: events
    destination: lake
    file_name: lake/events
    format: delta
    run_type: full_then_delta
    sync_mode: difference
"""

EXPECTED_TYPES = [
    ("id", "integer"),
    ("huge", "decimal(38,0)"),
    ("ubig", "decimal(20,0)"),
    ("utiny", "short"),
    ("uint", "long"),
    ("feeling", "string"),
    ("uid", "string"),
    ("doc", "string"),
    ("raw", "binary"),
    ("weights", "map<string, array<double>>"),
    ("triple", "array<integer>"),
    ("nested", "struct<inner: struct<deep: array<date>>, n: decimal(38,10)>"),
    ("at_ms", "timestamp_ntz"),
    ("small_float", "float"),
    ("tiny", "byte"),
    ("flag", "boolean"),
]

EXPECTED_ROWS = [
    {
        "id": 1,
        "huge": Decimal("99999999999999999999999999999999999999"),
        "ubig": Decimal("18446744073709551615"),
        "utiny": 255,
        "uint": 4294967295,
        "feeling": "happy",
        "uid": str(UUID),
        "doc": '{"a": [1, 2]}',
        "raw": b"\xaa\x00",
        "weights": [("k", [1.5])],
        "triple": [1, 2, 3],
        "nested": {
            "inner": {"deep": [dt.date(2024, 2, 29)]},
            "n": Decimal("1.2500000000"),
        },
        "at_ms": dt.datetime(2025, 1, 2, 3, 4, 5, 678000),
        "small_float": -1.5,
        "tiny": -128,
        "flag": True,
    },
    {
        "id": 2,
        "huge": None,
        "ubig": Decimal("0"),
        "utiny": 0,
        "uint": 0,
        "feeling": None,
        "uid": None,
        "doc": None,
        "raw": b"",
        "weights": [],
        "triple": None,
        "nested": None,
        "at_ms": None,
        "small_float": None,
        "tiny": None,
        "flag": None,
    },
]


@pytest.fixture(autouse=True)
def _emulator_endpoint(azurite, monkeypatch) -> None:
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", f"http://127.0.0.1:{azurite.port}")


OPTIONS = {
    "azure_storage_use_emulator": "true",
    "account_name": DEV_ACCOUNT,
    "account_key": DEV_KEY,
    "allow_http": "true",
}


def uri(kit: ProjectKit, name: str) -> str:
    return f"az://{kit.container.container_name}/lake/{name}"


def test_every_type_reads_back_exactly(project: ProjectKit) -> None:
    project.source_sql(*[s for s in SOURCE.split(";\n") if s.strip()])
    project.write_defs(DEFS)
    assert project.run("things_lake").success
    table = DeltaTable(uri(project, "things"), storage_options=OPTIONS)
    assert table_schema(table) == EXPECTED_TYPES
    rows = sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["id"])
    assert rows == EXPECTED_ROWS
    frame = pl.read_delta(uri(project, "things"), storage_options=OPTIONS).sort("id")
    assert frame["huge"].to_list() == [EXPECTED_ROWS[0]["huge"], None]
    assert frame["ubig"].dtype == pl.Decimal(20, 0)
    assert frame["at_ms"].dtype == pl.Datetime("us")
    assert frame["nested"].to_list()[0]["inner"] == {"deep": [dt.date(2024, 2, 29)]}


def _version(kit: ProjectKit, name: str) -> int:
    return DeltaTable(uri(kit, name), storage_options=OPTIONS).version()


def _baseline(kit: ProjectKit, activation: str) -> dict | None:
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        return baseline_info(con, activation)
    finally:
        con.close()


def test_a_value_delta_cannot_hold_fails_before_the_commit(project: ProjectKit) -> None:
    project.source_sql(*[s for s in SOURCE.split(";\n") if s.strip()])
    project.write_defs(DEFS)
    assert project.run("events_lake").success
    first = _baseline(project, "events_lake")
    project.source_sql(
        "INSERT INTO events VALUES (3, DATE 'infinity')",
        "DELETE FROM events WHERE id = 1",
    )
    failed = project.run("events_lake", raise_on_error=False)
    assert not failed.success
    message = failure_message(failed)
    assert "column 'day' (DATE)" in message and "'infinity'" in message, message
    # Nothing half-done: no new version, the old rows, the baseline untouched.
    assert _version(project, "events") == 0
    rows = DeltaTable(uri(project, "events"), storage_options=OPTIONS).to_pyarrow_table()
    assert sorted(rows.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "day": dt.date(2024, 1, 1)},
        {"id": 2, "day": dt.date(2024, 6, 30)},
    ]
    assert _baseline(project, "events_lake") == first
    # Fixed upstream: the next run applies every change since the last success.
    project.source_sql("UPDATE events SET day = DATE '2030-01-01' WHERE id = 3")
    assert project.run("events_lake").success
    assert _version(project, "events") == 1
    rows = DeltaTable(uri(project, "events"), storage_options=OPTIONS).to_pyarrow_table()
    assert sorted(rows.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 2, "day": dt.date(2024, 6, 30)},
        {"id": 3, "day": dt.date(2030, 1, 1)},
    ]


def test_storage_refusal_is_named_without_the_secret(project: ProjectKit, azurite, monkeypatch):
    """A SAS that may write but not list: the blob pre-flight passes, delta-rs cannot read
    the log. The failure names the table; the token appears nowhere in the run."""
    project.source_sql(*[s for s in SOURCE.split(";\n") if s.strip()])
    project.write_defs(DEFS)
    token = container_sas(azurite.account_url, project.container.container_name, "cw")
    monkeypatch.setenv(SAS_ENV, token)
    failed = project.run("events_lake", raise_on_error=False)
    assert not failed.success
    signature = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    everything = "\n".join(str(e) for e in failed.all_events)
    assert "Delta table" in everything and "/lake/events" in everything
    for secret in (token, signature):
        assert secret not in everything
    assert _baseline(project, "events_lake") is None
    monkeypatch.setenv(
        SAS_ENV, container_sas(azurite.account_url, project.container.container_name)
    )
    ok = project.run("events_lake")
    meta = export_metadata(ok, "events_lake")
    assert meta["delta_version"] == 0 and meta["rows_inserted"] == 2
    assert (
        pa.table(
            DeltaTable(uri(project, "events"), storage_options=OPTIONS).to_pyarrow_table()
        ).num_rows
        == 2
    )


def test_a_huge_integer_inside_a_list_is_named_like_a_top_level_one(project: ProjectKit) -> None:
    """A HUGEINT beyond 38 digits inside a LIST fails in DuckDB's cast, not in our marked
    check: it is still reported as the column Delta cannot hold, with the fix, and nothing is
    committed."""
    project.source_sql(
        "CREATE TABLE bags AS SELECT 1 AS id, "
        "[1, 170141183460469231731687303715884105727]::HUGEINT[] AS counts"
    )
    project.write_defs(
        """
models:
  bags:
    sql: SELECT * FROM src.bags
    primary_key: id
activations:
  bags_lake:
    source: bags
    destination: lake
    file_name: lake/bags
    format: delta
"""
    )
    failed = project.run("bags_lake", raise_on_error=False)
    assert not failed.success
    message = failure_message(failed)
    assert "The Delta table cannot hold column 'counts' (HUGEINT[]) exactly" in message, message
    assert "cast the column to VARCHAR" in message
    assert project.blob_names("lake/bags/") == []
