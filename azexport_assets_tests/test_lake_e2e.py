"""The export scenarios on the DuckLake backend: catalog in a real Postgres, data files in a
shared folder or in Azurite (`az://`), Dagster runs in process, files downloaded and compared.

The scenarios are the file backend's own tests, run against a lake instead: the same rows must
land in the same files whichever backend holds the warehouse.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from azure.storage.blob import BlobServiceClient

from azexport_assets.delta import baseline_info
from azexport_assets.warehouse import LakeWarehouse, open_warehouse
from azexport_assets_tests import test_delta_e2e as delta_e2e
from azexport_assets_tests import test_export_csv_e2e as csv_e2e
from azexport_assets_tests import test_paths_e2e as paths_e2e
from azexport_assets_tests.lake_kit import PostgresServer, postgres, use_lake  # noqa: F401
from azexport_assets_tests.project_kit import ProjectKit, export_metadata

pytestmark = pytest.mark.lake


@pytest.fixture
def lake(project: ProjectKit, postgres: PostgresServer, monkeypatch, tmp_path) -> ProjectKit:  # noqa: F811
    """The test project with its warehouse on a new DuckLake (data in a local folder)."""
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    return project


def lake_rows(sql: str) -> list[tuple]:
    """Rows from the lake the environment names, through the backend's own connection."""
    warehouse = open_warehouse()
    assert isinstance(warehouse, LakeWarehouse)
    with warehouse.connect(holder="test") as con:
        return con.execute(sql).fetchall()


def test_full_csv_export_on_the_lake(lake: ProjectKit, tmp_path):
    lake.source_sql(csv_e2e.HARD_ROWS)
    csv_e2e.test_csv_snapshot_round_trip(lake, ",", "true")
    # Everything went to the lake: no warehouse file, the model and the state are there.
    assert not lake.warehouse_path.exists()
    assert lake_rows("SELECT count(*) FROM models.people") == [(9,)]
    assert lake_rows("SELECT activation, committed FROM azexport_state.state__people_csv") == [
        ("people_csv", True)
    ]


def test_delta_upsert_on_the_lake(lake: ProjectKit):
    lake.source_sql(delta_e2e.SOURCE)
    delta_e2e.test_upsert_scenario(lake)
    warehouse = open_warehouse()
    with warehouse.connect(holder="test") as con:
        info = baseline_info(con, "people_sync")
    assert info["rows"] == 6  # ids 1, 2, 4, 5, 6, 7


def test_delta_difference_on_the_lake(lake: ProjectKit):
    lake.source_sql(delta_e2e.SOURCE)
    delta_e2e.test_difference_scenario(lake)


@pytest.mark.parametrize("sync", ["snapshot", "upsert"])
def test_many_partitions_are_read_from_a_sorted_copy_on_the_lake(lake: ProjectKit, sync):
    """The change set lives in the lake; the copy sorted by partition in the connection's
    temporary space (DuckDB 1.5 here)."""
    paths_e2e.test_many_partitions_keep_the_model_order_or_the_key_order(lake, sync)


def test_two_activations_keep_separate_baselines_on_the_lake(lake: ProjectKit):
    lake.source_sql(delta_e2e.SOURCE)
    delta_e2e.test_two_activations_keep_separate_baselines(lake)


# --------------------------------------------------------------------------- data on Azurite

PEOPLE = 200  # above DuckLake's inlining limit, so tables become Parquet files in Azurite

AZ_DEFS = """
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
    mapping:
      id: id
      name: Name
      score: Score
"""


def _csv_rows(kit: ProjectKit, name: str) -> list[tuple[int, str, int]]:
    text = kit.download(name).decode()
    return sorted(
        (int(r["id"]), r["Name"], int(r["Score"]))
        for r in csv.DictReader(io.StringIO(text, newline=""))
    )


def test_lake_data_in_azurite(
    project: ProjectKit,
    postgres: PostgresServer,  # noqa: F811
    azurite,
    monkeypatch,
):
    """`az://` through DuckDB's azure extension, with a connection string to Azurite (http)."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    data = service.create_container(f"lake-{uuid.uuid4().hex[:16]}")
    use_lake(
        monkeypatch, postgres, f"az://{data.container_name}/warehouse/", postgres.create_database()
    )
    monkeypatch.setenv("AZEXPORT_LAKE_AZURE_CONNECTION_STRING", azurite.connection_string)
    kit = project
    kit.source_sql(
        f"CREATE TABLE people AS SELECT i AS id, 'n' || i AS name, i * 10 AS score "
        f"FROM range({PEOPLE}) AS r(i)"
    )
    kit.write_defs(AZ_DEFS)
    t0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
    kit.run("people_sync", logical_time=t0)
    assert _csv_rows(kit, "sync/20250414_06.csv") == [(i, f"n{i}", i * 10) for i in range(PEOPLE)]

    kit.source_sql(
        "UPDATE people SET name = 'changed' WHERE id % 50 = 0",  # 0, 50, 100, 150
        "DELETE FROM people WHERE id = 7",
        f"INSERT INTO people VALUES ({PEOPLE}, 'new', 1)",
    )
    result = kit.run("people_sync", logical_time=t0 + timedelta(hours=1))
    assert _csv_rows(kit, "sync/20250414_07.csv") == [
        (0, "changed", 0),
        (50, "changed", 500),
        (100, "changed", 1000),
        (150, "changed", 1500),
        (PEOPLE, "new", 1),
    ]
    assert export_metadata(result, "people_sync")["baseline_advanced"]

    # The lake's tables are Parquet files in the Azurite container, none in the export's.
    files = [b.name for b in data.list_blobs()]
    assert any(n.startswith("warehouse/models/people/") and n.endswith(".parquet") for n in files)
    assert any(n.startswith("warehouse/azexport_state/") for n in files)  # the baseline
    assert not [n for n in kit.blob_names() if n.endswith(".parquet")]
    assert lake_rows("SELECT count(*), sum(score) FROM models.people") == [
        (PEOPLE, sum(i * 10 for i in range(PEOPLE)) - 70 + 1)
    ]

    # Maintenance runs against Azure too, and leaves the data readable.
    warehouse = open_warehouse()
    assert isinstance(warehouse, LakeWarehouse)
    done = warehouse.maintain(older_than_days=0)
    assert done["expired_snapshots"] > 0
    assert lake_rows("SELECT count(*) FROM models.people") == [(PEOPLE,)]
