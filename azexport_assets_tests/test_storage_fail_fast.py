"""Permanent storage failures fail at once, not after the retry backoff meant for transient ones.

Every client here has a long backoff (first retry after 15-30 s, up to 5 retries): a failure
that took even one retry would take more than 15 s. Each case runs against a real Azurite (or
a FaultProxy in front of it, to answer a status Azurite itself would not) and must fail in
under `FAST_SECONDS`, with a one-line message saying which problem it is and what to do, and
without any secret. Transient faults with the same settings are still retried (last tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.identity import EnvironmentCredential
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageSASTokenCredential

from azexport_assets.demo.azurite import DEV_KEY, Azurite, container_sas
from azexport_assets.resources import ExportBlobStorage
from azexport_assets.storage import (
    CappedExponentialRetry,
    ExportContainerClient,
    StorageError,
    preflight,
    upload_bytes,
    upload_file,
)
from azexport_assets.storage.errors import permanent_failure, permanent_status
from azexport_assets_tests.fault_proxy import FaultProxy

MiB = 1024 * 1024
SLOW_RETRIES = {"retry_backoff_seconds": 30.0, "max_backoff_seconds": 30.0, "max_retries": 5}
SMALL_BLOCKS = {"block_size": 1 * MiB, "single_put_threshold": 1 * MiB, "max_concurrency": 2}
FAST_SECONDS = 5.0  # far below one backoff (>= 15 s), generous for a busy 2-core machine
WRONG_KEY = "QUJD" + DEV_KEY[4:]


@dataclass(frozen=True)
class Case:
    """One misconfiguration: how to build the storage, and what the message must say."""

    storage: Callable[[Azurite, str], ExportBlobStorage]
    container: Callable[[str], str]  # the real test container's name -> the one to use
    says: tuple[str, ...]  # the problem and what to do
    secrets: Callable[[ExportBlobStorage], list[str]]


def sas(token_for: Callable[[Azurite, str], str]) -> Callable[[Azurite, str], ExportBlobStorage]:
    def build(azurite: Azurite, container: str) -> ExportBlobStorage:
        token = token_for(azurite, container)
        return ExportBlobStorage(
            account_url=azurite.account_url,
            credential=AzureBlobStorageSASTokenCredential(token=token),
            **SLOW_RETRIES,
            **SMALL_BLOCKS,
        )

    return build


def sas_secrets(storage: ExportBlobStorage) -> list[str]:
    token = storage.credential.token
    signature = dict(p.split("=", 1) for p in token.split("&"))["sig"]
    return [token, signature]


def past() -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=2)


CASES = {
    "expired SAS": Case(
        sas(lambda a, c: container_sas(a.account_url, c, expiry=past())),
        lambda c: c,
        ("authentication failed", "the SAS token expired at", "generate a new SAS token"),
        sas_secrets,
    ),
    "read-only SAS": Case(
        sas(lambda a, c: container_sas(a.account_url, c, permission="rl")),
        lambda c: c,
        ("permission missing", "needs 'c' and 'w'", "grants 'rl'", "generate a new SAS token"),
        sas_secrets,
    ),
    "unknown container": Case(
        sas(lambda a, c: container_sas(a.account_url, "no-such-container")),
        lambda c: "no-such-container",
        ("container 'no-such-container'", "does not exist", "create it or fix"),
        sas_secrets,
    ),
    "SAS of another container": Case(
        sas(lambda a, c: container_sas(a.account_url, "another-container")),
        lambda c: c,
        ("authentication failed (AuthorizationFailure)", "rejected", "generate a new SAS"),
        sas_secrets,
    ),
    "wrong account key": Case(
        lambda a, c: ExportBlobStorage(
            account_url=a.account_url,
            credential=AzureBlobStorageKeyCredential(key=WRONG_KEY),
            **SLOW_RETRIES,
            **SMALL_BLOCKS,
        ),
        lambda c: c,
        ("account key was rejected", "use the current key1/key2"),
        lambda s: [WRONG_KEY, DEV_KEY],
    ),
    "unknown account": Case(
        lambda a, c: ExportBlobStorage(
            account_url=f"http://127.0.0.1:{a.port}/otheraccount",
            credential=AzureBlobStorageSASTokenCredential(token=container_sas(a.account_url, c)),
            **SLOW_RETRIES,
        ),
        lambda c: c,
        ("not found", "check the destination's account_url"),
        sas_secrets,
    ),
    "account host does not exist": Case(
        lambda a, c: ExportBlobStorage(
            # RFC 6761: '.invalid' never resolves, so DNS answers "no such name" (NXDOMAIN).
            account_url="http://azexport-no-such-account.invalid:10000/devstoreaccount1",
            credential=AzureBlobStorageSASTokenCredential(token=container_sas(a.account_url, c)),
            **SLOW_RETRIES,
        ),
        lambda c: c,
        ("account not found", "does not exist (DNS)", "storage account name"),
        sas_secrets,
    ),
}


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "export.bin"
    path.write_bytes(os.urandom(5 * MiB + 3))  # 6 blocks of 1 MiB, 2 in parallel
    return path


OPERATIONS: dict[str, Callable[[ExportContainerClient, Path], object]] = {
    "preflight": lambda client, path: preflight(client),
    "upload_file (blocks)": lambda client, path: upload_file(
        client, "crm/export.bin", path, content_type="application/octet-stream"
    ),
    "upload_bytes": lambda client, path: upload_bytes(
        client, "crm/manifest.json", b"{}", content_type="application/json"
    ),
}


def failure_of(storage: ExportBlobStorage, container: str, operation, path: Path):
    started = time.monotonic()
    with storage.container(container) as client, pytest.raises(StorageError) as caught:
        operation(client, path)
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("case", CASES)
def test_permanent_failures_fail_at_once_and_say_what_to_do(
    azurite: Azurite, container, big_file: Path, case: str, operation: str
) -> None:
    setup = CASES[case]
    storage = setup.storage(azurite, container.container_name)
    error, elapsed = failure_of(
        storage, setup.container(container.container_name), OPERATIONS[operation], big_file
    )
    message = str(error)
    assert elapsed < FAST_SECONDS, f"{case} took {elapsed:.1f}s: it was retried"
    for words in setup.says:
        assert words in message
    assert "\n" not in message and "?" not in message  # one line, no URL query string
    for secret in setup.secrets(storage):
        assert secret not in message
    assert error.__cause__ is None and error.__context__ is None  # no SDK text chained
    assert list(container.list_blobs()) == []  # nothing appeared


def test_sas_without_w_fails_in_preflight_at_once(azurite: Azurite, container) -> None:
    storage = sas(lambda a, c: container_sas(a.account_url, c, permission="c"))(
        azurite, container.container_name
    )
    error, elapsed = failure_of(storage, container.container_name, OPERATIONS["preflight"], None)
    assert elapsed < FAST_SECONDS
    assert "permission missing" in str(error) and "needs 'w'" in str(error)


def test_no_identity_token_fails_at_once(monkeypatch) -> None:
    """A token credential that cannot get a token (a real `EnvironmentCredential` without its
    AZURE_* variables) fails before any request: the SDK would retry it with backoff."""
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    client = ExportContainerClient(
        "https://127.0.0.1:9/devstoreaccount1",  # never reached: the token comes first
        "exports",
        credential=EnvironmentCredential(),
        retry_policy=CappedExponentialRetry(initial_backoff=30, max_backoff=30, retries=5),
    )
    started = time.monotonic()
    with client, pytest.raises(StorageError) as caught:
        preflight(client)
    assert time.monotonic() - started < FAST_SECONDS
    assert "could not get an Azure identity token" in str(caught.value)


# --------------------------------------------------------------------------- via FaultProxy


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(target_port=azurite.port) as fault_proxy:
        yield fault_proxy


def proxied(proxy: FaultProxy, token: str, **settings) -> ExportBlobStorage:
    return ExportBlobStorage(
        account_url=proxy.account_url,
        credential=AzureBlobStorageSASTokenCredential(token=token),
        **{**SLOW_RETRIES, **SMALL_BLOCKS, **settings},
    )


@pytest.mark.parametrize(
    ("status", "code", "says"),
    [
        (403, "AuthenticationFailed", "authentication failed (AuthenticationFailed)"),
        (403, "AuthorizationPermissionMismatch", "permission missing"),
        (404, "ContainerNotFound", "does not exist"),
        (400, "InvalidHeaderValue", "HTTP 400 InvalidHeaderValue"),
    ],
)
def test_a_permanent_answer_is_sent_once(
    proxy, container, sas_token, big_file, status: int, code: str, says: str
) -> None:
    proxy.fail(method="PUT", comp="block", status=status, error_code=code, times=None)
    storage = proxied(proxy, sas_token)
    upload = OPERATIONS["upload_file (blocks)"]
    error, elapsed = failure_of(storage, container.container_name, upload, big_file)
    assert elapsed < FAST_SECONDS
    assert says in str(error)
    # one attempt per block in flight (2 workers), never a second attempt of the same block
    assert proxy.count(method="PUT", comp="block") <= SMALL_BLOCKS["max_concurrency"] + 1
    assert proxy.outcomes.count(f"fail {status}") == proxy.count(method="PUT", comp="block")


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_transient_answers_are_still_retried(proxy, container, sas_token, status: int) -> None:
    proxy.fail(method="PUT", path_contains="manifest", status=status, times=2)
    storage = proxied(proxy, sas_token, retry_backoff_seconds=0.05, max_backoff_seconds=0.1)
    with storage.container(container.container_name) as client:
        upload_bytes(client, "x_manifest.json", b"{}", content_type="application/json")
    assert container.download_blob("x_manifest.json").readall() == b"{}"
    assert proxy.count(method="PUT", path_contains="manifest") == 3


def test_permanent_and_transient_statuses() -> None:
    assert [
        s for s in (400, 401, 403, 404, 409, 412, 413, 501, 505) if not permanent_status(s)
    ] == []
    assert [s for s in (408, 429, 500, 502, 503, 504) if permanent_status(s)] == []
    assert not permanent_failure(None, None)
