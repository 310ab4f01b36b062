"""Results of load-time validation kept on disk between processes, keyed by their inputs.

Every process that loads the code location (each `dagster job execute`, each run worker, each
`dagster definitions validate`) validates the whole project. The part of that work that reads
SQL and sources with DuckDB (`introspect.describe_project`) is a pure function of its inputs,
so its result is stored under a digest of everything it was computed from, and another process
with the same inputs reads it back instead of computing it again. What goes into a key is
decided by the caller (`introspect.py`); this module only stores and reads JSON values:

- a key is a SHA-256 of the inputs' JSON; an entry `<key>.json` holds the key again and the
  value, and is written to a temporary file then renamed, so a reader sees a whole entry or
  none, and concurrent writers of the same key (which write the same value) do not interfere;
- the folder is `$AZEXPORT_CACHE_DIR` (`off` turns the cache off), else
  `<project root>/.azexport/cache`; it must belong to this user and not be writable by others;
- anything unexpected (no folder, a read-only disk, a truncated or foreign file, a folder of
  another user) is a miss or a skipped write: the caller computes the value as without a cache.
  Nothing here can change a result, only whether it is computed again.

The Postgres sources' change signals are kept the same way, in the folder's
`postgres_signals/` (`warehouse.dbchanges`), so that they do not push validations out.

Deleting the folder is always safe (`make clean` does, with the rest of `.azexport/`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

CACHE_DIR_ENV = "AZEXPORT_CACHE_DIR"
_OFF = frozenset({"off", "none", "0", "false", "no"})
FORMAT = 1  # of an entry file; a change makes every older entry a miss
MAX_ENTRIES = 64  # per folder; the oldest are removed past this


def cache_folder(project_root: Path) -> Path | None:
    """Where entries live, or None when the cache is off (`AZEXPORT_CACHE_DIR=off`)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured is not None and configured.strip():
        if configured.strip().lower() in _OFF:
            return None
        folder = Path(configured).expanduser()
        return folder if folder.is_absolute() else project_root / folder
    return project_root / ".azexport" / "cache"


def digest(inputs: Any) -> str:
    """The key of `inputs` (JSON-able: dicts, lists, strings, numbers, None)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_state(path: str | Path) -> list[Any]:
    """What a file looks like without reading it: size, modification and change times (ns),
    inode; ['missing'] if there is none. A file rewritten or replaced gets another state."""
    try:
        info = os.stat(path)
    except OSError:
        return ["missing"]
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]


_package_state: str | None = None


def package_state() -> str:
    """A digest of this package's own code (every .py file's name, size and times): an entry
    computed by other code, e.g. before an upgrade or an edit, is never read back."""
    global _package_state
    if _package_state is None:
        package = Path(__file__).resolve().parent
        files = sorted(
            str(path.relative_to(package)) for path in package.rglob("*.py") if path.is_file()
        )
        _package_state = digest([[name, file_state(package / name)[:3]] for name in files])
    return _package_state


def _usable(folder: Path) -> bool:
    """The folder is ours alone: a folder of another user, or one others may write, could
    hold entries that say what we did not compute."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def load(folder: Path | None, key: str) -> Any | None:
    """The value stored under `key`, or None (no entry, or one that cannot be trusted)."""
    if folder is None or not _usable(folder):
        return None
    try:
        entry = json.loads((folder / f"{key}.json").read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    return entry.get("value")


def store(folder: Path | None, key: str, value: Any) -> bool:
    """Write `value` under `key` (atomically); False when it could not be written."""
    if folder is None:
        return False
    temporary = None
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _usable(folder):
            return False
        text = json.dumps({"format": FORMAT, "key": key, "value": value}, ensure_ascii=False)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key[:12]}-", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, folder / f"{key}.json")
        temporary = None
    except (OSError, TypeError, ValueError):
        return False
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    _prune(folder)
    return True


def _prune(folder: Path) -> None:
    """Keep the newest MAX_ENTRIES entries (every content change of a project adds one)."""
    with contextlib.suppress(OSError):
        entries = [e for e in os.scandir(folder) if e.name.endswith(".json")]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) - MAX_ENTRIES]:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
