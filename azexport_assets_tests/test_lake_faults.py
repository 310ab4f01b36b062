"""Transient faults of the lake's services, injected behind real network hops: the catalog's
Postgres behind a TCP relay that cuts and refuses connections, the lake's data in Azurite
behind the HTTP fault proxy that resets reads. A real Dagster run of an activation goes
through them; every retry is in the run's log with its cause, the run succeeds, and the file
holds exactly the rows that changed.
"""

from __future__ import annotations

import csv
import io
import threading
import uuid
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import pytest
from azure.storage.blob import BlobServiceClient

from azexport_assets.demo.azurite import connection_string_for
from azexport_assets.warehouse import (
    is_transient,
    reporting_retries,
    retry_on_conflict,
    retry_transient,
)
from azexport_assets_tests.fault_proxy import FaultProxy, TcpFaultProxy
from azexport_assets_tests.lake_kit import PASSWORD, USER, PostgresServer, postgres  # noqa: F401
from azexport_assets_tests.project_kit import ProjectKit, export_metadata

PEOPLE = 300  # above DuckLake's inlining limit: tables are Parquet files in Azurite

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_sync:
    source: people
    destination: lake
    file_name: sync/{YYYY}{MM}{DD}_{HH}
    run_type: full_then_delta
    sync_mode: upsert
"""


def _rows(kit: ProjectKit, name: str) -> list[tuple[int, str]]:
    text = kit.download(name).decode()
    return sorted((int(r["id"]), r["name"]) for r in csv.DictReader(io.StringIO(text, newline="")))


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.user_message]


@pytest.mark.lake
def test_a_run_rides_out_catalog_drops_and_az_read_errors(
    project: ProjectKit,
    postgres: PostgresServer,  # noqa: F811
    azurite,
    monkeypatch,
):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    data = service.create_container(f"lake-{uuid.uuid4().hex[:16]}")
    with (
        TcpFaultProxy(target_port=postgres.port) as relay,
        FaultProxy(target_port=azurite.port) as proxy,
    ):
        db = postgres.create_database()
        monkeypatch.setenv(
            "AZEXPORT_WAREHOUSE",
            f"ducklake:postgres:host=127.0.0.1 port={relay.port} user={USER} dbname={db}",
        )
        monkeypatch.setenv("AZEXPORT_LAKE_DATA_PATH", f"az://{data.container_name}/warehouse/")
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        lake_secret = connection_string_for(proxy.port)
        monkeypatch.setenv("AZEXPORT_LAKE_AZURE_CONNECTION_STRING", lake_secret)
        # The destination is reached through the proxy too (its own container).
        monkeypatch.setenv("AZEXPORT_TEST_ACCOUNT_URL", proxy.account_url)
        kit = project
        kit.source_sql(
            f"CREATE TABLE people AS SELECT i AS id, 'n' || i AS name FROM range({PEOPLE}) r(i)"
        )
        kit.write_defs(DEFS)
        t0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
        kit.run("people_sync", logical_time=t0)
        assert _rows(kit, "sync/20250414_06.csv") == [(i, f"n{i}") for i in range(PEOPLE)]

        kit.source_sql(
            "UPDATE people SET name = 'changed' WHERE id % 100 = 0",
            f"INSERT INTO people VALUES ({PEOPLE}, 'new')",
        )
        # The lake's data: reads of its Parquet files are reset, more often than the azure
        # extension retries by itself (it gives up after four).
        lake_path = f"/{data.container_name}/"
        proxy.drop_connection(method="GET", path_contains=lake_path, times=6)
        # The catalog: while the export's file is uploading (held 2 s), every connection to
        # Postgres is cut and the next ones are refused, so the baseline commit meets a dead
        # catalog and cannot reconnect at once.
        blob = "sync/20250414_07.csv"
        proxy.delay(seconds=2, method="PUT", path_contains=blob)

        def cut_while_uploading() -> None:
            if proxy.wait_for(lambda p: p.count(method="PUT", path_contains=blob) > 0, 120):
                relay.cut(refuse=3)

        cutter = threading.Thread(target=cut_while_uploading, daemon=True)
        cutter.start()
        result = kit.run("people_sync", logical_time=t0 + timedelta(hours=1))
        cutter.join(timeout=10)

    assert result.success
    assert relay.cuts >= 3
    assert _rows(kit, blob) == [(0, "changed"), (100, "changed"), (200, "changed"), (PEOPLE, "new")]
    assert export_metadata(result, "people_sync")["baseline_advanced"] is True

    messages = _messages(kit.instance, result.run_id)
    retries = [m for m in messages if "transient fault of the lake" in m]
    # Both kinds of fault were met and each retry names its cause.
    assert any("CURLE" in m or "network socket" in m for m in retries), retries
    assert any("Postgres" in m or "closed" in m for m in retries), retries
    assert all("retrying (attempt" in m for m in retries)
    # No secret in any message of the run.
    text = "\n".join(messages)
    assert PASSWORD not in text
    assert lake_secret.split("AccountKey=")[1].split(";")[0] not in text


def test_transient_faults_are_retried_with_backoff_and_reported(monkeypatch):
    """Unit level: which errors count as transient, how many attempts, what is reported."""
    monkeypatch.setattr("azexport_assets.warehouse.retries.time.sleep", lambda s: None)
    calls: list[int] = []
    said: list[str] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise duckdb.IOException(
                "IO Error: Connection was closed by the server while trying to read a response "
                "(AccountKey=c2VjcmV0;)"
            )
        return "done"

    with reporting_retries(said.append):
        assert retry_transient(flaky, what="change set of 'a'") == "done"
    assert len(calls) == 3 and len(said) == 2
    assert said[0].startswith("change set of 'a': transient fault of the lake (IOException: IO")
    assert "retrying (attempt 2 of 6) in 1.0s" in said[0]
    assert "retrying (attempt 3 of 6) in 2.0s" in said[1]
    assert all("c2VjcmV0" not in s for s in said)

    def broken() -> None:
        raise duckdb.IOException("IO Error: Unable to connect to Postgres at ...: refused")

    with reporting_retries(said.append), pytest.raises(duckdb.IOException):
        retry_transient(broken, what="x", attempts=3)
    # Not transient: raised at once.
    for error in (
        duckdb.CatalogException("Table models.x does not exist"),
        duckdb.BinderException("column y not found"),
        duckdb.IOException("IO Error: No space left on device"),
        ValueError("Connection was closed by the server"),
    ):
        assert not is_transient(error)

    conflicts: list[str] = []
    attempt: list[int] = []

    def conflicting() -> str:
        attempt.append(1)
        if len(attempt) < 2:
            raise duckdb.TransactionException("Transaction conflict - attempting to update")
        return "ok"

    with reporting_retries(conflicts.append):
        assert retry_on_conflict(conflicting, what="commit_baseline") == "ok"
    assert len(conflicts) == 1
    assert conflicts[0].startswith("commit_baseline: commit conflict with another writer")
