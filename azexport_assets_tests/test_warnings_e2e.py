"""Warnings: WARN-severity asset checks on the export, evaluated in real runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from azexport_assets.demo.azurite import container_sas
from azexport_assets_tests.project_kit import SAS_ENV

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  watched:
    source: people
    destination: lake
    file_name: watched/{HH}
    run_type: full_then_delta
    sync_mode: difference
    warnings:
      min_rows: 3
      max_removed_ratio: 0.2
      max_change_ratio: 0.5
      sas_expiry_days: 7
"""


def checks(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, dict]]:
    found = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            assert data.severity == dg.AssetCheckSeverity.WARN or data.check_name.startswith(
                "primary"
            )
            found[data.check_name] = (data.passed, {k: v.value for k, v in data.metadata.items()})
    return found


def test_warnings_pass_then_fire(project, azurite, container, monkeypatch):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'n' || range AS name FROM range(10)")
    kit.write_defs(DEFS)
    first = checks(kit.run("watched", logical_time=datetime(2025, 4, 14, 1, tzinfo=timezone.utc)))
    assert {k: v[0] for k, v in first.items()} == {
        "primary_key_unique_not_null": True,
        "min_rows": True,
        "max_removed_ratio": True,
        "max_change_ratio": True,
        "sas_expiry": True,
    }

    # A broken upstream: 6 of 10 rows vanish; and the SAS now expires in 2 days.
    kit.source_sql("DELETE FROM people WHERE id >= 4")
    short = container_sas(
        azurite.account_url,
        container.container_name,
        expiry=datetime.now(timezone.utc) + timedelta(days=2),
    )
    monkeypatch.setenv(SAS_ENV, short)
    result = kit.run("watched", logical_time=datetime(2025, 4, 14, 2, tzinfo=timezone.utc))
    assert result.success  # warnings never fail the run
    second = checks(result)
    assert (
        second["max_removed_ratio"][0] is False and second["max_removed_ratio"][1]["ratio"] == 0.6
    )
    assert second["max_change_ratio"][0] is False
    assert second["min_rows"][0] is True  # 6 removed rows were exported
    assert second["sas_expiry"][0] is False
    expires_at = datetime.fromtimestamp(second["sas_expiry"][1]["expires_at"], tz=timezone.utc)
    assert expires_at.date() == (datetime.now(timezone.utc) + timedelta(days=2)).date()
    assert short not in str(second)

    kit.source_sql("INSERT INTO people VALUES (100, 'x')")
    third = checks(kit.run("watched", logical_time=datetime(2025, 4, 14, 3, tzinfo=timezone.utc)))
    assert third["min_rows"] == (False, {"rows": 1, "min_rows": 3})


def test_failed_warnings_are_posted_to_the_webhook_once(project, azurite, container, monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kit = project
        monkeypatch.setenv(
            "AZEXPORT_TEST_HOOK", f"http://127.0.0.1:{server.server_port}/hook?token=s3cret"
        )
        kit.source_sql(
            "CREATE TABLE people AS SELECT range AS id, 'n' || range AS name FROM range(2)"
        )
        kit.write_defs(DEFS + "      webhook_url_env: AZEXPORT_TEST_HOOK\n")
        result = kit.run("watched", logical_time=datetime(2025, 4, 14, 1, tzinfo=timezone.utc))
        assert checks(result)["min_rows"][0] is False  # 2 rows < 3

        sensor = kit.definitions().resolve_sensor_def("activate_watched_warnings")
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=kit.instance))
        assert len(received) == 1
        assert received[0]["check"] == "min_rows" and received[0]["severity"] == "WARN"
        assert (
            received[0]["metadata"] == {"rows": 2, "min_rows": 3}
            and received[0]["run_id"] == result.run_id
        )
        again = sensor.evaluate_tick(
            dg.build_sensor_context(cursor=tick.cursor, instance=kit.instance)
        )
        assert len(received) == 1 and again.skip_message == "no new warnings"
    finally:
        server.shutdown()


def test_a_warning_that_passes_again_says_so_once_and_the_webhook_posts_it(project, monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kit = project
        monkeypatch.setenv("AZEXPORT_TEST_HOOK", f"http://127.0.0.1:{server.server_port}/hook")
        kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'n' AS name FROM range(10)")
        body = DEFS.replace("sync_mode: difference", "sync_mode: upsert")
        kit.write_defs(body + "      webhook_url_env: AZEXPORT_TEST_HOOK\n")
        sensor = kit.definitions().resolve_sensor_def("activate_watched_warnings")

        def run_and_tick(hour: int, cursor: str | None):
            at = datetime(2025, 4, 14, hour, tzinfo=timezone.utc)
            found = checks(kit.run("watched", logical_time=at))
            tick = sensor.evaluate_tick(
                dg.build_sensor_context(cursor=cursor, instance=kit.instance)
            )
            return found, tick.cursor or cursor

        first, cursor = run_and_tick(1, None)  # 10 rows: passes, nothing to say
        assert first["min_rows"] == (True, {"rows": 10, "min_rows": 3})
        assert received == []

        kit.source_sql("UPDATE people SET name = 'x' WHERE id = 1")
        second, cursor = run_and_tick(2, cursor)  # 1 row: fails
        assert second["min_rows"][0] is False
        assert [(r["check"], r["status"]) for r in received] == [("min_rows", "failed")]
        failed_run = received[0]["run_id"]

        kit.source_sql("UPDATE people SET name = 'y' WHERE id < 5")
        third, cursor = run_and_tick(3, cursor)  # 5 rows: passes again, and says so
        assert third["min_rows"] == (
            True,
            {"rows": 5, "min_rows": 3, "recovered": True, "failed_in_run": failed_run},
        )
        assert [(r["check"], r["status"]) for r in received[1:]] == [("min_rows", "recovered")]
        assert received[1]["description"].startswith(f"Recovered (failed in run {failed_run[:8]})")
        assert received[1]["metadata"]["failed_in_run"] == failed_run

        kit.source_sql("UPDATE people SET name = 'z' WHERE id < 5")
        fourth, cursor = run_and_tick(4, cursor)  # passes again: an ordinary pass
        assert fourth["min_rows"] == (True, {"rows": 5, "min_rows": 3})
        assert len(received) == 2
    finally:
        server.shutdown()
