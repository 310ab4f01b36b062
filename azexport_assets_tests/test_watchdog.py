"""The run watchdog's judgement, on a real Dagster instance and real processes.

A run's worker records itself when the run's warehouse resource is set up; the watchdog fails
a STARTED run only when that worker is provably gone: on this machine, its process id is free
or belongs to a process started at another time; elsewhere, its heartbeat stopped for longer
than the timeout. Everything else (a live worker, a worker that exited but whose parent has
not collected it yet, a run without a record, a worker elsewhere that keeps beating) is left
alone. `test_run_healing.py` runs it under a real daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from azexport_assets.components.watchdog import (
    SENSOR_NAME,
    Seen,
    run_watchdog_sensor,
    watch_started_runs,
)
from azexport_assets.demo.instance import DEFAULT_DAGSTER_YAML
from azexport_assets.resources import WarehouseResource
from azexport_assets.run_worker import (
    HEARTBEAT_ENV,
    ProcessState,
    WorkerRecord,
    process_start,
    process_state,
    read_records,
    record_key,
    store_record,
    this_machine,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@dg.op
def _noop() -> None:
    pass


@dg.job
def _job() -> None:
    _noop()


@dg.op
def _step_in_its_own_process(warehouse: WarehouseResource) -> None:
    Path(os.environ["AZEXPORT_TEST_PIDS"]).write_text(f"{os.getpid()} {os.getppid()}")


def multiprocess_job() -> dg.JobDefinition:
    @dg.job(
        executor_def=dg.multiprocess_executor,
        resource_defs={"warehouse": WarehouseResource()},
    )
    def in_steps_processes() -> None:
        _step_in_its_own_process()

    return in_steps_processes


# The project's instances capture no raw step output (Dagster's `tail` process per run could
# take 30 s to stop on a busy machine); these instances neither.
NO_COMPUTE_LOGS = {"compute_logs": yaml.safe_load(DEFAULT_DAGSTER_YAML)["compute_logs"]}


@pytest.fixture
def instance():
    with dg.instance_for_test(overrides=NO_COMPUTE_LOGS) as instance:
        yield instance


def started_run(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A run in status STARTED whose worker is whatever the test records for it."""
    return instance.create_run_for_job(
        _job, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED
    )


def record_for(run: dg.DagsterRun, pid: int, **changes) -> WorkerRecord:
    values = dict(
        run_id=run.run_id,
        host="test-host",
        machine=this_machine(),
        pid=pid,
        started=process_start(pid),
        heartbeat_seconds=1.0,
        at=time.time(),
    )
    values.update(changes)
    return WorkerRecord(**values)


def write(instance: dg.DagsterInstance, record: WorkerRecord) -> None:
    """Store the record once (no heartbeat)."""
    store_record(instance, record)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def status(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def failure_message(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    (event,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return event.dagster_event.message


def test_the_worker_records_itself_and_beats_while_the_run_executes(
    instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv(HEARTBEAT_ENV, "1")
    inside = threading.Event()
    release = threading.Event()

    @dg.asset
    def slow(warehouse: WarehouseResource) -> None:
        inside.set()
        release.wait(30)

    result: list[dg.ExecuteInProcessResult] = []
    runner = threading.Thread(
        target=lambda: result.append(
            dg.materialize([slow], resources={"warehouse": WarehouseResource()}, instance=instance)
        )
    )
    runner.start()
    try:
        assert inside.wait(30)
        (run,) = instance.get_runs()
        deadline = time.monotonic() + 10  # the record is written by the watch's thread
        while run.run_id not in read_records(instance, [run.run_id]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (record,) = read_records(instance, [run.run_id]).values()
        assert (record.pid, record.machine, record.heartbeat_seconds) == (
            os.getpid(),
            this_machine(),
            1.0,
        )
        assert record.started == process_start(os.getpid())
        # Judged from another machine, the run lives on its heartbeat: 5 s of evaluations
        # with a 3 s limit (3 beats of 1 s), and it is never failed.
        cursor: dict[str, Seen] = {}
        for _ in range(6):
            failed, cursor, lines = watch_started_runs(instance, cursor, 0.1, 0, here="elsewhere")
            assert failed == [], lines
            time.sleep(1)
        assert read_records(instance, [run.run_id])[run.run_id].beat >= 3
        # And from this machine, it is running.
        failed, _, lines = watch_started_runs(instance, {}, 0.1, 0)
        assert failed == [] and "is running" in lines[0]
    finally:
        release.set()
        runner.join(120)
    assert result and result[0].success
    beats = read_records(instance, [run.run_id])[run.run_id].beat
    time.sleep(1.5)  # the heartbeat stopped with the run
    assert read_records(instance, [run.run_id])[run.run_id].beat == beats


def test_a_step_process_records_its_parent_the_worker_without_heartbeat(
    instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("AZEXPORT_TEST_PIDS", str(tmp_path / "pids"))
    # The step's process imports this module by its package name (pytest knows it as
    # `test_watchdog`).
    job = dg.build_reconstructable_job("azexport_assets_tests.test_watchdog", "multiprocess_job")
    with dg.execute_job(job, instance=instance) as result:
        assert result.success
    step, parent = map(int, (tmp_path / "pids").read_text().split())
    assert step != os.getpid()  # the step ran in a process of its own
    (record,) = read_records(instance, [result.run_id]).values()
    assert (record.pid, record.heartbeat_seconds) == (parent, None)
    assert record.pid == os.getpid()  # the run's worker: here, this process


def test_a_run_on_an_ephemeral_instance_has_no_watch(tmp_path, monkeypatch):
    """An ephemeral instance is read by no other process, and its in-memory SQLite rejects a
    write from the watch's thread while the run writes its events ("database table is
    locked"): such a run starts no watch and records no worker."""
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv(HEARTBEAT_ENV, "0.01")  # a watch would write a hundred times a second
    threads_in_the_step: list[str] = []

    @dg.asset
    def looks_around(warehouse: WarehouseResource) -> None:
        time.sleep(0.3)
        threads_in_the_step.extend(t.name for t in threading.enumerate())

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [looks_around], resources={"warehouse": WarehouseResource()}, instance=instance
    )
    assert result.success
    assert threads_in_the_step and "azexport-run-worker-watch" not in threads_in_the_step
    assert read_records(instance, [result.run_id]) == {}


def test_a_run_whose_worker_process_is_gone_is_failed_with_the_reason(instance):
    run = started_run(instance)
    pid = dead_pid()
    write(instance, record_for(run, pid, started=12345))
    sensor = run_watchdog_sensor()
    assert sensor.name == SENSOR_NAME
    result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert status(instance, run) == dg.DagsterRunStatus.FAILURE
    message = failure_message(instance, run)
    assert f"process {pid} on host test-host, no longer exists" in message
    assert "run_retries retries it" in message
    assert run.run_id in (result.skip_message or "")


def test_a_reused_process_id_is_not_taken_for_the_worker(instance):
    run = started_run(instance)
    # Our own process id, but the record says it started at another time.
    write(instance, record_for(run, os.getpid(), started=process_start(os.getpid()) - 1))
    failed, _, _ = watch_started_runs(instance, {}, 300, grace=0)
    assert failed == [run.run_id]
    assert "process id now belongs to a process started at another time" in failure_message(
        instance, run
    )


def test_live_and_unknown_workers_are_left_alone(instance):
    live = started_run(instance)
    write(instance, record_for(live, os.getpid()))
    unrecorded = started_run(instance)
    # A child that exited, not yet collected by its parent (us): the parent reports it.
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process_state(zombie.pid, process_start(zombie.pid)) is not ProcessState.EXITED:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    exited = started_run(instance)
    write(instance, record_for(exited, zombie.pid))
    # A record under this run's key that names another run, or that another version wrote:
    # neither counts for this run.
    other_run = started_run(instance)
    stale = record_for(live, dead_pid(), started=1).to_json()
    instance.daemon_cursor_storage.set_cursor_values({record_key(other_run.run_id): stale})
    garbled = started_run(instance)
    instance.daemon_cursor_storage.set_cursor_values({record_key(garbled.run_id): "{"})
    try:
        failed, _, lines = watch_started_runs(instance, {}, 300, grace=0)
    finally:
        zombie.wait()
    assert failed == []
    assert {status(instance, r) for r in (live, unrecorded, exited, other_run, garbled)} == {
        dg.DagsterRunStatus.STARTED
    }
    text = "\n".join(lines)
    assert "is running" in text and "exited; its parent reports it" in text
    assert "no worker record (not watched)" in text


def test_a_worker_elsewhere_is_failed_only_when_its_heartbeat_stops(instance):
    run = started_run(instance)
    record = record_for(run, 4242, machine="another-boot/pid:[1]", heartbeat_seconds=1.0)
    write(instance, record)
    # The first evaluation only notes the beat; beats that advance keep the run alive.
    failed, cursor, _ = watch_started_runs(instance, {}, 2, grace=0)
    assert failed == [] and cursor[run.run_id].beat == 0
    for beat in (1, 2):
        time.sleep(1.2)
        write(instance, WorkerRecord(**{**record.__dict__, "beat": beat}))
        failed, cursor, _ = watch_started_runs(instance, cursor, 2, grace=0)
        assert failed == []
    # Silent: the limit is max(timeout 2 s, 3 beats of 1 s) = 3 s on the watchdog's clock.
    time.sleep(2)
    failed, cursor, _ = watch_started_runs(instance, cursor, 2, grace=0)
    assert failed == []
    time.sleep(1.5)
    failed, cursor, _ = watch_started_runs(instance, cursor, 2, grace=0)
    assert failed == [run.run_id]
    assert "has sent no heartbeat for" in failure_message(instance, run)
    assert run.run_id not in cursor


def test_a_worker_elsewhere_without_heartbeat_is_never_failed(instance):
    run = started_run(instance)
    write(instance, record_for(run, 4242, machine="another-boot/pid:[1]", heartbeat_seconds=None))
    cursor: dict[str, Seen] = {}
    for _ in range(2):
        failed, cursor, lines = watch_started_runs(instance, cursor, 0, grace=0)
        assert failed == [] and "no heartbeat" in lines[0]


def test_a_run_that_finished_during_the_grace_is_left_as_it_is(instance, monkeypatch):
    run = started_run(instance)
    write(instance, record_for(run, dead_pid(), started=1))

    def finish_meanwhile(_: float) -> None:
        instance.report_run_failed(run, "its own code server failed it")

    monkeypatch.setattr("azexport_assets.components.watchdog.time.sleep", finish_meanwhile)
    failed, _, _ = watch_started_runs(instance, {}, 300)
    assert failed == []
    assert failure_message(instance, run) == "its own code server failed it"


def test_the_code_location_has_the_watchdog():
    from azexport_assets.components.build import location_definitions

    definitions = location_definitions(WarehouseResource())
    assert definitions.resolve_sensor_def(SENSOR_NAME).default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
