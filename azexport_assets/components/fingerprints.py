"""Fingerprints of what a model or segment is built from, so an unchanged one is not rebuilt.

- `source_fingerprint`: the files of a source as they are now (the on-change sensors use it
  too). A DuckDB file counts with its write-ahead log and its checkpoint headers, a Parquet/CSV
  glob with every file it matches (name, size, modification time); a database source (Postgres,
  the warehouse's lake) with the change signal of the tables models read (`warehouse.dbchanges`).
- `recipe_version`: the SQL as run, the primary key and the materialization (the asset's
  `code_version`).
- `input_fingerprint`: the recipe, the sources the SQL reads and what the models it reads
  hold (their stored fingerprints; for a view, also its sources as they are now).

`None` means "cannot tell cheaply" (a source outside the local file system, an upstream model
never built with a fingerprint): the object is then always rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from azexport_assets.components.lineage import upstream_models
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project
from azexport_assets.validation_cache import cache_folder
from azexport_assets.warehouse import resolve_path, source_files
from azexport_assets.warehouse.dbchanges import lake_fingerprint, postgres_fingerprint
from azexport_assets.warehouse.remote import list_remote

# A DuckDB file starts with its main header and two database headers of 4 KiB each; every
# checkpoint writes the next one (an iteration counter and the root of the new data).
_DUCKDB_HEADERS = 3 * 4096


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:32]


def tables_read(shape: ProjectShape, source: str) -> list[str]:
    """The tables of `source` that any model reads (DuckDB's folded names)."""
    return sorted({t for deps in shape.deps.values() for s, t in deps.source_tables if s == source})


def source_fingerprint(
    project: Project, source: str, shape: ProjectShape | None = None
) -> str | None:
    """Changes whenever a file of the source is added, removed, resized or rewritten. For a
    source in Azure: the name, ETag, modification time and size of every blob it matches. For
    a database source: the change signal of the tables the project's models read (`shape`;
    without it, the declared tables)."""
    config = project.sources[source]
    if config.is_database:
        tables = tables_read(shape, source) if shape is not None else list(config.tables or [])
        if config.kind == "postgres":
            folder = cache_folder(project.project_root)
            kept_in = folder / "postgres_signals" if folder is not None else None
            return postgres_fingerprint(source, config, tables, kept_in)
        return lake_fingerprint(source, config, tables)
    # How the files are read is part of what a model built from them holds.
    reading = [config.encoding] if config.encoding else []
    if config.remote:
        listing = [(f.url, f.etag, f.modified, f.size) for f in list_remote(config, source)]
        return _digest(reading + listing)[:16]
    if config.kind == "duckdb":
        location = resolve_path(config.location, project.project_root)
        paths = [location, location + ".wal"]  # committed writes not yet checkpointed
    else:
        paths = source_files(config, project.project_root)  # the files a step reads
    digest = hashlib.sha256()
    for option in reading:
        digest.update(f"encoding:{option};".encode())
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            digest.update(f"{path}:missing;".encode())
            continue
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        if config.kind == "duckdb" and not path.endswith(".wal"):
            digest.update(_head(path))
    return digest.hexdigest()[:16]


def _head(path: str) -> bytes:
    """The DuckDB file's headers: they change with every checkpoint, whatever the clock says."""
    try:
        with open(path, "rb") as handle:
            return handle.read(_DUCKDB_HEADERS)
    except OSError:
        return b"unreadable"


def recipe_version(project: Project, name: str, sql: str) -> str:
    """What the object's definition is: its SQL as run, its key, table or view."""
    model = project.models[project.model_of(name)]  # a segment has its model's key and kind
    return _digest([sql, list(model.primary_key), model.materialized])[:16]


@dataclass(frozen=True)
class BuildInputs:
    """What an object would be built from now: `parts` name every input, `fingerprint` sums
    them up; None when an input cannot be fingerprinted (see `unknown`)."""

    parts: dict
    fingerprint: str | None
    unknown: str = ""

    def changes_since(self, parts: dict | None) -> list[str]:
        """The inputs that differ from `parts` (those of the stored build), e.g. 'sql',
        'source src', 'model customers'."""
        if not parts:
            return []
        changed = ["sql, key or materialization"] * (parts.get("recipe") != self.parts["recipe"])
        for group, label in (("sources", "source"), ("models", "model")):
            now, then = self.parts.get(group, {}), parts.get(group, {})
            changed += [
                f"{label} {n}" for n in sorted(set(now) | set(then)) if now.get(n) != then.get(n)
            ]
        return changed


# (kind of relation: 'table' | 'view', fingerprint) of a stored build, or None.
StoredBuild = Callable[[str, str], "tuple[str, str] | None"]


def reachable_sources(project: Project, shape: ProjectShape, name: str) -> list[str]:
    """Every source the object's fingerprint may look at: those of its model and the models
    that model reads, transitively."""
    models = upstream_models(project, shape, project.model_of(name))
    return sorted({s for m in models for s, _ in shape.deps[m].source_tables})


def input_fingerprint(
    project: Project,
    shape: ProjectShape,
    kind: str,
    name: str,
    sql: str,
    sources: dict[str, str | None],
    stored: StoredBuild,
) -> BuildInputs:
    """The fingerprint of everything `kind/name` reads. `sources`: source fingerprints taken
    before the data are read (a change after that only causes one more rebuild); `stored`
    reads the fingerprint a model's relation carries in the warehouse."""
    if kind == "segments":
        own, reads = [], [project.segments[name].model]
    else:
        own = sorted({s for s, _ in shape.deps[name].source_tables})
        reads = list(shape.deps[name].models)
    parts: dict = {"recipe": recipe_version(project, name, sql), "sources": {}, "models": {}}
    for source in own:
        if sources.get(source) is None:
            return BuildInputs(parts, None, f"source {source} has no cheap change signal")
        parts["sources"][source] = sources[source]
    for model in reads:
        content = _content(project, shape, model, sources, stored)
        if content is None:
            return BuildInputs(parts, None, f"model {model} has no fingerprint")
        parts["models"][model] = content
    return BuildInputs(parts, _digest(parts))


def _content(
    project: Project,
    shape: ProjectShape,
    model: str,
    sources: dict[str, str | None],
    stored: StoredBuild,
) -> str | None:
    """What a reader of `models.<model>` sees now: a table holds what it was built from; a
    view runs its stored query over its inputs as they are now."""
    built = stored("models", model)
    if built is None:
        return None
    relation, fingerprint = built
    if relation == "table":
        return fingerprint
    now = input_fingerprint(
        project, shape, "models", model, project.model_sql[model], sources, stored
    ).fingerprint
    if now is None:
        return None
    return fingerprint if now == fingerprint else _digest([fingerprint, now])
