"""Dagster resources: the DuckDB warehouse and one Azure Blob Storage resource per destination.

Secrets are named by environment variable in YAML and passed as `dg.EnvVar`, so Dagster
resolves them only at run time and the UI shows the variable's name, never its value.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_azure.blob import (
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageSASTokenCredential,
)
from pydantic import Field

from azexport_assets.config import DestinationConfig, SecretRef
from azexport_assets.storage import ExportBlobStorage
from azexport_assets.warehouse import Warehouse, warehouse_path

WAREHOUSE_KEY = "warehouse"


class WarehouseResource(dg.ConfigurableResource):
    """The project's DuckDB warehouse (models, segments, delta baselines)."""

    path: str | None = Field(
        None, description="DuckDB file; default $AZEXPORT_WAREHOUSE or .azexport/warehouse.duckdb"
    )
    lock_timeout_seconds: float = Field(
        3600, description="How long a step waits for another run's hold on the warehouse."
    )

    def open(self, project_root: Path) -> Warehouse:
        return Warehouse(
            path=Path(self.path) if self.path else warehouse_path(),
            project_root=project_root,
            lock_timeout=self.lock_timeout_seconds,
        )


def destination_resource_key(destination: str) -> str:
    return f"azure_{destination}"


def _env(ref: SecretRef) -> dg.EnvVar:
    return dg.EnvVar(ref.env)


def destination_resource(destination: DestinationConfig) -> ExportBlobStorage:
    """dagster-azure's resource for one destination; secrets stay environment variables."""
    if destination.sas_token:
        credential = AzureBlobStorageSASTokenCredential(token=_env(destination.sas_token))
    elif destination.account_key:
        credential = AzureBlobStorageKeyCredential(key=_env(destination.account_key))
    else:
        credential = AzureBlobStorageDefaultCredential()
    url = destination.account_url
    return ExportBlobStorage(
        account_url=_env(url) if isinstance(url, SecretRef) else url,
        credential=credential,
        max_retries=destination.max_retries,
        retry_backoff_seconds=destination.retry_backoff_seconds,
        max_concurrency=destination.max_concurrency,
    )
