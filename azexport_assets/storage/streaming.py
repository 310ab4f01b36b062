"""Upload a local file while it is still being written.

The export writes each file to local disk and uploads it at the same time: as soon as the
writer has flushed a full block to the file, that block is read back (from the page cache) and
staged; when the writer closes the file, the rest is staged and the block list committed.
A run then takes about max(encode, upload) instead of their sum, the warehouse is held only
while encoding, and memory stays at a few blocks whatever the size of the file.

The guarantees of `upload_file` hold: nothing is visible before the commit, every block is
verified in transit (its own Content-MD5 over plain http, TLS over https:
`TransferSettings.verifies_blocks`), and the blob's Content-MD5 is the MD5 the writer
computed of the bytes it wrote (not computed a second time: the file is private to the export,
and its size is checked before the commit).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from azexport_assets.storage.blobs import (
    MAX_BLOCKS,
    BlobProperties,
    UploadedBlob,
    _put_whole,
    _transfer,
    replacing_archived,
    upload_file,
)
from azexport_assets.storage.errors import StorageError, error_code, storage_error
from azexport_assets.storage.secrets import strip_query


class UploadPool:
    """The connections of one export: `max_concurrency` block uploads at a time, and at most
    `max_concurrency + 1` blocks in memory, shared by every file the export uploads."""

    def __init__(self, container: ContainerClient) -> None:
        self.container = container
        self.settings = _transfer(container)
        workers = self.settings.max_concurrency
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="azexport-up")
        self.slots = threading.Semaphore(workers + 1)
        self.uploaded_bytes = 0
        self._lock = threading.Lock()

    def count(self, size: int) -> None:
        with self._lock:
            self.uploaded_bytes += size

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class GrowingFileUpload:
    """One blob uploaded from a file that may still grow (see module docstring).

    The writer calls `grew(size)` after each flush and `finish(size, md5_hex, metadata)` after
    closing the file (`metadata`: entries known only then, e.g. the file's rows); `result()`
    waits for the commit and returns the blob (or raises StorageError).
    """

    def __init__(
        self,
        pool: UploadPool,
        blob_name: str,
        path: Path,
        *,
        properties: BlobProperties,
        on_committed: Callable[[UploadedBlob], None] | None = None,
    ) -> None:
        self.pool = pool
        self.blob_name = blob_name
        self.path = Path(path)
        self.properties = properties
        self.on_committed = on_committed
        self._available = 0
        self._final: tuple[int, str] | None = None  # (size, md5) once the writer closed it
        self._changed = threading.Condition()
        self._failure: BaseException | None = None
        self._blob: UploadedBlob | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"azexport-file-{blob_name[-40:]}", daemon=True
        )
        self._thread.start()

    # -- writer side

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def grew(self, size: int) -> None:
        with self._changed:
            self._available = size
            self._changed.notify()

    def finish(self, size: int, md5_hex: str, metadata: Mapping[str, str] | None = None) -> None:
        with self._changed:
            self._available = size
            self._final = (size, md5_hex)
            self.properties = self.properties.with_metadata(metadata)
            self._changed.notify()

    def abort(self) -> None:
        """Stop staging (the writer failed); nothing is committed."""
        with self._changed:
            if self._failure is None:
                self._failure = StorageError(f"upload of blob '{self.blob_name}' aborted")
            self._changed.notify()

    def wait(self, timeout: float) -> bool:
        """True once the upload has ended (committed or failed)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> UploadedBlob:
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        assert self._blob is not None
        return self._blob

    # -- upload thread

    def _wait_for(self, offset: int, block_size: int) -> tuple[int, bool]:
        """Block until a full block past `offset` is on disk or the file is closed."""
        with self._changed:
            while (
                self._failure is None
                and self._final is None
                and self._available - offset < block_size
            ):
                self._changed.wait()
            return self._available, self._final is not None

    def _run(self) -> None:
        blob = self.pool.container.get_blob_client(self.blob_name)
        try:
            result, digest_hex, size = self._upload(blob)
            self._blob = UploadedBlob(
                name=self.blob_name,
                url=strip_query(blob.url),
                bytes=size,
                md5_hex=digest_hex,
                etag=str(result.get("etag", "")).strip('"'),
            )
        except StorageError as error:
            self._failure = error
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear StorageError
            failure = storage_error(
                self.pool.container, error, f"uploading blob '{self.blob_name}'"
            )
            failure.__context__ = failure.__cause__ = None
            self._failure = failure
        if self._blob is not None and self.on_committed is not None:
            self.on_committed(self._blob)

    def _upload(self, blob) -> tuple[dict, str, int]:
        settings = self.pool.settings
        block_size = settings.block_size
        token = uuid.uuid4().hex[:12]  # fresh ids: never mix with another writer's blocks
        ids: list[str] = []
        futures: list[Future] = []
        offset = 0
        checks = {"validate_content": "md5"} if settings.verifies_blocks(blob.url) else {}
        checks |= settings.scope
        with self.path.open("rb") as stream:
            while True:
                available, closed = self._wait_for(offset, block_size)
                if self._failure is not None:
                    raise self._failure
                final_size = self._final[0] if closed and self._final else None
                if (
                    final_size is not None
                    and not ids
                    and final_size <= settings.single_put_threshold
                ):
                    # Small file: one atomic Put Blob, as upload_file does.
                    data = stream.read()
                    result, digest_hex = _put_whole(
                        blob, data, self.properties, self._final[1], settings.scope
                    )
                    self.pool.count(len(data))
                    return result, digest_hex, len(data)
                if final_size is not None and final_size > block_size * MAX_BLOCKS:
                    # Too many blocks at this block size: upload_file picks a larger one.
                    return self._upload_whole_file(blob)
                # Stage every full block on disk (and the last, short one once closed).
                while available - offset >= block_size or (closed and offset < available):
                    self.pool.slots.acquire()
                    chunk = stream.read(min(block_size, available - offset))
                    offset += len(chunk)
                    block_id = f"{token}-{len(ids):06d}"
                    ids.append(block_id)
                    future = self.pool.executor.submit(
                        blob.stage_block, block_id, chunk, length=len(chunk), **checks
                    )
                    future.add_done_callback(self._block_done(len(chunk)))
                    futures.append(future)
                    del chunk
                    if self._failure is not None:  # a block failed (set by _block_done)
                        raise self._failure
                if closed:
                    break
        for future in futures:
            future.result()  # re-raises a failed block
        assert self._final is not None
        if offset != self._final[0]:
            raise StorageError(
                f"uploading blob '{self.blob_name}' failed: read {offset} bytes of a "
                f"{self._final[0]}-byte file; nothing was committed - rerun the export"
            )
        md5_hex = self._final[1]
        try:
            options = self.properties.request_options(bytes.fromhex(md5_hex)) | settings.scope
            result = replacing_archived(blob, lambda: blob.commit_block_list(ids, **options))
        except HttpResponseError as error:
            # A concurrent writer of the same name discarded our blocks: upload once more.
            if error_code(error) != "InvalidBlockList":
                raise
            return self._upload_whole_file(blob)
        return result, md5_hex, offset

    def _upload_whole_file(self, blob) -> tuple[dict, str, int]:
        assert self._final is not None
        uploaded = upload_file(
            self.pool.container,
            self.blob_name,
            self.path,
            properties=self.properties,
            md5_hex=self._final[1],
        )
        self.pool.count(uploaded.bytes)
        return {"etag": uploaded.etag}, uploaded.md5_hex, uploaded.bytes

    def _block_done(self, size: int) -> Callable[[Future], None]:
        def done(future: Future) -> None:
            self.pool.slots.release()
            if not future.cancelled() and future.exception() is None:
                self.pool.count(size)
            else:
                with self._changed:
                    if self._failure is None:
                        self._failure = future.exception() or StorageError("upload cancelled")
                    self._changed.notify()

        return done
