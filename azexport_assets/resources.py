"""Dagster resources: the warehouse and one Azure Blob Storage resource per destination.

The resources are thin: each builds the plain object the export code uses (`Warehouse`,
`BlobStorage`) from its configuration. Secrets are named by environment variable in YAML; a
destination's resource keeps the names and reads the values only when a step opens it, so the
UI shows the variables' names, never their values, and an unset variable fails that step with
one line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import dagster as dg
from dagster_azure.blob import (
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageResource,
    AzureBlobStorageSASTokenCredential,
)
from pydantic import Field

from azexport_assets.config import DestinationConfig, unset_variables_message
from azexport_assets.storage import BlobStorage, ExportContainerClient
from azexport_assets.storage.resource import MiB
from azexport_assets.warehouse import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_WAREHOUSE,
    WAREHOUSE_ENV,
    WarehouseBackend,
    open_warehouse,
)

WAREHOUSE_KEY = "warehouse"


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


class WarehouseResource(dg.ConfigurableResource):
    """The project's warehouse (models, segments, delta baselines): a DuckDB file or a DuckLake.

    Leave the fields unset to take everything from the environment (`AZEXPORT_WAREHOUSE`,
    `AZEXPORT_LAKE_DATA_PATH`, ...); see docs/deploy.md. Secrets (the catalog's password, the
    lake storage's credential) are read from environment variables only.
    """

    path: str | None = Field(
        None,
        description=(
            "A DuckDB file, or 'ducklake:postgres:<libpq conninfo>' for a DuckLake whose catalog "
            "is in Postgres (password in PGPASSWORD). Default $AZEXPORT_WAREHOUSE, else "
            f"{DEFAULT_WAREHOUSE}."
        ),
    )
    lake_data_path: str | None = Field(
        None,
        description=(
            "DuckLake only: where the data files go (az://<container>/<prefix>/, abfss://..., "
            "or a folder every machine shares). Default $AZEXPORT_LAKE_DATA_PATH."
        ),
    )
    lock_timeout_seconds: float | None = Field(
        None,
        description=(
            "How long a step waits for another run's hold on the warehouse file or on an "
            f"activation; default $AZEXPORT_LOCK_TIMEOUT_SECONDS or {DEFAULT_LOCK_TIMEOUT:.0f}."
        ),
    )
    memory_limit: str | None = Field(
        None,
        description=(
            "DuckDB memory_limit (e.g. '2GB'); past it DuckDB spills to disk. Default "
            f"$AZEXPORT_DUCKDB_MEMORY_LIMIT, else {DEFAULT_MEMORY_LIMIT}."
        ),
    )

    def open(self, project_root: Path) -> WarehouseBackend:
        return open_warehouse(
            location=self.path,
            project_root=project_root,
            lock_timeout=self.lock_timeout_seconds
            if self.lock_timeout_seconds is not None
            else _env_float("AZEXPORT_LOCK_TIMEOUT_SECONDS", DEFAULT_LOCK_TIMEOUT),
            memory_limit=self.memory_limit or os.environ.get("AZEXPORT_DUCKDB_MEMORY_LIMIT"),
            data_path=self.lake_data_path,
            where="the warehouse resource's 'path'" if self.path else WAREHOUSE_ENV,
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


def unset_variables(destination: str, names: list[str]) -> dg.Failure | None:
    """The step failure for a destination whose variables are not all set (an empty value
    counts as unset): one line naming the variables and the destination, never a value."""
    unset = [name for name in names if not os.environ.get(name)]
    if not unset:
        return None
    return dg.Failure(unset_variables_message(destination, unset), allow_retries=False)


class DestinationStorage(dg.ConfigurableResource):
    """One destination of a defs.yaml: its account, its credential and transfer settings.

    The account URL (when given as `{env: VAR}`) and the secret are named by environment
    variable and read when a step opens the destination, not when Dagster resolves the run's
    configuration: a variable that is not set fails that step with one line naming it and the
    destination (`dg.EnvVar` would stop the launch with a configuration-error traceback). The
    UI shows the variables' names, never their values.
    """

    destination: str = Field(description="The destination's name in defs.yaml.")
    account_url: str | None = Field(
        None, description="The account URL, when defs.yaml gives it literally."
    )
    account_url_env: str | None = Field(
        None, description="The environment variable holding the account URL, read at run time."
    )
    credential_type: Literal["sas_token", "account_key", "default_azure_credential"] = Field(
        description="How the run authenticates."
    )
    secret_env: str | None = Field(
        None,
        description="The environment variable holding the SAS token or account key, read at "
        "run time.",
    )
    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries per request for timeouts, resets, 5xx and 429."
    )
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles per retry, capped at 30 s."
    )
    max_concurrency: int = Field(
        default=4, ge=1, le=10, description="Parallel block uploads per export (connections)."
    )

    @property
    def environment_variables(self) -> list[str]:
        return [v for v in (self.account_url_env, self.secret_env) if v]

    def storage(self) -> ExportBlobStorage:
        """The destination with its variables read now; a dg.Failure naming any unset one."""
        unset = unset_variables(self.destination, self.environment_variables)
        if unset:
            raise unset
        url = os.environ[self.account_url_env] if self.account_url_env else self.account_url
        secret = os.environ[self.secret_env] if self.secret_env else ""
        if self.credential_type == "sas_token":
            credential = AzureBlobStorageSASTokenCredential(token=secret)
        elif self.credential_type == "account_key":
            credential = AzureBlobStorageKeyCredential(key=secret)
        else:
            credential = AzureBlobStorageDefaultCredential()
        return ExportBlobStorage(
            account_url=url or "",
            credential=credential,
            max_retries=self.max_retries,
            retry_backoff_seconds=self.retry_backoff_seconds,
            max_concurrency=self.max_concurrency,
        )

    def client(self) -> BlobStorage:
        return self.storage().client()


def destination_resource(name: str, destination: DestinationConfig) -> DestinationStorage:
    """The resource of one destination; its variables are read when a step opens it."""
    return DestinationStorage(
        destination=name,
        account_url=destination.account_url if isinstance(destination.account_url, str) else None,
        account_url_env=destination.account_url_env,
        credential_type=destination.credential_kind,
        secret_env=destination.secret_env,
        max_retries=destination.max_retries,
        retry_backoff_seconds=destination.retry_backoff_seconds,
        max_concurrency=destination.max_concurrency,
    )
