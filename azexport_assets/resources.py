"""Dagster resources: the DuckDB warehouse and one Azure Blob Storage resource per destination.

The resources are thin: each builds the plain object the export code uses (`Warehouse`,
`BlobStorage`) from its configuration. Secrets are named by environment variable in YAML and
passed as `dg.EnvVar`, so Dagster resolves them only at run time and the UI shows the
variable's name, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_azure.blob import (
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageResource,
    AzureBlobStorageSASTokenCredential,
)
from pydantic import Field

from azexport_assets.config import DestinationConfig, SecretRef
from azexport_assets.storage import BlobStorage, ExportContainerClient
from azexport_assets.storage.resource import MiB
from azexport_assets.warehouse import DEFAULT_LOCK_TIMEOUT, Warehouse, warehouse_path

WAREHOUSE_KEY = "warehouse"


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


class WarehouseResource(dg.ConfigurableResource):
    """The project's DuckDB warehouse (models, segments, delta baselines)."""

    path: str | None = Field(
        None, description="DuckDB file; default $AZEXPORT_WAREHOUSE or .azexport/warehouse.duckdb"
    )
    lock_timeout_seconds: float | None = Field(
        None,
        description=(
            "How long a step waits for another run's hold on the warehouse; default "
            f"$AZEXPORT_LOCK_TIMEOUT_SECONDS or {DEFAULT_LOCK_TIMEOUT:.0f}."
        ),
    )
    memory_limit: str | None = Field(
        None,
        description=(
            "DuckDB memory_limit (e.g. '2GB'); past it DuckDB spills to disk. Default "
            "$AZEXPORT_DUCKDB_MEMORY_LIMIT, else DuckDB's own (80% of RAM)."
        ),
    )

    def open(self, project_root: Path) -> Warehouse:
        return Warehouse(
            path=Path(self.path) if self.path else warehouse_path(),
            project_root=project_root,
            lock_timeout=self.lock_timeout_seconds
            if self.lock_timeout_seconds is not None
            else _env_float("AZEXPORT_LOCK_TIMEOUT_SECONDS", DEFAULT_LOCK_TIMEOUT),
            memory_limit=self.memory_limit or os.environ.get("AZEXPORT_DUCKDB_MEMORY_LIMIT"),
        )


class ExportBlobStorage(AzureBlobStorageResource):
    """dagster-azure's blob resource plus the retry and transfer settings of an export.

    `client()` gives the plain `BlobStorage` the export code uses; `container(name)` opens a
    client for one container (closed when the block exits).
    """

    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries per request for timeouts, resets, 5xx and 429."
    )
    retry_backoff_seconds: float = Field(
        default=1.0,
        ge=0,
        description="First retry delay; doubles per retry, with jitter, capped at 30 seconds.",
    )
    max_backoff_seconds: float = Field(
        default=30.0, gt=0, description="Upper bound of one retry delay."
    )
    max_concurrency: int = Field(
        default=4, ge=1, le=10, description="Parallel block uploads per export (connections)."
    )
    block_size: int = Field(
        default=8 * MiB,
        ge=64 * 1024,
        le=4000 * MiB,
        description="Size of one staged block for files above single_put_threshold.",
    )
    single_put_threshold: int = Field(
        default=8 * MiB,
        ge=0,
        le=5000 * MiB,
        description="Files up to this size are uploaded in one request (still atomic).",
    )
    verify_blocks: bool = Field(
        default=True,
        description="Send a Content-MD5 with every block so the service verifies it on arrival.",
    )
    connection_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Client-side timeout to open a connection."
    )
    read_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Client-side timeout waiting for the service to answer."
    )

    def client(self) -> BlobStorage:
        credential = self.credential
        if isinstance(credential, AzureBlobStorageSASTokenCredential):
            kind, secret = "sas", credential.token
        elif isinstance(credential, AzureBlobStorageKeyCredential):
            kind, secret = "key", credential.key
        else:
            kind, secret = "default", None
        return BlobStorage(
            account_url=self.account_url,
            credential_type=kind,
            secret=secret,
            max_retries=self.max_retries,
            retry_backoff_seconds=self.retry_backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            max_concurrency=self.max_concurrency,
            block_size=self.block_size,
            single_put_threshold=self.single_put_threshold,
            verify_blocks=self.verify_blocks,
            connection_timeout_seconds=self.connection_timeout_seconds,
            read_timeout_seconds=self.read_timeout_seconds,
        )

    @contextmanager
    def container(self, name: str) -> Iterator[ExportContainerClient]:
        with self.client().container(name) as client:
            yield client


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
