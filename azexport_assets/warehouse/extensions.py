"""Installing the DuckDB extensions the lake needs (ducklake, postgres_scanner, azure).

They are installed once per process into an extension folder private to the user
(`install_extensions`, under the export temp root: `$AZEXPORT_TEMP_DIR`, else
`azexport-<uid>` in the system temp folder), from which DuckDB loads them by name when the
lake is opened. Nothing else on disk is needed: not DuckDB's `~/.duckdb`, not the project
folder, not a folder another user created. Each comes from the first of:

1. `$AZEXPORT_DUCKDB_EXTENSIONS`: a folder holding `<name>.duckdb_extension` files (or
   DuckDB's own `v<version>/<platform>/` tree, e.g. a copy of `~/.duckdb/extensions`), for
   air-gapped machines and container images.
2. The PyPI wheels `duckdb-extension-<name>` (the `lake` extra) when they ship a file for the
   running DuckDB version.
3. DuckDB's extension repository (`INSTALL <name>`), when the machine is online.

Extension files are bound to one DuckDB version: DuckDB refuses a file built for another.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import duckdb

from azexport_assets.sandbox import export_temp_root
from azexport_assets.sql_text import quote_literal

EXTENSIONS_ENV = "AZEXPORT_DUCKDB_EXTENSIONS"

# Wheels that carry each extension. The `postgres` wheel ships the same library as
# `postgres.duckdb_extension`; DuckDB derives the extension's name from the file name, so
# that one is loaded from a copy named `postgres_scanner.duckdb_extension`.
WHEELS = {
    "ducklake": ("duckdb_extension_ducklake",),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "duckdb_extension_postgres"),
    "azure": ("duckdb_extension_azure",),
    # Not used by the lake itself: DuckDB's reader of the Delta tables `format: delta` writes.
    "delta": ("duckdb_extension_delta",),
}


class ExtensionLoadError(RuntimeError):
    """No source could provide a DuckDB extension for the running DuckDB version."""


def _platform(con: duckdb.DuckDBPyConnection) -> str:
    return str(con.execute("PRAGMA platform").fetchone()[0])


def _from_folder(name: str, folder: Path, platform: str) -> Path | None:
    for candidate in (
        folder / f"{name}.duckdb_extension",
        folder / f"v{duckdb.__version__}" / platform / f"{name}.duckdb_extension",
    ):
        if candidate.is_file():
            return candidate
    return None


def _wheel_file(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    found = sorted(folder.glob(f"v{duckdb.__version__}/*.duckdb_extension"))
    return found[0] if found else None


def _wheel_versions(name: str) -> list[str]:
    """Versions the installed wheels of `name` were built for (for the error message)."""
    versions = []
    for package in WHEELS.get(name, ()):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / "extensions"
            versions += sorted(p.name for p in folder.glob("v*"))
    return versions


def _named_copy(path: Path, name: str) -> Path:
    """`path` itself, or a copy named `<name>.duckdb_extension` when its name differs."""
    if path.name == f"{name}.duckdb_extension":
        return path
    folder = _duckdb_folder() / "renamed"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.duckdb_extension"
    if not target.exists() or target.stat().st_size != path.stat().st_size:
        partial = folder / f".{name}.{os.getpid()}.partial"
        shutil.copyfile(path, partial)
        partial.replace(target)  # atomic: a concurrent process never loads half a file
    return target


def extension_file(con: duckdb.DuckDBPyConnection, name: str) -> Path | None:
    """The extension file from a configured folder or a wheel, or None (use DuckDB's own)."""
    folder = os.environ.get(EXTENSIONS_ENV)
    if folder:
        found = _from_folder(name, Path(folder).expanduser(), _platform(con))
        if found:
            return found
    for package in WHEELS.get(name, ()):
        found = _wheel_file(package)
        if found:
            return _named_copy(found, name)
    return None


_offline: dict[tuple[str, str], bool] = {}


def available_offline(name: str) -> bool:
    """Whether `name` can be installed without DuckDB's repository: from a file in
    $AZEXPORT_DUCKDB_EXTENSIONS or a wheel built for the running DuckDB (cached)."""
    key = (name, os.environ.get(EXTENSIONS_ENV, ""))
    if key not in _offline:
        _offline[key] = _loads_offline(name)
    return _offline[key]


def _loads_offline(name: str) -> bool:
    con = duckdb.connect()
    try:
        path = extension_file(con, name)
        if path is None:
            return False
        probe = duckdb.connect(config={"extension_directory": str(extension_directory())})
        try:
            probe.execute(f"INSTALL {quote_literal(str(path))}")
            probe.execute(f"LOAD {name}")
        except duckdb.Error:
            return False  # a file for another DuckDB version
        finally:
            probe.close()
        return True
    finally:
        con.close()


def _duckdb_folder() -> Path:
    """This user's folder for one DuckDB version's extensions, in the export temp root (0700,
    this user's own): a folder in the shared temp folder that another user created first
    could neither be written nor trusted."""
    return export_temp_root() / f"duckdb-{duckdb.__version__}"


def extension_directory() -> Path:
    """The private folder extensions are installed into (one per DuckDB version)."""
    return _duckdb_folder() / "extensions"


# Folders this process has installed into already: installing is needed once per process.
_prepared: set[tuple[str, tuple[str, ...]]] = set()


def install_extensions(names: Iterable[str]) -> Path:
    """Install each extension into `extension_directory()` (see the module docstring for
    where from) and return that folder; DuckDB then loads them from there by name."""
    folder = extension_directory()
    wanted = tuple(names)
    if (str(folder), wanted) in _prepared and folder.is_dir():  # not cleaned away since
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    # One installer at a time: processes starting together must not write the same file.
    with open(folder / ".install.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _install(folder, wanted)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _prepared.add((str(folder), wanted))
    return folder


def _install(folder: Path, wanted: tuple[str, ...]) -> None:
    con = duckdb.connect(config={"extension_directory": str(folder)})
    try:
        installed = {
            row[0]
            for row in con.execute(
                "SELECT extension_name FROM duckdb_extensions() WHERE installed"
            ).fetchall()
        }
        for name in wanted:
            if name in installed:
                continue
            path = extension_file(con, name)
            try:
                con.execute(f"INSTALL {quote_literal(str(path)) if path else name}")
                con.execute(f"LOAD {name}")  # proves the file fits this DuckDB version
            except duckdb.Error as error:
                raise ExtensionLoadError(_cannot_load(name, path, error)) from None
    finally:
        con.close()


def _cannot_load(name: str, path: Path | None, error: duckdb.Error) -> str:
    first_line = str(error).splitlines()[0]
    if path is not None:
        return (
            f"cannot load the DuckDB extension '{name}' from {path} into DuckDB "
            f"{duckdb.__version__}: {first_line}"
        )
    wheels = _wheel_versions(name)
    found = f" (installed wheels are for {', '.join(wheels)})" if wheels else ""
    wheel = WHEELS.get(name, (name,))[0].replace("_", "-")
    return (
        f"cannot load the DuckDB extension '{name}' for DuckDB {duckdb.__version__}: no file "
        f"in ${EXTENSIONS_ENV}, no matching wheel '{wheel}'{found}, and INSTALL from DuckDB's "
        f"repository failed ({first_line}). Put the extension files in a folder named by "
        f"${EXTENSIONS_ENV}, or install a DuckDB version with wheels "
        "(pip install 'azexport_assets[lake]')"
    )
