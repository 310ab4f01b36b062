"""`make demo` and an on_change sensor: the demo reports the run the sensor started for the
changed data instead of launching a second run that would race it for the same change.

A real `dagster dev` (webserver + daemon evaluating the sensor) on a throw-away project, the
demo's own `run_all_activations`, blobs downloaded from Azurite and compared with the source.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timezone

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from azexport_assets.demo import __main__ as demo
from azexport_assets.demo.runs import launch, wait_for_run
from azexport_assets_tests.served_kit import serve_project

LOCATION = "demo_sensor_test"
DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_audit:
    source: people
    destination: lake
    file_name: audit/people_{X}
    run_type: full_then_delta
    sync_mode: difference
    trigger: on_change
  people_snapshot:
    source: people
    destination: lake
    file_name: snapshot/people
"""


def rows(kit, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(kit.download(name).decode())))


@pytest.mark.timeout(600)
def test_the_demo_reports_the_sensors_run_and_launches_no_second_one(
    project, tmp_path, monkeypatch, capsys
):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(30)")
    kit.write_defs(DEFS)
    monkeypatch.setattr(demo, "LOCATION", LOCATION)
    sensor = "activate_people_audit_on_change"
    with serve_project(kit, tmp_path, monkeypatch, LOCATION) as server:
        assert demo.watching_sensor(server, "activate_people_audit") == sensor
        assert demo.watching_sensor(server, "activate_people_snapshot") is None
        # The sensor's first evaluation only records the sources; then a first full export.
        assert demo.sensor_runs_after(server, sensor, 0.0) == []
        client = DagsterGraphQLClient(server.host, port_number=server.port)
        first = launch(client, "activate_people_audit")
        assert wait_for_run(client, first, timeout=180) == dg.DagsterRunStatus.SUCCESS

        changed_at = time.time()
        kit.source_sql(
            "INSERT INTO people SELECT range, 'new' || range FROM range(100, 105)",
            "UPDATE people SET name = 'changed' WHERE id IN (1, 2, 3)",
            "DELETE FROM people WHERE id IN (28, 29)",
        )
        since = datetime.now(timezone.utc)
        capsys.readouterr()
        written = demo.run_all_activations(server, since, changed_at)
        out = capsys.readouterr().out

        instance = dg.DagsterInstance.get()
        audit_runs = instance.get_runs(
            filters=dg.RunsFilter(job_name="activate_people_audit", created_after=since)
        )
    # One run of the audit after the change, and it is the sensor's.
    (run,) = audit_runs
    assert run.tags.get("dagster/sensor_name") == sensor
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert f"activate_people_audit: started by {sensor} for the changed data ... ok" in out
    assert "  people_audit: 5 added, 3 updated, 2 removed" in out
    assert "  people_snapshot: snapshot of 33 rows" in out
    assert "running activate_people_audit" not in out
    assert "was also started by" not in out  # the sensor's run is not reported twice
    # The snapshot ran first, while the sensor had its evaluation.
    assert out.index("running activate_people_snapshot") < out.index("waiting for the sensor")

    blobs = {b.name: b for job, b in written if job == "activate_people_audit"}
    (added,) = [n for n in blobs if n.endswith("_added.csv")]
    (updated,) = [n for n in blobs if n.endswith("_updated.csv")]
    (removed,) = [n for n in blobs if n.endswith("_removed.csv")]
    assert [r["id"] for r in rows(kit, added)] == ["100", "101", "102", "103", "104"]
    assert {r["id"]: r["name"] for r in rows(kit, updated)} == {
        "1": "changed",
        "2": "changed",
        "3": "changed",
    }
    assert sorted(r["id"] for r in rows(kit, removed)) == ["28", "29"]
