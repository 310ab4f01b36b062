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
    verify_blocks: bool = True
    # Azure's server-side encryption scope for every blob written (x-ms-encryption-scope).
    encryption_scope: str | None = None

    @property
    def scope(self) -> dict[str, str]:
        """Keyword arguments that pass the encryption scope to an upload call, if any."""
        return {"encryption_scope": self.encryption_scope} if self.encryption_scope else {}


class ExportContainerClient(ContainerClient):
    """A `ContainerClient` that also carries the resource's `TransferSettings`."""

    transfer: TransferSettings = TransferSettings()


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


CredentialType = Literal["sas", "key", "default"]


@dataclass(frozen=True)
class BlobStorage:
    """An account URL, a credential and how to talk to the service.

    `secret` is the SAS token (`credential_type="sas"`) or the account key (`"key"`); it is
    never part of `repr` and is registered for redaction before any request is made.
    `container()` builds a client with a fast, capped exponential retry policy.
    """

    account_url: str
    credential_type: CredentialType
    secret: str | None = field(default=None, repr=False)
    max_retries: int = 5  # per request, for timeouts, resets, 5xx and 429
    retry_backoff_seconds: float = 1.0  # first retry delay; doubles per retry, with jitter
    max_backoff_seconds: float = 30.0  # upper bound of one retry delay
    max_concurrency: int = 4  # parallel block uploads per export (connections)
    block_size: int = 8 * MiB  # one staged block, for files above single_put_threshold
    single_put_threshold: int = 8 * MiB  # files up to this size go in one (atomic) request
    verify_blocks: bool = True  # Content-MD5 on every block: the service verifies it
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

    def _sdk_credential(self) -> Any:
        """The credential in the form the SDK needs for this account URL."""
        if self.credential_type == "sas":
            token = (self.secret or "").strip().lstrip("?")
            if not token:
                raise StorageError("the SAS token is empty: set the destination's secret")
            remember_secret(token)
            return token
        if self.credential_type == "key":
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
            return {"account_name": name, "account_key": key}
        from azure.identity import DefaultAzureCredential  # only this credential needs it

        return DefaultAzureCredential()

    def object_store_options(self) -> dict[str, str]:
        """The same account and credential as delta-rs storage options (its `object_store`
        Azure settings): the account URL as the endpoint (so Azurite and custom hosts work
        without process-wide settings), and the SAS token, the account key, or for
        DefaultAzureCredential a bearer token from that same credential chain (managed
        identity, workload identity, environment, Azure CLI…). The values are secrets: never
        log them."""
        parsed = urlparse(self.account_url)
        name = account_name_from_url(self.account_url)
        if not name or parsed.scheme not in ("http", "https"):
            raise StorageError(
                f"cannot tell the storage account name from {strip_query(self.account_url)}: "
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
            options["endpoint"] = self.account_url.rstrip("/")  # a custom host
        if parsed.scheme == "http":
            options["allow_http"] = "true"
        credential = self._sdk_credential()
        if self.credential_type == "sas":
            options["sas_token"] = credential
        elif self.credential_type == "key":
            options["account_key"] = credential["account_key"]
        else:
            try:
                token = credential.get_token("https://storage.azure.com/.default").token
            except Exception as error:  # azure-identity raises its own ClientAuthenticationError
                raise StorageError(
                    "DefaultAzureCredential found no identity for the storage account "
                    f"({short_reason(error)}): give the process a managed identity, or set "
                    "AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, or sign in "
                    "with the Azure CLI"
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
        parsed = urlparse(self.account_url)
        if "?" in self.account_url or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(
                f"invalid account_url {strip_query(self.account_url)!r}: use "
                "https://<account>.blob.core.windows.net (no query string: the SAS token goes "
                "in its own secret)"
            )
        credential = self._sdk_credential()
        failure: StorageError | None = None
        try:
            client = ExportContainerClient(
                self.account_url,
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
                f"cannot use account_url {strip_query(self.account_url)} with container "
                f"'{name}': {short_reason(error)}"
            )
        if failure is not None:
            failure.__context__ = None
            raise failure
        client.transfer = self.transfer
        try:
            yield client
        finally:
            client.close()
            if hasattr(credential, "close"):  # DefaultAzureCredential holds HTTP sessions
                credential.close()
