"""Dagster resources: the warehouse and one Azure Blob Storage resource per destination.

The resources are thin: each builds the plain object the export code uses (`Warehouse`,
`BlobStorage`) from its configuration. Secrets are named by environment variable in YAML; a
destination's resource keeps the names and reads the values only when a step opens it, so the
UI shows the variables' names, never their values, and an unset variable fails that step with
one line.
"""

from __future__ import annotations

import json
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
from pydantic import Field, PrivateAttr

from azexport_assets.config import DestinationConfig, SecretRef, unset_variables_message
from azexport_assets.run_worker import WorkerWatch, watch_run_worker
from azexport_assets.storage import BlobStorage, ExportContainerClient
from azexport_assets.storage.resource import MiB, ServicePrincipal
from azexport_assets.warehouse import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_WAREHOUSE,
    WAREHOUSE_ENV,
    WarehouseBackend,
    WarehouseConfigError,
    open_warehouse,
)

WAREHOUSE_KEY = "warehouse"


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

    _worker_watch: WorkerWatch | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Every step of the project uses the warehouse, so its set-up, once per run before
        # the first step, records the run's worker for the run watchdog (run_worker.py).
        if context.instance is not None and context.run is not None:
            self._worker_watch = watch_run_worker(context.instance, context.run.run_id)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._worker_watch is not None:
            self._worker_watch.stop()

    def open(self, project_root: Path) -> WarehouseBackend:
        """The backend; a wrong setting fails the step with its one line, not retried."""
        try:
            return self._open(project_root)
        except WarehouseConfigError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None

    def _open(self, project_root: Path) -> WarehouseBackend:
        return open_warehouse(
            location=self.path,
            project_root=project_root,
            # Unset fields: the backend reads $AZEXPORT_LOCK_TIMEOUT_SECONDS and
            # $AZEXPORT_DUCKDB_MEMORY_LIMIT itself, and names them when they are wrong.
            lock_timeout=self.lock_timeout_seconds,
            memory_limit=self.memory_limit,
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
    authority_host: str | None = None
    disable_instance_discovery: bool = False


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
    verify_blocks: bool | None = Field(
        default=None,
        description=(
            "Send a Content-MD5 with every block so the service verifies it on arrival. "
            "Default: over plain http only (over https TLS already protects the bytes)."
        ),
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
                authority_host=credential.authority_host,
                disable_instance_discovery=credential.disable_instance_discovery,
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


def unset_variables(destination: str, names: list[str]) -> dg.Failure | None:
    """The step failure for a destination whose variables are not all set (an empty value
    counts as unset): one line naming the variables and the destination, never a value."""
    unset = [name for name in names if not os.environ.get(name)]
    if not unset:
        return None
    return dg.Failure(unset_variables_message(destination, unset), allow_retries=False)


# How a destination signs in (DestinationConfig.credential_kind).
CredentialType = Literal[
    "sas_token",
    "account_key",
    "connection_string",
    "sas_url",
    "service_principal",
    "default_azure_credential",
]
PRINCIPAL_FIELDS = (
    "tenant_id",
    "client_id",
    "client_secret",
    "certificate_path",
    "certificate_password",
    "authority_host",
    "disable_instance_discovery",
)


class DestinationStorage(dg.ConfigurableResource):
    """One destination of a defs.yaml: its account, its credential and transfer settings.

    The account URL (when given as `{env: VAR}`) and the secrets are named by environment
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
    credential_type: CredentialType = Field(description="How the run signs in.")
    secret_env: str | None = Field(
        None,
        description="The environment variable holding the SAS token, account key, connection "
        "string or container SAS URL, read at run time.",
    )
    service_principal: str | None = Field(
        None,
        description="A service principal's fields as JSON: each a literal ({'value': ...}) or "
        "an environment variable read at run time ({'env': NAME}); never a secret's value.",
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

    def _principal(self) -> dict[str, dict[str, str]]:
        return json.loads(self.service_principal) if self.service_principal else {}

    @property
    def environment_variables(self) -> list[str]:
        names = [v for v in (self.account_url_env, self.secret_env) if v]
        names += [f["env"] for f in self._principal().values() if "env" in f]
        return names

    def _principal_credential(self) -> ServicePrincipalCredential:
        values: dict[str, Any] = {
            name: os.environ[field["env"]] if "env" in field else field["value"]
            for name, field in self._principal().items()
        }
        return ServicePrincipalCredential(**{k: v for k, v in values.items() if v is not None})

    def storage(self) -> ExportBlobStorage:
        """The destination with its variables read now; a dg.Failure naming any unset one."""
        unset = unset_variables(self.destination, self.environment_variables)
        if unset:
            raise unset
        url = os.environ[self.account_url_env] if self.account_url_env else self.account_url
        secret = os.environ[self.secret_env] if self.secret_env else ""
        credential: Any
        if self.credential_type == "sas_token":
            credential = AzureBlobStorageSASTokenCredential(token=secret)
        elif self.credential_type == "account_key":
            credential = AzureBlobStorageKeyCredential(key=secret)
        elif self.credential_type == "connection_string":
            credential = ConnectionStringCredential(connection_string=secret)
        elif self.credential_type == "sas_url":
            credential = ContainerSasUrlCredential(sas_url=secret)
        elif self.credential_type == "service_principal":
            credential = self._principal_credential()
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


def _principal_fields(destination: DestinationConfig) -> str | None:
    """The service principal's fields for DestinationStorage: names of variables, literals."""
    principal = destination.service_principal
    if principal is None:
        return None
    fields = {}
    for name in PRINCIPAL_FIELDS:
        value = getattr(principal, name)
        if isinstance(value, SecretRef):
            fields[name] = {"env": value.env}
        elif value is not None:
            fields[name] = {"value": value}
    return json.dumps(fields)


def destination_resource(name: str, destination: DestinationConfig) -> DestinationStorage:
    """The resource of one destination; its variables are read when a step opens it."""
    return DestinationStorage(
        destination=name,
        account_url=destination.account_url if isinstance(destination.account_url, str) else None,
        account_url_env=destination.account_url_env,
        credential_type=destination.credential_kind,
        secret_env=destination.secret_env,
        service_principal=_principal_fields(destination),
        max_retries=destination.max_retries,
        retry_backoff_seconds=destination.retry_backoff_seconds,
        max_concurrency=destination.max_concurrency,
    )


def destination_resource_definition(
    name: str, destination: DestinationConfig
) -> dg.ResourceDefinition:
    """The destination's resource as a code location binds it: fixed by defs.yaml, so it has
    no run configuration. Dagster puts every configurable resource of a code location into
    the run configuration schema of every job; one per destination made each job's snapshot
    grow with the number of destinations (in a project of 100 activations, most of
    `definitions validate`). The resource itself is made when a step uses it: a configurable
    resource takes about 2 ms to create, paid for every destination by every process that
    loads the project. The UI shows the description: the variables' names, never a value."""
    account = (
        f"`${destination.account_url_env}`"
        if destination.account_url_env
        else f"`{destination.account_url}`"
    )
    variables = ", ".join(f"`${v}`" for v in destination.environment_variables) or "none"
    description = (
        f"Destination `{name}` of defs.yaml: account {account}, sign-in "
        f"{destination.credential_kind.replace('_', ' ')}, container `{destination.container}`; "
        f"environment variables read when a step opens it: {variables}; "
        f"{destination.max_retries} retries, {destination.max_concurrency} parallel uploads."
    )
    return dg.ResourceDefinition(
        resource_fn=lambda _: destination_resource(name, destination), description=description
    )
