"""The warehouse: where models, segments and delta state live, behind one small interface.

Two backends, chosen by configuration alone (`open_warehouse`):

- the DuckDB file (default): embedded, one writer at a time behind a file lock, one machine;
- DuckLake: catalog in Postgres, data in Azure Blob Storage or a shared folder; many writers
  on many machines, activation locks in Postgres.

See docs/deploy.md. Callers use `connect(holder=..., sources=...)` and
`activation_lock(name, holder)` only.
"""

from __future__ import annotations

import os
from pathlib import Path

from azexport_assets.warehouse.base import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MEMORY_LIMIT,
    WAREHOUSE_SCHEMAS,
    ActivationBusyError,
    SourceEncodingError,
    WarehouseBackend,
    WarehouseBusyError,
    WarehouseConfigError,
)
from azexport_assets.warehouse.confinement import (
    CONFINE_ENV,
    SourceOutsideProjectError,
    confine_sources,
    confinement_violation,
)
from azexport_assets.warehouse.file import (
    DEFAULT_WAREHOUSE,
    WAREHOUSE_ENV,
    ActivationLock,
    Warehouse,
    check_file_location,
    exclusive_lock,
    warehouse_path,
)
from azexport_assets.warehouse.lake import LakeWarehouse
from azexport_assets.warehouse.retries import (
    TransientLakeError,
    is_conflict,
    is_transient,
    reporting_retries,
    retry_on_conflict,
    retry_transient,
)
from azexport_assets.warehouse.settings import is_lake, lake_settings
from azexport_assets.warehouse.sources import (
    attach_source,
    attach_sources,
    resolve_path,
    source_encoding_error,
    source_files,
)


def open_warehouse(
    location: str | None = None,
    project_root: Path | None = None,
    lock_timeout: float | None = None,
    memory_limit: str | None = None,
    data_path: str | None = None,
    where: str = WAREHOUSE_ENV,
) -> WarehouseBackend:
    """The backend `location` names (default: $AZEXPORT_WAREHOUSE, else the DuckDB file).

    'ducklake:postgres:<conninfo>' opens a DuckLake (data path and the rest from the
    arguments or the environment, see `settings`); anything else is a DuckDB file path.
    """
    location = location or os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE
    if is_lake(location):
        settings = lake_settings(location, data_path, where=where)
        return LakeWarehouse(settings, project_root, lock_timeout, memory_limit)
    path = Path(location).expanduser()
    check_file_location(path, where)
    return Warehouse(path, project_root, lock_timeout, memory_limit)


__all__ = [
    "CONFINE_ENV",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_WAREHOUSE",
    "WAREHOUSE_ENV",
    "WAREHOUSE_SCHEMAS",
    "ActivationBusyError",
    "ActivationLock",
    "LakeWarehouse",
    "SourceOutsideProjectError",
    "TransientLakeError",
    "Warehouse",
    "WarehouseBackend",
    "WarehouseBusyError",
    "SourceEncodingError",
    "WarehouseConfigError",
    "attach_source",
    "attach_sources",
    "confine_sources",
    "confinement_violation",
    "exclusive_lock",
    "is_conflict",
    "is_transient",
    "open_warehouse",
    "reporting_retries",
    "resolve_path",
    "retry_on_conflict",
    "retry_transient",
    "source_encoding_error",
    "source_files",
    "warehouse_path",
]
