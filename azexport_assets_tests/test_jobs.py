"""Jobs and schedules: a tick of a shared schedule builds a shared model once, then every
activation of that tick exports the tick's data; ad-hoc jobs still refresh what they need."""

from __future__ import annotations

import csv
import io
import json

import dagster as dg
import duckdb

from azexport_assets.asset_keys import export_key, model_key, source_key

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  everyone_csv:
    source: people
    destination: lake
    file_name: everyone
    schedule: "0 6 * * *"
  everyone_json:
    source: people
    destination: lake
    file_name: everyone
    format: json
    schedule: "0 6 * * *"
  nightly:
    source: people
    destination: lake
    file_name: nightly
    schedule: "0 2 * * *"
"""


def materialized(result: dg.ExecuteInProcessResult) -> list[dg.AssetKey]:
    return [
        e.event_specific_data.materialization.asset_key
        for e in result.get_asset_materialization_events()
    ]


def test_a_shared_schedule_tick_builds_the_model_once(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(5)")
    kit.write_defs(DEFS)
    definitions = kit.definitions()

    shared = definitions.resolve_schedule_def("activations_0_6_x_x_x_utc_schedule")
    assert shared.job_name == "activations_0_6_x_x_x_utc"
    alone = definitions.resolve_schedule_def("activate_nightly_schedule")
    assert alone.job_name == "activate_nightly"

    job = definitions.resolve_job_def(shared.job_name)
    result = job.execute_in_process(instance=kit.instance)
    assert result.success
    keys = materialized(result)
    assert keys.count(model_key("people")) == 1
    assert export_key("everyone_csv") in keys and export_key("everyone_json") in keys
    assert export_key("nightly") not in keys
    rows = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
    assert [r["id"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["id"] for r in json.loads(kit.download("everyone.json"))] == [0, 1, 2, 3, 4]

    # An ad-hoc run of one activation refreshes its model too.
    kit.source_sql("INSERT INTO people VALUES (5, 'p5')")
    result = kit.run("everyone_csv")
    assert model_key("people") in materialized(result)
    rows = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
    assert len(rows) == 6


def test_activation_jobs_run_in_process(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(5)")
    kit.write_defs(DEFS)
    job = kit.definitions().resolve_job_def("activate_everyone_csv")
    assert job.executor_def.name == dg.in_process_executor.name


VIEW_DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
    materialized: view
segments:
  adults:
    model: people
    filter: age >= 18
activations:
  everyone:
    source: people
    destination: lake
    file_name: everyone
  adults_sync:
    source: adults
    destination: lake
    file_name: adults_{x}
    format: json
    run_type: full_then_delta
    sync_mode: upsert
"""


def test_view_models_are_read_through_without_a_copy(project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, "
        "CAST(range % 40 AS INTEGER) AS age FROM range(100)"
    )
    kit.write_defs(VIEW_DEFS)
    assert kit.run("everyone").success
    rows = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
    assert [int(r["id"]) for r in rows] == list(range(100))
    assert kit.run("adults_sync").success
    (first,) = kit.blob_names("adults_")
    assert (
        len(json.loads(kit.download(first)))
        == kit.query_source("SELECT count(*) FROM people WHERE age >= 18")[0][0]
    )

    kit.source_sql("UPDATE people SET name = 'changed' WHERE id IN (20, 21, 5)")
    assert kit.run("adults_sync").success
    (second,) = [n for n in kit.blob_names("adults_") if n != first]
    changed = json.loads(kit.download(second))
    assert sorted(r["id"] for r in changed) == [20, 21]  # 5 is not an adult
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema IN ('models', 'segments')"
            ).fetchall()
        )
    finally:
        con.close()
    assert kinds == {"people": "VIEW", "adults": "VIEW"}


def test_a_model_may_read_a_source_declared_in_another_folder(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(3)")
    kit.write_defs("models: {}\n", folder="a")  # declares the source `src` and destination
    other = kit.root / "defs" / "b" / "defs.yaml"
    other.parent.mkdir(parents=True)
    other.write_text(
        "type: azexport_assets.components.AzureExport\n"
        "attributes:\n"
        "  models:\n"
        "    people: {sql: SELECT * FROM src.people, primary_key: id}\n"
        "  activations:\n"
        "    everyone: {source: people, destination: lake, file_name: everyone}\n"
    )
    graph = kit.definitions().resolve_asset_graph()
    assert source_key("src", "people") in graph.get(model_key("people")).parent_keys
    assert kit.run("everyone").success
    rows = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
    assert [r["id"] for r in rows] == ["0", "1", "2"]


def test_a_model_can_switch_between_table_and_view(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(4)")
    table_defs = DEFS.replace(
        "    primary_key: id\n", "    primary_key: id\n    materialized: table\n", 1
    )
    for number, materialized in enumerate(("table", "view", "table"), start=100):
        kit.write_defs(table_defs.replace("materialized: table", f"materialized: {materialized}"))
        kit.source_sql(f"INSERT INTO people VALUES ({number}, '{materialized}')")
        assert kit.run("everyone_csv").success
        rows = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
        assert rows[-1]["name"] == materialized  # the model's own row order, newest last
        con = duckdb.connect(str(kit.warehouse_path), read_only=True)
        try:
            (kind,) = con.execute(
                "SELECT table_type FROM information_schema.tables "
                "WHERE table_schema = 'models' AND table_name = 'people'"
            ).fetchall()[0]
        finally:
            con.close()
        assert kind == ("VIEW" if materialized == "view" else "BASE TABLE")
