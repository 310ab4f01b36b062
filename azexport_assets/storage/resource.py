"""`BlobStorage`: one storage account, its credential and the retry and transfer settings.

Plain Python (no Dagster): the Dagster resource in `azexport_assets.resources` builds one from
its configuration, and scripts or benchmarks build one directly.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlparse

from azure.core.exceptions import ServiceResponseError
from azure.storage.blob import ContainerClient, ExponentialRetry

from azexport_assets.storage.errors import StorageError, permanent_failure, short_reason
from azexport_assets.storage.secrets import remember_secret, secure_sdk_logging, strip_query

MiB = 1024 * 1024

# Where delta-rs (object_store) finds the storage emulator in its emulator mode.
EMULATOR_URL_VARIABLE = "AZURITE_BLOB_STORAGE_URL"


@dataclass(frozen=True)
class TransferSettings:
    """How `upload_file` splits and parallelises a file (carried by the container client)."""

    max_concurrency: int = 4
    block_size: int = 8 * MiB
    single_put_threshold: int = 8 * MiB
    # A Content-MD5 on every Put Block, verified by the service; None: only over plain http.
    verify_blocks: bool | None = None
    # Azure's server-side encryption scope for every blob written (x-ms-encryption-scope).
    encryption_scope: str | None = None

    def verifies_blocks(self, url: str) -> bool:
        """Whether Put Block requests to `url` carry a Content-MD5 for the service to check.

        By default only over plain http: over https TLS already rejects any byte changed in
        transit (the Azure SDK says the same of `validate_content`), and the check costs one
        more MD5 pass over every byte uploaded (about 450 MB/s of one core here).
        """
        if self.verify_blocks is not None:
            return self.verify_blocks
        return not url.lower().startswith("https://")

    @property
    def scope(self) -> dict[str, str]:
        """Keyword arguments that pass the encryption scope to an upload call, if any."""
        return {"encryption_scope": self.encryption_scope} if self.encryption_scope else {}


class ExportContainerClient(ContainerClient):
    """A `ContainerClient` that also carries the resource's `TransferSettings`."""

    transfer: TransferSettings = TransferSettings()
    sign_in: str = ""  # how the client signs in, for messages: 'a connection string', ...


class CappedExponentialRetry(ExponentialRetry):
    """The SDK's storage retry policy (retries timeouts, connection errors, 408 and 5xx per request)
    with a sane schedule: initial * 2**n seconds, capped, with "equal jitter" so parallel block
    uploads that fail together do not retry in lockstep. The SDK default starts at 15 s.

    Permanent failures (`errors.permanent_failure`: 4xx answers other than 408/429, no identity
    token, unknown host) end the loop at once: the SDK itself would retry the last two, and
    waiting through the backoff schedule cannot fix an expired SAS or a missing container.
    """

    def __init__(self, *, initial_backoff: float, max_backoff: float, retries: int) -> None:
        super().__init__(
            initial_backoff=initial_backoff,  # type: ignore[arg-type]  # floats are fine here
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
        )
        self.max_backoff = max_backoff

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        backoff = min(self.max_backoff, self.initial_backoff * 2 ** settings["count"])
        return random.uniform(backoff / 2, backoff)

    def increment(
        self,
        settings: dict[str, Any],
        request: Any,
        response: Any = None,
        error: Any = None,
    ) -> bool:
        """Whether to try again (the SDK calls this after each failed attempt)."""
        status = getattr(response, "status_code", None) if error is None else None
        if permanent_failure(error, status):
            return False
        return super().increment(settings, request, response=response, error=error)


def raise_on_throttle(response: Any) -> None:
    """Response hook (runs inside the retry loop): the SDK does not retry HTTP 429, so turn it
    into a response error, which the retry policy does retry with backoff."""
    if response.http_response.status_code == 429:
        raise ServiceResponseError("HTTP 429 Too Many Requests: the service is throttling")


def account_name_from_url(account_url: str) -> str | None:
    """'https://acct.blob.core.windows.net' -> 'acct'; 'http://127.0.0.1:10000/acct' -> 'acct'."""
    parsed = urlparse(account_url)
    host = parsed.hostname or ""
    if ".blob." in host:
        return host.split(".", 1)[0]
    segment = parsed.path.strip("/").split("/", 1)[0]
    return segment or None


CredentialType = Literal[
    "sas", "key", "default", "connection_string", "sas_url", "service_principal"
]

# How each credential type is named in messages ("signed in with ...").
SIGN_IN_NAMES: dict[str, str] = {
    "sas": "a SAS token",
    "key": "the account key",
    "default": "DefaultAzureCredential (managed / workload identity, environment, Azure CLI)",
    "connection_string": "a connection string",
    "sas_url": "a container SAS URL",
    "service_principal": "a service principal",
}


@dataclass(frozen=True)
class ServicePrincipal:
    """A Microsoft Entra application: tenant, client id, and a client secret or a certificate.
    `client_secret` and `certificate_password` are never part of `repr`."""

    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: str | None = None
    certificate_password: str | None = field(default=None, repr=False)
    authority_host: str | None = None  # None: AZURE_AUTHORITY_HOST, else the public cloud
    disable_instance_discovery: bool = False  # a private authority Microsoft does not know

    def credential(self) -> Any:
        """azure-identity's ClientSecretCredential or CertificateCredential (no request yet:
        the token is asked for at the first storage request)."""
        from azure.identity import CertificateCredential, ClientSecretCredential

        # Only what is set: azure-identity's own defaults (AZURE_AUTHORITY_HOST) stay.
        options: dict[str, Any] = {}
        if self.authority_host:
            options["authority"] = self.authority_host
        if self.disable_instance_discovery:
            options["disable_instance_discovery"] = True
        if not self.tenant_id.strip() or not self.client_id.strip():
            raise StorageError("the service principal's tenant_id and client_id must not be empty")
        if self.certificate_path:
            path = os.path.expanduser(self.certificate_path)
            if not os.path.isfile(path):
                raise StorageError(
                    f"the service principal's certificate {path} does not exist or is not a file"
                )
            remember_secret(self.certificate_password)
            return CertificateCredential(
                self.tenant_id,
                self.client_id,
                path,
                password=self.certificate_password or None,
                **options,
            )
        secret = (self.client_secret or "").strip()
        if not secret:
            raise StorageError("the service principal's client secret is empty: set its variable")
        remember_secret(secret)
        return ClientSecretCredential(self.tenant_id, self.client_id, secret, **options)


def parse_connection_string(text: str) -> tuple[str, Any]:
    """A storage connection string -> (blob endpoint, credential): the account key as
    {'account_name', 'account_key'} or a SAS token. Raises StorageError without its value."""
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        if part.strip():
            key, sep, value = part.partition("=")
            if not sep:
                raise StorageError("the connection string is not 'Key=value;...' pairs")
            fields[key.strip().lower()] = value.strip()
    name = fields.get("accountname")
    endpoint = fields.get("blobendpoint")
    if not endpoint and name:
        protocol = fields.get("defaultendpointsprotocol", "https")
        endpoint = f"{protocol}://{name}.blob.{fields.get('endpointsuffix', 'core.windows.net')}"
    if not endpoint:
        raise StorageError(
            "the connection string has neither BlobEndpoint nor AccountName: copy it from the "
            "storage account's 'Access keys' or 'Shared access signature' page"
        )
    endpoint = endpoint.rstrip("/")
    if fields.get("accountkey"):
        remember_secret(fields["accountkey"])
        name = name or account_name_from_url(endpoint)
        if not name:
            raise StorageError("the connection string has an AccountKey but no AccountName")
        return endpoint, {"account_name": name, "account_key": fields["accountkey"]}
    if fields.get("sharedaccesssignature"):
        token = fields["sharedaccesssignature"].lstrip("?")
        remember_secret(token)
        return endpoint, token
    raise StorageError(
        "the connection string has neither AccountKey nor SharedAccessSignature: azexport "
        "does not write anonymously"
    )


def parse_sas_url(url: str, container: str | None = None) -> tuple[str, str]:
    """A container SAS URL -> (account endpoint, SAS token); checks it names `container`."""
    url = url.strip()
    remember_secret(url)
    parsed = urlparse(url)
    token = parsed.query
    if parsed.scheme not in ("http", "https") or not parsed.netloc or "sig=" not in token:
        raise StorageError(
            "the SAS URL must be https://<account>.blob.core.windows.net/<container>?<SAS token> "
            "(the container's 'Generate SAS' page gives it as 'Blob SAS URL')"
        )
    remember_secret(token)
    segments = [s for s in parsed.path.split("/") if s]
    path_style = ".blob." not in (parsed.hostname or "")
    account_segments = segments[:1] if path_style else []
    rest = segments[len(account_segments) :]
    if len(rest) != 1:
        raise StorageError(
            f"the SAS URL {strip_query(url)} must name one container (and no blob): "
            "use a container SAS URL"
        )
    if container is not None and rest[0] != container:
        raise StorageError(
            f"the SAS URL is for container '{rest[0]}', but the destination's container is "
            f"'{container}'"
        )
    endpoint = f"{parsed.scheme}://{parsed.netloc}" + "".join(f"/{s}" for s in account_segments)
    return endpoint, token


@dataclass(frozen=True)
class BlobStorage:
    """An account URL, a credential and how to talk to the service.

    `secret` is the SAS token (`credential_type="sas"`), the account key (`"key"`), the
    connection string (`"connection_string"`) or the container SAS URL (`"sas_url"`; these two
    carry the endpoint, and `account_url` may be empty); `principal` holds a service principal.
    Secrets are never part of `repr` and are registered for redaction before any request.
    `container()` builds a client with a fast, capped exponential retry policy.
    """

    account_url: str
    credential_type: CredentialType
    secret: str | None = field(default=None, repr=False)
    principal: ServicePrincipal | None = None
    max_retries: int = 5  # per request, for timeouts, resets, 5xx and 429
    retry_backoff_seconds: float = 1.0  # first retry delay; doubles per retry, with jitter
    max_backoff_seconds: float = 30.0  # upper bound of one retry delay
    max_concurrency: int = 4  # parallel block uploads per export (connections)
    block_size: int = 8 * MiB  # one staged block, for files above single_put_threshold
    single_put_threshold: int = 8 * MiB  # files up to this size go in one (atomic) request
    verify_blocks: bool | None = None  # Content-MD5 on every block; None: over http only
    connection_timeout_seconds: float = 20.0
    read_timeout_seconds: float = 120.0

    @property
    def transfer(self) -> TransferSettings:
        return TransferSettings(
            max_concurrency=self.max_concurrency,
            block_size=self.block_size,
            single_put_threshold=self.single_put_threshold,
            verify_blocks=self.verify_blocks,
        )

    @property
    def sign_in(self) -> str:
        """How this storage signs in, for messages: 'a connection string', ..."""
        return SIGN_IN_NAMES[self.credential_type]

    def endpoint(self, container: str | None = None) -> str:
        """The account's blob endpoint (from the connection string or SAS URL if they hold it)."""
        return self._endpoint_and_credential(container)[0]

    def _endpoint_and_credential(self, container: str | None = None) -> tuple[str, Any]:
        """The account URL and the credential in the form the SDK needs."""
        kind = self.credential_type
        if kind == "connection_string":
            if not (self.secret or "").strip():
                raise StorageError("the connection string is empty: set the destination's secret")
            remember_secret(self.secret)
            return parse_connection_string(self.secret or "")
        if kind == "sas_url":
            if not (self.secret or "").strip():
                raise StorageError("the SAS URL is empty: set the destination's secret")
            return parse_sas_url(self.secret or "", container)
        if kind == "sas":
            token = (self.secret or "").strip().lstrip("?")
            if not token:
                raise StorageError("the SAS token is empty: set the destination's secret")
            remember_secret(token)
            return self.account_url, token
        if kind == "key":
            key = (self.secret or "").strip()
            if not key:
                raise StorageError("the account key is empty: set the destination's secret")
            remember_secret(key)
            # A bare key string only works when the SDK can guess the account name from the
            # host; path-style URLs (Azurite, custom hosts) need the name spelled out.
            name = account_name_from_url(self.account_url)
            if not name:
                raise StorageError(
                    f"cannot tell the storage account name from {strip_query(self.account_url)}: "
                    "use https://<account>.blob.core.windows.net or http://<host>/<account>"
                )
            return self.account_url, {"account_name": name, "account_key": key}
        if kind == "service_principal":
            if self.principal is None:
                raise StorageError("a service principal sign-in needs its tenant and client id")
            return self.account_url, self.principal.credential()
        from azure.identity import DefaultAzureCredential  # only this credential needs it

        return self.account_url, DefaultAzureCredential()

    def _sdk_credential(self) -> Any:
        """The credential in the form the SDK needs for this account URL."""
        return self._endpoint_and_credential()[1]

    def object_store_options(self) -> dict[str, str]:
        """The same account and credential as delta-rs storage options (its `object_store`
        Azure settings): the account URL as the endpoint (so Azurite and custom hosts work
        without process-wide settings), and the SAS token, the account key, or for
        DefaultAzureCredential a bearer token from that same credential chain (managed
        identity, workload identity, environment, Azure CLI…). The values are secrets: never
        log them."""
        account_url, credential = self._endpoint_and_credential()
        parsed = urlparse(account_url)
        name = account_name_from_url(account_url)
        if not name or parsed.scheme not in ("http", "https"):
            raise StorageError(
                f"cannot tell the storage account name from {strip_query(account_url)}: "
                "use https://<account>.blob.core.windows.net or http://<host>/<account>"
            )
        options = {
            "account_name": name,
            "timeout": f"{int(self.read_timeout_seconds)}s",
            "connect_timeout": f"{int(self.connection_timeout_seconds)}s",
        }
        if parsed.scheme == "http" and ".blob." not in (parsed.hostname or ""):
            # A path-style http URL is the storage emulator (Azurite). delta-rs reads such
            # tables correctly only in its emulator mode, which takes the host from this
            # variable (with a path-style `endpoint` it fails to read some log versions).
            os.environ[EMULATOR_URL_VARIABLE] = f"{parsed.scheme}://{parsed.netloc}"
            options["azure_storage_use_emulator"] = "true"
        elif ".blob." not in (parsed.hostname or ""):
            options["endpoint"] = account_url.rstrip("/")  # a custom host
        if parsed.scheme == "http":
            options["allow_http"] = "true"
        if isinstance(credential, str):  # a SAS token (also from a connection string / URL)
            options["sas_token"] = credential
        elif isinstance(credential, dict):
            options["account_key"] = credential["account_key"]
        else:
            try:
                token = credential.get_token("https://storage.azure.com/.default").token
            except Exception as error:  # azure-identity raises its own ClientAuthenticationError
                raise StorageError(
                    f"{self.sign_in} got no token for the storage account "
                    f"({short_reason(error)}): check the identity (managed or workload "
                    "identity, AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, the "
                    "service principal's tenant, client id and secret or certificate)"
                ) from None
            finally:
                credential.close()
            remember_secret(token)
            options["bearer_token"] = token
        return options

    @contextmanager
    def container(self, name: str) -> Iterator[ExportContainerClient]:
        """A client for container `name` with our retry policy; closed when the block exits."""
        secure_sdk_logging()
        account_url, credential = self._endpoint_and_credential(name)
        parsed = urlparse(account_url)
        if "?" in account_url or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(
                f"invalid account_url {strip_query(account_url)!r}: use "
                "https://<account>.blob.core.windows.net (no query string: the SAS token goes "
                "in its own secret)"
            )
        failure: StorageError | None = None
        try:
            client = ExportContainerClient(
                account_url,
                name,
                credential=credential,
                retry_policy=CappedExponentialRetry(
                    initial_backoff=self.retry_backoff_seconds,
                    max_backoff=self.max_backoff_seconds,
                    retries=self.max_retries,
                ),
                raw_response_hook=raise_on_throttle,
                connection_timeout=self.connection_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
                max_single_put_size=max(self.single_put_threshold, 1),
                max_block_size=self.block_size,
            )
        except ValueError as error:  # the SDK rejects the URL / credential combination
            failure = StorageError(
                f"cannot use account_url {strip_query(account_url)} with container "
                f"'{name}' ({self.sign_in}): {short_reason(error)}"
            )
        if failure is not None:
            failure.__context__ = None
            raise failure
        client.transfer = self.transfer
        client.sign_in = self.sign_in
        try:
            yield client
        finally:
            client.close()
            if hasattr(credential, "close"):  # DefaultAzureCredential holds HTTP sessions
                credential.close()
