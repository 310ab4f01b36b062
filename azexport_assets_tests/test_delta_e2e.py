"""FULL THEN DELTA through real Dagster runs on Azurite: which rows land in which files,
failed uploads that leave the baseline alone, retries, export-only reruns, full resync."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from azexport_assets.asset_keys import delta_key, export_key, op_name
from azexport_assets.delta import baseline_info
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit, export_metadata

SOURCE = """
CREATE TABLE people AS
SELECT * FROM (VALUES
    (1, 'Ann', 'ann@x.io', 10, 'a'),
    (2, 'Bob', 'bob@x.io', 20, 'b'),
    (3, 'Cid', 'cid@x.io', 30, 'c'),
    (4, 'Dee', 'dee@x.io', 40, 'd'),
    (5, 'Eve', 'eve@x.io', 50, 'e'),
    (6, 'Fay', 'fay@x.io', 60, 'f')
) AS t(id, name, email, score, internal)
"""

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_sync:
    source: people
    destination: lake
    file_name: sync/{{YYYY}}{{MM}}{{DD}}_{{HH}}
    run_type: full_then_delta
    sync_mode: {mode}
    mapping:
      id: id
      name: Name
      email: Email
      score: Score
"""

T0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)


def at(hour: int) -> datetime:
    return T0 + timedelta(hours=hour)


def stem(hour: int) -> str:
    return f"sync/20250414_{6 + hour:02d}"


def read(kit: ProjectKit, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(kit.download(name).decode(), newline="")))


def ids(rows: list[dict[str, str]]) -> list[int]:
    return sorted(int(r["id"]) for r in rows)


def mutate(kit: ProjectKit) -> None:
    """Every kind of change the spec names, in one go."""
    kit.source_sql(
        "INSERT INTO people VALUES (7, 'Gus', 'gus@x.io', 70, 'g')",  # new key
        "UPDATE people SET name = 'Ann B.' WHERE id = 1",  # exported column changed
        "UPDATE people SET internal = 'zz' WHERE id = 2",  # non-exported column: no change
        "DELETE FROM people WHERE id = 3",  # removed
        "DELETE FROM people WHERE id = 4",  # delete then reinsert, same values: no change
        "INSERT INTO people VALUES (4, 'Dee', 'dee@x.io', 40, 'd')",
        "DELETE FROM people WHERE id = 5",  # delete then reinsert, new values: updated
        "INSERT INTO people VALUES (5, 'Eve', 'eve@new.io', 55, 'e')",
        "UPDATE people SET email = NULL WHERE id = 6",  # value to NULL: updated
    )


@pytest.fixture
def kit(project: ProjectKit) -> ProjectKit:
    kit = project
    kit.source_sql(SOURCE)
    return kit


def test_upsert_scenario(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="upsert"))
    kit.run("people_sync", logical_time=at(0))
    assert ids(read(kit, stem(0) + ".csv")) == [1, 2, 3, 4, 5, 6]

    mutate(kit)
    kit.run("people_sync", logical_time=at(1))
    rows = {int(r["id"]): r for r in read(kit, stem(1) + ".csv")}
    assert sorted(rows) == [1, 5, 6, 7]
    assert rows[1]["Name"] == "Ann B." and rows[5]["Email"] == "eve@new.io"
    assert rows[6]["Email"] == "" and list(rows[7]) == ["id", "Name", "Email", "Score"]

    kit.source_sql("UPDATE people SET email = 'fay@x.io' WHERE id = 6")  # NULL and back
    kit.run("people_sync", logical_time=at(2))
    assert ids(read(kit, stem(2) + ".csv")) == [6]

    result = kit.run("people_sync", logical_time=at(3))  # nothing changed
    assert not any(n.startswith(stem(3)) for n in kit.blob_names())
    metadata = export_metadata(result, "people_sync")
    assert metadata["file_count"] == 0 and metadata["dagster/row_count"] == 0
    assert metadata["baseline_advanced"]


def test_insert_scenario(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="insert"))
    kit.run("people_sync", logical_time=at(0))
    mutate(kit)
    kit.run("people_sync", logical_time=at(1))
    assert read(kit, stem(1) + ".csv") == [
        {"id": "7", "Name": "Gus", "Email": "gus@x.io", "Score": "70"}
    ]
    kit.source_sql("UPDATE people SET score = 99")  # updates only: nothing for insert
    kit.run("people_sync", logical_time=at(2))
    assert not any(n.startswith(stem(2)) for n in kit.blob_names())


def test_difference_scenario(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="difference"))
    kit.run("people_sync", logical_time=at(0))
    assert ids(read(kit, stem(0) + "_added.csv")) == [1, 2, 3, 4, 5, 6]
    # First run: the other two files are empty (full exports write empty files by default).
    assert read(kit, stem(0) + "_updated.csv") == [] and read(kit, stem(0) + "_removed.csv") == []

    mutate(kit)
    kit.run("people_sync", logical_time=at(1))
    assert ids(read(kit, stem(1) + "_added.csv")) == [7]
    assert ids(read(kit, stem(1) + "_updated.csv")) == [1, 5, 6]
    # Removed rows carry their values as last exported.
    assert read(kit, stem(1) + "_removed.csv") == [
        {"id": "3", "Name": "Cid", "Email": "cid@x.io", "Score": "30"}
    ]

    kit.source_sql("DELETE FROM people WHERE id = 7")
    kit.run("people_sync", logical_time=at(2))
    names = [n for n in kit.blob_names() if n.startswith(stem(2))]
    assert names == [stem(2) + "_removed.csv"]  # deltas skip empty files by default
    assert ids(read(kit, names[0])) == [7]


def _baseline_delta_id(kit: ProjectKit) -> str | None:
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        info = baseline_info(con, "people_sync")
    finally:
        con.close()
    return info["delta_id"] if info else None


def test_failed_upload_keeps_baseline_and_the_retry_exports_everything(
    kit: ProjectKit, azurite, monkeypatch
):
    kit.write_defs(DEFS.format(mode="difference"))
    first = kit.run("people_sync", logical_time=at(0))
    committed = _baseline_delta_id(kit)
    assert committed == first.run_id

    mutate(kit)
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        proxy.fail(method="PUT", path_contains="_updated", status=500, times=None)
        failed = kit.run("people_sync", logical_time=at(1), raise_on_error=False)
        assert not failed.success
        assert _baseline_delta_id(kit) == committed  # baseline untouched
        assert stem(1) + "_updated.csv" not in kit.blob_names()  # nothing half-visible

        # More changes arrive before anyone fixes the storage; a second run fails too.
        kit.source_sql("INSERT INTO people VALUES (8, 'Hal', 'hal@x.io', 80, 'h')")
        again = kit.run("people_sync", logical_time=at(2), raise_on_error=False)
        assert not again.success and _baseline_delta_id(kit) == committed

        proxy.clear()
        # A re-execution of the last failed run: same logical time, same names.
        retry = kit.run(
            "people_sync",
            tags={"dagster/root_run_id": again.run_id, "dagster/parent_run_id": again.run_id},
        )
    monkeypatch.setenv(URL_ENV, azurite.account_url)
    assert retry.success
    assert _baseline_delta_id(kit) == retry.run_id
    assert ids(read(kit, stem(2) + "_added.csv")) == [7, 8]  # changes of both failed runs
    assert ids(read(kit, stem(2) + "_updated.csv")) == [1, 5, 6]
    assert ids(read(kit, stem(2) + "_removed.csv")) == [3]

    kit.run("people_sync", logical_time=at(3))  # nothing is exported twice
    assert not any(n.startswith(stem(3)) for n in kit.blob_names())


def test_transient_errors_are_retried(kit: ProjectKit, azurite, monkeypatch):
    kit.write_defs(DEFS.format(mode="upsert"))
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        proxy.fail(method="PUT", path_contains=stem(0), status=503, times=2)
        result = kit.run("people_sync", logical_time=at(0))
        assert proxy.count(method="PUT", path_contains=stem(0)) >= 3
    assert result.success
    assert ids(read(kit, stem(0) + ".csv")) == [1, 2, 3, 4, 5, 6]


def test_export_only_rerun_reexports_the_last_change_set(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="upsert"))
    kit.run("people_sync", logical_time=at(0))
    mutate(kit)
    kit.run("people_sync", logical_time=at(1))
    key = export_key("people_sync")
    job = kit.definitions().resolve_implicit_global_asset_job_def()
    rerun = job.execute_in_process(
        instance=kit.instance,
        asset_selection=[key],
        tags={"azexport/logical_time": at(5).isoformat()},
    )
    assert rerun.success
    assert ids(read(kit, stem(5) + ".csv")) == ids(read(kit, stem(1) + ".csv")) == [1, 5, 6, 7]
    assert export_metadata(rerun, "people_sync")["baseline_advanced"] is False


def test_full_resync_exports_everything(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="upsert"))
    kit.run("people_sync", logical_time=at(0))
    kit.run(
        "people_sync",
        logical_time=at(1),
        run_config={"ops": {op_name(delta_key("people_sync")): {"config": {"full_resync": True}}}},
    )
    assert ids(read(kit, stem(1) + ".csv")) == [1, 2, 3, 4, 5, 6]


def test_mapping_change_forces_a_full_export(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="upsert"))
    kit.run("people_sync", logical_time=at(0))
    kit.write_defs(DEFS.format(mode="upsert").replace("      score: Score\n", ""))
    result = kit.run("people_sync", logical_time=at(1))
    rows = read(kit, stem(1) + ".csv")
    assert ids(rows) == [1, 2, 3, 4, 5, 6] and list(rows[0]) == ["id", "Name", "Email"]
    assert export_metadata(result, "people_sync")["full_export"] is True


def test_two_activations_keep_separate_baselines(kit: ProjectKit):
    kit.write_defs(
        DEFS.format(mode="upsert")
        + """
  people_other:
    source: people
    destination: lake
    file_name: other/{YYYY}{MM}{DD}_{HH}
    run_type: full_then_delta
    sync_mode: upsert
"""
    )
    kit.run("people_sync", logical_time=at(0))
    kit.source_sql("UPDATE people SET score = 11 WHERE id = 1")
    kit.run("people_other", logical_time=at(1))  # its first run: everything
    kit.run("people_sync", logical_time=at(1))
    assert ids(read(kit, "other/20250414_07.csv")) == [1, 2, 3, 4, 5, 6]
    assert ids(read(kit, stem(1) + ".csv")) == [1]


def test_duplicate_key_blocks_the_export(kit: ProjectKit):
    kit.write_defs(DEFS.format(mode="upsert"))
    kit.source_sql(
        "INSERT INTO people VALUES (2, 'Bob2', 'b2@x.io', 1, 'x')",
        "INSERT INTO people VALUES (NULL, 'Nobody', 'n@x.io', 1, 'x')",
    )
    result = kit.run("people_sync", logical_time=at(0), raise_on_error=False)
    assert not result.success
    assert kit.blob_names() == []
    checks = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    (check,) = [c for c in checks if c.check_name == "primary_key_unique_not_null"]
    assert check.passed is False
    shown = check.metadata["offending_keys"].value
    assert "duplicate" in shown and "null" in shown.lower()


def test_delta_alone_refuses_bad_keys_and_names_them(kit: ProjectKit):
    """Launching only the delta (no model check in the run) still stops before any file."""
    kit.write_defs(DEFS.format(mode="upsert"))
    kit.source_sql("INSERT INTO people VALUES (2, 'Bob2', 'b2@x.io', 1, 'x')")
    kit.run("people_sync", logical_time=at(0), raise_on_error=False)  # model table now exists
    job = kit.definitions().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=kit.instance,
        asset_selection=[delta_key("people_sync")],
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "activation 'people_sync'" in message
    assert "duplicate key {'id': 2} (2 rows)" in message and "baseline is unchanged" in message
    assert kit.blob_names() == []
