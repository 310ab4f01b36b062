"""Where a run's worker runs, and whether it is still there (the worker's half of the watchdog).

A run's *worker* is the process that orchestrates it and reports its end (with the
DefaultRunLauncher, a child of the code server; with the Docker or Kubernetes launcher, the
container's `dagster api execute_run`; with `dagster job execute`, that command). When it
dies, nothing else may ever mark the run finished, and the run holds its activation's place
in the run queue (see `components/watchdog.py`).

When a run's warehouse resource is set up (before its first step) on a persistent instance
(an ephemeral one, as in `execute_in_process` without an instance, is read by no other
process), the process records its worker in Dagster's key-value store, under
`azexport/run_worker/<run id>`:

- the host name (for messages), and the *machine*: the kernel's boot id and the worker's pid
  namespace. Two processes with the same machine see the same process ids, so one of them can
  tell whether the other is still running;
- the worker's process id and its start time (clock ticks after boot), so a process id that
  the kernel gave to another process since is not taken for the worker;
- a heartbeat: the worker rewrites the record every `AZEXPORT_WATCHDOG_HEARTBEAT_SECONDS`
  (30) with a higher `beat` while the run executes, for watchdogs on other machines.

With Dagster's multiprocess executor (an ad-hoc selection materialized from the UI; the
project's own jobs run in process), the resource is set up in each step's process: that
process records its parent, the worker, without heartbeat (it cannot beat for its parent).

The record lives in the run storage's key-value table, not in the run's tags: tags are
rewritten whole by each update, and an update racing with Dagster's own (the retry tags of a
failed run) could drop one. One small row per run stays there.

Linux only: elsewhere the machine is unknown and only the heartbeat speaks for the worker.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from enum import Enum

import dagster as dg

KEY_PREFIX = "azexport/run_worker/"
HEARTBEAT_ENV = "AZEXPORT_WATCHDOG_HEARTBEAT_SECONDS"
DEFAULT_HEARTBEAT_SECONDS = 30.0


def record_key(run_id: str) -> str:
    return KEY_PREFIX + run_id


# --- processes of this machine (plain Python) -------------------------------------------------


def this_machine() -> str | None:
    """'<boot id>/<pid namespace>' of this process, or None where it cannot be known.

    Equal values mean the same running kernel and the same process ids: a container in its
    own pid namespace, or the same host after a reboot, is another machine here."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot and namespace else None


def _stat(pid: int) -> tuple[str, int]:
    """(state, start time in clock ticks after boot) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks after boot; None if unknown."""
    try:
        return _stat(pid)[1]
    except (OSError, ValueError, IndexError):
        return None


class ProcessState(Enum):
    RUNNING = "running"  # the same process (pid and start time) is still there
    EXITED = "exited"  # it ended but its parent has not collected it yet (a zombie)
    GONE = "gone"  # no process has that id
    REUSED = "reused"  # the id belongs to a process started at another time
    UNKNOWN = "unknown"  # a process with that id exists, but it cannot be read


def _exists(pid: int) -> bool:
    """Whether a process with this id exists in this pid namespace (signal 0 sends nothing;
    it answers even where /proc hides other users' processes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_state(pid: int, started: int) -> ProcessState:
    """What became of process `pid` that started at `started` ticks after boot. Call it only
    for a record of `this_machine()`."""
    if not sys.platform.startswith("linux") or pid <= 0:
        return ProcessState.UNKNOWN
    if not _exists(pid):
        return ProcessState.GONE
    try:
        state, start = _stat(pid)
    except (OSError, ValueError, IndexError):
        # It may have ended between the two looks; else /proc does not show it to us.
        return ProcessState.GONE if not _exists(pid) else ProcessState.UNKNOWN
    if start != started:
        return ProcessState.REUSED
    if state in ("Z", "X"):
        return ProcessState.EXITED
    return ProcessState.RUNNING


# --- the record ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRecord:
    run_id: str
    host: str
    machine: str | None
    pid: int
    started: int | None
    # Seconds between beats; None when nothing keeps the record fresh.
    heartbeat_seconds: float | None
    beat: int = 0
    # The worker's clock at the last beat, for messages only (clocks of two machines differ).
    at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> WorkerRecord | None:
        """None for a missing or unreadable value (written by another version)."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                run_id=str(data["run_id"]),
                host=str(data["host"]),
                machine=data["machine"],
                pid=int(data["pid"]),
                started=data["started"],
                heartbeat_seconds=data["heartbeat_seconds"],
                beat=int(data["beat"]),
                at=float(data["at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        """'process 1234 on host vm-7'."""
        return f"process {self.pid} on host {self.host}"


def read_records(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, WorkerRecord]:
    """The worker records of these runs (runs without one are left out)."""
    if not run_ids:
        return {}
    values = instance.daemon_cursor_storage.get_cursor_values({record_key(r) for r in run_ids})
    records = {}
    for run_id in run_ids:
        record = WorkerRecord.from_json(values.get(record_key(run_id)))
        if record is not None and record.run_id == run_id:
            records[run_id] = record
    return records


def heartbeat_seconds() -> float:
    value = os.environ.get(HEARTBEAT_ENV)
    try:
        seconds = float(value) if value else DEFAULT_HEARTBEAT_SECONDS
    except ValueError:
        seconds = DEFAULT_HEARTBEAT_SECONDS
    return max(seconds, 1.0)


# --- the worker's side ---------------------------------------------------------------------------

_log = logging.getLogger("azexport.watchdog")


def store_record(instance: dg.DagsterInstance, record: WorkerRecord) -> None:
    instance.daemon_cursor_storage.set_cursor_values({record_key(record.run_id): record.to_json()})


def _is_step_process(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether this process is a step's process of the multiprocess executor: Dagster records
    each one (STEP_WORKER_STARTED, with its process id) before its resources are set up."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_WORKER_STARTED)
    return any(e.dagster_event is not None and e.dagster_event.pid == os.getpid() for e in events)


def worker_record(instance: dg.DagsterInstance, run_id: str) -> WorkerRecord | None:
    """This run's worker as seen from this process; None for a run that has finished
    (resources set up to read a finished run's outputs).

    The worker is this process (in-process execution, the project's jobs; also a worker
    started again to resume the run), or, in a step's process of the multiprocess executor,
    its parent."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return None
    if _is_step_process(instance, run_id):
        worker, beats = os.getppid(), None
    else:
        worker, beats = os.getpid(), heartbeat_seconds()
    return WorkerRecord(
        run_id=run_id,
        host=socket.gethostname(),
        machine=this_machine(),
        pid=worker,
        started=process_start(worker),
        heartbeat_seconds=beats,
        at=time.time(),
    )


class WorkerWatch:
    """Records this run's worker, then beats while the run executes, from a thread of its
    own: the run's steps never wait for the run storage on its account, and a failure to
    write (a database that does not answer) never fails the run; a missed beat is retried
    at the next one."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str):
        self._instance = instance
        self._run_id = run_id
        self.record: WorkerRecord | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="azexport-run-worker-watch", daemon=True
        )

    def start(self) -> WorkerWatch:
        self._thread.start()
        return self

    def _watch(self) -> None:
        try:
            record = worker_record(self._instance, self._run_id)
        except Exception as error:  # noqa: BLE001 - never fail a run for its watchdog
            _log.warning("the run watchdog cannot tell this run's worker: %s", error)
            return
        self.record = record
        # Written at least once, even when the run's steps were over first.
        while record is not None:
            try:
                store_record(self._instance, record)
            except Exception as error:  # noqa: BLE001
                _log.warning("the run watchdog cannot record this run's worker: %s", error)
            if record.heartbeat_seconds is None or self._stop.wait(record.heartbeat_seconds):
                return
            record = replace(record, beat=record.beat + 1, at=time.time())
            self.record = record

    def stop(self) -> None:
        """Stop beating (at the run's end); a write under way finishes on its own."""
        self._stop.set()
        self._thread.join(timeout=1)


def watch_run_worker(instance: dg.DagsterInstance, run_id: str) -> WorkerWatch | None:
    """Record this run's worker (see the module's docstring) and start its heartbeat; None on
    an ephemeral instance: no other process can read it, and its in-memory SQLite refuses
    ("database table is locked") a write from the watch's thread while the run writes."""
    if instance.is_ephemeral:
        return None
    return WorkerWatch(instance, run_id).start()
