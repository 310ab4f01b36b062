"""Local files of exact bytes: optional gzip/zstd compression, MD5 while writing, and
rotation into parts that never exceed a byte limit.

`PartWriter` receives rows as contiguous UTF-8 bytes plus row end offsets (straight from an
Arrow string array, no per-row Python) and decides where each part ends:

- Every part is `head + rows + tail`, so each is a complete file of its format.
- The limit is *hard*: a part never exceeds `max_bytes` (as written, i.e. after compression)
  unless a single row with head and tail is larger on its own; such a row gets a part alone.
- Uncompressed, the split point is exact (bisect on the offsets). Compressed, the size of a
  chunk is not known before compressing it, so the writer only feeds a chunk whose *worst case*
  compressed size still fits, then flushes the compressor (sync flush) to learn the exact size.
  Near the end of a part the chunks shrink geometrically until not one more row can fit.
- A full disk raises `LocalDiskFullError` (folder, bytes written, free space, and the
  `AZEXPORT_TEMP_DIR` setting that moves the folder); the writer's files are closed and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import zlib
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import zstandard

from azexport_assets import naming
from azexport_assets.formats.errors import LocalDiskFullError, disk_full_errno
from azexport_assets.formats.spec import WrittenFile

Compression = Literal["none", "gzip", "zstd"]

GZIP_LEVEL = 6  # zlib's default: the usual size/speed trade-off of `gzip`
ZSTD_LEVEL = 3  # zstd's default
_BOUND_CONSTANT = 64  # covers gzip/zstd headers and one flush marker
_TRAILER_RESERVE = 32  # gzip: final block + CRC32/ISIZE; zstd: last block header + checksum


def compressed_bound(size: int) -> int:
    """An upper bound of the bytes one sync-flushed chunk of `size` input bytes can produce.

    deflate's stored blocks cost 5 bytes per <=64 KiB and zstd's raw blocks 3 bytes per
    128 KiB, both far below size/8; the constant covers stream headers and the flush marker.
    """
    return size + size // 8 + _BOUND_CONSTANT


def _max_input_for(room: int) -> int:
    """The largest input size whose `compressed_bound` is <= room."""
    return max(0, (room - _BOUND_CONSTANT) * 8 // 9)


class PartObserver(Protocol):
    """Told about each part as it is written (the export uploads parts while they grow)."""

    def opened(self, index: int, path: Path) -> None: ...

    def grew(self, index: int, size: int) -> None:
        """`size` bytes of part `index` are in the file (flushed to the OS)."""

    def closed(self, index: int, written: WrittenFile) -> None: ...


class _Compressor:
    """A streaming gzip/zstd compressor with an explicit flush (or a pass-through)."""

    def __init__(self, compression: Compression) -> None:
        self.kind = compression
        if compression == "gzip":
            # wbits=31: gzip wrapper; zlib writes mtime 0, so output is deterministic.
            self._z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        elif compression == "zstd":
            self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()

    def compress(self, data: bytes | memoryview) -> bytes | memoryview:
        return data if self.kind == "none" else self._z.compress(data)

    def flush(self) -> bytes:
        """Emit everything fed so far (the stream stays open)."""
        if self.kind == "gzip":
            return self._z.flush(zlib.Z_SYNC_FLUSH)
        if self.kind == "zstd":
            return self._z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return b""

    def finish(self) -> bytes:
        return b"" if self.kind == "none" else self._z.flush()


class _Part:
    """One open output file: counts bytes and rows and hashes what it writes."""

    def __init__(self, path: Path, compression: Compression) -> None:
        self.path = path
        self.rows = 0
        self.bytes = 0
        self._md5 = hashlib.md5()
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._z = _Compressor(compression)

    def _emit(self, data: bytes | memoryview) -> None:
        if len(data):
            self._md5.update(data)
            self._file.write(data)
            self.bytes += len(data)

    def write(self, data: bytes | memoryview, rows: int = 0, flush: bool = False) -> None:
        self._emit(self._z.compress(data))
        if flush:
            self._emit(self._z.flush())
        self.rows += rows

    def flush(self) -> None:
        """Hand what was written to the OS, so another reader of the file sees it."""
        self._file.flush()

    def close(self) -> WrittenFile:
        self._emit(self._z.finish())
        self._file.close()
        return WrittenFile(self.path, self.rows, self.bytes, self._md5.hexdigest())

    def abort(self) -> None:
        # A full disk makes close() fail too (flushing the buffer); the descriptor is closed
        # all the same, which is all that matters for a file about to be removed.
        with contextlib.suppress(OSError):
            self._file.close()


class PartWriter:
    """Writes rows into `out_dir/<stem>_part-NNNNN<ext>` files, rotating at `max_bytes`.

    head: bytes opening every part (CSV header, `[`, XML declaration + root tag).
    tail: bytes closing every part.
    lead: bytes dropped from the first row of every part (the `,` before a JSON array item),
          so a row can carry its separator in front and parts still start cleanly.
    """

    def __init__(
        self,
        out_dir: Path,
        extension: str,
        head: bytes,
        tail: bytes,
        *,
        lead: int = 0,
        compression: Compression = "none",
        max_bytes: int | None = None,
        stem: str = "export",
        observer: PartObserver | None = None,
    ) -> None:
        self._out_dir = Path(out_dir)
        self._extension = extension
        self._stem = stem
        self._head = head
        self._tail = tail
        self._lead = lead
        self._compression = compression
        self._max = max_bytes
        self._part: _Part | None = None
        self._observer = observer
        self._paths: list[Path] = []  # every file this writer created
        self.files: list[WrittenFile] = []

    # -- parts

    def _open(self) -> _Part:
        index = len(self.files) + 1
        path = self._out_dir / f"{self._stem}{naming.part_suffix(index)}{self._extension}"
        self._paths.append(path)
        part = _Part(path, self._compression)
        if self._observer is not None:
            self._observer.opened(index, path)
        part.write(self._head, flush=self._max is not None)
        self._part = part
        return part

    def _close(self) -> None:
        if self._part is not None:
            self._part.write(self._tail)
            self.files.append(self._part.close())
            self._part = None
            if self._observer is not None:
                self._observer.closed(len(self.files), self.files[-1])

    def _room(self, part: _Part) -> int:
        """How many more uncompressed row bytes the open part can surely take."""
        assert self._max is not None
        if self._compression == "none":
            return self._max - part.bytes - len(self._tail)
        reserve = compressed_bound(len(self._tail)) + _TRAILER_RESERVE
        return _max_input_for(self._max - part.bytes - reserve)

    @contextlib.contextmanager
    def _disk_full_as_error(self) -> Iterator[None]:
        """Turn ENOSPC/EDQUOT into `LocalDiskFullError`, after closing and removing the files
        written so far (they are useless, and removing them frees the disk at once)."""
        try:
            yield
        except OSError as error:
            code = disk_full_errno(error)
            if code is None:
                raise
            self.abort()
            full = LocalDiskFullError.for_files(self._out_dir, self._paths, code)
            for path in self._paths:
                path.unlink(missing_ok=True)
            raise full from error

    # -- rows

    def write_rows(self, data: memoryview, offsets: Sequence[int], first: int, count: int) -> None:
        """Write rows `first .. first+count-1`; row r is `data[offsets[r]:offsets[r + 1]]`.

        `offsets` is any indexable sequence (a memoryview over an Arrow offsets buffer).
        """
        with self._disk_full_as_error():
            self._write_rows(data, offsets, first, count)

    def _write_rows(self, data: memoryview, offsets: Sequence[int], first: int, count: int) -> None:
        end_row = first + count
        i = first
        while i < end_row:
            part = self._part or self._open()
            lead = self._lead if part.rows == 0 else 0
            if self._max is None:
                j = end_row
            else:
                # Largest j with (offsets[j] - offsets[i] - lead) <= room.
                limit = offsets[i] + lead + self._room(part)
                j = bisect_right(offsets, limit, i + 1, end_row + 1) - 1
                if j <= i:
                    if part.rows:
                        self._close()  # the next row does not fit: start a new part
                        continue
                    j = i + 1  # a single row larger than the limit gets a part of its own
            part.write(data[offsets[i] + lead : offsets[j]], j - i, flush=self._max is not None)
            i = j
        if self._part is not None and self._observer is not None:
            self._part.flush()
            self._observer.grew(len(self.files) + 1, self._part.bytes)

    def finish(self) -> list[WrittenFile]:
        """Close the last part (writing one empty but valid part if there were no rows)."""
        with self._disk_full_as_error():
            if self._part is None and not self.files:
                self._open()
            self._close()
        return self.files

    def abort(self) -> None:
        if self._part is not None:
            self._part.abort()
            self._part = None
