"""The two ways local writing can fail that a user must act on, as exceptions that say what to do.

Both are raised by `write_export` while it writes local files, i.e. before anything is uploaded.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from pathlib import Path

import duckdb

# The environment variable that moves the export's local work folder (read by the export code).
TEMP_DIR_VARIABLE = "AZEXPORT_TEMP_DIR"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


class UnrepresentableValueError(ValueError):
    """A value the chosen format cannot hold exactly (e.g. an infinite DATE in Parquet).

    The message names the column, the value and what to change; nothing was uploaded.
    """

    def __init__(self, message: str, column: str) -> None:
        super().__init__(message)
        self.column = column


class LocalDiskFullError(OSError):
    """The local work folder's filesystem is full (ENOSPC / EDQUOT) while writing export files.

    `errno` stays ENOSPC/EDQUOT so code that handles `OSError` still recognises it; `str()` is
    one line naming the folder, the bytes written so far, the free space and the setting
    (`AZEXPORT_TEMP_DIR`) that moves the folder to a larger disk.
    """

    def __init__(
        self, folder: Path, written_bytes: int, free_bytes: int | None, code: int = errno.ENOSPC
    ) -> None:
        self.folder = Path(folder)
        self.written_bytes = written_bytes
        self.free_bytes = free_bytes
        free = "unknown" if free_bytes is None else human_bytes(free_bytes)
        self.message = (
            f"the local work folder {self.folder} ran out of disk space after "
            f"{human_bytes(written_bytes)} of export files were written ({free} free on that "
            f"filesystem); free space there or set the environment "
            f"variable {TEMP_DIR_VARIABLE} to a folder on a disk with room for the whole export "
            "(Parquet split into parts needs about twice the export's size)"
        )
        super().__init__(code, self.message, str(self.folder))

    def __str__(self) -> str:
        return self.message

    @classmethod
    def for_files(
        cls, folder: Path, files: Iterable[Path], code: int = errno.ENOSPC
    ) -> LocalDiskFullError:
        """The error for `folder`, counting the bytes of those `files` that still exist."""
        written = 0
        for path in files:
            try:
                written += Path(path).stat().st_size
            except OSError:
                continue  # removed already (DuckDB deletes a COPY target it could not finish)
        try:
            free: int | None = shutil.disk_usage(folder).free
        except OSError:
            free = None
        return cls(folder, written, free, code)


def human_bytes(size: int) -> str:
    """1536 -> '1.5 KiB' (bytes below 1 KiB as '512 B')."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def disk_full_errno(error: BaseException) -> int | None:
    """ENOSPC/EDQUOT if `error` says the disk (or quota) is full, else None.

    Python and pyarrow raise `OSError` with that errno; DuckDB raises `duckdb.IOException`
    whose text carries the OS message (and `"errno":"28"`).
    """
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
        return error.errno
    if isinstance(error, duckdb.IOException):
        text = str(error)
        if _FULL_TEXTS[1] in text or f'"errno":"{errno.EDQUOT}"' in text:
            return errno.EDQUOT
        if _FULL_TEXTS[0] in text or f'"errno":"{errno.ENOSPC}"' in text:
            return errno.ENOSPC
    return None
