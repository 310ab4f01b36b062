"""`trigger: on_change`: the source-change sensor starts the activation when a source changes."""

from __future__ import annotations

import csv
import io

import dagster as dg
import duckdb

DEFS = """
models:
  people:
    sql: >
      SELECT p.id, p.name, coalesce(v.visits, 0) AS visits
      FROM src.people AS p LEFT JOIN visits AS v USING (id)
    primary_key: id
activations:
  people_live:
    source: people
    destination: lake
    file_name: live/people
    trigger: on_change
  people_manual:
    source: people
    destination: lake
    file_name: manual/people
"""


def evaluate(sensor: dg.SensorDefinition, cursor: str | None, instance) -> dg.SensorResult:
    context = dg.build_sensor_context(cursor=cursor, instance=instance)
    return sensor.evaluate_tick(context)


def test_source_change_starts_the_activation(project, azurite, container, monkeypatch):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(3)")
    (kit.root / "visits").mkdir()
    duckdb.sql(f"COPY (SELECT 1 AS id, 5 AS visits) TO '{kit.root}/visits/a.parquet'")
    kit.write_defs(DEFS, extra_sources="visits: {parquet: visits/*.parquet}")
    definitions = kit.definitions()
    sensor = definitions.resolve_sensor_def("activate_people_live_on_change")
    assert sensor.job_name == "activate_people_live"
    # The other sensor is the code location's run watchdog (test_watchdog.py).
    assert [s.name for s in definitions.sensors] == [
        "activate_people_live_on_change",
        "azexport_run_watchdog",
    ]

    first = evaluate(sensor, None, kit.instance)  # deploying only records the state
    assert first.run_requests == []
    assert evaluate(sensor, first.cursor, kit.instance).run_requests == []

    kit.source_sql("INSERT INTO people VALUES (10, 'new')")
    changed = evaluate(sensor, first.cursor, kit.instance)
    (request,) = changed.run_requests
    assert request.tags["azexport/changed_sources"] == "src"

    # A new Parquet file of the other source is a change too.
    duckdb.sql(f"COPY (SELECT 2 AS id, 7 AS visits) TO '{kit.root}/visits/b.parquet'")
    (second,) = evaluate(sensor, changed.cursor, kit.instance).run_requests
    assert second.tags["azexport/changed_sources"] == "visits"
    assert second.run_key != request.run_key

    result = kit.run("people_live", tags=dict(second.tags))
    assert result.success
    rows = list(csv.DictReader(io.StringIO(kit.download("live/people.csv").decode())))
    assert {(r["id"], r["visits"]) for r in rows} == {
        ("0", "0"),
        ("1", "5"),
        ("2", "7"),
        ("10", "0"),
    }
