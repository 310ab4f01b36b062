"""Transient and permanent storage failures, injected by FaultProxy in front of a real Azurite."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
from azure.storage.blob import ContainerClient
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageSASTokenCredential

from azexport_assets.demo.azurite import DEV_KEY, Azurite, container_sas, free_port
from azexport_assets.resources import ExportBlobStorage
from azexport_assets.storage import (
    StorageError,
    TransferSettings,
    list_blob_names,
    preflight,
    upload_bytes,
    upload_file,
)
from azexport_assets_tests.fault_proxy import FaultProxy

MiB = 1024 * 1024
SETTINGS = {
    "retry_backoff_seconds": 0.01,
    "max_backoff_seconds": 0.05,
    "block_size": 4 * MiB,
    "single_put_threshold": 4 * MiB,
}
BLOCKS = 5  # of the 18 MiB test file


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[FaultProxy]:
    with FaultProxy(target_port=azurite.port) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(18 * MiB + 7)
    path = tmp_path / "export.bin"
    path.write_bytes(data)
    return path, data


def storage(url: str, token: str, **settings) -> ExportBlobStorage:
    return ExportBlobStorage(
        account_url=url,
        credential=AzureBlobStorageSASTokenCredential(token=token),
        **{**SETTINGS, **settings},
    )


def upload_via(proxy: FaultProxy, token: str, container: str, name: str, path: Path, **settings):
    with storage(proxy.account_url, token, **settings).container(container) as client:
        return upload_file(client, name, path, content_type="application/octet-stream")


def content(container: ContainerClient, name: str) -> bytes:
    return container.download_blob(name).readall()


# --------------------------------------------------------------------------- the proxy itself


def test_proxy_forwards_streams_and_records_without_sas(proxy, container, sas_token, data_file):
    path, data = data_file
    blob = upload_via(proxy, sas_token, container.container_name, "dir/a b.bin", path)
    assert content(container, "dir/a b.bin") == data
    assert blob.md5_hex == hashlib.md5(data).hexdigest()
    assert proxy.count(method="PUT", comp="block") == BLOCKS
    assert proxy.count(method="PUT", comp="blocklist") == 1
    assert proxy.count(path_contains="dir/a b.bin") == BLOCKS + 1
    assert all("sig" not in r.query and "se=" not in r.query for r in proxy.requests)
    assert set(proxy.outcomes) == {"forwarded 201"}
    with storage(proxy.account_url, sas_token).container(container.container_name) as client:
        blob_client = client.get_blob_client("dir/a b.bin")
        assert blob_client.get_blob_properties().size == len(data)  # HEAD: headers, no body
        assert blob_client.download_blob(max_concurrency=2).readall() == data  # large GETs
    # chunked request bodies (an iterator of unknown length) pass through too
    with storage(proxy.account_url, sas_token).container(container.container_name) as client:
        client.get_blob_client("chunked.bin").upload_blob(iter([b"ab", b"cd" * 40000]))
    assert content(container, "chunked.bin") == b"ab" + b"cd" * 40000


def test_blocks_carry_a_verified_content_md5_over_plain_http(
    proxy, container, sas_token, data_file
):
    """By default every Put Block over plain http carries the block's MD5, which the service
    checks on arrival; `verify_blocks=False` leaves it out. Over https (real Azure) it is left
    out by default too: TLS already rejects any byte changed in transit."""
    path, data = data_file
    name = container.container_name
    upload_via(proxy, sas_token, name, "verified.bin", path)
    assert content(container, "verified.bin") == data
    sent = [
        h.get("content-md5")
        for r, h in zip(proxy.requests, proxy.headers, strict=True)
        if r.method == "PUT" and "comp=block&" in r.query + "&"
    ]
    size = SETTINGS["block_size"]
    blocks = [data[i : i + size] for i in range(0, len(data), size)]
    # Blocks are staged in parallel: compare as sets of the blocks' MD5s.
    assert sorted(sent) == sorted(
        base64.b64encode(hashlib.md5(b).digest()).decode() for b in blocks
    )
    assert len(sent) == BLOCKS

    proxy.clear()
    upload_via(proxy, sas_token, name, "unverified.bin", path, verify_blocks=False)
    assert content(container, "unverified.bin") == data
    sent = [h for r, h in zip(proxy.requests, proxy.headers, strict=True) if r.method == "PUT"]
    assert len(sent) == BLOCKS + 1 and not any("content-md5" in h for h in sent)

    default = TransferSettings()
    assert default.verifies_blocks("http://127.0.0.1:10000/devstoreaccount1/c/b")
    assert not default.verifies_blocks("https://acct.blob.core.windows.net/c/b")
    assert TransferSettings(verify_blocks=True).verifies_blocks(
        "https://acct.blob.core.windows.net"
    )
    assert not TransferSettings(verify_blocks=False).verifies_blocks("http://127.0.0.1:1/a")


def test_proxy_stops_cleanly_with_open_keep_alive_connections(azurite, container, sas_token):
    before = threading.active_count()
    proxy = FaultProxy(target_port=azurite.port).start()
    client = ContainerClient(proxy.account_url, container.container_name, credential=sas_token)
    client.upload_blob("k.txt", b"keep-alive")  # leaves an idle pooled connection open
    proxy.delay(seconds=30, comp="metadata")
    hanging = threading.Thread(target=lambda: _ignore(client.get_container_properties), daemon=True)
    hanging.start()
    assert proxy.wait_for(lambda p: p.count(method="GET") >= 1)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 5
    hanging.join(timeout=10)
    client.close()
    assert threading.active_count() <= before + 1


def _ignore(call) -> None:
    with contextlib.suppress(Exception):  # the proxy went away under it, as intended
        call()


# --------------------------------------------------------------------------- transient faults


def test_transient_503_on_blocks_are_retried(proxy, container, sas_token, data_file):
    path, data = data_file
    proxy.fail(method="PUT", comp="block", status=503, times=2)
    blob = upload_via(proxy, sas_token, container.container_name, "t.bin", path)
    assert content(container, "t.bin") == data
    assert blob.md5_hex == hashlib.md5(data).hexdigest()
    assert proxy.outcomes.count("fail 503") == 2
    assert proxy.count(method="PUT", comp="block") == BLOCKS + 2


def test_throttling_429_is_retried(proxy, container, sas_token, data_file):
    path, data = data_file
    proxy.fail(method="PUT", comp="block", status=429, times=2)
    proxy.fail(method="PUT", comp="blocklist", status=429, times=1)
    upload_via(proxy, sas_token, container.container_name, "t.bin", path)
    assert content(container, "t.bin") == data
    assert proxy.outcomes.count("fail 429") == 3


def test_connection_resets_are_retried(proxy, container, sas_token, data_file):
    path, data = data_file
    proxy.drop_connection(method="PUT", comp="block", times=2)
    upload_via(proxy, sas_token, container.container_name, "r.bin", path)
    assert content(container, "r.bin") == data
    assert proxy.outcomes.count("drop") == 2


def test_lost_commit_response_is_retried_idempotently(proxy, container, sas_token, data_file):
    # The commit reaches the service but its answer is lost: the retry must still succeed.
    path, data = data_file
    proxy.drop_connection(method="PUT", comp="blocklist", after_forward=True, times=1)
    upload_via(proxy, sas_token, container.container_name, "c.bin", path)
    assert content(container, "c.bin") == data
    assert proxy.outcomes.count("drop after 201") == 1
    assert proxy.count(method="PUT", comp="blocklist") == 2


def test_read_timeout_is_retried(proxy, container, sas_token, data_file):
    path, data = data_file
    # A timeout well above what a 4 MiB block takes on a busy machine, so that only the
    # delayed block times out.
    proxy.delay(seconds=6.0, method="PUT", comp="block", times=1, before="response")
    upload_via(
        proxy, sas_token, container.container_name, "slow.bin", path, read_timeout_seconds=3.0
    )
    assert content(container, "slow.bin") == data
    assert proxy.count(method="PUT", comp="block") == BLOCKS + 1


def test_transient_failure_of_a_small_single_put_is_retried(proxy, container, sas_token):
    proxy.fail(method="PUT", path_contains="manifest", status=500, times=2)
    with storage(proxy.account_url, sas_token).container(container.container_name) as client:
        upload_bytes(client, "x_manifest.json", b"{}", content_type="application/json")
    assert content(container, "x_manifest.json") == b"{}"


# --------------------------------------------------------------------------- permanent faults


def test_permanent_commit_failure_keeps_the_previous_blob(proxy, container, sas_token, data_file):
    path, _ = data_file
    container.upload_blob("same.bin", b"previous export")
    proxy.fail(method="PUT", comp="blocklist", status=500, times=None)
    with pytest.raises(StorageError) as caught:
        upload_via(proxy, sas_token, container.container_name, "same.bin", path, max_retries=3)
    message = str(caught.value)
    assert "uploading blob 'same.bin' failed after retries" in message
    assert "HTTP 500" in message and "nothing was committed" in message
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert proxy.count(method="PUT", comp="blocklist") == 4  # 1 + max_retries
    assert content(container, "same.bin") == b"previous export"
    assert list_blob_names(container, "") == ["same.bin"]


def test_permanent_failure_of_one_blob_name_leaves_nothing_visible(
    proxy, container, sas_token, data_file
):
    path, data = data_file
    proxy.fail(path_contains="_updated", status=503, times=None)
    with storage(proxy.account_url, sas_token).container(container.container_name) as client:
        upload_file(client, "crm_added.bin", path, content_type="application/octet-stream")
        with pytest.raises(StorageError, match="HTTP 503 ServerBusy"):
            upload_file(client, "crm_updated.bin", path, content_type="application/octet-stream")
    assert list_blob_names(container, "") == ["crm_added.bin"]
    assert content(container, "crm_added.bin") == data
    # staging stopped at the first failure: not every block was attempted max_retries+1 times
    assert proxy.count(method="PUT", comp="blocklist", path_contains="_updated") == 0


def test_permanent_connection_failure(proxy, container, sas_token, data_file):
    path, _ = data_file
    proxy.drop_connection(method="PUT", times=None)
    with pytest.raises(StorageError) as caught:
        upload_via(proxy, sas_token, container.container_name, "d.bin", path, max_retries=2)
    assert "failed after retries" in str(caught.value) or "unreachable" in str(caught.value)
    assert list_blob_names(container, "") == []


def test_overwrite_is_atomic_until_commit(proxy, container, sas_token, data_file):
    path, data = data_file
    container.upload_blob("atomic.bin", b"old content")
    proxy.delay(seconds=1.5, method="PUT", comp="blocklist", times=1)
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.setdefault(
            "blob", upload_via(proxy, sas_token, container.container_name, "atomic.bin", path)
        )
    )
    worker.start()
    # every block is staged and the commit is on its way: readers still see the old blob
    assert proxy.wait_for(lambda p: p.count(method="PUT", comp="blocklist") == 1)
    assert proxy.count(method="PUT", comp="block") == BLOCKS
    assert content(container, "atomic.bin") == b"old content"
    worker.join(timeout=30)
    assert content(container, "atomic.bin") == data
    assert result["blob"].md5_hex == hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------- secrets


def _secret_forms(*secrets: str) -> set[str]:
    forms: set[str] = set()
    for secret in secrets:
        forms |= {secret, unquote(secret), quote(unquote(secret), safe="")}
    return {f for f in forms if len(f) >= 8}


def test_secrets_never_leak(proxy, azurite, container, data_file, caplog):
    path, _ = data_file
    name = container.container_name
    token = container_sas(azurite.account_url, name)
    expired = container_sas(
        azurite.account_url, name, expiry=datetime.now(timezone.utc) - timedelta(hours=1)
    )
    read_only = container_sas(azurite.account_url, name, permission="rl")
    sigs = [dict(p.split("=", 1) for p in t.split("&"))["sig"] for t in (token, expired, read_only)]
    secrets = _secret_forms(token, expired, read_only, *sigs, DEV_KEY)

    caplog.set_level(logging.DEBUG)  # root: urllib3 logs request lines with the SAS at DEBUG
    for logger in ("azure", "urllib3", "azexport_assets"):
        caplog.set_level(logging.DEBUG, logger=logger)
    texts: list[str] = []

    def failing(call) -> None:
        with pytest.raises(StorageError) as caught:
            call()
        texts.extend([str(caught.value), repr(caught.value)])

    # happy path with transient faults, via SAS and via the account key
    proxy.fail(method="PUT", comp="block", status=503, times=1)
    proxy.drop_connection(method="PUT", comp="block", times=1)
    texts.append(repr(upload_via(proxy, token, name, "ok.bin", path)))
    key_storage = ExportBlobStorage(
        account_url=proxy.account_url,
        credential=AzureBlobStorageKeyCredential(key=DEV_KEY),
        **SETTINGS,
    )
    with key_storage.container(name) as client:
        texts.append(repr(upload_file(client, "k.bin", path, content_type="a/b")))
    # permanent failure, preflight failures, unreachable account
    proxy.fail(method="PUT", comp="blocklist", status=500, times=None)
    failing(lambda: upload_via(proxy, token, name, "bad.bin", path, max_retries=1))
    proxy.clear()
    for bad in (expired, read_only):
        with storage(proxy.account_url, bad).container(name) as client:
            failing(lambda client=client: preflight(client))
    unreachable = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    with storage(unreachable, token, max_retries=1).container(name) as client:
        failing(lambda: preflight(client))
        failing(lambda: upload_bytes(client, "x.json", b"{}", content_type="application/json"))

    records = caplog.records
    assert any(r.name == "urllib3.connectionpool" for r in records)  # the dangerous logger ran
    texts += [r.getMessage() for r in records] + [r.exc_text or "" for r in records]
    texts.append(caplog.text)
    leaked = sorted({s for s in secrets for text in texts if s in text})
    assert not leaked, f"secrets leaked into messages/logs: {len(leaked)} forms"
