"""Delta syncs and re-runs at their edges, through real Dagster runs on Azurite (real DuckDB):
keys, values, schema and configuration changes, emptied sources, big change sets, and
re-executions (a successful run re-executed, two failed runs retried in turn).

Each test downloads and parses the blobs."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timedelta, timezone

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from azexport_assets.delta import baseline_info
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit, export_metadata

T0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)


def at(hour: int) -> datetime:
    return T0 + timedelta(hours=hour)


def stem(hour: int, folder: str = "sync") -> str:
    return f"{folder}/20250414_{6 + hour:02d}"


def read_csv(kit: ProjectKit, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(kit.download(name).decode(), newline="")))


def read_parquet(kit: ProjectKit, name: str) -> list[dict]:
    return pq.read_table(io.BytesIO(kit.download(name))).to_pylist()


def names_at(kit: ProjectKit, hour: int, folder: str = "sync") -> list[str]:
    return [n for n in kit.blob_names() if n.startswith(stem(hour, folder))]


def baseline_delta_id(kit: ProjectKit, activation: str) -> str | None:
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        info = baseline_info(con, activation)
    finally:
        con.close()
    return info["delta_id"] if info else None


def step_failure_messages(result) -> list[str]:
    return [
        e.event_specific_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]


ACTIVATION = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: {key}
    materialized: {materialized}
activations:
  people_sync:
    source: people
    destination: lake
    file_name: sync/{{YYYY}}{{MM}}{{DD}}_{{HH}}
    format: {fmt}
    run_type: full_then_delta
    sync_mode: {mode}
{extra}"""


def defs(
    mode: str = "upsert",
    key: str = "id",
    fmt: str = "csv",
    materialized: str = "table",
    extra: str = "",
) -> str:
    return ACTIVATION.format(mode=mode, key=key, fmt=fmt, materialized=materialized, extra=extra)


PEOPLE = """
CREATE TABLE people AS
SELECT * FROM (VALUES
    (1, 'Ann', 10),
    (2, 'Bob', 20),
    (3, 'Cid', 30),
    (4, 'Dee', 40),
    (5, 'Eve', 50),
    (6, 'Fay', 60)
) AS t(id, name, score)
"""


def ids(rows: list[dict]) -> list[int]:
    return sorted(int(r["id"]) for r in rows)


# ---------------------------------------------------------------------------------------------
# Re-runs
# ---------------------------------------------------------------------------------------------


def test_reexecuting_a_successful_run_does_not_overwrite_its_delivered_changes(
    project: ProjectKit, tmp_path
):
    """Re-executing a run that succeeded (the UI's 'Re-execute all') reuses its logical time,
    so its delta would hold only the changes made since and write them under the first run's
    name, replacing the blob that delivered the first run's changes (the baseline has moved
    past them: they would be in no blob). The re-execution fails saying so, before any
    change set; the delivered file stays; a new run exports the newer change."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="upsert"))
    job = kit.reconstructable_job("people_sync")
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        tags = {"azexport/logical_time": at(0).isoformat()}
        assert dg.execute_job(job, instance=instance, tags=tags).success
        kit.source_sql(
            "UPDATE people SET score = 11 WHERE id = 1", "INSERT INTO people VALUES (7, 'Gus', 70)"
        )
        tags = {"azexport/logical_time": at(1).isoformat()}
        first = dg.execute_job(job, instance=instance, tags=tags)
        assert first.success
        assert ids(read_csv(kit, stem(1) + ".csv")) == [1, 7]
        delivered = baseline_delta_id(kit, "people_sync")

        kit.source_sql("UPDATE people SET score = 22 WHERE id = 2")
        again = dg.execute_job(
            job,
            instance=instance,
            reexecution_options=dg.ReexecutionOptions(parent_run_id=first.run_id),
            raise_on_error=False,
        )
        assert not again.success
        (message,) = step_failure_messages(again)
        assert f"run {first.run_id}, which this run re-executes, already exported" in message
        assert "Launch a new run of activate_people_sync" in message
        assert ids(read_csv(kit, stem(1) + ".csv")) == [1, 7]
        assert baseline_delta_id(kit, "people_sync") == delivered

        tags = {"azexport/logical_time": at(2).isoformat()}
        assert dg.execute_job(job, instance=instance, tags=tags).success
    assert ids(read_csv(kit, stem(2) + ".csv")) == [2]


def test_running_twice_with_nothing_changed_writes_nothing_and_keeps_the_baseline(
    project: ProjectKit,
):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="difference", extra="    manifest: true\n"))
    first = kit.run("people_sync", logical_time=at(0))
    assert sorted(names_at(kit, 0)) == [
        stem(0) + s for s in ("_added.csv", "_manifest.json", "_removed.csv", "_updated.csv")
    ]
    second = kit.run("people_sync", logical_time=at(1))
    assert names_at(kit, 1) == []
    metadata = export_metadata(second, "people_sync")
    assert metadata["file_count"] == 0
    assert baseline_delta_id(kit, "people_sync") == second.run_id
    assert first.run_id != second.run_id


def test_on_empty_write_delta_with_nothing_changed_writes_empty_files_and_manifest(
    project: ProjectKit,
):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="difference", extra="    manifest: true\n    on_empty: write\n"))
    kit.run("people_sync", logical_time=at(0))
    kit.run("people_sync", logical_time=at(1))
    names = sorted(names_at(kit, 1))
    assert names == [
        stem(1) + s for s in ("_added.csv", "_manifest.json", "_removed.csv", "_updated.csv")
    ]
    for suffix in ("_added.csv", "_updated.csv", "_removed.csv"):
        assert kit.download(stem(1) + suffix).decode().splitlines() == ["id,name,score"]
    manifest = json.loads(kit.download(stem(1) + "_manifest.json"))
    assert manifest["full_export"] is False
    assert manifest["changes"] == {"added": 0, "updated": 0, "removed": 0}
    assert sorted(f["rows"] for f in manifest["files"]) == [0, 0, 0]


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------

KEYS = """
CREATE TABLE people AS
SELECT * FROM (VALUES
    ('eu', 'a', 1),
    ('eu', 'A', 2),
    ('eu', 'a ', 3),
    ('EU', 'a', 4),
    ('eu', 'caf' || chr(233), 5),          -- NFC
    ('eu', 'cafe' || chr(769), 6),         -- NFD: another key
    ('eu', '日本', 7),
    ('eu', '', 8)
) AS t(region, code, score)
"""


def test_composite_keys_differing_in_case_spaces_and_normalization_stay_apart(
    project: ProjectKit,
):
    kit = project
    kit.source_sql(KEYS)
    kit.write_defs(defs(mode="difference", key="[region, code]", fmt="parquet"))
    kit.run("people_sync", logical_time=at(0))
    assert len(read_parquet(kit, stem(0) + "_added.parquet")) == 8

    kit.source_sql(
        "UPDATE people SET score = 30 WHERE code = 'a '",
        "UPDATE people SET score = 60 WHERE code = 'cafe' || chr(769)",
        "DELETE FROM people WHERE region = 'EU'",
        "INSERT INTO people VALUES ('eu ', 'a', 9)",
        "UPDATE people SET code = '日本 ' WHERE code = '日本'",  # key change = remove + add
    )
    kit.run("people_sync", logical_time=at(1))
    s = stem(1)
    updated = read_parquet(kit, s + "_updated.parquet")
    assert sorted((r["code"], r["score"]) for r in updated) == [
        ("a ", 30),
        ("cafe\u0301", 60),
    ]
    added = read_parquet(kit, s + "_added.parquet")
    assert sorted((r["region"], r["code"], r["score"]) for r in added) == [
        ("eu", "日本 ", 7),
        ("eu ", "a", 9),
    ]
    removed = read_parquet(kit, s + "_removed.parquet")
    assert sorted((r["region"], r["code"], r["score"]) for r in removed) == [
        ("EU", "a", 4),
        ("eu", "日本", 7),
    ]


def test_a_null_key_part_mid_stream_blocks_the_run_and_the_fix_exports_the_changes(
    project: ProjectKit,
):
    kit = project
    kit.source_sql(KEYS)
    kit.write_defs(defs(mode="upsert", key="[region, code]"))
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql(
        "UPDATE people SET score = 100 WHERE code = 'A'",
        "INSERT INTO people VALUES ('eu', NULL, 10)",
    )
    failed = kit.run("people_sync", logical_time=at(1), raise_on_error=False)
    assert not failed.success
    assert names_at(kit, 1) == []
    committed = baseline_delta_id(kit, "people_sync")
    assert committed is not None and committed != failed.run_id
    kit.source_sql("UPDATE people SET code = 'z' WHERE code IS NULL")
    kit.run("people_sync", logical_time=at(2))
    rows = read_csv(kit, stem(2) + ".csv")
    assert sorted((r["code"], r["score"]) for r in rows) == [("A", "100"), ("z", "10")]


def test_a_duplicate_key_mid_stream_fails_in_one_clear_line_and_is_not_exported(
    project: ProjectKit,
):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="difference"))
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql("INSERT INTO people VALUES (2, 'Bob again', 21)")
    failed = kit.run("people_sync", logical_time=at(1), raise_on_error=False)
    assert not failed.success
    assert names_at(kit, 1) == []
    messages = step_failure_messages(failed)
    check_failed = any(
        e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
        for e in failed.all_events
    )
    assert check_failed or any("duplicate" in m for m in messages), messages
    kit.source_sql("DELETE FROM people WHERE name = 'Bob again'")
    kit.run("people_sync", logical_time=at(2))
    assert names_at(kit, 2) == []  # back to the baseline: nothing to send


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

VALUES = """
CREATE TABLE people AS
SELECT * FROM (VALUES
    (1, 'x',  0.0::DOUBLE,  1.50::DECIMAL(10,2), TIMESTAMPTZ '2025-01-01 12:00:00+00'),
    (2, NULL, 'NaN'::DOUBLE, 2.00::DECIMAL(10,2), TIMESTAMPTZ '2025-01-01 12:00:00+00'),
    (3, '',   1.0::DOUBLE,  3.00::DECIMAL(10,2), TIMESTAMPTZ '2025-01-01 12:00:00+00'),
    (4, 'y',  2.0::DOUBLE,  4.00::DECIMAL(10,2), NULL),
    (5, 'z',  3.0::DOUBLE,  5.00::DECIMAL(10,2), TIMESTAMPTZ '2025-01-01 12:00:00+00')
) AS t(id, txt, dbl, dec, ts)
"""


def test_null_vs_empty_string_is_a_change_and_equal_values_are_not(project: ProjectKit):
    kit = project
    kit.source_sql(VALUES)
    kit.write_defs(defs(mode="upsert", fmt="parquet"))
    kit.run("people_sync", logical_time=at(0))
    assert len(read_parquet(kit, stem(0) + ".parquet")) == 5
    kit.source_sql(
        "UPDATE people SET txt = '' WHERE id = 2",  # NULL -> '': a change
        "UPDATE people SET txt = NULL WHERE id = 3",  # '' -> NULL: a change
        "UPDATE people SET dbl = 'NaN'::DOUBLE WHERE id = 2",  # NaN -> NaN: none
        "UPDATE people SET dec = 1.5 WHERE id = 1",  # same DECIMAL value: none
        # the same instant written with another offset: none
        "UPDATE people SET ts = TIMESTAMPTZ '2025-01-01 14:00:00+02' WHERE id = 5",
        "UPDATE people SET ts = TIMESTAMPTZ '2025-01-01 12:00:00+00' WHERE id = 4",  # NULL->v
    )
    kit.run("people_sync", logical_time=at(1))
    rows = {r["id"]: r for r in read_parquet(kit, stem(1) + ".parquet")}
    assert sorted(rows) == [2, 3, 4]
    assert rows[2]["txt"] == "" and math.isnan(rows[2]["dbl"])
    assert rows[3]["txt"] is None
    assert rows[4]["ts"] == datetime(2025, 1, 1, 12, tzinfo=timezone.utc)


def test_nan_to_null_and_back_are_changes(project: ProjectKit):
    kit = project
    kit.source_sql(VALUES)
    kit.write_defs(defs(mode="difference", fmt="parquet"))
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql("UPDATE people SET dbl = NULL WHERE id = 2")
    kit.run("people_sync", logical_time=at(1))
    assert [r["id"] for r in read_parquet(kit, stem(1) + "_updated.parquet")] == [2]
    kit.source_sql("UPDATE people SET dbl = 'NaN'::DOUBLE WHERE id = 2")
    kit.run("people_sync", logical_time=at(2))
    (row,) = read_parquet(kit, stem(2) + "_updated.parquet")
    assert row["id"] == 2 and math.isnan(row["dbl"])


# ---------------------------------------------------------------------------------------------
# Schema and configuration changes between runs
# ---------------------------------------------------------------------------------------------


def _file(mode: str) -> str:
    return "_added.csv" if mode == "difference" else ".csv"


@pytest.mark.parametrize("mode", ["upsert", "insert", "difference"])
def test_columns_added_renamed_retyped_dropped_each_force_a_full_export(
    project: ProjectKit, mode: str
):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode=mode))
    kit.run("people_sync", logical_time=at(0))
    changes = [
        (
            "ALTER TABLE people ADD COLUMN tier VARCHAR DEFAULT 'gold'",
            ["id", "name", "score", "tier"],
        ),
        (
            "ALTER TABLE people RENAME COLUMN name TO full_name",
            ["id", "full_name", "score", "tier"],
        ),
        ("ALTER TABLE people ALTER score TYPE BIGINT", ["id", "full_name", "score", "tier"]),
        ("ALTER TABLE people DROP COLUMN tier", ["id", "full_name", "score"]),
    ]
    for hour, (statement, header) in enumerate(changes, start=1):
        kit.source_sql(statement)
        result = kit.run("people_sync", logical_time=at(hour))
        rows = read_csv(kit, stem(hour) + _file(mode))
        assert ids(rows) == [1, 2, 3, 4, 5, 6], statement
        assert list(rows[0]) == header, statement
        assert export_metadata(result, "people_sync")["full_export"] is True, statement
    # And deltas again afterwards.
    kit.source_sql(
        "UPDATE people SET score = 99 WHERE id = 3", "INSERT INTO people VALUES (7, 'G', 7)"
    )
    kit.run("people_sync", logical_time=at(9))
    got = ids(read_csv(kit, stem(9) + _file(mode)))
    assert got == ([7] if mode == "insert" else [3, 7] if mode == "upsert" else [7])
    if mode == "difference":
        assert ids(read_csv(kit, stem(9) + "_updated.csv")) == [3]


def test_model_switched_between_table_and_view_is_still_a_delta(project: ProjectKit):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="difference"))
    kit.run("people_sync", logical_time=at(0))
    kit.write_defs(defs(mode="difference", materialized="view"))
    result = kit.run("people_sync", logical_time=at(1))
    assert names_at(kit, 1) == [], "switching to a view changed no exported value"
    assert export_metadata(result, "people_sync")["full_export"] is False
    kit.source_sql("UPDATE people SET score = 31 WHERE id = 3")
    kit.run("people_sync", logical_time=at(2))
    assert names_at(kit, 2) == [stem(2) + "_updated.csv"]
    assert read_csv(kit, stem(2) + "_updated.csv") == [{"id": "3", "name": "Cid", "score": "31"}]
    kit.write_defs(defs(mode="difference", materialized="table"))
    kit.source_sql("DELETE FROM people WHERE id = 4")
    kit.run("people_sync", logical_time=at(3))
    assert names_at(kit, 3) == [stem(3) + "_removed.csv"]
    assert ids(read_csv(kit, stem(3) + "_removed.csv")) == [4]


def test_changing_sync_mode_or_run_type_starts_over_in_full(project: ProjectKit):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="upsert"))
    kit.run("people_sync", logical_time=at(0))
    kit.write_defs(defs(mode="difference"))
    kit.run("people_sync", logical_time=at(1))
    assert ids(read_csv(kit, stem(1) + "_added.csv")) == [1, 2, 3, 4, 5, 6]
    # full_only for one run, then back: the old baseline must not be used again.
    kit.write_defs(
        defs(mode="difference")
        .replace("full_then_delta", "full_only")
        .replace("sync_mode: difference", "sync_mode: snapshot")
    )
    kit.source_sql("DELETE FROM people WHERE id = 1", "UPDATE people SET score = 0 WHERE id = 2")
    kit.run("people_sync", logical_time=at(2))
    assert ids(read_csv(kit, stem(2) + ".csv")) == [2, 3, 4, 5, 6]
    kit.write_defs(defs(mode="difference"))
    result = kit.run("people_sync", logical_time=at(3))
    assert export_metadata(result, "people_sync")["full_export"] is True
    assert ids(read_csv(kit, stem(3) + "_added.csv")) == [2, 3, 4, 5, 6]


def test_a_key_change_starts_over_in_full(project: ProjectKit):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="upsert"))
    kit.run("people_sync", logical_time=at(0))
    kit.write_defs(defs(mode="upsert", key="[id, name]"))
    result = kit.run("people_sync", logical_time=at(1))
    assert export_metadata(result, "people_sync")["full_export"] is True
    assert ids(read_csv(kit, stem(1) + ".csv")) == [1, 2, 3, 4, 5, 6]
    kit.source_sql("UPDATE people SET name = 'Ann2' WHERE id = 1")  # new key (1, Ann2)
    kit.run("people_sync", logical_time=at(2))
    assert read_csv(kit, stem(2) + ".csv") == [{"id": "1", "name": "Ann2", "score": "10"}]


# ---------------------------------------------------------------------------------------------
# Emptied sources and big change sets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["upsert", "difference"])
def test_a_source_emptied_and_refilled(project: ProjectKit, mode: str):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode=mode))
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql("DELETE FROM people")
    result = kit.run("people_sync", logical_time=at(1))
    metadata = export_metadata(result, "people_sync")
    if mode == "difference":
        assert names_at(kit, 1) == [stem(1) + "_removed.csv"]
        assert ids(read_csv(kit, stem(1) + "_removed.csv")) == [1, 2, 3, 4, 5, 6]
    else:
        assert names_at(kit, 1) == []
    assert metadata["baseline_advanced"] is True
    kit.run("people_sync", logical_time=at(2))  # still empty: nothing
    assert names_at(kit, 2) == []
    kit.source_sql(PEOPLE.replace("CREATE TABLE people AS", "INSERT INTO people"))
    kit.run("people_sync", logical_time=at(3))
    assert ids(read_csv(kit, stem(3) + _file(mode))) == [1, 2, 3, 4, 5, 6]


def test_many_changes_in_one_delta_are_exact(project: ProjectKit):
    kit = project
    n = 200_000
    kit.source_sql(
        f"CREATE TABLE people AS SELECT range AS id, 'n' || range AS name, range % 97 AS score "
        f"FROM range({n})"
    )
    kit.write_defs(defs(mode="difference", fmt="parquet"))
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql(
        "UPDATE people SET score = score + 1 WHERE id % 3 = 0",
        "DELETE FROM people WHERE id % 7 = 1",
        f"INSERT INTO people SELECT range, 'new', 1 FROM range({n}, {n} + 30000)",
        # updated to the same value: not a change
        "UPDATE people SET name = name WHERE id % 5 = 0",
    )
    expected_updated = [i for i in range(n) if i % 3 == 0 and i % 7 != 1]
    expected_removed = [i for i in range(n) if i % 7 == 1]
    kit.run("people_sync", logical_time=at(1))
    s = stem(1)
    updated = read_parquet(kit, s + "_updated.parquet")
    assert [r["id"] for r in updated] == expected_updated
    assert all(r["score"] == (r["id"] % 97) + 1 for r in updated)
    removed = read_parquet(kit, s + "_removed.parquet")
    assert [r["id"] for r in removed] == expected_removed
    assert all(r["score"] == r["id"] % 97 for r in removed)  # values as last exported
    assert [r["id"] for r in read_parquet(kit, s + "_added.parquet")] == list(range(n, n + 30000))
    kit.run("people_sync", logical_time=at(2))
    assert names_at(kit, 2) == []


# ---------------------------------------------------------------------------------------------
# Directly compared types, segments, errors
# ---------------------------------------------------------------------------------------------


def test_lists_structs_hugeints_and_intervals_changes_are_found(project: ProjectKit):
    kit = project
    kit.source_sql(
        "CREATE TABLE people (id INTEGER, l INTEGER[], s STRUCT(a INTEGER), big HUGEINT, "
        "iv INTERVAL)",
        "INSERT INTO people VALUES (1, [1, 2], {'a': 1}, 1, INTERVAL 1 DAY), "
        "(2, [], {'a': NULL}, (1::HUGEINT << 64) + 2, INTERVAL 1 HOUR), "
        "(3, [NULL], {'a': 3}, 3, INTERVAL 30 DAY), "
        "(4, NULL, NULL, 4, INTERVAL 4 DAY), "
        "(5, [5], {'a': 5}, 5, INTERVAL 5 DAY)",
    )
    kit.write_defs(defs(mode="upsert", fmt="json"))
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql(
        "UPDATE people SET l = [NULL] WHERE id = 2",  # [] -> [NULL]
        "UPDATE people SET s = NULL WHERE id = 2",  # {'a': NULL} -> NULL
        "UPDATE people SET big = (2::HUGEINT << 64) + 1 WHERE id = 2",  # swapped halves
        "UPDATE people SET l = [] WHERE id = 3",  # [NULL] -> []
        "UPDATE people SET iv = INTERVAL 1 MONTH WHERE id = 3",  # 30 days vs 1 month
        "UPDATE people SET l = [] WHERE id = 4",  # NULL -> []
        "UPDATE people SET s = {'a': 5} WHERE id = 5",  # same value: no change
    )
    kit.run("people_sync", logical_time=at(1))
    rows = json.loads(kit.download(stem(1) + ".json"))
    got = sorted(r["id"] for r in rows)
    # INTERVAL '30 days' and '1 month' are equal for DuckDB's IS DISTINCT FROM; 3 changes by
    # its list anyway.
    assert got == [2, 3, 4], rows


def test_a_segment_filter_change_moves_rows_in_and_out(project: ProjectKit):
    kit = project
    kit.source_sql(PEOPLE)
    body = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
segments:
  high:
    model: people
    filter: "score >= {low}"
activations:
  people_sync:
    source: high
    destination: lake
    file_name: sync/{{YYYY}}{{MM}}{{DD}}_{{HH}}
    run_type: full_then_delta
    sync_mode: difference
"""
    kit.write_defs(body.format(low=40))
    kit.run("people_sync", logical_time=at(0))
    assert ids(read_csv(kit, stem(0) + "_added.csv")) == [4, 5, 6]
    kit.write_defs(body.format(low=30))
    kit.source_sql("UPDATE people SET score = 1 WHERE id = 6")
    kit.run("people_sync", logical_time=at(1))
    assert ids(read_csv(kit, stem(1) + "_added.csv")) == [3]
    assert read_csv(kit, stem(1) + "_removed.csv") == [{"id": "6", "name": "Fay", "score": "60"}]
    assert stem(1) + "_updated.csv" not in kit.blob_names()


def test_a_mapped_column_dropped_after_load_fails_in_one_line_naming_it(project: ProjectKit):
    """A code location loaded before a source column was dropped (a long-lived code server):
    the run must fail with one line naming the activation and the column, nothing written,
    baseline unchanged."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="upsert", extra="    mapping: {id: id, name: Name, score: Score}\n"))
    job = kit.definitions().resolve_job_def("activate_people_sync")
    job.execute_in_process(instance=kit.instance, tags={"azexport/logical_time": at(0).isoformat()})
    committed = baseline_delta_id(kit, "people_sync")
    kit.source_sql("ALTER TABLE people DROP COLUMN score")
    result = job.execute_in_process(
        instance=kit.instance,
        tags={"azexport/logical_time": at(1).isoformat()},
        raise_on_error=False,
    )
    assert not result.success
    assert names_at(kit, 1) == []
    assert baseline_delta_id(kit, "people_sync") == committed
    (message,) = step_failure_messages(result)
    assert "score" in message and "people_sync" in message, message
    assert "Traceback" not in message and len(message.splitlines()) == 1, message


def test_two_failed_runs_retried_from_failure_export_each_change_once(
    project: ProjectKit, azurite, monkeypatch, tmp_path
):
    """R1 and R2 both fail at the upload (the storage is down for a while). R1 is retried
    from failure first: it exports the last change set (R2's, a superset of R1's) and
    commits it. Then R2 is retried from failure: its change set was already exported and
    committed by R1's retry, so it must write nothing (ExportRun.reexecuting: 'that run has
    exported these changes: this one writes nothing'). Otherwise every change goes out twice,
    under R1's names and R2's (SPEC: exactly-once; 'a change is never exported twice')."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="difference"))
    job = kit.reconstructable_job("people_sync")
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        ok = dg.execute_job(
            job, instance=instance, tags={"azexport/logical_time": at(0).isoformat()}
        )
        assert ok.success
        with FaultProxy(target_port=azurite.port) as proxy:
            monkeypatch.setenv(URL_ENV, proxy.account_url)
            proxy.fail(method="PUT", status=500, times=None)
            kit.source_sql("INSERT INTO people VALUES (7, 'Gus', 70)")
            r1 = dg.execute_job(
                job, instance=instance, tags={"azexport/logical_time": at(1).isoformat()}
            )
            kit.source_sql("INSERT INTO people VALUES (8, 'Hal', 80)")
            r2 = dg.execute_job(
                job, instance=instance, tags={"azexport/logical_time": at(2).isoformat()}
            )
            assert not r1.success and not r2.success
            proxy.clear()
            retry1 = dg.execute_job(
                job,
                instance=instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(r1.run_id, instance),
            )
            retry2 = dg.execute_job(
                job,
                instance=instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(r2.run_id, instance),
            )
        monkeypatch.setenv(URL_ENV, azurite.account_url)
        assert retry1.success and retry2.success
    added = [
        int(r["id"])
        for n in kit.blob_names()
        if n.endswith("_added.csv") and not n.startswith(stem(0))
        for r in read_csv(kit, n)
    ]
    assert sorted(added) == [7, 8], (
        f"rows added, over all blobs: {sorted(added)}; {kit.blob_names()}"
    )


def test_export_alone_before_any_delta_is_one_clear_line(project: ProjectKit):
    from azexport_assets.asset_keys import export_key

    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="upsert"))
    job = kit.definitions().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=kit.instance, asset_selection=[export_key("people_sync")], raise_on_error=False
    )
    assert not result.success
    (message,) = step_failure_messages(result)
    assert "no change set yet" in message and len(message.strip().splitlines()) == 1, message
    assert kit.blob_names() == []


def test_the_key_column_dropped_after_load_names_the_primary_key_field(project: ProjectKit):
    """A long-running code server loaded the project; then the source's key column was
    renamed. The model step fails naming `primary_key` (not the SQL, with the project's own
    key-check query), in one line; nothing is exported and the baseline stays."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(mode="upsert"))
    job = kit.definitions().resolve_job_def("activate_people_sync")
    tags = {"azexport/logical_time": at(0).isoformat()}
    assert job.execute_in_process(instance=kit.instance, tags=tags).success
    committed = baseline_delta_id(kit, "people_sync")
    blobs = sorted(kit.blob_names())
    kit.source_sql("ALTER TABLE people RENAME COLUMN id TO person_id")
    result = job.execute_in_process(
        instance=kit.instance,
        tags={"azexport/logical_time": at(1).isoformat()},
        raise_on_error=False,
    )
    assert not result.success
    (message,) = step_failure_messages(result)
    assert "field 'primary_key'" in message and "'id' is not a column of model 'people'" in message
    assert "\n" not in message.strip() and "count(DISTINCT" not in message
    assert sorted(kit.blob_names()) == blobs
    assert baseline_delta_id(kit, "people_sync") == committed
