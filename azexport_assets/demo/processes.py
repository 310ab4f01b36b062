"""Start long-running helper processes in their own process group and stop whole trees.

`dagster dev` starts a webserver, a daemon and code servers, which start run workers. A
terminal's Ctrl-C or a plain `terminate()` of the parent can leave some of them running: a
code server whose parent has gone waits for its runs and for heartbeats, and when the
instance's database is gone as well it never ends (one SIGTERM only starts its shutdown).
So stopping here means: an interrupt to the parent (its own orderly shutdown), then SIGTERM
to every descendant found under /proc (children first: a parent waiting for them then ends
by itself), then to the parents and process groups, then SIGKILL to what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

INTERRUPT_GRACE_SECONDS = 3.0
TERM_GRACE_SECONDS = 2.0


def spawn(
    command: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    log: IO[bytes] | int | None = None,
) -> subprocess.Popen:
    """Start `command` as the leader of a new session (so of a new process group).

    Its own group keeps the terminal's Ctrl-C away from it: the caller decides how and when
    the tree stops (see `stop_trees`), instead of each process racing to shut down alone.
    `log` receives stdout and stderr: a file, `subprocess.PIPE`, or None (this terminal)."""
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
    )


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, or None when it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> set[int]:
    """Every live process whose ancestry leads to `pid` (not `pid` itself)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def identities(pids: Iterable[int]) -> dict[int, int]:
    """pid -> start time, to tell a process from a later one that reuses its pid."""
    found = {}
    for pid in pids:
        stat = _stat(pid)
        if stat is not None:
            found[pid] = stat[2]
    return found


def alive(identity: dict[int, int]) -> set[int]:
    """The processes of `identity` that still run (zombies count as gone)."""
    remaining = set()
    for pid, started in identity.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == started and stat[1] != "Z":
            remaining.add(pid)
    return remaining


def with_environment(name: str, value: str) -> set[int]:
    """Live processes (zombies excluded) whose environment holds `name=value`.

    Every process a command starts inherits its environment, whatever its session, group or
    parent: a variable set for one command (a test's DAGSTER_HOME) finds them all, including
    those whose parent has gone."""
    entry = f"{name}={value}".encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        stat = _stat(int(proc.name))
        if entry in environ and stat is not None and stat[1] != "Z":
            found.add(int(proc.name))
    return found


def _signal_all(groups: set[int], pids: set[int], sig: signal.Signals) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(roots: Sequence[subprocess.Popen], identity: dict[int, int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for process in roots:
            process.poll()  # reap direct children so they do not linger as zombies
        if not alive(identity):
            return
        time.sleep(0.1)


def stop_trees(
    processes: Sequence[subprocess.Popen],
    interrupt_grace: float = INTERRUPT_GRACE_SECONDS,
    term_grace: float = TERM_GRACE_SECONDS,
) -> None:
    """Stop each process, its process group and all its descendants, in four steps:

    1. SIGINT to each root only: `dagster dev` then shuts its services down in order;
    2. SIGTERM to every descendant still running, not to the roots: a root that waits for
       its children (`dagster dev` does) then ends its own shutdown normally, instead of
       being cut short in the middle of it (click's "Aborted!");
    3. SIGTERM to the roots and process groups still running (1 s);
    4. SIGKILL to whatever is left (and to the groups, for children started meanwhile).
    Descendants are found once, before any signal, so that a child whose parent ends first
    is still known. All trees are stopped together: the whole takes at most
    `interrupt_grace` + `term_grace` + 2 s."""
    roots = [p for p in processes if p.poll() is None]
    tree = {p.pid for p in roots}
    for process in roots:
        tree |= descendants(process.pid)
    identity = identities(tree)
    groups = set()
    for pid in identity:
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(pid)
            if group != os.getpgrp():  # never signal our own group
                groups.add(group)
    root_pids = {p.pid for p in roots}
    _signal_all(set(), root_pids, signal.SIGINT)
    _wait_gone(roots, identity, interrupt_grace)
    _signal_all(set(), alive(identity) - root_pids, signal.SIGTERM)
    _wait_gone(roots, identity, term_grace)
    _signal_all(groups, alive(identity), signal.SIGTERM)
    _wait_gone(roots, identity, 1.0)
    _signal_all(groups, alive(identity), signal.SIGKILL)
    _wait_gone(roots, identity, 1.0)  # SIGKILL is delivered asynchronously
