"""The code location, built once per process for as long as what it was built from is unchanged.

Dagster calls a code location's `@dg.definitions` function each time it reconstructs the
repository: five times in one `dagster job execute` (the command, the run, its plan, the
steps). Each build templates every `defs.yaml`, checks every SQL text with DuckDB and creates
hundreds of asset definitions, so building is most of the fixed cost of a run. The result is
kept per process and handed out again while nothing it depends on changed:

- the files under the defs folder (`defs.yaml`, SQL files, Python files): names, sizes and
  modification times;
- the environment, which `{{ env.X }}` templates read;
- the sources' files (their columns are checked at load): names, sizes and modification times.

A long-running code server that reloads its definitions (the UI's "Reload") therefore builds
again only when one of these changed.

A build creates a few hundred thousand Python objects (Dagster's definitions), which Python's
cyclic garbage collector would otherwise walk again and again: during the build (full
collections, the costlier the larger the project) and in every full collection of the run
after it. So a build runs with the collector paused, and the first build of a process is then
frozen (`gc.freeze`: left out of later collections; it lives as long as the process anyway).
A later build (a code server's reload) unfreezes it first, so a replaced build is collected.

This is the layer within one process. Across processes, what validation finds with DuckDB
(each model's dependencies and columns) is kept on disk by content (`introspect.describe_project`
with `validation_cache.py`), so a new process that builds pays for Dagster's definitions, not
for parsing and binding every model's SQL again.
"""

from __future__ import annotations

import gc
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from azexport_assets.fast_exit import freeze_at_exit
from azexport_assets.import_pause import collection_paused
from azexport_assets.project import Project
from azexport_assets.warehouse import resolve_path, source_files

_SKIPPED_PARTS = frozenset({"__pycache__", ".ipynb_checkpoints"})


@dataclass(frozen=True)
class _Built:
    inputs: str  # digest of the defs folder and the environment
    sources: tuple  # the sources' files when it was built
    project: Project | None
    definitions: dg.Definitions
    with_catalog: bool  # Dagster's component catalog is in `definitions`


_built: dict[tuple[int, str], _Built] = {}
_lock = threading.Lock()


def _stat_entry(path: Path, shown: str) -> str:
    try:
        info = path.stat()
    except OSError:
        return f"{shown}:missing"
    return f"{shown}:{info.st_size}:{info.st_mtime_ns}"


def folder_digest(defs_root: Path) -> str:
    """A digest of every file under `defs_root` (name, size, modification time) and of the
    environment. Cheap: one stat per file, nothing is read."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(defs_root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_PARTS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            digest.update(_stat_entry(path, str(path.relative_to(defs_root))).encode())
            digest.update(b"\0")
    for key, value in sorted(os.environ.items()):
        digest.update(f"{key}={value}\0".encode())
    return digest.hexdigest()


def sources_state(project: Project | None) -> tuple:
    """The files of every source, with sizes and modification times (a stat per file)."""
    if project is None:
        return ()
    state = []
    for name, config in sorted(project.sources.items()):
        if config.kind == "duckdb":
            location = resolve_path(config.location, project.project_root)
            files = [Path(location)] if "://" not in str(location) else []
        else:
            files = [Path(f) for f in source_files(config, project.project_root)]
        state.append((name, tuple(_stat_entry(f, str(f)) for f in files)))
    return tuple(state)


def serves_code_location() -> bool:
    """Whether Dagster is loading the definitions to serve them (a code server, `dg`'s own
    commands), not rebuilding them for a run, a step, a CLI command or a script. Only a load
    that serves them needs Dagster's catalog of installed component types (the UI reads it
    from the code server); the others skip it (`loading.tree_definitions`)."""
    # Dagster sets this context for its loads: INITIALIZATION where a code location is
    # served, RECONSTRUCTION in run and step workers; `dagster job execute` and scripts set none.
    from dagster._core.definitions.definitions_load_context import (
        DefinitionsLoadContext,
        DefinitionsLoadType,
    )

    return (
        DefinitionsLoadContext.is_set()
        and DefinitionsLoadContext.get().load_type == DefinitionsLoadType.INITIALIZATION
    )


def cached_definitions(
    defs_root: Path,
    build: Callable[[bool], dg.Definitions],
    project_of: Callable[[], Project | None],
) -> dg.Definitions:
    """`build(with_catalog)`'s definitions, reused while the defs folder, the environment and
    the sources are unchanged. `project_of()` names the project the last build validated. A
    build with the component catalog also serves loads that do not need it."""
    freeze_at_exit()  # a process that loads the project exits without a last full collection
    key = (os.getpid(), str(defs_root.resolve()))  # a forked child builds its own
    inputs = folder_digest(defs_root)
    with_catalog = serves_code_location()
    with _lock:
        built = _built.get(key)
        if (
            built is not None
            and built.inputs == inputs
            and (built.with_catalog or not with_catalog)
            and built.sources == sources_state(built.project)
        ):
            return built.definitions
        definitions = _without_collections(lambda: build(with_catalog))
        project = project_of()
        _built[key] = _Built(inputs, sources_state(project), project, definitions, with_catalog)
        return definitions


_frozen_in: int | None = None  # the process whose first build is frozen now
_built_in: set[int] = set()  # processes that built once


def _without_collections(build: Callable[[], dg.Definitions]) -> dg.Definitions:
    """`build()` with the garbage collector paused; a process's first build is then frozen,
    and unfrozen before the next one (whose predecessor may become garbage)."""
    global _frozen_in
    pid = os.getpid()
    if _frozen_in == pid:
        gc.unfreeze()
        _frozen_in = None
    running = gc.isenabled()
    with collection_paused():
        definitions = build()
        if pid not in _built_in and running:
            gc.freeze()  # before the collector runs again: none of it is walked
            _frozen_in = pid
        _built_in.add(pid)
    return definitions


def forget_built() -> None:
    """Drop every kept build (tests that rewrite a project within one second use this)."""
    with _lock:
        _built.clear()
