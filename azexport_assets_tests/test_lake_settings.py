"""Choosing the backend by configuration, keeping secrets out of messages, per-activation state
rows (and moving rows out of the old shared table), the conflict retry. No server needed."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from azexport_assets.delta import state
from azexport_assets.resources import WarehouseResource
from azexport_assets.warehouse import (
    LakeWarehouse,
    Warehouse,
    WarehouseConfigError,
    is_conflict,
    open_warehouse,
    retry_on_conflict,
)
from azexport_assets.warehouse.extensions import EXTENSIONS_ENV, extension_file
from azexport_assets.warehouse.settings import redact

CATALOG = "ducklake:postgres:dbname=lake host=pg.internal user=azexport"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("AZEXPORT_WAREHOUSE", "AZEXPORT_LAKE_DATA_PATH", "AZEXPORT_LAKE_AZURE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)


def test_the_file_is_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    warehouse = open_warehouse(project_root=tmp_path)
    assert isinstance(warehouse, Warehouse)
    assert warehouse.path == Path(".azexport/warehouse.duckdb")
    assert warehouse.describe() == "DuckDB file .azexport/warehouse.duckdb"


def test_the_environment_switches_to_the_lake(monkeypatch, tmp_path):
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", CATALOG)
    monkeypatch.setenv("AZEXPORT_LAKE_DATA_PATH", "az://lake/azexport")
    warehouse = WarehouseResource().open(tmp_path)
    assert isinstance(warehouse, LakeWarehouse)
    assert warehouse.settings.conninfo == "dbname=lake host=pg.internal user=azexport"
    assert warehouse.settings.data_path == "az://lake/azexport/"
    assert warehouse.settings.remote
    assert warehouse.project_root == tmp_path


def test_resource_fields_switch_to_the_lake_with_a_shared_folder(tmp_path):
    resource = WarehouseResource(path=CATALOG, lake_data_path=str(tmp_path / "shared"))
    warehouse = resource.open(tmp_path)
    assert isinstance(warehouse, LakeWarehouse)
    assert warehouse.settings.data_path == str(tmp_path / "shared") + "/"
    assert not warehouse.settings.remote
    assert warehouse.describe() == (
        "DuckLake with its catalog in Postgres (dbname=lake host=pg.internal user=azexport), "
        f"data under {tmp_path / 'shared'}/"
    )


def test_a_lake_without_data_path_names_the_variable(monkeypatch):
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", CATALOG)
    with pytest.raises(WarehouseConfigError, match="AZEXPORT_LAKE_DATA_PATH") as caught:
        open_warehouse()
    assert str(caught.value).startswith("AZEXPORT_WAREHOUSE names a DuckLake")


def test_only_postgres_catalogs_are_accepted():
    with pytest.raises(WarehouseConfigError, match="catalog in Postgres") as caught:
        open_warehouse("ducklake:sqlite:/tmp/x.db", data_path="/x")
    # Through the resource (a step), the same line fails the step, not retried.
    with pytest.raises(dg.Failure) as failed:
        WarehouseResource(path="ducklake:sqlite:/tmp/x.db", lake_data_path="/x").open(Path("."))
    assert "catalog in Postgres" in str(caught.value)
    assert "catalog in Postgres" in failed.value.description
    assert "the warehouse resource's 'path'" in failed.value.description
    assert failed.value.allow_retries is False


def test_passwords_never_reach_descriptions():
    assert redact("dbname=x password=s3cret host=h") == "dbname=x password=*** host=h"
    assert redact("password = 'a b\\' c' host=h") == "password = *** host=h"
    assert redact("postgresql://user:s3cret@host/db") == "postgresql://user:***@host/db"
    assert redact("AccountName=a;AccountKey=k3y==;BlobEndpoint=http://x") == (
        "AccountName=a;AccountKey=***;BlobEndpoint=http://x"
    )
    assert redact("https://a.blob/c?sv=1&sig=abc%2Bd&se=2") == "https://a.blob/c?sv=1&sig=***&se=2"
    warehouse = open_warehouse(CATALOG + " password=s3cret", data_path="/x")
    assert "s3cret" not in warehouse.describe()


def test_conflicts_are_retried_a_bounded_number_of_times():
    calls = []

    def conflicting():
        calls.append(1)
        if len(calls) < 3:
            raise duckdb.TransactionException("Transaction conflict - attempting to ...")
        return "done"

    assert retry_on_conflict(conflicting) == "done" and len(calls) == 3

    def always():
        raise duckdb.TransactionException("Transaction conflict - again")

    with pytest.raises(duckdb.TransactionException):
        retry_on_conflict(always, attempts=2)
    assert not is_conflict(duckdb.CatalogException("Table x does not exist"))
    assert not is_conflict(ValueError("Transaction conflict"))


def test_extension_files_come_from_the_configured_folder(tmp_path, monkeypatch):
    (tmp_path / "ducklake.duckdb_extension").write_bytes(b"not really")
    monkeypatch.setenv(EXTENSIONS_ENV, str(tmp_path))
    con = duckdb.connect()
    assert extension_file(con, "ducklake") == tmp_path / "ducklake.duckdb_extension"


def _legacy_warehouse() -> duckdb.DuckDBPyConnection:
    """A warehouse written before state rows had their own tables."""
    con = duckdb.connect()
    con.execute("CREATE SCHEMA azexport_state")
    columns = ", ".join(f"{name} {kind}" for name, kind in state._COLUMNS.items())
    con.execute(f"CREATE TABLE azexport_state.activation_state ({columns})")
    con.execute(
        "INSERT INTO azexport_state.activation_state (activation, baseline_delta_id, "
        "baseline_rows) VALUES ('crm', 'd1', 10), ('billing', 'd7', 3)"
    )
    return con


def test_each_activation_has_its_own_state_table():
    con = duckdb.connect()
    state.ensure_schema(con)
    state.write(con, "crm", {"baseline_rows": 1})
    state.write(con, "CRM", {"baseline_rows": 2})  # another activation: another table
    state.write(con, "crm", {"reason": "delta"})
    assert state.read(con, "crm")["baseline_rows"] == 1
    assert state.read(con, "crm")["reason"] == "delta"
    assert state.read(con, "CRM")["baseline_rows"] == 2
    assert con.execute("SELECT count(*) FROM azexport_state.state__crm").fetchone() == (1,)


def test_rows_of_the_shared_table_move_on_the_next_write():
    con = _legacy_warehouse()
    assert state.read(con, "crm")["baseline_delta_id"] == "d1"  # read where it is
    state.write(con, "crm", {"committed": True})
    moved = state.read(con, "crm")
    assert (moved["baseline_delta_id"], moved["baseline_rows"], moved["committed"]) == (
        "d1",
        10,
        True,
    )
    assert con.execute("SELECT activation FROM azexport_state.activation_state").fetchall() == [
        ("billing",)
    ]
    assert state.read(con, "billing")["baseline_rows"] == 3


def test_the_cli_sets_up_a_file_warehouse(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, AZEXPORT_WAREHOUSE=str(tmp_path / "w.duckdb"))
    done = subprocess.run(
        [sys.executable, "-m", "azexport_assets.warehouse", "init"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"DuckDB file {tmp_path / 'w.duckdb'}",
        "created schemas: models, segments, azexport_state, azexport_log",
    ]
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    schemas = {r[0] for r in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
    con.close()
    assert {"models", "segments", "azexport_state", "azexport_log"} <= schemas


def test_an_air_gapped_extension_folder_comes_first(tmp_path):
    """A file in $AZEXPORT_DUCKDB_EXTENSIONS is what gets installed; a bad one is named."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "extensions"
    folder.mkdir()
    (folder / "ducklake.duckdb_extension").write_bytes(b"\0" * 1024)  # not an extension
    script = (
        "from azexport_assets.warehouse.extensions import install_extensions\n"
        "install_extensions(['ducklake'])\n"
    )
    env = dict(os.environ, AZEXPORT_DUCKDB_EXTENSIONS=str(folder), TMPDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("azexport_assets.warehouse.extensions.ExtensionLoadError: ")
    assert f"from {folder / 'ducklake.duckdb_extension'}" in last


@pytest.mark.lake
@pytest.mark.parametrize("limit", ["50%", "101%"])
def test_a_memory_limit_the_lake_refuses_names_the_variable(tmp_path, monkeypatch, limit):
    """DuckDB 1.5, the lake's, takes no percentage in a database's configuration: the refusal
    (before any catalog connection) is one line naming the variable, with sizes it takes, not
    "cannot open the lake"; through the resource it fails the step, not retried."""
    monkeypatch.setenv("AZEXPORT_DUCKDB_MEMORY_LIMIT", limit)
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", "ducklake:postgres:dbname=lake host=127.0.0.1 port=1")
    monkeypatch.setenv("AZEXPORT_LAKE_DATA_PATH", str(tmp_path / "data"))
    warehouse = open_warehouse(project_root=tmp_path)
    with pytest.raises(WarehouseConfigError) as caught, warehouse.connect():
        pass
    assert str(caught.value).startswith(
        f"AZEXPORT_DUCKDB_MEMORY_LIMIT='{limit}' is not a memory size DuckDB takes (Parser "
        "Error: Unknown unit for memory: '%'"
    )
    assert str(caught.value).endswith("use a number and a unit, e.g. 512MB or 2GB")
