"""Local files -> committed blobs: streaming, parallel, atomic, verified.

Files up to `single_put_threshold` go in one Put Blob request. Larger files are read once,
sequentially (hashing the whole file as we go), and their blocks are staged in parallel; the blob
appears - or is replaced - only when `Put Block List` commits them, so readers never see a
half-written blob and a failed upload leaves the previous blob (if any) untouched. Uncommitted
blocks are invisible and the service discards them (after a week at most).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings, StandardBlobTier

from azexport_assets.storage.errors import StorageError, error_code, short_reason, storage_error
from azexport_assets.storage.resource import TransferSettings
from azexport_assets.storage.secrets import sas_fields, strip_query

log = logging.getLogger("azexport_assets.storage")

MAX_BLOCKS = 50_000  # per blob, an Azure limit


@dataclass(frozen=True)
class UploadedBlob:
    """A committed blob. `url` never carries a query string (no SAS)."""

    name: str
    url: str
    bytes: int
    md5_hex: str
    etag: str


@dataclass(frozen=True)
class BlobProperties:
    """What a blob carries besides its bytes, set in the request that commits it (Put Blob or
    Put Block List), so a blob is never visible without them.

    `access_tier` is 'Hot', 'Cool', 'Cold' or 'Archive' (None: the account's default);
    `tags` are blob index tags (a SAS needs the 't' permission); `metadata` is user metadata.
    The blob's Content-MD5 is always set from the bytes sent.
    """

    content_type: str = "application/octet-stream"
    content_encoding: str | None = None
    cache_control: str | None = None
    access_tier: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)

    def with_metadata(self, extra: Mapping[str, str] | None) -> BlobProperties:
        return replace(self, metadata={**self.metadata, **(extra or {})}) if extra else self

    def request_options(self, digest: bytes) -> dict[str, Any]:
        """Keyword arguments of `upload_blob` / `commit_block_list`."""
        return {
            # x-ms-blob-content-md5: stored with the blob, so consumers (and
            # `azcopy --check-md5`) verify.
            "content_settings": ContentSettings(
                content_type=self.content_type,
                content_encoding=self.content_encoding,
                cache_control=self.cache_control,
                content_md5=bytearray(digest),
            ),
            "metadata": dict(self.metadata) or None,
            "tags": dict(self.tags) or None,
            "standard_blob_tier": StandardBlobTier(self.access_tier) if self.access_tier else None,
        }


def _properties(
    properties: BlobProperties | None, content_type: str | None, metadata: Mapping[str, str] | None
) -> BlobProperties:
    """`properties`, or plain ones of `content_type`, plus `metadata`."""
    if properties is None:
        properties = BlobProperties(content_type=content_type or "application/octet-stream")
    elif content_type is not None:
        properties = replace(properties, content_type=content_type)
    return properties.with_metadata(metadata)


def replacing_archived(blob: BlobClient, commit: Callable[[], dict]) -> dict:
    """Run `commit` (a Put Blob or Put Block List); if the blob it replaces is in the Archive
    tier, which no write may touch until it is rehydrated, delete that blob and commit again.
    The archived blob could not be read anyway; Azure may charge its early deletion."""
    try:
        return commit()
    except HttpResponseError as error:
        if error_code(error) != "BlobArchived":
            raise
    log.warning("blob %r is archived: deleting it to write the new one", blob.blob_name)
    blob.delete_blob(delete_snapshots="include")
    return commit()


def _transfer(container: ContainerClient) -> TransferSettings:
    return getattr(container, "transfer", None) or TransferSettings()


def _check_md5(expected: str | None, actual: str, blob_name: str) -> None:
    if expected and expected.lower() != actual:
        raise StorageError(
            f"uploading blob '{blob_name}' failed: the local file's MD5 {actual} differs from the "
            f"expected {expected.lower()} (was the file changed while uploading?); nothing was "
            "committed - rerun the export"
        )


def _put_whole(
    blob: BlobClient,
    data: bytes,
    properties: BlobProperties,
    md5_hex: str | None = None,
    scope: dict[str, str] | None = None,
) -> tuple[dict, str]:
    """One Put Blob request: atomic by itself; the service verifies the body's Content-MD5.
    `scope`: the encryption scope keyword (`TransferSettings.scope`)."""
    digest = hashlib.md5(data).digest()
    _check_md5(md5_hex, digest.hex(), blob.blob_name)
    result = replacing_archived(
        blob,
        lambda: blob.upload_blob(
            data,
            length=len(data),
            overwrite=True,
            **properties.request_options(digest),
            validate_content="md5",
            max_concurrency=1,
            **(scope or {}),
        ),
    )
    return result, digest.hex()


def _stage_blocks(
    blob: BlobClient,
    path: Path,
    block_size: int,
    workers: int,
    verify: bool,
    scope: dict[str, str] | None = None,
) -> tuple[list[str], bytes, int]:
    """Stage the file's blocks in parallel; return (block ids, MD5 digest, bytes read).

    The file is read sequentially by this thread (one pass: hashing needs order) and at most
    `workers + 1` blocks are in memory at once.
    """
    token = uuid.uuid4().hex[:12]  # fresh ids per attempt: never mix with another writer's blocks
    md5 = hashlib.md5()
    ids: list[str] = []
    futures: list[Future] = []
    total = 0
    slots = threading.Semaphore(workers + 1)
    failed = threading.Event()
    checks = {"validate_content": "md5"} if verify else {}
    checks |= scope or {}

    def done(future: Future) -> None:
        slots.release()
        if future.cancelled() or future.exception() is not None:
            failed.set()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azexport-block") as pool:
        try:
            with path.open("rb") as stream:
                while not failed.is_set():
                    slots.acquire()
                    chunk = stream.read(block_size)
                    if not chunk or failed.is_set():
                        slots.release()
                        break
                    md5.update(chunk)
                    total += len(chunk)
                    block_id = f"{token}-{len(ids):06d}"  # equal length for all ids of a blob
                    ids.append(block_id)
                    future = pool.submit(
                        blob.stage_block, block_id, chunk, length=len(chunk), **checks
                    )
                    future.add_done_callback(done)
                    futures.append(future)
                    del chunk
        except BaseException:
            failed.set()
            raise
        finally:
            if failed.is_set():
                # Drop the queued blocks; running requests finish (they cannot be interrupted).
                pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    return ids, md5.digest(), total


def _put_blocks(
    blob: BlobClient,
    path: Path,
    size: int,
    settings: TransferSettings,
    properties: BlobProperties,
    md5_hex: str | None,
) -> tuple[dict, str, int]:
    block_size = max(settings.block_size, math.ceil(size / MAX_BLOCKS))
    for attempt in (1, 2):
        ids, digest, total = _stage_blocks(
            blob,
            path,
            block_size,
            settings.max_concurrency,
            settings.verifies_blocks(blob.url),
            settings.scope,
        )
        if total != size:
            raise StorageError(
                f"uploading blob '{blob.blob_name}' failed: the local file changed size while "
                f"uploading ({size} -> {total} bytes); nothing was committed - rerun the export"
            )
        _check_md5(md5_hex, digest.hex(), blob.blob_name)
        try:
            commit = partial(
                blob.commit_block_list,
                ids,
                **properties.request_options(digest),
                **settings.scope,
            )
            result = replacing_archived(blob, commit)
            return result, digest.hex(), len(ids)
        except HttpResponseError as error:
            # Another writer committing the same blob name discards our uncommitted blocks;
            # staging everything again once is the only way to finish.
            if attempt == 2 or error_code(error) != "InvalidBlockList":
                raise
            log.warning(
                "blob %r: staged blocks were discarded before commit (concurrent writer?); "
                "uploading again",
                blob.blob_name,
            )
    raise AssertionError("unreachable")


def upload_file(
    container: ContainerClient,
    blob_name: str,
    path: Path,
    *,
    content_type: str | None = None,
    md5_hex: str | None = None,
    metadata: Mapping[str, str] | None = None,
    properties: BlobProperties | None = None,
) -> UploadedBlob:
    """Upload a local file as blob `blob_name`, atomically replacing any existing blob.

    The blob gets `properties` (content settings, tier, tags, metadata) in the request that
    commits it; `content_type` and `metadata`, when given, override / add to them.

    Streams the file; above the container's `single_put_threshold` it goes as blocks staged in
    parallel, committed at the end. Transient errors are retried per request by the client's
    retry policy; after that a `StorageError` is raised and nothing new is visible. The blob's
    Content-MD5 is set from the bytes actually sent (and checked against `md5_hex` if given).
    """
    path = Path(path)
    props = _properties(properties, content_type, metadata)
    settings = _transfer(container)
    blob = container.get_blob_client(blob_name)
    started = time.monotonic()
    failure: StorageError | None = None
    try:
        size = path.stat().st_size
        if size <= settings.single_put_threshold:
            data = path.read_bytes()  # at most single_put_threshold bytes
            size = len(data)
            result, digest_hex = _put_whole(blob, data, props, md5_hex, settings.scope)
            blocks = 0
        else:
            result, digest_hex, blocks = _put_blocks(blob, path, size, settings, props, md5_hex)
    except Exception as error:  # noqa: BLE001 - every failure becomes one clear StorageError
        failure = storage_error(container, error, f"uploading blob '{blob_name}'")
    if failure is not None:
        # Raised outside `except`: no chained SDK exception, whose text may carry request URLs.
        failure.__context__ = failure.__cause__ = None
        raise failure
    log.debug(
        "uploaded blob %r: %d bytes, %d blocks, %.2fs",
        blob_name,
        size,
        blocks,
        time.monotonic() - started,
    )
    return UploadedBlob(
        name=blob_name,
        url=strip_query(blob.url),
        bytes=size,
        md5_hex=digest_hex,
        etag=str(result.get("etag", "")).strip('"'),
    )


def upload_bytes(
    container: ContainerClient,
    blob_name: str,
    data: bytes,
    *,
    content_type: str | None = None,
    properties: BlobProperties | None = None,
) -> UploadedBlob:
    """Upload a small payload (a manifest) in one atomic request."""
    blob = container.get_blob_client(blob_name)
    props = _properties(properties, content_type, None)
    failure: StorageError | None = None
    try:
        result, digest_hex = _put_whole(blob, bytes(data), props, scope=_transfer(container).scope)
    except Exception as error:  # noqa: BLE001
        failure = storage_error(container, error, f"uploading blob '{blob_name}'")
    if failure is not None:
        failure.__context__ = failure.__cause__ = None
        raise failure
    return UploadedBlob(
        name=blob_name,
        url=strip_query(blob.url),
        bytes=len(data),
        md5_hex=digest_hex,
        etag=str(result.get("etag", "")).strip('"'),
    )


def delete_blobs(container: ContainerClient, names: Iterable[str]) -> list[str]:
    """Best effort: delete each blob (and its snapshots); return the names that could not be
    deleted (e.g. a SAS without 'd'). A blob that is already gone counts as deleted."""
    not_deleted: list[str] = []
    for name in names:
        try:
            container.delete_blob(name, delete_snapshots="include")
        except ResourceNotFoundError:
            continue
        except AzureError as error:
            not_deleted.append(name)
            log.warning("could not delete blob %r: %s", name, short_reason(error))
    return not_deleted


_NOT_PERMITTED = ("AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch")


def list_blob_names_if_permitted(container: ContainerClient, prefix: str) -> list[str] | None:
    """`list_blob_names`, or None when the credential may not list the container: a SAS
    without 'l' (no request is sent) or a 403 that says so. A write-only SAS is a common grant
    for a partner's drop container, and listing only serves the clean-up of earlier files."""
    granted = sas_fields(container.url).get("sp")
    if granted is not None and "l" not in granted:
        return None
    failure: StorageError | None = None
    try:
        return list(container.list_blob_names(name_starts_with=prefix or None))
    except HttpResponseError as error:
        if error.status_code == 403 and error_code(error) in _NOT_PERMITTED:
            return None
        failure = storage_error(container, error, f"listing blobs under '{prefix}'")
    except AzureError as error:
        failure = storage_error(container, error, f"listing blobs under '{prefix}'")
    failure.__context__ = failure.__cause__ = None
    raise failure


def list_blob_names(container: ContainerClient, prefix: str) -> list[str]:
    """Names of the committed blobs whose name starts with `prefix`."""
    failure: StorageError | None = None
    try:
        return list(container.list_blob_names(name_starts_with=prefix or None))
    except AzureError as error:
        failure = storage_error(container, error, f"listing blobs under '{prefix}'")
    failure.__context__ = failure.__cause__ = None
    raise failure
