"""A run whose process tree is killed (kill -9) in the middle of its export heals on its own.

The deployment of test_daemon (daemon, run queue, Postgres run storage, deploy/dagster.yaml,
the lake), with the destination behind the fault proxy, which holds the export's upload so
the run is certainly mid-export when its worker is killed. Then, with nobody touching run
storage by hand:

- the killed run is marked failed within a bounded time;
- the activation is unblocked: the run queued behind it starts;
- the retry that run_retries launches and the queued run together export every change of
  the source exactly once (the blobs are downloaded and their rows compared).

Twice: once with only the run worker killed (its code server fails the run), once with the
code server that launched it killed together with it, as when their machine or pod restarts:
then only the code location's run watchdog (`components/watchdog.py`), evaluated by the
daemon in a new code server, can tell that the worker is gone. And a run kept in progress
for longer than many of the watchdog's evaluations and a code server replacement is left
alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest

from azexport_assets.components.watchdog import INTERVAL_ENV, SENSOR_NAME
from azexport_assets.run_worker import read_records
from azexport_assets.warehouse import open_warehouse
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.lake_kit import postgres  # noqa: F401
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit
from azexport_assets_tests.test_daemon import (  # noqa: F401
    FINISHED,
    deployment,
    running_daemon,
    submit,
)

pytestmark = pytest.mark.lake

# Seconds from the kill until the run must be marked failed: by its code server, and by the
# watchdog (the daemon replaces a dead code server within a minute, then the watchdog's next
# evaluation, every WATCHDOG_INTERVAL seconds here, and its 5 s grace).
FAILED_WITHIN = 60
WATCHDOG_INTERVAL = 5
WATCHDOG_FAILED_WITHIN = 150
# How long the live run is kept in progress.
HELD_FOR = 75

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


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_run_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """The run's worker and its children; its code server lives on."""
    _kill(_descendants(_worker_pid(instance, run_id)))


def kill_code_server_with_run_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """The code server that launched the run, then its whole tree (the run's worker): as
    when their machine or pod restarts, the code server never sees the worker die."""
    worker = _worker_pid(instance, run_id)
    server = _parent(worker)
    command = Path(f"/proc/{server}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert " api grpc" in command, command
    tree = _descendants(server)
    _kill(tree)
    assert worker in tree


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return events[-1].dagster_event.message if events else ""


def heal_after(
    kit: ProjectKit,
    azurite,
    monkeypatch,
    kill: Callable[[dg.DagsterInstance, str], None],
    failed_within: float,
) -> str:
    """Round 0 exports 20 rows; round 1's run is killed mid-export by `kill` while a second
    run of the activation waits in the queue. Checks that the killed run is failed within
    `failed_within` seconds, that its retry and the queued run succeed, and that every change
    was exported exactly once. Returns the killed run's failure message."""
    kit.write_defs(DEFS)
    instance = dg.DagsterInstance.get()
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        with running_daemon(kit):
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

            kill(instance, killed)
            took = _wait(
                lambda: instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE,
                failed_within,
                "the killed run to be marked failed",
            )
            print(f"killed run marked failed after {took:.1f}s")

            # The retry (run_retries) and the queued run both finish.
            def retry_of_killed() -> dg.DagsterRun | None:
                runs = instance.get_runs(
                    filters=dg.RunsFilter(tags={"dagster/parent_run_id": killed})
                )
                return runs[0] if runs else None

            _wait(lambda: retry_of_killed() is not None, 180, "the retry of the killed run")
            retry = retry_of_killed().run_id
            _wait(
                lambda: all(instance.get_run_by_id(r).status in FINISHED for r in (retry, queued)),
                420,
                "the retry and the queued run",
            )

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
    return _failure_message(instance, killed)


def test_a_run_killed_mid_export_is_failed_retried_and_unblocks_its_activation(
    deployment: ProjectKit,  # noqa: F811
    azurite,
    monkeypatch,
):
    message = heal_after(deployment, azurite, monkeypatch, kill_run_worker, FAILED_WITHIN)
    # Its code server saw the worker die.
    assert "watchdog" not in message, message


def test_a_run_whose_code_server_died_with_it_is_failed_by_the_watchdog(
    deployment: ProjectKit,  # noqa: F811
    azurite,
    monkeypatch,
):
    monkeypatch.setenv(INTERVAL_ENV, str(WATCHDOG_INTERVAL))
    message = heal_after(
        deployment, azurite, monkeypatch, kill_code_server_with_run_worker, WATCHDOG_FAILED_WITHIN
    )
    assert message.startswith(
        "The azexport run watchdog marked this run failed: its worker, process "
    )
    assert "no longer exists" in message


def _watchdog_ticks(instance: dg.DagsterInstance, since: float) -> list:
    states = [s for s in instance.all_instigator_state() if s.name == SENSOR_NAME]
    ticks = [
        tick
        for state in states
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=200)
    ]
    return [t for t in ticks if t.timestamp >= since]


def test_a_live_run_is_left_alone_by_the_watchdog(
    deployment: ProjectKit,  # noqa: F811
    monkeypatch,
):
    """The run waits for its activation's lock (the test holds it) for longer than many of
    the watchdog's evaluations and than the daemon's replacement of its code server (every
    minute; the sensor then runs in a new code server, the run's worker stays a child of the
    old one). Released, the run finishes normally."""
    kit = deployment
    monkeypatch.setenv(INTERVAL_ENV, str(WATCHDOG_INTERVAL))
    instance = dg.DagsterInstance.get()
    held = open_warehouse().activation_lock("a", holder="test")
    held.acquire()
    try:
        with running_daemon(kit):
            submit(kit, "activate_a")
            (run,) = instance.get_runs()
            _wait(
                lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED,
                300,
                "the run to start",
            )
            started = time.time()
            _wait(
                lambda: run.run_id in read_records(instance, [run.run_id]),
                120,
                "the run's worker record",
            )
            time.sleep(HELD_FOR)
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            ticks = _watchdog_ticks(instance, started)
            held.release()
            _wait(lambda: instance.get_run_by_id(run.run_id).status in FINISHED, 300, "the run")
    finally:
        held.release()
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
    # The watchdog looked at the run many times and saw it running every time.
    seen = [t.skip_reason or "" for t in ticks if run.run_id[:8] in (t.skip_reason or "")]
    assert len(seen) >= HELD_FOR // WATCHDOG_INTERVAL // 2, [t.skip_reason for t in ticks]
    assert all(f"{run.run_id[:8]}: process " in r and " is running" in r for r in seen), seen
    rows = list(csv.DictReader(io.StringIO(kit.download("a/people.csv").decode(), newline="")))
    assert len(rows) == 20
