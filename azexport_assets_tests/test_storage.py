"""The storage layer against a real Azurite, through the real SDK and the resource."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from azure.storage.blob import ContainerClient
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageSASTokenCredential

from azexport_assets.demo.azurite import DEV_KEY, Azurite, container_sas
from azexport_assets.resources import ExportBlobStorage
from azexport_assets.storage import (
    StorageError,
    UploadedBlob,
    delete_blobs,
    list_blob_names,
    preflight,
    redact,
    sas_expiry,
    upload_bytes,
    upload_file,
)
from azexport_assets.storage.preflight import PROBE_BLOB

MiB = 1024 * 1024
FAST = {"retry_backoff_seconds": 0.01, "max_backoff_seconds": 0.05}


def sas_storage(account_url: str, token: str, **settings) -> ExportBlobStorage:
    return ExportBlobStorage(
        account_url=account_url,
        credential=AzureBlobStorageSASTokenCredential(token=token),
        **{**FAST, **settings},
    )


def key_storage(account_url: str, **settings) -> ExportBlobStorage:
    return ExportBlobStorage(
        account_url=account_url,
        credential=AzureBlobStorageKeyCredential(key=DEV_KEY),
        **{**FAST, **settings},
    )


def random_file(path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.md5(data).hexdigest()


def downloaded(container: ContainerClient, name: str) -> bytes:
    return container.download_blob(name).readall()


@pytest.fixture
def big_file(tmp_path: Path) -> tuple[Path, str]:
    return random_file(tmp_path / "big.bin", 20 * MiB + 12345)  # 6 blocks of 4 MiB, last partial


BLOCKS_4MIB = {"block_size": 4 * MiB, "single_put_threshold": 4 * MiB}


# --------------------------------------------------------------------------- uploads


def assert_uploaded(container: ContainerClient, blob: UploadedBlob, path: Path, md5_hex: str):
    data = downloaded(container, blob.name)
    assert data == path.read_bytes()
    assert hashlib.md5(data).hexdigest() == md5_hex == blob.md5_hex
    assert blob.bytes == len(data)
    props = container.get_blob_client(blob.name).get_blob_properties()
    assert bytes(props.content_settings.content_md5).hex() == md5_hex  # consumers can verify
    assert props.etag.strip('"') == blob.etag
    assert "?" not in blob.url and blob.url.endswith(blob.name)


def test_multi_block_upload_with_sas(azurite: Azurite, container, sas_token, big_file):
    path, md5_hex = big_file
    storage = sas_storage(azurite.account_url, sas_token, **BLOCKS_4MIB)
    with storage.container(container.container_name) as client:
        preflight(client)
        blob = upload_file(
            client, "crm/2025/export.csv", path, content_type="text/csv", metadata={"run": "r1"}
        )
    assert_uploaded(container, blob, path, md5_hex)
    props = container.get_blob_client(blob.name).get_blob_properties()
    assert props.content_settings.content_type == "text/csv"
    assert props.metadata == {"run": "r1"}
    blocks, _ = container.get_blob_client(blob.name).get_block_list("committed")
    assert [b.size for b in blocks] == [4 * MiB] * 5 + [12345]
    assert list_blob_names(container, "") == ["crm/2025/export.csv"]  # no probe, no leftovers


def test_multi_block_upload_with_account_key(azurite: Azurite, container, big_file):
    path, md5_hex = big_file
    storage = key_storage(azurite.account_url, **BLOCKS_4MIB, max_concurrency=3)
    with storage.container(container.container_name) as client:
        preflight(client)
        blob = upload_file(client, "k/export.bin", path, content_type="application/octet-stream")
    assert_uploaded(container, blob, path, md5_hex)


def test_account_key_works_with_a_non_localhost_path_style_url(azurite: Azurite, container):
    # 'localhost' is fine for the SDK; any other host name needs the account name spelled out.
    storage = key_storage(f"http://localhost:{azurite.port}/devstoreaccount1")
    with storage.container(container.container_name) as client:
        blob = upload_bytes(client, "m.json", b'{"a": 1}', content_type="application/json")
    assert downloaded(container, "m.json") == b'{"a": 1}'
    assert blob.md5_hex == hashlib.md5(b'{"a": 1}').hexdigest()


def test_small_file_single_put_and_md5_argument(azurite, container, sas_token, tmp_path):
    path, md5_hex = random_file(tmp_path / "small.csv", 1000)
    with sas_storage(azurite.account_url, sas_token).container(container.container_name) as c:
        blob = upload_file(c, "small.csv", path, content_type="text/csv", md5_hex=md5_hex)
        assert_uploaded(container, blob, path, md5_hex)
        empty = tmp_path / "empty.csv"
        empty.write_bytes(b"")
        blob = upload_file(c, "empty.csv", empty, content_type="text/csv")
        assert downloaded(container, "empty.csv") == b""
        assert blob.md5_hex == hashlib.md5(b"").hexdigest()
        with pytest.raises(StorageError, match="MD5"):
            upload_file(c, "wrong.csv", path, content_type="text/csv", md5_hex="0" * 32)
    assert sorted(list_blob_names(container, "")) == ["empty.csv", "small.csv"]


def test_md5_mismatch_on_a_multi_block_file_commits_nothing(
    azurite, container, sas_token, big_file
):
    path, _ = big_file
    storage = sas_storage(azurite.account_url, sas_token, **BLOCKS_4MIB)
    with storage.container(container.container_name) as c, pytest.raises(StorageError, match="MD5"):
        upload_file(c, "x.bin", path, content_type="application/octet-stream", md5_hex="0" * 32)
    assert list_blob_names(container, "") == []


def test_overwrite_replaces_content(azurite, container, sas_token, big_file, tmp_path):
    path, md5_hex = big_file
    container.upload_blob("same.bin", b"old content")
    storage = sas_storage(azurite.account_url, sas_token, **BLOCKS_4MIB)
    with storage.container(container.container_name) as c:
        blob = upload_file(c, "same.bin", path, content_type="application/octet-stream")
    assert_uploaded(container, blob, path, md5_hex)


def test_delete_and_list(azurite, container, sas_token):
    for name in ("a/1.csv", "a/2.csv", "b/1.csv"):
        container.upload_blob(name, b"x")
    with sas_storage(azurite.account_url, sas_token).container(container.container_name) as c:
        assert list_blob_names(c, "a/") == ["a/1.csv", "a/2.csv"]
        assert delete_blobs(c, ["a/1.csv", "missing.csv"]) == []
    no_delete = container_sas(azurite.account_url, container.container_name, permission="rwl")
    with sas_storage(azurite.account_url, no_delete).container(container.container_name) as c:
        assert delete_blobs(c, ["a/2.csv", "b/1.csv"]) == ["a/2.csv", "b/1.csv"]
    assert sorted(list_blob_names(container, "")) == ["a/2.csv", "b/1.csv"]


# --------------------------------------------------------------------------- preflight


def preflight_error(storage: ExportBlobStorage, container_name: str) -> str:
    with storage.container(container_name) as client, pytest.raises(StorageError) as caught:
        preflight(client)
    message = str(caught.value)
    assert "\n" not in message and "?" not in message
    return message


def test_preflight_passes_and_leaves_nothing_visible(azurite, container, sas_token):
    with sas_storage(azurite.account_url, sas_token).container(container.container_name) as c:
        preflight(c)
        preflight(c)
    assert list(container.list_blobs()) == []
    # ... the probe really wrote something (an uncommitted block), yet it stays invisible.
    hidden = [b.name for b in container.list_blobs(include=["uncommittedblobs"])]
    assert hidden == [PROBE_BLOB]


def test_preflight_missing_container(azurite: Azurite, sas_token):
    token = container_sas(azurite.account_url, "no-such-container")
    message = preflight_error(sas_storage(azurite.account_url, token), "no-such-container")
    assert "container 'no-such-container'" in message and "does not exist" in message


def test_preflight_expired_sas(azurite: Azurite, container):
    past = datetime.now(timezone.utc) - timedelta(hours=2)
    token = container_sas(azurite.account_url, container.container_name, expiry=past)
    message = preflight_error(sas_storage(azurite.account_url, token), container.container_name)
    assert "authentication failed" in message and "expired" in message
    assert "generate a new SAS token" in message


def test_preflight_sas_without_write_permission(azurite: Azurite, container):
    token = container_sas(azurite.account_url, container.container_name, permission="rl")
    message = preflight_error(sas_storage(azurite.account_url, token), container.container_name)
    assert "permission missing" in message
    assert "needs 'c' and 'w'" in message and "grants 'rl'" in message


@pytest.mark.parametrize("permission", ["c", "cl", "racl"])
def test_preflight_sas_without_w_permission(azurite: Azurite, container, permission):
    token = container_sas(azurite.account_url, container.container_name, permission=permission)
    message = preflight_error(sas_storage(azurite.account_url, token), container.container_name)
    assert "permission missing" in message and "needs 'w'" in message
    assert f"grants '{permission}'" in message
    assert list(container.list_blobs()) == []


def test_preflight_rejected_sas_signature(azurite: Azurite, container):
    token = container_sas(azurite.account_url, "another-container")
    message = preflight_error(sas_storage(azurite.account_url, token), container.container_name)
    assert "authentication failed" in message and "rejected" in message


def test_preflight_wrong_account_key(azurite: Azurite, container):
    storage = ExportBlobStorage(
        account_url=azurite.account_url,
        credential=AzureBlobStorageKeyCredential(key="QUJD" + DEV_KEY[4:]),
        **FAST,
    )
    message = preflight_error(storage, container.container_name)
    assert "account key was rejected" in message


def test_preflight_unreachable_port(azurite: Azurite, container, sas_token):
    from azexport_assets.demo.azurite import free_port

    url = f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    started = time.monotonic()
    message = preflight_error(sas_storage(url, sas_token), container.container_name)
    assert "account unreachable" in message and "account_url" in message
    assert time.monotonic() - started < 10  # fails fast, not after the whole retry schedule


def test_preflight_wrong_account_name(azurite: Azurite, container, sas_token):
    url = f"http://127.0.0.1:{azurite.port}/otheraccount"
    message = preflight_error(sas_storage(url, sas_token), container.container_name)
    assert "not found" in message and "account_url" in message


# --------------------------------------------------------------------------- SAS parsing


def test_sas_expiry_parsing(azurite: Azurite):
    expiry = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    token = container_sas(azurite.account_url, "c", expiry=expiry)
    assert sas_expiry(token) == expiry
    assert sas_expiry("?" + token) == expiry
    assert sas_expiry(f"https://a.blob.core.windows.net/c?{token}") == expiry
    assert sas_expiry("sv=2022-11-02&se=2030-01-02&sig=abc") == datetime(
        2030, 1, 2, tzinfo=timezone.utc
    )
    assert sas_expiry("se=2030-01-02T03%3A04%3A05.1234567Z&sig=x") == datetime(
        2030, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc
    )
    assert sas_expiry("sv=2022-11-02&sig=abc") is None
    assert sas_expiry("se=garbage&sig=abc") is None
    assert sas_expiry("") is None


def test_redact_removes_query_strings_and_keys():
    text = (
        "HTTPConnectionPool(host='h', port=1): Max retries exceeded with url: "
        "/devstoreaccount1/c/b?comp=block&sv=2022&sig=SECRET%2Fsig%3D (Caused by x) "
        "token sv=2022-11-02&ss=b&sig=OTHER/SECRET= "
        f"DefaultEndpointsProtocol=http;AccountKey={DEV_KEY};BlobEndpoint=x "
        f"key {DEV_KEY} Authorization: SharedKey devstoreaccount1:abcdEFGH+/= "
        "https://a.blob.core.windows.net/c/x.csv?se=2030&sp=rw&sig=abc done"
    )
    cleaned = redact(text)
    for secret in ("SECRET", "OTHER", DEV_KEY, "abcdEFGH", "sig=", "?"):
        assert secret not in cleaned
    assert "/devstoreaccount1/c/b (Caused by x)" in cleaned
    assert "https://a.blob.core.windows.net/c/x.csv done" in cleaned


# --------------------------------------------------------------------------- as a Dagster resource


def test_resource_in_a_dagster_run_with_env_var_secret(azurite, container, sas_token, monkeypatch):
    monkeypatch.setenv("AZEXPORT_TEST_SAS", sas_token)

    @dg.asset
    def exported(storage: ExportBlobStorage) -> dg.MaterializeResult:
        with storage.container(container.container_name) as client:
            preflight(client)
            blob = upload_bytes(client, "run/d.json", b"[1]", content_type="application/json")
        return dg.MaterializeResult(metadata={"url": blob.url, "md5": blob.md5_hex})

    resource = ExportBlobStorage(
        account_url=azurite.account_url,
        credential=AzureBlobStorageSASTokenCredential(token=dg.EnvVar("AZEXPORT_TEST_SAS")),
        max_retries=2,
    )
    result = dg.materialize([exported], resources={"storage": resource})
    assert result.success
    assert downloaded(container, "run/d.json") == b"[1]"
    metadata = result.asset_materializations_for_node("exported")[0].metadata
    assert "?" not in metadata["url"].value and "sig" not in metadata["url"].value


def test_bad_account_url_is_a_storage_error(sas_token):
    storage = sas_storage("ftp://nowhere", sas_token)
    with pytest.raises(StorageError) as caught, storage.container("c-1"):
        pass
    assert "account_url" in str(caught.value) and "sig" not in str(caught.value)
