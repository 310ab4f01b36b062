"""The one place that opens, locks and closes the DuckDB warehouse.

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
import glob
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import duckdb

from azexport_assets.config import SourceConfig
from azexport_assets.sandbox import export_temp_root, lock_down
from azexport_assets.sql_text import quote_ident, quote_literal

DEFAULT_WAREHOUSE = ".azexport/warehouse.duckdb"
WAREHOUSE_ENV = "AZEXPORT_WAREHOUSE"


class WarehouseBusyError(RuntimeError):
    pass


def warehouse_path() -> Path:
    """The warehouse file: $AZEXPORT_WAREHOUSE, default .azexport/warehouse.duckdb (cwd)."""
    return Path(os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE).expanduser()


@contextmanager
def exclusive_lock(lock_path: Path, timeout: float, holder: str = "") -> Iterator[None]:
    """Hold an exclusive flock on lock_path, waiting up to `timeout` seconds."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    current = handle.read().strip() or "another process"
                    raise WarehouseBusyError(
                        f"the warehouse {lock_path.with_suffix('')} stayed locked by {current} "
                        f"for {timeout:.0f}s; wait for that run to finish or raise "
                        "AZEXPORT_LOCK_TIMEOUT_SECONDS"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            # Record who holds it, for the message another waiter may print.
            handle.seek(0)
            handle.truncate()
            handle.write(f"{holder or 'pid'} (pid {os.getpid()})")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def resolve_path(location: str, base: Path) -> str:
    """Expand ~ and $VARS; relative paths are relative to the project root."""
    expanded = os.path.expanduser(os.path.expandvars(location))
    return expanded if os.path.isabs(expanded) else str(base / expanded)


def source_files(source: SourceConfig, base: Path) -> list[str]:
    """The files a Parquet/CSV source's glob matches now, sorted (`**` recurses)."""
    pattern = resolve_path(source.location, base)
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))


def attach_source(
    con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig, base: Path
) -> list[str]:
    """Make one source visible under its name: a DuckDB file read-only, a glob as a temp view
    over the files it matches now. Returns the files the sandbox must keep readable."""
    location = resolve_path(source.location, base)
    if source.kind == "duckdb":
        con.execute(f"ATTACH {quote_literal(location)} AS {quote_ident(name)} (READ_ONLY)")
        return [location]
    # The view lists the files rather than the glob: the sandbox grants exactly these files,
    # and a glob would need the whole folder. No match: keep the glob for DuckDB's own error.
    files = source_files(source, base)
    listed = f"[{', '.join(quote_literal(f) for f in files)}]" if files else quote_literal(location)
    reader = "read_parquet" if source.kind == "parquet" else "read_csv"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS SELECT * FROM {reader}({listed})"
    )
    return files


def attach_sources(
    con: duckdb.DuckDBPyConnection, sources: Mapping[str, SourceConfig], base: Path
) -> list[str]:
    """Attach every source (see `attach_source`); returns the files they read."""
    files: list[str] = []
    for name, source in sources.items():
        files += attach_source(con, name, source, base)
    return files


class Warehouse:
    """Opens the warehouse under the lock, attaching the sources a step needs."""

    def __init__(
        self,
        path: Path | None = None,
        project_root: Path | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        self.path = Path(path) if path else warehouse_path()
        self.project_root = project_root or Path.cwd()
        self.lock_timeout = (
            lock_timeout
            if lock_timeout is not None
            else float(os.environ.get("AZEXPORT_LOCK_TIMEOUT_SECONDS", "3600"))
        )

    @contextmanager
    def connect(
        self, holder: str = "", sources: Mapping[str, SourceConfig] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(
            self.path.with_name(self.path.name + ".lock"), self.lock_timeout, holder
        ):
            con = duckdb.connect(str(self.path))
            try:
                memory_limit = os.environ.get("AZEXPORT_DUCKDB_MEMORY_LIMIT")
                if memory_limit:
                    # Past the limit DuckDB spills to <warehouse>.tmp/ instead of failing.
                    con.execute("SET memory_limit = ?", [memory_limit])
                files = attach_sources(con, sources or {}, self.project_root)
                # From here on the connection runs user SQL: sandbox it (docs/security.md).
                lock_down(con, files=files, directories=[export_temp_root()])
                yield con
            finally:
                con.close()
