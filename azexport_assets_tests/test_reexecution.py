"""Dagster's own "re-execute from failure": same logical time, same blob names, no lost change.

The run goes through `dg.execute_job` on a persistent instance (multiprocess executor: every
step in its own process), the upload fails behind a fault-injecting proxy, and the
re-execution created by Dagster (not by us setting tags) finishes the job.
"""

from __future__ import annotations

import csv
import io
import time

import dagster as dg
import duckdb

from azexport_assets.delta import baseline_info
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_diff:
    source: people
    destination: lake
    file_name: diff/{YYYY}{MM}{DD}_{HH}{mm}{ss}
    run_type: full_then_delta
    sync_mode: difference
    manifest: true
"""


def rows(kit: ProjectKit, name: str) -> list[int]:
    return sorted(int(r["id"]) for r in csv.DictReader(io.StringIO(kit.download(name).decode())))


def wait_for_the_next_second() -> None:
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def test_reexecute_from_failure_rewrites_the_same_names(
    tmp_path, project, azurite, container, monkeypatch
):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'n' || range AS name FROM range(5)")
    kit.write_defs(DEFS)
    # Loaded from its file in every step process, as a code location would be.
    job = kit.reconstructable_job("people_diff")
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        first = dg.execute_job(job, instance=instance)
        assert first.success
        # The names have second resolution: a run in the same second as the first would
        # reuse (and overwrite) the first run's names, which is not what this test is about.
        wait_for_the_next_second()

        kit.source_sql("INSERT INTO people VALUES (10, 'new')", "DELETE FROM people WHERE id = 0")
        with FaultProxy(target_port=azurite.port) as proxy:
            monkeypatch.setenv(URL_ENV, proxy.account_url)
            proxy.fail(method="PUT", path_contains="_removed", status=500, times=None)
            failed = dg.execute_job(job, instance=instance)
            assert not failed.success
            names_after_failure = kit.blob_names()
            proxy.clear()
            retry = dg.execute_job(
                job,
                instance=instance,
                reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
            )
        monkeypatch.setenv(URL_ENV, azurite.account_url)
        assert retry.success
        retry_run = instance.get_run_by_id(retry.run_id)
        assert retry_run.root_run_id == failed.run_id
        # Only the failed step ran again: the change set of the failed run was exported.
        assert {e.step_key for e in retry.all_events if e.event_type_value == "STEP_SUCCESS"} == {
            "activations__people_diff__people_diff_export"
        }

    new_names = [n for n in kit.blob_names() if n not in names_after_failure]
    stems = {n.rsplit("_", 1)[0] for n in new_names}
    assert len(stems) == 1, new_names
    (stem,) = stems
    # The failed run had committed `_added` under the same logical time: the retry rewrote it.
    assert f"{stem}_added.csv" in names_after_failure
    assert rows(kit, f"{stem}_added.csv") == [10]
    assert rows(kit, f"{stem}_removed.csv") == [0]
    assert f"{stem}_manifest.json" in kit.blob_names()

    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        assert baseline_info(con, "people_diff")["delta_id"] == failed.run_id
    finally:
        con.close()
