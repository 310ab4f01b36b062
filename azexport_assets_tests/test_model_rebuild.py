"""A model or segment is rebuilt only when what it reads changed, through real job runs on a
real warehouse and Azurite: the second run of an unchanged model keeps its table (and the
export still sends the right rows); a changed source file, SQL or key rebuilds it; a failed
key check is never taken for a good build; `force_rebuild` rebuilds anyway."""

from __future__ import annotations

import csv
import io
import time

import dagster as dg
import duckdb
import pytest

from azexport_assets.asset_keys import model_key, segment_key
from azexport_assets.components.model_assets import (
    FORCE_REBUILD_TAG,
    PRIMARY_KEY_CHECK,
    REBUILT_METADATA,
)

PEOPLE = """
models:
  people:
    sql: SELECT p.id, p.name, v.visits FROM src.people p JOIN visits v USING (id)
    primary_key: id
  adults:
    sql: SELECT id, name, visits FROM models.people WHERE id >= 1
    primary_key: id
segments:
  frequent:
    model: adults
    filter: visits >= 10
activations:
  people_csv:
    source: people
    destination: lake
    file_name: people
  frequent_csv:
    source: frequent
    destination: lake
    file_name: frequent
    run_type: full_then_delta
    sync_mode: upsert
"""
VISITS = "visits: {parquet: visits/*.parquet}"


def build(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    """The metadata of the run's materialization of `key`, plus its data version."""
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            values = {k: v.value for k, v in materialization.metadata.items()}
            values["data_version"] = materialization.tags.get("dagster/data_version")
            return values
    raise AssertionError(f"{key.to_user_string()} was not materialized")


def messages(kit, result: dg.ExecuteInProcessResult) -> list[str]:
    """The run's log lines (what the UI shows in the run's log)."""
    return [r.user_message for r in kit.instance.all_logs(result.run_id)]


def write_visits(kit, values: dict[int, int]) -> None:
    folder = kit.root / "visits"
    folder.mkdir(exist_ok=True)
    rows = ", ".join(f"({k}, {v})" for k, v in sorted(values.items()))
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM (VALUES {rows}) t(id, visits)) "
            f"TO '{folder / 'part-1.parquet'}' (FORMAT parquet)"
        )
    finally:
        con.close()


def table_rows(kit, table: str) -> list[tuple]:
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
    finally:
        con.close()


def exported(kit, name: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(kit.download(name).decode())))


@pytest.fixture
def people(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(4)")
    write_visits(kit, {0: 5, 1: 12, 2: 3, 3: 40})
    kit.write_defs(PEOPLE, extra_sources=VISITS)
    return kit


def test_an_unchanged_model_is_not_rebuilt_and_still_exports_its_rows(people):
    kit = people
    first = kit.run("frequent_csv")
    assert build(first, model_key("people"))[REBUILT_METADATA] is True
    assert build(first, segment_key("frequent"))[REBUILT_METADATA] is True
    assert [r["id"] for r in exported(kit, "frequent.csv")] == ["1", "3"]
    stored = table_rows(kit, "models.people")

    second = kit.run("frequent_csv")
    for key in (model_key("people"), model_key("adults"), segment_key("frequent")):
        before, after = build(first, key), build(second, key)
        assert after[REBUILT_METADATA] is False, key
        # Same counts and preview, read from what the build stored, and the same data version.
        assert after["dagster/row_count"] == before["dagster/row_count"]
        assert after["preview"] == before["preview"]
        assert after["data_version"] == before["data_version"]
    assert build(second, model_key("people"))["dagster/row_count"] == 4
    lines = messages(kit, second)
    assert any(
        line.startswith(
            "models/people: not rebuilt: its inputs are unchanged since run " + first.run_id[:8]
        )
        for line in lines
    ), lines
    # The key check keeps the verdict of the build that checked these very rows.
    (check,) = [
        e for e in second.get_asset_check_evaluations() if e.asset_key == model_key("people")
    ]
    assert check.passed and check.metadata["checked_in_run"].value == first.run_id
    assert table_rows(kit, "models.people") == stored
    # The delta downstream reads the kept tables: nothing changed, nothing to export.
    assert (
        build(second, dg.AssetKey(["activations", "frequent_csv", "frequent_csv_delta"]))[
            "dagster/row_count"
        ]
        == 0
    )

    full = kit.run("people_csv")  # another activation of the same, unchanged model
    assert build(full, model_key("people"))[REBUILT_METADATA] is False
    assert exported(kit, "people.csv") == [
        {"id": "0", "name": "p0", "visits": "5"},
        {"id": "1", "name": "p1", "visits": "12"},
        {"id": "2", "name": "p2", "visits": "3"},
        {"id": "3", "name": "p3", "visits": "40"},
    ]


def test_a_changed_parquet_or_duckdb_source_rebuilds_the_model(people):
    kit = people
    kit.run("people_csv")

    time.sleep(0.01)
    write_visits(kit, {0: 5, 1: 12, 2: 30, 3: 40})  # the Parquet file rewritten
    result = kit.run("people_csv")
    assert build(result, model_key("people"))[REBUILT_METADATA] is True
    assert any("source visits changed" in line for line in messages(kit, result))
    assert [r["visits"] for r in exported(kit, "people.csv")] == ["5", "12", "30", "40"]

    kit.source_sql("UPDATE people SET name = 'renamed' WHERE id = 2")  # a DuckDB source row
    result = kit.run("frequent_csv")
    assert build(result, model_key("people"))[REBUILT_METADATA] is True
    assert any("source src changed" in line for line in messages(kit, result))
    # adults reads the rebuilt people: rebuilt too, and so is the segment.
    assert build(result, model_key("adults"))[REBUILT_METADATA] is True
    assert build(result, segment_key("frequent"))[REBUILT_METADATA] is True
    assert {r["id"]: r["name"] for r in exported(kit, "frequent.csv")} == {
        "1": "p1",
        "2": "renamed",
        "3": "p3",
    }


def test_a_new_file_in_the_glob_rebuilds_the_model(people):
    kit = people
    kit.run("people_csv")
    con = duckdb.connect()
    try:
        con.execute(
            "COPY (SELECT 9 AS id, 99 AS visits) "
            f"TO '{kit.root / 'visits' / 'part-2.parquet'}' (FORMAT parquet)"
        )
    finally:
        con.close()
    kit.source_sql("INSERT INTO people VALUES (9, 'p9')")
    result = kit.run("people_csv")
    assert build(result, model_key("people"))[REBUILT_METADATA] is True
    assert [r["id"] for r in exported(kit, "people.csv")] == ["0", "1", "2", "3", "9"]


def test_a_changed_sql_rebuilds_the_model_and_its_code_version(people):
    kit = people
    first = kit.run("people_csv")
    version = kit.definitions().resolve_assets_def(model_key("people")).code_versions_by_key
    kit.write_defs(
        PEOPLE.replace("SELECT p.id, p.name,", "SELECT p.id, upper(p.name) AS name,"),
        extra_sources=VISITS,
    )
    changed = kit.definitions().resolve_assets_def(model_key("people")).code_versions_by_key
    assert changed[model_key("people")] != version[model_key("people")]
    result = kit.run("people_csv")
    assert build(result, model_key("people"))[REBUILT_METADATA] is True
    assert (
        build(result, model_key("people"))["data_version"]
        != build(first, model_key("people"))["data_version"]
    )
    assert any("sql, key or materialization changed" in line for line in messages(kit, result))
    assert [r["name"] for r in exported(kit, "people.csv")] == ["P0", "P1", "P2", "P3"]


def test_a_failed_key_check_is_never_kept_as_a_good_build(people):
    kit = people
    kit.run("people_csv")
    kit.source_sql("INSERT INTO people VALUES (1, 'twin')")  # duplicates key 1
    failed = kit.run("people_csv", raise_on_error=False)
    assert not failed.success
    (check,) = [
        e for e in failed.get_asset_check_evaluations() if e.asset_key == model_key("people")
    ]
    assert not check.passed and check.check_name == PRIMARY_KEY_CHECK
    assert "| {'id': 1} | duplicate | 2 |" in check.metadata["offending_keys"].value

    # Run again with the bad row still there: checked again, fails again (never skipped).
    again = kit.run("people_csv", raise_on_error=False)
    assert not again.success
    assert build(again, model_key("people"))[REBUILT_METADATA] is True

    # Fixed by restoring the exact rows that passed before: rebuilt and checked, not skipped.
    kit.source_sql("DELETE FROM people WHERE name = 'twin'")
    fixed = kit.run("people_csv")
    assert build(fixed, model_key("people"))[REBUILT_METADATA] is True
    assert any(
        "no earlier build with a fingerprint and a passed key check" in line
        for line in messages(kit, fixed)
    )
    assert [r["name"] for r in exported(kit, "people.csv")] == ["p0", "p1", "p2", "p3"]
    assert build(kit.run("people_csv"), model_key("people"))[REBUILT_METADATA] is False


def test_force_rebuild_by_config_or_run_tag(people):
    kit = people
    kit.run("frequent_csv")
    forced = kit.run(
        "frequent_csv",
        run_config={"ops": {"models__people": {"config": {"force_rebuild": True}}}},
    )
    assert build(forced, model_key("people"))[REBUILT_METADATA] is True
    assert any("rebuilt: forced" in line for line in messages(kit, forced))
    # Rebuilt from the same inputs: the same data version, so what reads it is not rebuilt.
    assert build(forced, model_key("adults"))[REBUILT_METADATA] is False

    tagged = kit.run("frequent_csv", tags={FORCE_REBUILD_TAG: "true"})
    for key in (model_key("people"), model_key("adults"), segment_key("frequent")):
        assert build(tagged, key)[REBUILT_METADATA] is True
    assert [r["id"] for r in exported(kit, "frequent.csv")] == ["1", "3"]


VIEW_DEFS = """
models:
  people:
    sql: SELECT p.id, p.name, v.visits FROM src.people p JOIN visits v USING (id)
    primary_key: id
    materialized: view
  totals:
    sql: SELECT id, visits * 2 AS double_visits FROM models.people
    primary_key: id
activations:
  totals_csv:
    source: totals
    destination: lake
    file_name: totals
"""


def test_a_table_over_a_view_is_rebuilt_when_the_view_sources_change(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(3)")
    write_visits(kit, {0: 1, 1: 2, 2: 3})
    kit.write_defs(VIEW_DEFS, extra_sources=VISITS)
    kit.run("totals_csv")
    unchanged = kit.run("totals_csv")
    assert build(unchanged, model_key("people"))[REBUILT_METADATA] is False
    assert build(unchanged, model_key("totals"))[REBUILT_METADATA] is False

    time.sleep(0.01)
    write_visits(kit, {0: 1, 1: 2, 2: 300})
    changed = kit.run("totals_csv")
    # The view's query is unchanged but its rows are not: checked again, and the table over
    # it rebuilt with the new values.
    assert build(changed, model_key("people"))[REBUILT_METADATA] is True
    assert build(changed, model_key("totals"))[REBUILT_METADATA] is True
    assert [r["double_visits"] for r in exported(kit, "totals.csv")] == ["2", "4", "600"]


def test_a_table_replaced_by_hand_is_rebuilt(people):
    kit = people
    kit.run("people_csv")
    con = duckdb.connect(str(kit.warehouse_path))
    try:
        con.execute(
            "CREATE OR REPLACE TABLE models.people AS SELECT 7 AS id, 'x' AS name, 1 AS visits"
        )
    finally:
        con.close()
    result = kit.run("people_csv")
    assert build(result, model_key("people"))[REBUILT_METADATA] is True
    assert [r["id"] for r in exported(kit, "people.csv")] == ["0", "1", "2", "3"]
