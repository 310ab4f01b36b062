"""Dagster resources: the warehouse and one Azure Blob Storage resource per destination.

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
from typing import Any, Literal, Union

import dagster as dg
from dagster_azure.blob import (
    AzureBlobStorageAnonymousCredential,
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageResource,
    AzureBlobStorageSASTokenCredential,
)
from pydantic import Field

from azexport_assets.config import DestinationConfig, SecretRef
from azexport_assets.storage import BlobStorage, ExportContainerClient
from azexport_assets.storage.resource import MiB, ServicePrincipal
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


class ConnectionStringCredential(dg.Resolvable, dg.Config):
    """A storage connection string (with AccountKey or SharedAccessSignature); it also names
    the account's endpoint, so the resource's account_url stays empty."""

    credential_type: Literal["connection_string"] = "connection_string"
    connection_string: str


class ContainerSasUrlCredential(dg.Resolvable, dg.Config):
    """A container SAS URL (https://<account>.blob.core.windows.net/<container>?<SAS>); it also
    names the endpoint, so the resource's account_url stays empty."""

    credential_type: Literal["sas_url"] = "sas_url"
    sas_url: str


class ServicePrincipalCredential(dg.Resolvable, dg.Config):
    """A Microsoft Entra application, through azure-identity's ClientSecretCredential or
    CertificateCredential."""

    credential_type: Literal["service_principal"] = "service_principal"
    tenant_id: str
    client_id: str
    client_secret: str | None = None
    certificate_path: str | None = None
    certificate_password: str | None = None


class ExportBlobStorage(AzureBlobStorageResource):
    """dagster-azure's blob resource plus the retry and transfer settings of an export, and
    three more sign-ins: a connection string, a container SAS URL and a service principal.

    `client()` gives the plain `BlobStorage` the export code uses; `container(name)` opens a
    client for one container (closed when the block exits).
    """

    account_url: str = Field(
        default="",
        description="The account's blob endpoint; empty with a connection string or a SAS URL, "
        "which carry it.",
    )
    # typing.Union: Dagster's config schema reads discriminated unions only in that form.
    credential: Union[  # noqa: UP007
        AzureBlobStorageKeyCredential,
        AzureBlobStorageSASTokenCredential,
        AzureBlobStorageDefaultCredential,
        AzureBlobStorageAnonymousCredential,
        ConnectionStringCredential,
        ContainerSasUrlCredential,
        ServicePrincipalCredential,
    ] = Field(
        discriminator="credential_type",
        description="SAS token, account key, DefaultAzureCredential, connection string, "
        "container SAS URL or service principal.",
    )

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
        principal = None
        if isinstance(credential, AzureBlobStorageSASTokenCredential):
            kind, secret = "sas", credential.token
        elif isinstance(credential, AzureBlobStorageKeyCredential):
            kind, secret = "key", credential.key
        elif isinstance(credential, ConnectionStringCredential):
            kind, secret = "connection_string", credential.connection_string
        elif isinstance(credential, ContainerSasUrlCredential):
            kind, secret = "sas_url", credential.sas_url
        elif isinstance(credential, ServicePrincipalCredential):
            kind, secret = "service_principal", None
            principal = ServicePrincipal(
                tenant_id=credential.tenant_id,
                client_id=credential.client_id,
                client_secret=credential.client_secret,
                certificate_path=credential.certificate_path,
                certificate_password=credential.certificate_password,
            )
        else:
            kind, secret = "default", None
        return BlobStorage(
            account_url=self.account_url,
            credential_type=kind,
            secret=secret,
            principal=principal,
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


def _value(value: str | SecretRef | None) -> Any:
    """A literal, or a variable resolved at run time."""
    return _env(value) if isinstance(value, SecretRef) else value


def destination_resource(destination: DestinationConfig) -> ExportBlobStorage:
    """dagster-azure's resource for one destination; secrets stay environment variables."""
    credential: Any
    if destination.sas_token:
        credential = AzureBlobStorageSASTokenCredential(token=_env(destination.sas_token))
    elif destination.account_key:
        credential = AzureBlobStorageKeyCredential(key=_env(destination.account_key))
    elif destination.connection_string:
        credential = ConnectionStringCredential(
            connection_string=_env(destination.connection_string)
        )
    elif destination.sas_url:
        credential = ContainerSasUrlCredential(sas_url=_env(destination.sas_url))
    elif destination.service_principal:
        principal = destination.service_principal
        credential = ServicePrincipalCredential(
            tenant_id=_value(principal.tenant_id),
            client_id=_value(principal.client_id),
            client_secret=_value(principal.client_secret),
            certificate_path=_value(principal.certificate_path),
            certificate_password=_value(principal.certificate_password),
        )
    else:
        credential = AzureBlobStorageDefaultCredential()
    url = destination.account_url
    return ExportBlobStorage(
        account_url=_value(url) or "",
        credential=credential,
        max_retries=destination.max_retries,
        retry_backoff_seconds=destination.retry_backoff_seconds,
        max_concurrency=destination.max_concurrency,
    )
