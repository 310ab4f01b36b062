"""Optionally keep every source inside the project root (`AZEXPORT_CONFINE_SOURCES=1`).

A source is a grant: declaring `csv: ../../other-team/*.csv` lets every model read those
files. With confinement on, a source's path must resolve (`..` collapsed, symlinks followed)
to a place under the project root:

- a `duckdb:` file: its resolved path;
- a `parquet:` / `csv:` glob: its fixed prefix (the folders before the first `*`, `?` or `[`)
  and every file it matches.

Checked when the code location loads (a ConfigError naming the file, line, source and field,
raised by the caller) and again each time a step attaches the source, so a symlink swapped in
after the load is refused too. Remote URLs (`az://...`) are not paths and are left to the
remote-source rules. Off by default on a laptop; the deploy image turns it on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from azexport_assets.sandbox import ascii_lower
from azexport_assets.warehouse.base import WarehouseConfigError
from azexport_assets.warehouse.remote import is_remote as in_azure

if TYPE_CHECKING:  # the configuration layer may depend on Dagster; the warehouse does not
    from azexport_assets.config import SourceConfig

CONFINE_ENV = "AZEXPORT_CONFINE_SOURCES"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})
_GLOB_MAGIC = frozenset("*?[")


class SourceOutsideProjectError(ValueError):
    """A source resolves outside the project root while sources are confined to it."""


def confine_sources() -> bool:
    """Whether $AZEXPORT_CONFINE_SOURCES asks for confinement (unset: no). A value that is
    neither on nor off is an error: a typo must not switch a safeguard off silently."""
    value = ascii_lower(os.environ.get(CONFINE_ENV, "").strip())
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise WarehouseConfigError(
        f"{CONFINE_ENV}={os.environ.get(CONFINE_ENV)!r} is neither on nor off: set it to 1 to "
        "confine sources to the project root, or to 0"
    )


def is_remote(location: str) -> bool:
    """A URL in Azure Blob Storage (az://, abfss://), not a local path: not confined here (its
    own credential bounds what it reaches; the sandbox grants exactly its listed blobs)."""
    return in_azure(location)


def fixed_prefix(pattern: str) -> str:
    """The folders of a glob before its first wildcard: every match lies under them."""
    fixed: list[str] = []
    for part in Path(pattern).parts:
        if _GLOB_MAGIC & set(part):
            break
        fixed.append(part)
    return str(Path(*fixed)) if fixed else os.curdir


def _outside(path: str, root: str) -> str | None:
    """The resolved `path` when it lies outside the resolved `root`, else None."""
    resolved = os.path.realpath(path)
    return None if Path(resolved).is_relative_to(root) else resolved


def confinement_violation(
    source: SourceConfig, location: str, root: Path, files: Sequence[str] = ()
) -> str | None:
    """Why `source` (its resolved `location`, the files it matches) is not under `root`, or
    None when it is (or is a remote URL, or a database source: not a path)."""
    if source.is_database or is_remote(source.location):
        return None
    real_root = os.path.realpath(root)
    checked = [location] if source.kind == "duckdb" else [fixed_prefix(location), *files]
    for path in checked:
        resolved = _outside(path, real_root)
        if resolved is not None:
            what = "matches" if path in files else "resolves to"
            return (
                f"'{source.location}' {what} {resolved} (with '..' and symlinks resolved), "
                f"outside the project root {real_root}; with {CONFINE_ENV}=1 every source must "
                "live under the project root: move or mount the data there (see "
                "docs/security.md, 'Where sources may live')"
            )
    return None


def check_confined(
    name: str, source: SourceConfig, location: str, root: Path, files: Sequence[str] = ()
) -> None:
    """Raise SourceOutsideProjectError when confinement is on and `source` reaches outside."""
    if not confine_sources():
        return
    reason = confinement_violation(source, location, root, files)
    if reason:
        raise SourceOutsideProjectError(f"source '{name}' ({source.kind}): {reason}")
