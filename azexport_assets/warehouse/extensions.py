"""Loading the DuckDB extensions the lake needs (ducklake, postgres_scanner, azure).

Where each extension comes from, first match wins:

1. `$AZEXPORT_DUCKDB_EXTENSIONS`: a folder holding `<name>.duckdb_extension` files (or
   DuckDB's own `v<version>/<platform>/` tree, e.g. a copy of `~/.duckdb/extensions`), for
   air-gapped machines and container images.
2. The PyPI wheels `duckdb-extension-<name>` (the `lake` extra) when they ship a file for the
   running DuckDB version.
3. An extension already installed in DuckDB's extension folder (`LOAD <name>`).
4. DuckDB's extension repository (`INSTALL <name>`), when the machine is online.

Extension files are bound to one DuckDB version: DuckDB refuses a file built for another.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import duckdb

from azexport_assets.sql_text import quote_literal

EXTENSIONS_ENV = "AZEXPORT_DUCKDB_EXTENSIONS"

# Wheels that carry each extension. The `postgres` wheel ships the same library as
# `postgres.duckdb_extension`; DuckDB derives the extension's name from the file name, so
# that one is loaded from a copy named `postgres_scanner.duckdb_extension`.
WHEELS = {
    "ducklake": ("duckdb_extension_ducklake",),
    "postgres_scanner": ("duckdb_extension_postgres_scanner", "duckdb_extension_postgres"),
    "azure": ("duckdb_extension_azure",),
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
    folder = Path(tempfile.gettempdir()) / f"azexport-duckdb-extensions-{duckdb.__version__}"
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


def _loaded(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
    return {row[0] for row in rows}


def load_extensions(con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> None:
    """Load each extension into `con` (see the module docstring for where from)."""
    loaded = _loaded(con)
    for name in names:
        if name in loaded:
            continue
        path = extension_file(con, name)
        if path is not None:
            con.execute(f"LOAD {quote_literal(str(path))}")
            continue
        try:
            con.execute(f"LOAD {name}")
            continue
        except duckdb.Error:
            pass  # not installed yet: try the repository
        try:
            con.execute(f"INSTALL {name}")
            con.execute(f"LOAD {name}")
        except duckdb.Error as error:
            wheels = _wheel_versions(name)
            found = f" (installed wheels are for {', '.join(wheels)})" if wheels else ""
            raise ExtensionLoadError(
                f"cannot load the DuckDB extension '{name}' for DuckDB {duckdb.__version__}: "
                f"no file in ${EXTENSIONS_ENV}, no matching wheel "
                f"'{WHEELS.get(name, (name,))[0].replace('_', '-')}'{found}, and INSTALL from "
                f"DuckDB's repository failed ({str(error).splitlines()[0]}). Put the extension "
                f"files in a folder named by ${EXTENSIONS_ENV}, or install a DuckDB version "
                "with wheels (pip install 'azexport_assets[lake]')"
            ) from None
