"""The file backend: one embedded DuckDB file, opened under a file lock (the default).

DuckDB allows one writing process per database file, and Dagster's default executor runs
every step in its own process. So every access goes through `Warehouse.connect()`, which
takes an exclusive advisory lock (`<warehouse>.lock`, `fcntl.flock`) before opening the file
and releases it after closing. Concurrent runs therefore queue for the warehouse instead of
failing with "Could not set lock on file". Steps keep the lock only while they use DuckDB:
uploads to Azure happen outside it.

Every connection is sandboxed once the sources are attached (`sandbox.lock_down`): it reads
only the declared source files and the warehouse, writes only under the export temp root, and
its settings are locked. Set any DuckDB option here, before the lock, never afterwards.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, ClassVar

import duckdb

from azexport_assets.sandbox import lock_down
from azexport_assets.warehouse.base import (
    ActivationBusyError,
    WarehouseBackend,
    WarehouseBusyError,
    WarehouseConfigError,
    create_schemas,
    lock_timeout_setting,
    memory_limit_setting,
    quiet,
    set_memory_limit,
)
from azexport_assets.warehouse.sources import attach_sources

if TYPE_CHECKING:  # the configuration layer may depend on Dagster; the warehouse does not
    from azexport_assets.config import SourceConfig

DEFAULT_WAREHOUSE = ".azexport/warehouse.duckdb"
WAREHOUSE_ENV = "AZEXPORT_WAREHOUSE"


def warehouse_path() -> Path:
    """The warehouse file: $AZEXPORT_WAREHOUSE, default .azexport/warehouse.duckdb (cwd)."""
    return Path(os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE).expanduser()


def check_file_location(path: Path, where: str) -> None:
    """WarehouseConfigError, naming `where` (the variable or the resource field), when the
    warehouse file cannot be opened at `path`: a folder, under a file, or in a folder this
    user may not write (the file and its `.lock` beside it are created there). Nothing is
    created here."""
    folder = path.parent if str(path.parent) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if path.is_dir():
        problem = f"it is a folder; name a file in it, e.g. {path / 'warehouse.duckdb'}"
    elif not existing.is_dir():
        problem = f"{existing} is a file, not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = f"{existing} is not writable by this user"
    else:
        return
    raise WarehouseConfigError(
        f"{where}={str(path)!r}: the warehouse file cannot be opened there ({problem}): set it "
        "to a file in a folder this user may write"
    )


def _wait_for_flock(handle: IO[str], timeout: float) -> bool:
    """Take an exclusive flock on an open file, waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _current_holder(handle: IO[str]) -> str:
    handle.seek(0)
    return handle.read().strip() or "another process"


def _record_holder(handle: IO[str], holder: str) -> None:
    # Who holds it, for the message another waiter may print.
    handle.seek(0)
    handle.truncate()
    handle.write(f"{holder or 'pid'} (pid {os.getpid()})")
    handle.flush()


@contextmanager
def exclusive_lock(lock_path: Path, timeout: float, holder: str = "") -> Iterator[None]:
    """Hold an exclusive flock on lock_path, waiting up to `timeout` seconds."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        if not _wait_for_flock(handle, timeout):
            raise WarehouseBusyError(
                f"the warehouse {lock_path.with_suffix('')} stayed locked by "
                f"{_current_holder(handle)} for {timeout:.0f}s; wait for that run to finish or "
                "raise AZEXPORT_LOCK_TIMEOUT_SECONDS"
            )
        try:
            _record_holder(handle, holder)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ActivationLock:
    """One run of an activation at a time, from its change set until the baseline commit.

    Held across the delta and export steps of a run (they run in one process), so a second
    run of the same activation waits before it computes a change set and no change is exported
    twice. A flock: the kernel releases it when the process ends, even on SIGKILL.
    """

    # Locks this process holds: lock file -> (open handle, holder). A run that failed between
    # its delta and its export leaves its entry; the next run in this process replaces it.
    _held: ClassVar[dict[str, tuple[IO[str], str]]] = {}

    def __init__(self, path: Path, timeout: float, holder: str) -> None:
        self.path = path
        self.timeout = timeout
        self.holder = holder

    def acquire(self) -> None:
        key = str(self.path)
        held = self._held.get(key)
        if held is not None:
            if held[1] == self.holder:
                return  # this run already holds it (its delta step took it)
            self._release(key)  # an earlier run of this process that did not finish
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lock is held
        if not _wait_for_flock(handle, self.timeout):
            running = _current_holder(handle)
            handle.close()
            raise ActivationBusyError(
                f"another run of this activation ({running}) is still exporting; waited "
                f"{self.timeout:.0f}s. Let it finish (or stop it) and run again; nothing was "
                "exported by this run"
            )
        _record_holder(handle, self.holder)
        self._held[key] = (handle, self.holder)

    def release(self) -> None:
        held = self._held.get(str(self.path))
        if held is not None and held[1] == self.holder:
            self._release(str(self.path))

    @classmethod
    def _release(cls, key: str) -> None:
        handle, _ = cls._held.pop(key)
        try:
            fcntl.flock(handle, fcntl.LOCK_UN)
        finally:
            handle.close()


class Warehouse(WarehouseBackend):
    """Opens the warehouse file under the lock, attaching the sources a step needs."""

    kind = "file"

    def __init__(
        self,
        path: Path | None = None,
        project_root: Path | None = None,
        lock_timeout: float | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.path = Path(path) if path else warehouse_path()
        self.project_root = project_root or Path.cwd()
        self.lock_timeout = lock_timeout_setting(lock_timeout)
        self._memory_limit_given = memory_limit
        self.memory_limit = memory_limit_setting(memory_limit)

    def activation_lock(self, activation: str, holder: str = "") -> ActivationLock:
        """The lock that lets one run of `activation` at a time compute and export changes."""
        return ActivationLock(
            self.path.with_name(f"{self.path.name}.{activation}.activation.lock"),
            self.lock_timeout,
            holder,
        )

    @contextmanager
    def connect(
        self,
        holder: str = "",
        sources: Mapping[str, SourceConfig] | None = None,
        scratch: Path | None = None,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise WarehouseConfigError(
                f"the warehouse file {self.path}: its folder cannot be created "
                f"({error.strerror}): set {WAREHOUSE_ENV} to a file in a folder this user may write"
            ) from None
        with exclusive_lock(
            self.path.with_name(self.path.name + ".lock"), self.lock_timeout, holder
        ):
            con = duckdb.connect(str(self.path))
            try:
                quiet(con)
                if self.memory_limit:
                    # Past the limit DuckDB spills to <warehouse>.tmp/ instead of failing.
                    set_memory_limit(con, self.memory_limit, self._memory_limit_given)
                files = attach_sources(con, sources or {}, self.project_root)
                # From here on the connection runs user SQL: sandbox it (docs/security.md).
                # Only the step's own export folder is writable: not the temp root, where
                # other runs' export files are (docs/security.md).
                lock_down(con, files=files, directories=[scratch] if scratch else [])
                yield con
            finally:
                con.close()

    def init(self) -> list[str]:
        """Create the file and the project's schemas (each step would create them anyway)."""
        with self.connect(holder="init") as con:
            return create_schemas(con)

    def describe(self) -> str:
        return f"DuckDB file {self.path}"
