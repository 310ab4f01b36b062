"""A run whose process tree is killed (kill -9) in the middle of its export heals on its own.

The deployment of test_daemon (daemon, run queue, Postgres run storage, deploy/dagster.yaml,
the lake), with the destination behind the fault proxy, which holds the export's upload so
the run is certainly mid-export when its worker is killed. Then, with nobody touching run
storage by hand:

- the killed run is marked failed within a bounded time;
- the activation is unblocked: the run queued behind it starts;
- the retry that run_retries launches and the queued run together export every change of
  the source exactly once (the blobs are downloaded and their rows compared).
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.lake_kit import postgres  # noqa: F401
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit
from azexport_assets_tests.test_daemon import FINISHED, bin_of, deployment, submit  # noqa: F401

pytestmark = pytest.mark.lake

# Seconds from the kill until the run must be marked failed.
FAILED_WITHIN = 60

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  a:
    source: people
    destination: lake
    file_name: a/people_{YYYY}{MM}{DD}_{HH}{mm}{ss}
    run_type: full_then_delta
    sync_mode: upsert
"""


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    for entry in instance.all_logs(run_id):
        text = entry.dagster_event.message if entry.dagster_event else entry.user_message
        found = re.search(r"Started process for run \(pid: (\d+)\)", text or "")
        if found:
            return int(found.group(1))
    raise AssertionError(f"run {run_id} has no worker process yet")


def _rows(kit: ProjectKit, name: str) -> list[tuple[int, str]]:
    text = kit.download(name).decode()
    return [(int(r["id"]), r["name"]) for r in csv.DictReader(io.StringIO(text, newline=""))]


def _wait(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_a_run_killed_mid_export_is_failed_retried_and_unblocks_its_activation(
    deployment: ProjectKit,  # noqa: F811
    azurite,
    monkeypatch,
):
    kit = deployment
    kit.write_defs(DEFS)
    instance = dg.DagsterInstance.get()
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        daemon = subprocess.Popen(
            [bin_of("dagster-daemon"), "run", "-w", str(kit.root / "workspace.yaml")],
            cwd=kit.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=os.environ.copy(),
            start_new_session=True,
        )
        try:
            # Round 0: a full export of 20 rows.
            submit(kit, "activate_a")
            first = instance.get_runs()[0].run_id
            _wait(lambda: instance.get_run_by_id(first).status in FINISHED, 300, "the first run")
            assert instance.get_run_by_id(first).status == dg.DagsterRunStatus.SUCCESS
            round0 = kit.blob_names("a/")
            assert len(round0) == 1
            assert sorted(_rows(kit, round0[0])) == [(i, f"n{i}") for i in range(20)]

            # Round 1: 5 rows change, 5 are added. The run's upload is held by the proxy.
            kit.source_sql(
                "UPDATE people SET name = 'changed' WHERE id < 5",
                "INSERT INTO people SELECT i, 'new' || i FROM range(20, 25) r(i)",
            )
            proxy.delay(seconds=900, method="PUT", path_contains="a/people_", times=1)
            submit(kit, "activate_a")
            killed = next(r.run_id for r in instance.get_runs() if r.run_id != first)
            assert proxy.wait_for(
                lambda p: p.count(method="PUT", path_contains="a/people_") > 0, 300
            ), "the export never started its upload"
            # A second run of the activation waits in the queue behind the one in progress.
            submit(kit, "activate_a")
            queued = next(r.run_id for r in instance.get_runs() if r.run_id not in (first, killed))
            time.sleep(2)
            assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED
            assert instance.get_run_by_id(queued).status == dg.DagsterRunStatus.QUEUED

            tree = _descendants(_worker_pid(instance, killed))
            for pid in tree:
                os.kill(pid, signal.SIGKILL)
            took = _wait(
                lambda: instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE,
                FAILED_WITHIN,
                "the killed run to be marked failed",
            )
            print(f"killed run marked failed after {took:.1f}s")

            # The retry (run_retries) and the queued run both finish.
            def retry_of_killed() -> dg.DagsterRun | None:
                runs = instance.get_runs(
                    filters=dg.RunsFilter(tags={"dagster/parent_run_id": killed})
                )
                return runs[0] if runs else None

            _wait(lambda: retry_of_killed() is not None, 120, "the retry of the killed run")
            retry = retry_of_killed().run_id
            _wait(
                lambda: all(instance.get_run_by_id(r).status in FINISHED for r in (retry, queued)),
                420,
                "the retry and the queued run",
            )
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()

    records = {r: instance.get_run_record_by_id(r) for r in (killed, retry, queued)}
    assert {r: rec.dagster_run.status for r, rec in records.items()} == {
        killed: dg.DagsterRunStatus.FAILURE,
        retry: dg.DagsterRunStatus.SUCCESS,
        queued: dg.DagsterRunStatus.SUCCESS,
    }
    # The queued run started only once the killed run had ended.
    assert records[queued].start_time >= records[killed].end_time

    # Every change exactly once across the files written after round 0, none of round 0 again.
    later = [name for name in kit.blob_names("a/") if name not in round0]
    exported = Counter(row for name in later for row in _rows(kit, name))
    expected = Counter([(i, "changed") for i in range(5)] + [(i, f"new{i}") for i in range(20, 25)])
    assert exported == expected, (later, exported)
