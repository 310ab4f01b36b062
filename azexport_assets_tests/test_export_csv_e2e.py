"""End to end: YAML -> Dagster job -> DuckDB -> CSV blob in Azurite, compared row by row."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal

import dagster as dg
import pytest

from azexport_assets import naming
from azexport_assets_tests.project_kit import SAS_ENV, ProjectKit, blob_urls, export_metadata

HARD_ROWS = """
CREATE TABLE people AS
SELECT * FROM (VALUES
    (1, 'Plain', 30, true, 12.50::DECIMAL(10, 2), DATE '2025-04-14',
        TIMESTAMP '2025-04-14 12:00:00.123456', 'FR', 'x'),
    (2, 'Comma, Jr.', 41, false, -0.05::DECIMAL(10, 2), DATE '1970-01-01',
        TIMESTAMP '1999-12-31 23:59:59', 'US', 'x'),
    (3, 'Quote "The Rock" Johnson', 7, true, 1000000.00::DECIMAL(10, 2), DATE '2000-02-29',
        TIMESTAMP '2000-02-29 00:00:00.000001', 'GB', 'x'),
    (4, 'multi' || chr(10) || 'line' || chr(13) || chr(10) || 'value', 18, false,
        0::DECIMAL(10, 2), DATE '2025-01-01', TIMESTAMP '2025-01-01 00:00:00', 'DE', 'x'),
    (5, 'Zoë Ångström — 東京 🎉', 99, true, 3.10::DECIMAL(10, 2), DATE '2024-12-31',
        TIMESTAMP '2024-12-31 23:59:59.999999', 'JP', 'x'),
    (6, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'x'),
    (7, '', 0, false, 0.01::DECIMAL(10, 2), DATE '2025-04-14', TIMESTAMP '2025-04-14 00:00:00',
        '', 'x'),
    (8, '  padded  ', 55, true, 5.00::DECIMAL(10, 2), DATE '2025-04-14',
        TIMESTAMP '2025-04-14 00:00:00', 'ES', 'x'),
    (9, 'semi;colon|pipe' || chr(9) || 'tab', 60, false, 9.99::DECIMAL(10, 2),
        DATE '2025-04-14', TIMESTAMP '2025-04-14 00:00:00', 'IT', 'x')
) AS t(id, name, age, active, balance, since, seen, country, internal_note)
"""

MAPPING = {
    "id": "id",
    "name": "full name",
    "age": "age",
    "active": "is_active",
    "balance": "balance",
    "since": "customer since",
    "seen": "last seen",
    "country": "country",
}

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_csv:
    source: people
    destination: lake
    file_name: crm/{{YY}}-{{MM}}-{{DD}}_export
    format: csv
    csv: {{delimiter: "{delimiter}", header: {header}}}
    mapping:
      id: id
      name: full name
      age: age
      active: is_active
      balance: balance
      since: customer since
      seen: last seen
      country: country
"""

APRIL_14 = datetime(2025, 4, 14, 8, 30, tzinfo=timezone.utc)


def expected_text(value) -> str:
    """The documented CSV text of a value (docs/formats.md)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


@pytest.fixture
def kit(project: ProjectKit) -> ProjectKit:
    kit = project
    kit.source_sql(HARD_ROWS)
    return kit


@pytest.mark.parametrize(
    ("delimiter", "header"),
    [(",", "true"), (";", "true"), ("\\t", "false"), ("|", "true")],
    ids=["comma", "semicolon", "tab-no-header", "pipe"],
)
def test_csv_snapshot_round_trip(kit: ProjectKit, delimiter: str, header: str):
    kit.write_defs(DEFS.format(delimiter=delimiter, header=header))
    result = kit.run("people_csv", logical_time=APRIL_14)
    assert result.success

    assert kit.blob_names() == ["crm/25-04-14_export.csv"]
    raw = kit.download("crm/25-04-14_export.csv")
    text = raw.decode("utf-8")
    real_delimiter = "\t" if delimiter == "\\t" else delimiter
    parsed = list(csv.reader(io.StringIO(text, newline=""), delimiter=real_delimiter, strict=True))

    source = kit.query_source(f"SELECT {', '.join(MAPPING)} FROM people ORDER BY id")
    expected = [[expected_text(v) for v in row] for row in source]
    if header == "true":
        assert parsed[0] == list(MAPPING.values())
        parsed = parsed[1:]
    assert sorted(parsed, key=lambda r: int(r[0])) == expected
    # NULL is an empty field, an empty string is "" (the csv module reads both as '').
    lines = text.split("\n")
    assert "6" + real_delimiter * 7 in lines
    assert any(line.startswith("7" + real_delimiter + '""' + real_delimiter) for line in lines)
    assert b"\r\n" in raw  # the CR LF inside row 4 survived, quoted
    assert "internal_note" not in text and "x\n" not in text  # unmapped column left out

    metadata = export_metadata(result, "people_csv")
    assert metadata["dagster/row_count"] == len(source)
    assert metadata["bytes"] == len(raw)
    assert blob_urls(metadata) == [
        f"{kit.container.url}/crm/25-04-14_export.csv".replace(
            kit.container.url.split("/devstoreaccount1")[0],
            blob_urls(metadata)[0].split("/devstoreaccount1")[0],
        )
    ]
    assert all("?" not in url and "sig=" not in url for url in blob_urls(metadata))


def test_overwrites_the_same_name(kit: ProjectKit):
    kit.write_defs(DEFS.format(delimiter=",", header="true"))
    kit.run("people_csv", logical_time=APRIL_14)
    kit.source_sql(
        "DELETE FROM people WHERE id > 2", "UPDATE people SET name = 'Renamed' WHERE id = 1"
    )
    kit.run("people_csv", logical_time=APRIL_14)
    assert kit.blob_names() == ["crm/25-04-14_export.csv"]
    rows = list(csv.reader(io.StringIO(kit.download("crm/25-04-14_export.csv").decode())))
    assert [r[:2] for r in rows] == [["id", "full name"], ["1", "Renamed"], ["2", "Comma, Jr."]]


def test_ad_hoc_run_uses_launch_time_and_retry_reuses_it(kit: ProjectKit):
    kit.write_defs(
        DEFS.format(delimiter=",", header="true").replace(
            "crm/{YY}-{MM}-{DD}_export", "crm/at_{YYYY}{MM}{DD}_{HH}{mm}{ss}_{ms}"
        )
    )
    first = kit.run("people_csv")
    record = kit.instance.get_run_record_by_id(first.run_id)
    launched = record.create_timestamp.astimezone(timezone.utc)
    name = naming.render("crm/at_{YYYY}{MM}{DD}_{HH}{mm}{ss}_{ms}", launched, "UTC") + ".csv"
    assert kit.blob_names() == [name]

    # A re-execution carries its root run's id: same logical time, same blob, no duplicate.
    kit.source_sql("UPDATE people SET age = 31 WHERE id = 1")
    retry = kit.run(
        "people_csv",
        tags={"dagster/root_run_id": first.run_id, "dagster/parent_run_id": first.run_id},
    )
    assert retry.success
    assert kit.blob_names() == [name]
    rows = list(csv.DictReader(io.StringIO(kit.download(name).decode())))
    assert rows[0]["age"] == "31"


def test_models_show_rows_schema_and_preview(kit: ProjectKit):
    kit.write_defs(DEFS.format(delimiter=",", header="true"))
    result = kit.run("people_csv", logical_time=APRIL_14)
    event = next(
        e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey(["models", "people"])
    )
    metadata = {k: v.value for k, v in event.metadata.items()}
    assert metadata["dagster/row_count"] == 9
    assert [c.name for c in metadata["dagster/column_schema"].columns][:3] == ["id", "name", "age"]
    assert "Quote" in metadata["preview"] and "| id |" in metadata["preview"]


def test_secret_never_reaches_logs_or_metadata(kit: ProjectKit, monkeypatch):
    import os

    sas = os.environ[SAS_ENV]
    signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    kit.write_defs(DEFS.format(delimiter=",", header="true"))
    ok = kit.run("people_csv", logical_time=APRIL_14)
    # A failing run too: the container does not exist.
    kit.write_defs(DEFS.format(delimiter=",", header="true").replace("people_csv", "people_csv"))
    kit.container.delete_container()
    failed = kit.run("people_csv", logical_time=APRIL_14, raise_on_error=False)
    assert not failed.success
    for run in (ok, failed):
        for entry in kit.instance.all_logs(run.run_id):
            dumped = str(entry)
            assert sas not in dumped and signature not in dumped
    failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
    assert "container" in str(failure.event_specific_data.error.message).lower()


def test_scheduled_run_uses_the_tick_in_the_activation_time_zone(kit: ProjectKit):
    from dagster._core.storage.tags import SCHEDULED_EXECUTION_TIME_TAG

    kit.write_defs(
        DEFS.format(delimiter=",", header="true").replace(
            "    mapping:", "    schedule: '30 0 * * *'\n    timezone: Europe/Paris\n    mapping:"
        )
    )
    schedule = kit.definitions().resolve_schedule_def("activate_people_csv_schedule")
    assert schedule.cron_schedule == "30 0 * * *" and schedule.execution_timezone == "Europe/Paris"
    # 2025-04-13 22:30 UTC is the 00:30 tick of April 14th in Paris.
    tick = datetime(2025, 4, 13, 22, 30, tzinfo=timezone.utc)
    context = dg.build_schedule_context(scheduled_execution_time=tick)
    (request,) = schedule.evaluate_tick(context).run_requests
    # The scheduler adds this tag to every run it launches (see dagster's scheduler).
    tags = {**request.tags, SCHEDULED_EXECUTION_TIME_TAG: tick.isoformat()}
    assert kit.run("people_csv", tags=tags).success
    assert kit.blob_names() == ["crm/25-04-14_export.csv"]


def test_an_unwritable_temp_folder_fails_the_export_naming_the_variable(
    kit: ProjectKit, monkeypatch, tmp_path
):
    """AZEXPORT_TEMP_DIR set to a file: the export step fails at once, not retried, with the
    variable and the fix; nothing is written and the baseline does not move."""
    kit.write_defs(DEFS.format(delimiter=",", header="true"))
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("AZEXPORT_TEMP_DIR", str(tmp_path / "not-a-folder"))
    result = kit.run("people_csv", logical_time=APRIL_14, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["activations__people_csv__people_csv_export"]
    failure = failures[0].step_failure_data
    assert failure.user_failure_data is not None, failure.error
    assert failure.user_failure_data.description == (
        f"AZEXPORT_TEMP_DIR='{tmp_path / 'not-a-folder'}': cannot write export files there (it "
        "is a file, not a folder): set it to a folder this user may create and write, or unset "
        "it for a private folder in the system temp folder. Nothing was written and the "
        "baseline was not advanced."
    )
    assert kit.blob_names() == []
    # The baseline did not move: with the folder fixed, the next run exports every row.
    monkeypatch.delenv("AZEXPORT_TEMP_DIR")
    assert kit.run("people_csv", logical_time=APRIL_14).success
    assert kit.blob_names() == ["crm/25-04-14_export.csv"]
    text = kit.download("crm/25-04-14_export.csv").decode("utf-8")
    parsed = list(csv.reader(io.StringIO(text, newline=""), strict=True))[1:]
    source = kit.query_source(f"SELECT {', '.join(MAPPING)} FROM people ORDER BY id")
    assert sorted(parsed, key=lambda r: int(r[0])) == [
        [expected_text(v) for v in row] for row in source
    ]
