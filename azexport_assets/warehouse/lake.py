"""The DuckLake backend: many processes on many machines write one warehouse at once.

The catalog (tables, snapshots, small inlined changes) lives in Postgres, the data files in
Azure Blob Storage (`az://`, `abfss://`, through DuckDB's azure extension) or in a folder all
machines share. A step's connection is a sandboxed DuckDB whose main database is the lake, so
the project's SQL (`models.x`, `azexport_state.y`) runs unchanged (steps without sources share
one per process, see `connect`). The first connection of a process runs `init()` (creates the
catalog, checks the data path, creates the schemas).

There is no warehouse-wide lock: DuckLake checks at commit whether two writers collided, and
the callers re-run a transaction that conflicted (`retries.retry_on_conflict`). Writers of
different activations never collide: each activation has its own state tables. The
activation lock is a Postgres advisory lock (`pglock`), valid across machines.

A transient fault of the catalog or of the data's storage makes the connection unusable: the
shared DuckDB is then forgotten (the next step opens a new one) and the caller runs its unit
of work again (`retries.retry_transient`); opening the lake retries such faults itself.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from azexport_assets.sandbox import lock_down, process_scratch
from azexport_assets.sql_text import quote_literal
from azexport_assets.warehouse.base import (
    WarehouseBackend,
    WarehouseConfigError,
    create_schemas,
    lock_timeout_setting,
    memory_limit_problem,
    memory_limit_setting,
    quiet,
)
from azexport_assets.warehouse.extensions import install_extensions
from azexport_assets.warehouse.pglock import PostgresActivationLock
from azexport_assets.warehouse.retries import (
    TRANSIENT_ATTEMPTS,
    TRANSIENT_FIRST_DELAY,
    TransientLakeError,
    describe_error,
    is_transient,
    report_retry,
    retry_on_conflict,
)
from azexport_assets.warehouse.settings import (
    AZURE_CONNECTION_STRING_ENV,
    LakeSettings,
    without_secrets,
)

if TYPE_CHECKING:
    from azexport_assets.config import SourceConfig

CATALOG = "lake"

# A catalog created by two processes at once: the loser sees Postgres's duplicate errors.
_FIRST_ATTACH_RACES = ("already exists", "duplicate key", "conflict", "could not serialize")
_ATTACH_ATTEMPTS = 5

# Lakes this process has prepared (catalog created, data path checked, schemas there).
_prepared: set[tuple[str, str]] = set()

# The sandboxed DuckDB per lake that steps without sources share (see `connect`).
_shared: dict[tuple, duckdb.DuckDBPyConnection] = {}
_shared_guard = threading.Lock()
_openings = itertools.count(1)


class LakeConnectError(RuntimeError):
    """The lake could not be opened (catalog unreachable, data path refused, ...)."""


class LakeUnreachableError(LakeConnectError, TransientLakeError):
    """The lake could not be opened because of a fault that may pass (retried by callers)."""


class LakeWarehouse(WarehouseBackend):
    """Opens the DuckLake for a step: no file lock, a sandboxed connection per step."""

    kind = "ducklake"

    def __init__(
        self,
        settings: LakeSettings,
        project_root: Path | None = None,
        lock_timeout: float | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.settings = settings
        self.project_root = project_root or Path.cwd()
        self.lock_timeout = lock_timeout_setting(lock_timeout)
        self._memory_limit_given = memory_limit
        self.memory_limit = memory_limit_setting(memory_limit)

    def describe(self) -> str:
        return self.settings.describe()

    def activation_lock(self, activation: str, holder: str = "") -> PostgresActivationLock:
        return PostgresActivationLock(
            self.settings.conninfo, self.settings.namespace, activation, self.lock_timeout, holder
        )

    # -- opening

    def _extensions(self) -> list[str]:
        return ["postgres_scanner", "ducklake"] + (["azure"] if self.settings.remote else [])

    def _secrets(self) -> list[str]:
        """Values that must never appear in a message (inline passwords are redacted too)."""
        value = os.environ.get(AZURE_CONNECTION_STRING_ENV)
        return [value] if value else []

    def _clean(self, error: BaseException) -> str:
        return without_secrets(str(error), self._secrets())

    def _azure_secret(self, con: duckdb.DuckDBPyConnection) -> None:
        connection_string = os.environ.get(AZURE_CONNECTION_STRING_ENV)
        if connection_string:
            options = f"CONNECTION_STRING {quote_literal(connection_string)}"
        elif self.settings.azure_account:
            options = (
                "PROVIDER credential_chain, "
                f"ACCOUNT_NAME {quote_literal(self.settings.azure_account)}"
            )
        else:
            raise LakeConnectError(
                f"the lake's data path {self.settings.data_path} is in Azure, but no credential "
                f"is set: set {AZURE_CONNECTION_STRING_ENV}, or AZEXPORT_LAKE_AZURE_ACCOUNT to "
                "use the machine's Azure identity (managed identity, az login, environment)"
            )
        # A temporary secret: it lives in this in-memory DuckDB only, never on disk.
        con.execute("LOAD azure")
        con.execute(f"CREATE TEMPORARY SECRET azexport_lake_data (TYPE azure, {options})")

    def _config(self) -> dict[str, str]:
        config = {
            "extension_directory": str(install_extensions(self._extensions())),
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "true",  # ducklake and postgres_scanner, by name
            # Spill files of this process only (DuckDB grants its own temp folder to itself).
            "temp_directory": str(process_scratch() / "duckdb-spill"),
        }
        if self.memory_limit:
            config["memory_limit"] = self.memory_limit
        return config

    def _with_retries(
        self, open_once: Callable[[], duckdb.DuckDBPyConnection]
    ) -> duckdb.DuckDBPyConnection:
        """Open, again if Postgres reports a race of two first openings or a transient fault
        (a dropped or refused catalog connection, the data's storage unreachable): bounded."""
        race_delay = 0.1
        delay = TRANSIENT_FIRST_DELAY
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                return open_once()
            except duckdb.Error as error:
                text = str(error).lower()
                if attempt < _ATTACH_ATTEMPTS and any(m in text for m in _FIRST_ATTACH_RACES):
                    time.sleep(race_delay)
                    race_delay *= 2
                    continue
                if self.memory_limit and _refuses_memory_limit(error):
                    detail = str(error).strip().splitlines()[0]
                    raise WarehouseConfigError(
                        memory_limit_problem(self.memory_limit, self._memory_limit_given, detail)
                    ) from None
                message = f"cannot open the lake ({self.describe()}): {self._clean(error)}"
                if not is_transient(error):
                    raise LakeConnectError(message) from None
                if attempt == TRANSIENT_ATTEMPTS:
                    raise LakeUnreachableError(message) from None
                report_retry(
                    f"opening the lake: transient fault ({self._clean(describe_error(error))}); "
                    f"retrying (attempt {attempt + 1} of {TRANSIENT_ATTEMPTS}) in {delay:.1f}s"
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _attach_once(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB with the lake ATTACHed under `CATALOG`, with its data path (this is what
        creates the catalog tables in Postgres the first time, and checks the path after)."""
        con = duckdb.connect(config=self._config())
        try:
            quiet(con)
            if self.settings.remote:
                self._azure_secret(con)
            target = quote_literal(f"ducklake:postgres:{self.settings.conninfo}")
            data_path = quote_literal(self.settings.data_path)
            con.execute(f"ATTACH {target} AS {CATALOG} (DATA_PATH {data_path})")
            con.execute(f"USE {CATALOG}")
        except BaseException:
            con.close()
            raise
        return con

    def _open_once(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB whose main database *is* the lake: every cursor of it (the export writes
        through cursors) sees `models`, `segments` and `azexport_state` unqualified, which
        `USE` cannot promise since it is a setting of one connection only.

        DuckDB hands out one instance per database path within a process; a distinct
        `application_name` per opening gives each its own (and names it in pg_stat_activity).
        """
        name = f"azexport-{os.getpid()}-{next(_openings)}"
        conninfo = self.settings.conninfo
        if "://" in conninfo:  # a URI: a query parameter
            conninfo += ("&" if "?" in conninfo else "?") + f"application_name={name}"
        else:
            conninfo += f" application_name={name}"
        con = duckdb.connect(f"ducklake:postgres:{conninfo}", config=self._config())
        try:
            quiet(con)
            if self.settings.remote:
                self._azure_secret(con)
        except BaseException:
            con.close()
            raise
        return con

    def _prepare(self) -> None:
        """Once per process: the catalog exists, its data path is ours, the schemas exist."""
        key = (self.settings.conninfo, self.settings.data_path)
        if key not in _prepared:
            self.init()
            _prepared.add(key)

    def _ensure_schemas(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        def create() -> list[str]:
            con.execute("BEGIN TRANSACTION")
            try:
                created = create_schemas(con)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
            return created

        # A conflict means another process created them meanwhile: the next try finds them.
        return retry_on_conflict(create)

    def _sandbox_directories(self, scratch: Path | None) -> list[str | Path]:
        # The lake's data, and the one folder the step writes export files to (if any).
        return [self.settings.data_path, *([scratch] if scratch else [])]

    def init(self) -> list[str]:
        """Create the catalog (on its first opening) and the project's schemas; idempotent.

        The lake's data path is fixed when the catalog is created: a different
        AZEXPORT_LAKE_DATA_PATH later is refused here rather than writing files elsewhere.
        """
        if not self.settings.remote:
            Path(self.settings.data_path).mkdir(parents=True, exist_ok=True)
        con = self._with_retries(self._attach_once)
        try:
            return self._ensure_schemas(con)
        finally:
            con.close()

    @contextmanager
    def connect(
        self,
        holder: str = "",
        sources: Mapping[str, SourceConfig] | None = None,
        scratch: Path | None = None,
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A sandboxed connection to the lake with `sources` attached.

        Steps without sources (delta, export, commit) share one sandboxed DuckDB per process
        and get a cursor of it: loading the extensions into a new DuckDB costs about half a
        second. Steps with sources get a DuckDB of their own, closed at the end, so that a
        source file is attached (and locked) only while the step runs.
        """
        self._prepare()
        shared_folder = process_scratch()
        if sources or (scratch is not None and not scratch.is_relative_to(shared_folder)):
            con = self._sandboxed(sources, scratch)
            try:
                yield con
            finally:
                con.close()
            return
        shared = self._shared()
        cursor = shared.cursor()
        try:
            yield cursor
        except duckdb.Error as error:
            broken = (duckdb.IOException, duckdb.ConnectionException, duckdb.FatalException)
            if isinstance(error, broken) or is_transient(error):
                self._forget_shared()  # a broken catalog connection: start afresh next time
            raise
        finally:
            cursor.close()

    def _sandboxed(
        self, sources: Mapping[str, SourceConfig] | None, scratch: Path | None
    ) -> duckdb.DuckDBPyConnection:
        from azexport_assets.warehouse.sources import attach_sources

        con = self._with_retries(self._open_once)
        try:
            files = attach_sources(con, sources or {}, self.project_root)
            # From here on the connection runs user SQL: sandbox it (docs/security.md).
            lock_down(con, files=files, directories=self._sandbox_directories(scratch))
        except BaseException:
            con.close()
            raise
        return con

    def _shared_key(self) -> tuple:
        # The process id: a forked child must not use its parent's DuckDB.
        return (os.getpid(), self.settings, self.memory_limit, str(process_scratch()))

    def _shared(self) -> duckdb.DuckDBPyConnection:
        key = self._shared_key()
        with _shared_guard:
            con = _shared.get(key)
            if con is None:
                # Exports of this process write below its scratch folder: that is all it gets.
                con = self._sandboxed(None, process_scratch())
                _shared[key] = con
            return con

    def _forget_shared(self) -> None:
        with _shared_guard:
            con = _shared.pop(self._shared_key(), None)
        if con is not None:
            with contextlib.suppress(duckdb.Error):
                con.close()

    # -- maintenance

    def maintain(self, older_than_days: float = 7.0) -> dict[str, int]:
        """Merge small data files, expire snapshots older than `older_than_days`, delete the
        files no snapshot needs any more. Safe while runs write (see docs/deploy.md)."""
        con = self._with_retries(self._attach_once)
        try:
            catalog = quote_literal(CATALOG)
            cutoff = f"now() - INTERVAL {float(older_than_days) * 86400:.0f} SECOND"
            merged = con.execute(f"CALL ducklake_merge_adjacent_files({catalog})")
            merged_rows = len(merged.fetchall())
            expired = con.execute(
                f"CALL ducklake_expire_snapshots({catalog}, older_than => {cutoff})"
            ).fetchall()
            cleaned = con.execute(
                f"CALL ducklake_cleanup_old_files({catalog}, older_than => {cutoff})"
            ).fetchall()
            return {
                "merged_files": merged_rows,
                "expired_snapshots": len(expired),
                "deleted_files": len(cleaned),
            }
        finally:
            con.close()


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    # A failed COMMIT has ended the transaction already; ROLLBACK then has nothing to do.
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _refuses_memory_limit(error: duckdb.Error) -> bool:
    """DuckDB refused the memory limit given in the database's configuration (DuckDB 1.5
    takes no percentage there: "Unknown unit for memory: '%'")."""
    text = str(error).lower()
    return isinstance(error, (duckdb.ParserException, duckdb.InvalidInputException)) and (
        "for memory" in text or "memory limit" in text or "percentage" in text
    )
