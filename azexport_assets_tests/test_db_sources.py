"""Database sources end to end: a Postgres schema and a schema of the warehouse's own DuckLake,
read by models, exported by real Dagster runs to Azurite, downloaded and compared row by row;
changes seen by the on-change sensor and the rebuild fingerprints, and exported exactly by the
next delta run; the sandbox and the secrecy of the connection string.
"""

from __future__ import annotations

import io
import logging
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from azure.storage.blob import BlobServiceClient

from azexport_assets.asset_keys import model_key, source_key
from azexport_assets.components.model_assets import REBUILT_METADATA
from azexport_assets.config import ConfigError, SourceConfig
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.sandbox import lock_down
from azexport_assets.warehouse import LakeWarehouse, attach_source, open_warehouse
from azexport_assets.warehouse.dbchanges import postgres_fingerprint
from azexport_assets.warehouse.dbsources import DatabaseSourceError
from azexport_assets_tests.lake_kit import (  # noqa: F401
    PASSWORD,
    USER,
    PostgresServer,
    postgres,
    use_lake,
)
from azexport_assets_tests.project_kit import ProjectKit, export_metadata
from azexport_assets_tests.test_model_rebuild import build

pytestmark = pytest.mark.lake

DSN_ENV = "CRM_DSN"

# Awkward values: NULLs, quotes, unicode beyond the BMP, separators, NUMERIC at full
# precision, time zones.
CUSTOMERS = """
CREATE SCHEMA sales;
CREATE TABLE sales.customers (
    id bigint PRIMARY KEY,
    name text,
    city varchar(40),
    amount numeric(18, 4),
    seen timestamptz,
    active boolean
);
INSERT INTO sales.customers VALUES
    (1, 'Zoë "Z" O''Brien', 'São Paulo', 12345678901234.5678,
        '2025-04-14 10:00:00.123456+02', true),
    (2, NULL, '', NULL, NULL, NULL),
    (3, '日本語 🚀', 'Zürich', -0.0001, '1970-01-01 00:00:00+00', false),
    (4, E'tab\\there, comma; semi', 'x"y', 0, '2024-02-29 23:59:59.999999-08', true),
    (5, E'two\\nlines', 'Ærøskøbing', 99.5, '2025-12-31 12:00:00+00', false);
CREATE TABLE sales.secret_salaries (id int, salary int);
INSERT INTO sales.secret_salaries VALUES (1, 100000);
CREATE TABLE public.other (id int);
"""

DEFS = """
models:
  customers:
    sql: SELECT id, name, city, amount, seen, active FROM crm.customers
    primary_key: id
activations:
  customers_out:
    source: customers
    destination: lake
    file_name: crm/customers_{HH}
    format: parquet
    run_type: full_then_delta
    sync_mode: difference
    trigger: on_change
"""

CRM_SOURCE = "crm: {postgres: {dsn: {env: " + DSN_ENV + "}, schema: sales}, tables: [customers]}"


def _dsn(server: PostgresServer, dbname: str, password: str = PASSWORD) -> str:
    return f"postgresql://{USER}:{password}@127.0.0.1:{server.port}/{dbname}"


def _pg(dsn: str, *statements: str) -> list[tuple]:
    # Imported here: psycopg2 is in the lake environment only, and `make test` collects this
    # module too (its tests are all marked `lake`).
    import psycopg2

    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            rows: list[tuple] = []
            for statement in statements:
                cursor.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            return rows
    finally:
        connection.close()


@pytest.fixture
def crm(project: ProjectKit, postgres: PostgresServer, monkeypatch) -> str:  # noqa: F811
    """A Postgres database with the customers table; its DSN (with the password) in $CRM_DSN."""
    dsn = _dsn(postgres, postgres.create_database("crm"))
    _pg(dsn, CUSTOMERS)
    monkeypatch.setenv(DSN_ENV, dsn)
    monkeypatch.delenv("PGPASSWORD", raising=False)  # the password is in the DSN only
    return dsn


def _parquet_rows(kit: ProjectKit, name: str) -> list[tuple]:
    table = pq.read_table(io.BytesIO(kit.download(name)))
    return sorted(tuple(row.values()) for row in table.to_pylist())


def _postgres_rows(dsn: str, where: str = "true") -> list[tuple]:
    return _pg(
        dsn,
        "SELECT id, name, city, amount, seen, active FROM sales.customers "
        f"WHERE {where} ORDER BY id",
    )


def _run_logs(kit: ProjectKit, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(record) for record in kit.instance.all_logs(result.run_id))


def _sensor(kit: ProjectKit, activation: str):
    sensor = kit.definitions().resolve_sensor_def(f"activate_{activation}_on_change")

    def evaluate(cursor: str | None) -> dg.SensorResult:
        return sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, instance=kit.instance))

    return evaluate


@pytest.mark.parametrize("warehouse", ["file", "lake"])
def test_postgres_table_exported_exactly_then_only_its_changes(
    project: ProjectKit,
    crm: str,
    postgres: PostgresServer,  # noqa: F811
    monkeypatch,
    tmp_path,
    warehouse: str,
):
    kit = project
    if warehouse == "lake":  # a fleet's warehouse; its catalog is another database
        use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    kit.write_defs(DEFS, extra_sources=CRM_SOURCE)
    definitions = kit.definitions()
    # Lineage: the table read is an asset of kind postgres upstream of the model, and no
    # description holds the connection string.
    table = source_key("crm", "customers")
    spec = next(s for s in definitions.resolve_all_asset_specs() if s.key == table)
    assert spec.kinds == {"postgres"} and "$CRM_DSN" in (spec.description or "")
    model = next(
        s for s in definitions.resolve_all_asset_specs() if s.key == model_key("customers")
    )
    assert table in {dep.asset_key for dep in model.deps}
    assert not [s.key for s in definitions.resolve_all_asset_specs() if PASSWORD in str(s)]
    sensor = _sensor(kit, "customers_out")
    first_tick = sensor(None)
    assert first_tick.run_requests == []  # the first evaluation only records

    t0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
    first = kit.run("customers_out", logical_time=t0)
    exported = _parquet_rows(kit, "crm/customers_06_added.parquet")
    assert exported == _postgres_rows(crm)
    assert len(exported) == 5
    # Types kept: NUMERIC at full precision, timestamptz as the same instant, NULLs as NULL.
    assert exported[0][3] == Decimal("12345678901234.5678")
    assert exported[0][4] == datetime(2025, 4, 14, 8, 0, 0, 123456, tzinfo=timezone.utc)
    assert exported[1][1:] == (None, "", None, None, None)
    assert PASSWORD not in _run_logs(kit, first)
    assert PASSWORD not in str(export_metadata(first, "customers_out"))
    assert build(first, model_key("customers"))[REBUILT_METADATA] is True

    # Nothing changed: the sensor stays quiet, and the model is not rebuilt.
    assert sensor(first_tick.cursor).run_requests == []
    same = kit.run("customers_out", logical_time=t0 + timedelta(hours=1))
    assert build(same, model_key("customers"))[REBUILT_METADATA] is False
    # A table the project does not read changes: still nothing to do.
    _pg(crm, "INSERT INTO sales.secret_salaries VALUES (2, 1)")
    assert sensor(first_tick.cursor).run_requests == []

    _pg(
        crm,
        "INSERT INTO sales.customers VALUES (6, 'Nuevo ñ', 'Léon', 1.2345, "
        "'2025-04-15 00:00:00+00', true)",
        "UPDATE sales.customers SET name = 'Zoë updated', amount = amount + 0.0001 WHERE id = 1",
        "DELETE FROM sales.customers WHERE id = 2",
    )
    tick = sensor(first_tick.cursor)
    assert len(tick.run_requests) == 1
    assert tick.run_requests[0].tags["azexport/changed_sources"] == "crm"

    second = kit.run("customers_out", logical_time=t0 + timedelta(hours=2))
    assert build(second, model_key("customers"))[REBUILT_METADATA] is True
    assert _parquet_rows(kit, "crm/customers_08_added.parquet") == _postgres_rows(crm, "id = 6")
    assert _parquet_rows(kit, "crm/customers_08_updated.parquet") == _postgres_rows(crm, "id = 1")
    removed = _parquet_rows(kit, "crm/customers_08_removed.parquet")
    assert removed == [exported[1]]  # as last exported
    assert PASSWORD not in _run_logs(kit, second)


def test_models_over_postgres_are_bound_at_load(project: ProjectKit, crm: str):
    kit = project
    kit.write_defs(DEFS + "    mapping: {id: id, nope: Nope}\n", extra_sources=CRM_SOURCE)
    with pytest.raises(ConfigError) as error:
        describe_project(load_project(kit.root / "defs", kit.root))
    message = str(error.value)
    assert "activation 'customers_out', field 'mapping'" in message
    assert "unknown column(s) 'nope'" in message
    assert "available: id, name, city, amount, seen, active" in message


def test_an_update_that_keeps_the_row_count_is_seen(project: ProjectKit, crm: str):
    """The change signal is exact: one updated value, no statistics to wait for."""
    kit = project
    kit.write_defs(DEFS, extra_sources=CRM_SOURCE)
    sensor = _sensor(kit, "customers_out")
    cursor = sensor(None).cursor
    for value in ("a", "b", "c"):
        _pg(crm, f"UPDATE sales.customers SET city = '{value}' WHERE id = 3")
        tick = sensor(cursor)
        assert len(tick.run_requests) == 1, value
        cursor = tick.cursor


def test_the_change_signal_is_not_read_again_while_no_transaction_wrote(
    crm: str, tmp_path, monkeypatch
):
    """A signal is kept with the snapshot it was read in: while no transaction that wrote
    ended anywhere in the database, a new read returns it without touching the tables; after
    any write it reads them again, and only a change to a watched table changes it. The kept
    entries hold no connection string."""
    import psycopg2

    source = SourceConfig.model_validate(
        {"postgres": {"dsn": {"env": DSN_ENV}, "schema": "sales"}, "tables": ["customers"]}
    )
    kept = tmp_path / "signals"

    def signal(kept_in: Path = kept) -> str | None:
        return postgres_fingerprint("crm", source, ["customers"], kept_in)

    first = signal()
    # A session holds the table locked (this ends no transaction that wrote): any read of it
    # would now wait, and fail after the lock timeout every session of this test gets.
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=3000")
    holder = psycopg2.connect(crm)
    try:
        with holder.cursor() as cursor:
            cursor.execute("LOCK TABLE sales.customers IN ACCESS EXCLUSIVE MODE")
        assert [signal(), signal()] == [first, first]
        with pytest.raises(DatabaseSourceError, match="lock timeout"):  # nothing kept there
            signal(kept_in=tmp_path / "elsewhere")
        # A write elsewhere in the database: the snapshot moves, so the table is read again.
        _pg(crm, "INSERT INTO public.other VALUES (1)")
        with pytest.raises(DatabaseSourceError, match="lock timeout"):
            signal()
    finally:
        holder.rollback()
        holder.close()
    assert signal() == first  # read again, unchanged
    _pg(crm, "UPDATE sales.customers SET city = 'Bern' WHERE id = 3")
    second = signal()
    assert second != first
    # A transaction open since before a read that commits after it moves the snapshot too.
    writer = psycopg2.connect(crm)
    try:
        with writer.cursor() as cursor:
            cursor.execute("UPDATE sales.customers SET city = 'Genf' WHERE id = 3")
        assert signal() == second  # not committed
        writer.commit()
    finally:
        writer.close()
    assert signal() not in (first, second)
    entries = list(kept.iterdir())
    assert entries and not any(PASSWORD in e.read_text() or "crm" in e.read_text() for e in entries)


def test_sandbox_refuses_undeclared_tables_and_schemas(project: ProjectKit, crm: str):
    kit = project
    for sql, expected in (
        ("SELECT * FROM crm.secret_salaries", "not a declared table of source 'crm'"),
        ("SELECT * FROM crm.public.other", "outside the source's schema"),
        ("SELECT * FROM postgres_query('crm', 'SELECT 1')", "table function postgres_query()"),
    ):
        kit.write_defs(
            DEFS.replace("SELECT id, name, city, amount, seen, active FROM crm.customers", sql),
            extra_sources=CRM_SOURCE,
        )
        with pytest.raises(ConfigError) as error:
            describe_project(load_project(kit.root / "defs", kit.root))
        message = str(error.value)
        assert expected in message and "defs/main/defs.yaml:" in message, message

    # Below the SQL check, DuckDB itself sees the declared schema only.
    con = duckdb.connect()
    source = SourceConfig.model_validate(
        {"postgres": {"dsn": {"env": DSN_ENV}, "schema": "sales"}, "tables": ["customers"]}
    )
    attach_source(con, "crm", source, kit.root)
    lock_down(con)
    assert con.execute("SELECT count(*) FROM crm.customers").fetchall() == [(5,)]
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM crm.public.other")
    with pytest.raises(duckdb.Error, match="disabled"):
        con.execute(f"ATTACH '{crm}' AS other (TYPE postgres)")
    with pytest.raises(duckdb.Error):
        con.execute("INSERT INTO crm.customers (id) VALUES (99)")  # read-only
    con.close()


def test_a_wrong_dsn_is_a_clear_error_without_the_password(
    project: ProjectKit,
    crm: str,
    postgres: PostgresServer,  # noqa: F811
    monkeypatch,
    caplog,
):
    kit = project
    wrong_password = "not-the-password-" + uuid.uuid4().hex
    monkeypatch.setenv(DSN_ENV, crm.replace(PASSWORD, wrong_password))
    kit.write_defs(DEFS, extra_sources=CRM_SOURCE)
    with caplog.at_level(logging.WARNING):
        kit.definitions()  # loads: the source is checked again at run time
    assert "password authentication failed" in caplog.text
    assert wrong_password not in caplog.text

    result = kit.run("customers_out", raise_on_error=False)
    assert not result.success
    failure = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "source 'crm'" in failure and "password authentication failed" in failure
    assert f"${DSN_ENV}" in failure
    assert wrong_password not in failure and wrong_password not in _run_logs(kit, result)

    # The sensor's change signal says the same, just as secretly.
    with pytest.raises(DatabaseSourceError) as error:
        _sensor(kit, "customers_out")(None)
    assert "password authentication failed" in str(error.value)
    assert wrong_password not in str(error.value)

    monkeypatch.delenv(DSN_ENV)
    result = kit.run("customers_out", raise_on_error=False)
    failure = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert f"environment variable {DSN_ENV}" in failure and "is not set" in failure


# --------------------------------------------------------------------------- lake sources

LAKE_DEFS = """
models:
  contacts:
    sql: SELECT c.id, c.email, c.score, r.region FROM loaded.contacts AS c
         LEFT JOIN raw.regions AS r ON r.id = c.id
    primary_key: id
activations:
  contacts_out:
    source: contacts
    destination: lake
    file_name: lake/contacts_{HH}
    format: parquet
    run_type: full_then_delta
    sync_mode: difference
    trigger: on_change
"""

LAKE_SOURCES = """\
loaded: {lake: raw, tables: [contacts]}
raw: {lake: raw, tables: [regions]}
"""


def _lake(*statements: str) -> list[tuple[Any, ...]]:
    """Run statements on the warehouse's lake, as another tool loading it would."""
    warehouse = open_warehouse()
    assert isinstance(warehouse, LakeWarehouse)
    with warehouse.connect(holder="loader") as con:
        rows: list[tuple[Any, ...]] = []
        for statement in statements:
            rows = con.execute(statement).fetchall()
        return rows


@pytest.fixture(params=["local", "azure"])
def lake(
    request: pytest.FixtureRequest,
    project: ProjectKit,
    postgres: PostgresServer,  # noqa: F811
    azurite,
    monkeypatch,
    tmp_path,
) -> ProjectKit:
    """The warehouse's DuckLake with data in a folder, or on `az://` (Azurite) as in a fleet."""
    if request.param == "azure":
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        data = service.create_container(f"lake-{uuid.uuid4().hex[:16]}")
        data_path = f"az://{data.container_name}/warehouse/"
        monkeypatch.setenv("AZEXPORT_LAKE_AZURE_CONNECTION_STRING", azurite.connection_string)
    else:
        data_path = str(tmp_path / "lake-data")
    use_lake(monkeypatch, postgres, data_path, postgres.create_database())
    _lake(
        "CREATE SCHEMA raw",
        "CREATE TABLE raw.contacts AS SELECT i AS id, 'c' || i || '@ex.com' AS email, "
        "CAST(i AS DECIMAL(9, 2)) / 4 AS score FROM range(300) AS r(i)",
        "CREATE TABLE raw.regions AS SELECT i AS id, 'région ' || (i % 3) AS region "
        "FROM range(0, 300, 2) AS r(i)",
        "CREATE TABLE raw.unrelated AS SELECT 1 AS x",
    )
    return project


def test_lake_tables_exported_then_only_their_changes(lake: ProjectKit):
    kit = lake
    kit.write_defs(LAKE_DEFS, extra_sources=LAKE_SOURCES)
    sensor = _sensor(kit, "contacts_out")
    cursor = sensor(None).cursor
    query = (
        "SELECT c.id, c.email, c.score, r.region FROM raw.contacts AS c "
        "LEFT JOIN raw.regions AS r ON r.id = c.id"
    )

    t0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
    kit.run("contacts_out", logical_time=t0)
    exported = _parquet_rows(kit, "lake/contacts_06_added.parquet")
    assert exported == sorted(_lake(query)) and len(exported) == 300

    assert sensor(cursor).run_requests == []
    _lake("INSERT INTO raw.unrelated VALUES (2)")  # not read by any model
    assert sensor(cursor).run_requests == []
    same = kit.run("contacts_out", logical_time=t0 + timedelta(hours=1))
    assert build(same, model_key("contacts"))[REBUILT_METADATA] is False

    _lake(
        "UPDATE raw.contacts SET email = 'changed@ex.com' WHERE id IN (10, 11)",
        "DELETE FROM raw.contacts WHERE id = 7",
        "INSERT INTO raw.contacts VALUES (1000, 'new@ex.com', 1.25)",
        "UPDATE raw.regions SET region = 'moved' WHERE id = 20",
    )
    tick = sensor(cursor)
    assert len(tick.run_requests) == 1
    assert tick.run_requests[0].tags["azexport/changed_sources"] == "loaded,raw"

    second = kit.run("contacts_out", logical_time=t0 + timedelta(hours=2))
    assert build(second, model_key("contacts"))[REBUILT_METADATA] is True
    now = {row[0]: row for row in _lake(query)}
    assert _parquet_rows(kit, "lake/contacts_08_added.parquet") == [now[1000]]
    assert _parquet_rows(kit, "lake/contacts_08_updated.parquet") == [now[10], now[11], now[20]]
    assert _parquet_rows(kit, "lake/contacts_08_removed.parquet") == [exported[7]]


def test_lake_source_refuses_undeclared_tables(lake: ProjectKit):
    kit = lake
    kit.write_defs(LAKE_DEFS.replace("raw.regions", "loaded.unrelated"), extra_sources=LAKE_SOURCES)
    with pytest.raises(ConfigError, match="not a declared table of source 'loaded'"):
        describe_project(load_project(kit.root / "defs", kit.root))

    # The SQL over lake sources is bound at load, against the lake's catalog.
    kit.write_defs(LAKE_DEFS + "    mapping: {id: id, mail: Mail}\n", extra_sources=LAKE_SOURCES)
    with pytest.raises(ConfigError) as error:
        describe_project(load_project(kit.root / "defs", kit.root))
    assert "unknown column(s) 'mail'" in str(error.value)
    assert "available: id, email, score, region" in str(error.value)
