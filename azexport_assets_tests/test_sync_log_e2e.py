"""The sync log: one row per exported key and run in `azexport_log.<activation>`, written in
the transaction that advances the baseline. Real Dagster runs into Azurite, a real DuckDB
warehouse; a FaultProxy fails the manifest to show a failed run logs nothing. The warehouse is
read through its own backend, so `test_sync_log_lake.py` runs the same scenarios on DuckLake."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pytest

from azexport_assets.asset_keys import delta_key, export_key, model_key, sync_log_key
from azexport_assets.config import ConfigError
from azexport_assets.logical_time import LOGICAL_TIME_TAG
from azexport_assets.warehouse import open_warehouse
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit, export_metadata

T0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
T1 = datetime(2025, 4, 15, 6, tzinfo=timezone.utc)


def defs(sync_mode: str, sync_log: str = "true", manifest: bool = False) -> str:
    run_type = "full_only" if sync_mode == "snapshot" else "full_then_delta"
    return f"""
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: [region, id]
activations:
  people_out:
    source: people
    destination: lake
    file_name: out/{{YYYY}}{{MM}}{{DD}}
    run_type: {run_type}
    sync_mode: {sync_mode}
    manifest: {str(manifest).lower()}
    sync_log: {sync_log}
"""


def warehouse_sql(kit: ProjectKit, statement: str) -> list[tuple]:
    """Run a statement on the project's warehouse (the DuckDB file or the DuckLake)."""
    with open_warehouse(project_root=kit.root).connect(holder="test") as con:
        return con.execute(statement).fetchall()


def log_rows(kit: ProjectKit, where: str = "true") -> list[tuple]:
    return warehouse_sql(
        kit,
        "SELECT run_id, logical_time, operation, region, id FROM azexport_log.people_out "
        f"WHERE {where} ORDER BY run_id, operation, region, id",
    )


def seed(kit: ProjectKit) -> None:
    kit.source_sql(
        "CREATE TABLE people AS SELECT CASE WHEN range % 2 = 0 THEN 'eu' ELSE 'us' END AS region,"
        " range::INTEGER AS id, 'n' || range AS name FROM range(6)"
    )


def change_source(kit: ProjectKit) -> None:
    kit.source_sql(
        "INSERT INTO people VALUES ('eu', 10, 'new')",
        "UPDATE people SET name = 'changed' WHERE id = 1",
        "DELETE FROM people WHERE id = 0",
    )


NAIVE = {T0: T0.replace(tzinfo=None), T1: T1.replace(tzinfo=None)}
LOG_KEY = sync_log_key("people_out")


def test_difference_logs_every_exported_key_with_its_operation(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(defs("difference"))
    first = project.run("people_out", logical_time=T0)
    change_source(project)
    second = project.run("people_out", logical_time=T1)

    rows = log_rows(project)
    everyone = [("eu", 0), ("eu", 2), ("eu", 4), ("us", 1), ("us", 3), ("us", 5)]
    expected = [(first.run_id, NAIVE[T0], "added", r, i) for r, i in everyone]
    expected += [
        (second.run_id, NAIVE[T1], "added", "eu", 10),
        (second.run_id, NAIVE[T1], "removed", "eu", 0),
        (second.run_id, NAIVE[T1], "updated", "us", 1),
    ]
    assert sorted(rows) == sorted(expected)

    metadata = export_metadata(second, "people_out")
    assert metadata["sync_log_table"] == '"azexport_log"."people_out"'
    assert metadata["sync_log_rows"] == 3
    assert metadata["sync_log_operations"] == {"added": 1, "removed": 1, "updated": 1}
    assert f"WHERE run_id = '{second.run_id}'" in metadata["sync_log_query"]
    preview = metadata["sync_log_preview"]
    assert preview.splitlines()[0] == (
        "| run_id | logical_time | committed_at | operation | region | id |"
    )
    assert sum(second.run_id in line for line in preview.splitlines()) == 3
    # The query in the metadata reads exactly this run's slice.
    query = metadata["sync_log_query"].strip("`").removeprefix("sql").strip()
    assert len(warehouse_sql(project, query)) == 3


@pytest.mark.parametrize(
    ("sync_mode", "logged"),
    [
        ("upsert", {("added", "eu", 10), ("updated", "us", 1)}),  # removals are not exported
        ("insert", {("added", "eu", 10)}),  # only new keys are exported
    ],
)
def test_only_exported_rows_are_logged(project: ProjectKit, sync_mode: str, logged) -> None:
    seed(project)
    project.write_defs(defs(sync_mode))
    project.run("people_out", logical_time=T0)
    change_source(project)
    second = project.run("people_out", logical_time=T1)
    rows = log_rows(project, f"run_id = '{second.run_id}'")
    assert {(op, region, key) for _, _, op, region, key in rows} == logged


def test_a_snapshot_logs_every_row_of_every_run(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(defs("snapshot"))
    first = project.run("people_out", logical_time=T0)
    second = project.run("people_out", logical_time=T1)
    rows = log_rows(project)
    assert len(rows) == 12
    for run in (first, second):
        mine = [r for r in rows if r[0] == run.run_id]
        assert sorted((r[3], r[4]) for r in mine) == sorted(
            ("eu" if i % 2 == 0 else "us", i) for i in range(6)
        )
        assert {r[2] for r in mine} == {"added"}


def test_a_failed_run_logs_nothing_and_its_retry_logs_once(
    project: ProjectKit, azurite, monkeypatch
) -> None:
    seed(project)
    project.write_defs(defs("difference", manifest=True))
    project.run("people_out", logical_time=T0)
    change_source(project)
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        proxy.fail(method="PUT", path_contains="_manifest", status=500, times=None)
        failed = project.run("people_out", logical_time=T1, raise_on_error=False)
        assert not failed.success
        assert log_rows(project, f"run_id = '{failed.run_id}'") == []
        proxy.clear()
        retry = project.run(
            "people_out",
            tags={"dagster/root_run_id": failed.run_id, "dagster/parent_run_id": failed.run_id},
        )
        assert retry.success
        # Running the retry again finds the change set committed: nothing is logged twice.
        again = project.run(
            "people_out",
            tags={"dagster/root_run_id": failed.run_id, "dagster/parent_run_id": retry.run_id},
        )
    assert again.success
    # The retry's log asset holds the three keys; the run after it logged none.
    assert materialization(retry, LOG_KEY)["rows_this_run"] == 3
    assert materialization(again, LOG_KEY)["rows_this_run"] == 0
    assert materialization(again, LOG_KEY)["rows_kept"] == 6 + 3
    second_run = [r for r in log_rows(project) if r[1] == NAIVE[T1]]
    assert sorted((op, region, key) for _, _, op, region, key in second_run) == [
        ("added", "eu", 10),
        ("removed", "eu", 0),
        ("updated", "us", 1),
    ]


def test_retention_deletes_rows_committed_before_it(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(defs("difference", sync_log="{retention_days: 7}"))
    first = project.run("people_out", logical_time=T0)
    aged = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=8)
    warehouse_sql(
        project, f"UPDATE azexport_log.people_out__runs SET committed_at = TIMESTAMP '{aged}'"
    )
    change_source(project)
    second = project.run("people_out", logical_time=T1)
    rows = log_rows(project)
    assert {r[0] for r in rows} == {second.run_id}
    assert first.run_id not in {r[0] for r in rows}
    assert len(rows) == 3
    # The expired run is gone from both tables behind the view.
    runs = warehouse_sql(project, "SELECT run_id FROM azexport_log.people_out__runs")
    keys = warehouse_sql(project, "SELECT count(*) FROM azexport_log.people_out__keys")
    assert runs == [(second.run_id,)] and keys == [(3,)]


def test_no_sync_log_writes_no_log_table(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(defs("difference", sync_log="false"))
    result = project.run("people_out", logical_time=T0)
    assert "sync_log_rows" not in export_metadata(result, "people_out")
    tables = warehouse_sql(
        project,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'azexport_log'",
    )
    assert tables == []


def test_a_key_column_named_like_a_log_column_is_refused_at_load(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(
        defs("difference")
        .replace("SELECT * FROM src.people", "SELECT id AS operation, name FROM src.people")
        .replace("[region, id]", "operation")
    )
    with pytest.raises(ConfigError) as caught:
        project.definitions()
    message = str(caught.value)
    assert "defs.yaml:" in message and "activation 'people_out'" in message
    assert "sync_log" in message and "'operation'" in message


def test_a_delta_table_export_logs_its_commit(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(
        defs("upsert").replace("file_name: out/{YYYY}{MM}{DD}", "file_name: tables/people")
        + "    format: delta\n"
    )
    project.run("people_out", logical_time=T0)
    change_source(project)
    second = project.run("people_out", logical_time=T1)
    rows = log_rows(project, f"run_id = '{second.run_id}'")
    assert [(op, region, key) for _, _, op, region, key in rows] == [
        ("added", "eu", 10),
        ("updated", "us", 1),
    ]
    metadata = export_metadata(second, "people_out")
    assert metadata["rows_updated"] == 1 and metadata["sync_log_rows"] == 2


def materialization(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    """The metadata values of the run's materialization of `key`."""
    found = [
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == key
    ]
    assert len(found) == 1, f"{key.to_user_string()} materialized {len(found)} times"
    return {k: v.value for k, v in found[0].metadata.items()}


def test_the_sync_log_is_an_asset_materialized_with_the_export(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(defs("difference", sync_log="{retention_days: 9}"))
    definitions = project.definitions()
    log_key = sync_log_key("people_out")
    # In the lineage downstream of the export, described, with kinds.
    graph = definitions.resolve_asset_graph()
    node = graph.get(log_key)
    assert set(node.parent_keys) == {export_key("people_out")}
    assert "azexport_log.people_out" in node.description and "9 days" in node.description
    assert {"duckdb", "table"} <= set(node.kinds)

    first = project.run("people_out", logical_time=T0)
    change_source(project)
    second = project.run("people_out", logical_time=T1)

    for result, written, kept in ((first, 6, 6), (second, 3, 9)):
        log = materialization(result, log_key)
        assert log["rows_this_run"] == written
        assert log["rows_kept"] == log["dagster/row_count"] == kept
        assert log["retention_days"] == 9
        assert log["runs_kept"] == (1 if result is first else 2)
        assert log["dagster/table_name"] == "azexport_log.people_out"
        # The SQL in the metadata reads exactly this run's rows.
        query = log["query_this_run"].strip("`").removeprefix("sql").strip()
        assert len(warehouse_sql(project, query)) == written
        exported = export_metadata(result, "people_out")
        assert exported["sync_log_asset"] == log_key
    assert materialization(second, log_key)["operations_this_run"] == {
        "added": 1,
        "removed": 1,
        "updated": 1,
    }
    # The log's content is the keys the export sent, with their operations: the export's
    # `_updated` file holds exactly the updated keys.
    assert [(op, r, i) for _, _, op, r, i in log_rows(project, f"run_id = '{second.run_id}'")] == [
        ("added", "eu", 10),
        ("removed", "eu", 0),
        ("updated", "us", 1),
    ]
    updated = project.download("out/20250415_updated.csv").decode().splitlines()
    assert updated[1:] == ["us,1,changed"]


def test_the_export_materialized_alone_still_writes_its_log(project: ProjectKit) -> None:
    seed(project)
    project.write_defs(defs("upsert"))
    project.run("people_out", logical_time=T0)
    project.source_sql("UPDATE people SET name = 'again' WHERE id = 3")
    job = project.definitions().resolve_implicit_global_asset_job_def()
    upstream = job.execute_in_process(
        instance=project.instance,
        asset_selection=[model_key("people"), delta_key("people_out")],
    )
    assert upstream.success
    # The log alone cannot be materialized: it is written by the export. Nothing is written.
    alone = job.execute_in_process(
        instance=project.instance,
        asset_selection=[sync_log_key("people_out")],
        tags={LOGICAL_TIME_TAG: T1.isoformat()},
        raise_on_error=False,
    )
    assert not alone.success
    failure = alone.get_step_failure_events()[0].step_failure_data.error.message
    assert f"written by its export: select {export_key('people_out').to_user_string()} too" in (
        failure
    )
    assert "out/20250415.csv" not in project.blob_names("out/")
    # The export alone (the UI's "Materialize" on its node): the log is written with the
    # baseline, only its asset is not reported.
    export = job.execute_in_process(
        instance=project.instance,
        asset_selection=[export_key("people_out")],
        tags={LOGICAL_TIME_TAG: T1.isoformat()},
    )
    assert export.success
    reported = {
        event.asset_key
        for event in export.get_asset_materialization_events()
        if event.asset_key is not None
    }
    assert reported == {export_key("people_out")}
    assert log_rows(project, f"run_id = '{export.run_id}'") == [
        (export.run_id, NAIVE[T1], "updated", "us", 3)
    ]
    assert project.download("out/20250415.csv").decode().splitlines()[1:] == ["us,3,again"]
