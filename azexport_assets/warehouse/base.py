"""What every warehouse backend offers the export code, and the errors it raises.

`export.py` and the Dagster assets only call `connect(holder=..., sources=...)` (a sandboxed
DuckDB connection whose current catalog holds the schemas below) and
`activation_lock(name, holder)` (one run per activation at a time). Two backends implement
them: the embedded DuckDB file (`file.Warehouse`) and DuckLake (`lake.LakeWarehouse`).
"""

from __future__ import annotations

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


class WarehouseBusyError(RuntimeError):
    """The file warehouse stayed locked by another process for longer than the timeout."""


class ActivationBusyError(RuntimeError):
    """Another run of the same activation holds its lock for longer than the timeout."""


class WarehouseConfigError(ValueError):
    """The warehouse settings are incomplete or contradict each other."""


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
