"""What every warehouse backend offers the export code, and the errors it raises.

`export.py` and the Dagster assets only call `connect(holder=..., sources=...)` (a sandboxed
DuckDB connection whose current catalog holds the schemas below) and
`activation_lock(name, holder)` (one run per activation at a time). Two backends implement
them: the embedded DuckDB file (`file.Warehouse`) and DuckLake (`lake.LakeWarehouse`).
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import duckdb

if TYPE_CHECKING:
    from azexport_assets.config import SourceConfig

# Every schema the project writes to: materialized models and segments, delta state, sync logs.
# (The delta engine's `STATE_SCHEMA` and `LOG_SCHEMA`, spelled out: the delta package imports
# this one.)
WAREHOUSE_SCHEMAS = ("models", "segments", "azexport_state", "azexport_log")

DEFAULT_LOCK_TIMEOUT = 3600.0
# DuckDB's own default is 80% of RAM, which it fills with cached blocks of large tables; a run
# then holds gigabytes it does not need. Past the limit DuckDB spills to disk instead of failing.
DEFAULT_MEMORY_LIMIT = "512MB"
LOCK_TIMEOUT_ENV = "AZEXPORT_LOCK_TIMEOUT_SECONDS"
MEMORY_LIMIT_ENV = "AZEXPORT_DUCKDB_MEMORY_LIMIT"
# What DuckDB 1.5-2.0's memory_limit takes: a number and one of its units ('512MB', '2 GiB',
# '50%'), or no limit.
_MEMORY_UNITS = (
    "b|bytes?|k|kb|kib|kilobytes?|m|mb|mib|megabytes?|g|gb|gib|gigabytes?|t|tb|tib|terabytes?|%"
)
_MEMORY_SIZE = re.compile(rf"\s*(\d+(\.\d+)?\s*({_MEMORY_UNITS})|-1|none)\s*", re.IGNORECASE)


class WarehouseBusyError(RuntimeError):
    """The file warehouse stayed locked by another process for longer than the timeout."""


class ActivationBusyError(RuntimeError):
    """Another run of the same activation holds its lock for longer than the timeout."""


class WarehouseConfigError(ValueError):
    """The warehouse settings are incomplete or contradict each other."""


class SourceEncodingError(WarehouseConfigError):
    """A CSV source's file is not text in the source's encoding (UTF-8 unless it says)."""

    def __init__(self, source: str, location: str, file: str) -> None:
        self.detail = (
            f"{file} is not UTF-8 text; give the source its encoding: 'encoding: latin-1' "
            "(ISO-8859-1, what many European exports write) or 'encoding: utf-16'"
        )
        super().__init__(f"source '{source}' (csv: {location}): {self.detail}")


def lock_timeout_setting(given: float | None) -> float:
    """Seconds to wait for the warehouse or an activation's lock: `given` (the resource's
    field), else $AZEXPORT_LOCK_TIMEOUT_SECONDS, else the default; a value that is not a
    number of seconds is an error naming the variable (it failed as a bare ValueError)."""
    if given is not None:
        return given
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise WarehouseConfigError(
            f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds: set it to e.g. 600, or "
            f"unset it for the default ({DEFAULT_LOCK_TIMEOUT:.0f})"
        )
    return value


def memory_limit_setting(given: str | None) -> str:
    """DuckDB's memory limit: `given` (the resource's field), else
    $AZEXPORT_DUCKDB_MEMORY_LIMIT, else the default; one that is not a size is an error naming
    where it came from (DuckDB's own message names neither)."""
    value = given or os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT
    if not _MEMORY_SIZE.fullmatch(value):
        raise WarehouseConfigError(memory_limit_problem(value, given))
    return value


def set_memory_limit(con: duckdb.DuckDBPyConnection, value: str, given: str | None) -> None:
    """`SET memory_limit`; a size DuckDB refuses ('512 megs') is the same error as above."""
    try:
        con.execute("SET memory_limit = ?", [value])
    except duckdb.Error as error:
        detail = str(error).strip().splitlines()[0]
        raise WarehouseConfigError(memory_limit_problem(value, given, detail)) from None


def memory_limit_problem(value: str, given: str | None, detail: str = "") -> str:
    """The message for a memory limit DuckDB does not take (`detail`: DuckDB's words)."""
    where = "the warehouse resource's memory_limit" if given else MEMORY_LIMIT_ENV
    because = f" ({detail})" if detail else ""
    # DuckDB 1.5 (the lake's) takes no percentage in a database's configuration.
    examples = "512MB or 2GB" if "'%'" in detail else "512MB, 2GB or 50% (of the machine's memory)"
    return (
        f"{where}={value!r} is not a memory size DuckDB takes{because}: use a number and a "
        f"unit, e.g. {examples}"
    )


class ActivationLockLike(Protocol):
    """Held from a run's change set until its baseline commit (see `ActivationLock`)."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class WarehouseBackend(ABC):
    """A place for models, segments and delta state that many steps open one after another."""

    kind: ClassVar[str]
    project_root: Path

    @abstractmethod
    def connect(
        self,
        holder: str = "",
        sources: Mapping[str, SourceConfig] | None = None,
        scratch: Path | None = None,
    ) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A sandboxed connection with `sources` attached, closed when the block exits.
        `scratch` is the one folder it may write files to (an export's own folder)."""

    @abstractmethod
    def activation_lock(self, activation: str, holder: str = "") -> ActivationLockLike:
        """The lock that lets one run of `activation` at a time compute and export changes."""

    @abstractmethod
    def init(self) -> list[str]:
        """Create what the project needs (catalog, schemas); returns what was created."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and the CLI: which backend and where. Never holds a secret."""


def create_schemas(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Create the project's schemas that are missing in the current catalog; returns them.

    Looks first and creates only what is missing: on DuckLake even `CREATE SCHEMA IF NOT
    EXISTS` of a schema that another writer creates at the same time is a commit conflict.
    """
    existing = {
        row[0]
        for row in con.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = current_database()"
        ).fetchall()
    }
    missing = [name for name in WAREHOUSE_SCHEMAS if name not in existing]
    for name in missing:
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
    return missing


def quiet(con: duckdb.DuckDBPyConnection) -> None:
    """No progress bars: a step's output is the run log (and a CLI's output is read by
    scripts), not a terminal. Cursors of `con` inherit the setting."""
    con.execute("SET enable_progress_bar = false")
