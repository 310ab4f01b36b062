"""The run watchdog: fails a STARTED run whose worker is provably gone, so it can heal.

Why Dagster does not: with the DefaultRunLauncher, the run worker is a child process of the
code server that launched it, and only that code server watches it (its clean-up thread fails
a run whose child exited). Run monitoring in the daemon asks the launcher about the worker's
health, but the DefaultRunLauncher does not support that check
(`supports_check_run_worker_health` is False), so for a STARTED run the daemon only enforces
`max_runtime_seconds`. When the code server dies together with its run workers (the pod or
the VM restarts, a `kill -9` of the process group), nothing is left that knows the workers:
their runs stay STARTED for ever, and each holds its activation's place in the run queue.

The watchdog is a sensor of the code location, so the daemon evaluates it in a code server,
every `AZEXPORT_WATCHDOG_INTERVAL_SECONDS` (30). It reads the STARTED runs and the record of
each run's worker (`azexport_assets/run_worker.py`), and judges each worker:

- **on this machine** (same kernel boot and pid namespace): gone when no process has its id,
  or when the id belongs to a process that started at another time (the id was reused);
- **on another machine**: gone when its heartbeat has not advanced for
  `AZEXPORT_WATCHDOG_HEARTBEAT_TIMEOUT_SECONDS` (300) of the watchdog's own clock, counted
  from the evaluation that first saw the current beat (the cursor keeps it), so the clocks
  of the two machines never have to agree.

A run without a record (started before the watchdog existed, or by another code location),
or whose worker cannot beat (a step process of the multiprocess executor recorded it) on
another machine, is left alone. A gone worker's run is checked again after a few seconds (a
live code server fails its own dead child within a second; then it is already FAILURE) and
then marked failed, with the reason in its event log. `run_retries` then retries it (the
failure is not a step failure), and the run queued behind it starts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import dagster as dg

from azexport_assets.run_worker import (
    ProcessState,
    WorkerRecord,
    process_state,
    read_records,
    this_machine,
)

SENSOR_NAME = "azexport_run_watchdog"
INTERVAL_ENV = "AZEXPORT_WATCHDOG_INTERVAL_SECONDS"
TIMEOUT_ENV = "AZEXPORT_WATCHDOG_HEARTBEAT_TIMEOUT_SECONDS"
DEFAULT_INTERVAL_SECONDS = 30
DEFAULT_TIMEOUT_SECONDS = 300.0
# A heartbeat timeout below this many beats of the worker is raised to it.
MIN_MISSED_BEATS = 3
# Between finding a worker gone and failing its run: its code server, if alive, fails a run
# of its own dead child within a second.
GRACE_SECONDS = 5.0


def _env_number(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        return default


@dataclass(frozen=True)
class Seen:
    """A worker's beat as first seen by the watchdog, on the watchdog's clock."""

    beat: int
    since: float


@dataclass(frozen=True)
class Verdict:
    gone: bool
    # Why the worker is judged gone, or what the watchdog knows of it.
    reason: str
    seen: Seen | None = None


def judge(
    record: WorkerRecord | None,
    here: str | None,
    now: float,
    seen: Seen | None,
    timeout: float,
) -> Verdict:
    """Whether a STARTED run's worker is gone. Never True for a worker that may be running."""
    if record is None:
        return Verdict(False, "no worker record (not watched)")
    if here is not None and record.machine == here and record.started is not None:
        state = process_state(record.pid, record.started)
        if state is ProcessState.GONE:
            return Verdict(True, f"its worker, {record.describe()}, no longer exists")
        if state is ProcessState.REUSED:
            return Verdict(
                True,
                f"its worker, {record.describe()}, no longer exists (the process id now "
                "belongs to a process started at another time)",
            )
        if state is ProcessState.RUNNING:
            return Verdict(False, f"{record.describe()} is running")
        if state is ProcessState.EXITED:
            return Verdict(False, f"{record.describe()} exited; its parent reports it")
        # UNKNOWN: a process with that id exists but cannot be read; ask the heartbeat.
    if record.heartbeat_seconds is None:
        return Verdict(False, f"{record.describe()} cannot be checked from here (no heartbeat)")
    if seen is None or seen.beat != record.beat:
        return Verdict(
            False, f"{record.describe()}: heartbeat {record.beat}", Seen(record.beat, now)
        )
    limit = max(timeout, MIN_MISSED_BEATS * record.heartbeat_seconds)
    silent = now - seen.since
    if silent > limit:
        return Verdict(
            True,
            f"its worker, {record.describe()}, has sent no heartbeat for {silent:.0f} s "
            f"(limit {limit:.0f} s, {TIMEOUT_ENV})",
            seen,
        )
    return Verdict(False, f"{record.describe()}: no new heartbeat for {silent:.0f} s", seen)


def failure_message(reason: str) -> str:
    return (
        f"The azexport run watchdog marked this run failed: {reason}, and no process is left "
        "that would report the run's end. No change is lost: blobs appear only whole, and the "
        "baseline advances only once all of a run's blobs are committed. run_retries retries "
        "it (same logical time, same blob names) and the activation's next run can start."
    )


def _load_cursor(cursor: str | None) -> dict[str, Seen]:
    try:
        data = json.loads(cursor) if cursor else {}
        return {run_id: Seen(int(b), float(s)) for run_id, (b, s) in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _dump_cursor(seen: dict[str, Seen]) -> str:
    return json.dumps({r: [s.beat, s.since] for r, s in sorted(seen.items())})


def watch_started_runs(
    instance: dg.DagsterInstance,
    cursor: dict[str, Seen],
    timeout: float,
    grace: float = GRACE_SECONDS,
    here: str | None = None,
) -> tuple[list[str], dict[str, Seen], list[str]]:
    """One evaluation: (runs marked failed, the new cursor, one line per watched run)."""
    here = here if here is not None else this_machine()
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    records = read_records(instance, [run.run_id for run in runs])
    now = time.time()
    seen: dict[str, Seen] = {}
    suspects: dict[str, Verdict] = {}
    lines = []
    for run in runs:
        verdict = judge(records.get(run.run_id), here, now, cursor.get(run.run_id), timeout)
        if verdict.seen is not None:
            seen[run.run_id] = verdict.seen
        if verdict.gone:
            suspects[run.run_id] = verdict
        lines.append(f"{run.run_id[:8]}: {verdict.reason}")
    failed = []
    if suspects:
        time.sleep(grace)
        again = read_records(instance, list(suspects))
        for run_id, first in suspects.items():
            run = instance.get_run_by_id(run_id)
            if run is None or run.status != dg.DagsterRunStatus.STARTED:
                continue
            # The same judgement on fresh data: a beat that advanced meanwhile clears it.
            verdict = judge(again.get(run_id), here, time.time(), first.seen, timeout)
            if verdict.gone:
                instance.report_run_failed(run, failure_message(verdict.reason))
                failed.append(run_id)
                seen.pop(run_id, None)
    return failed, seen, lines


def run_watchdog_sensor() -> dg.SensorDefinition:
    interval = int(_env_number(INTERVAL_ENV, DEFAULT_INTERVAL_SECONDS))
    timeout = _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS)

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=max(interval, 1),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Marks failed a STARTED run whose worker process is gone (on this machine: its "
            f"process id is free or reused; elsewhere: no heartbeat for {timeout:.0f} s), so "
            "run_retries retries it and its activation's next run can start. See "
            "docs/operating.md, 'When a run dies'."
        ),
    )
    def _watchdog(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        failed, seen, lines = watch_started_runs(
            context.instance, _load_cursor(context.cursor), timeout
        )
        for run_id in failed:
            context.log.warning(f"marked run {run_id} failed: its worker is gone")
        if failed:
            summary = f"marked failed: {', '.join(failed)}"
        else:
            shown = "; ".join(lines[:20]) + ("; ..." if len(lines) > 20 else "")
            summary = f"{len(lines)} started run(s)" + (f": {shown}" if lines else "")
        return dg.SensorResult(skip_reason=summary, cursor=_dump_cursor(seen))

    return _watchdog


def watchdog_definitions() -> dg.Definitions:
    return dg.Definitions(sensors=[run_watchdog_sensor()])
