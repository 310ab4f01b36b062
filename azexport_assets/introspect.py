"""What the model SQL reads and returns, found with DuckDB before any data moves.

- `model_dependencies` parses each model's SQL (DuckDB's own parser, `json_serialize_sql`)
  to find the source tables and other models it reads: they become lineage edges.
- `describe_project` binds every model and segment as views in an in-memory DuckDB (sources
  attached read-only) to learn their columns, so unknown columns in a mapping or a primary
  key, and SQL errors, are reported at load time with the file, object and field.
  Sources that are not there yet (no file) are skipped; the same checks run again at run time.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

import duckdb

from azexport_assets.config import ConfigError
from azexport_assets.project import Project
from azexport_assets.sql_text import quote_ident, quote_literal
from azexport_assets.warehouse import resolve_path


@dataclass(frozen=True)
class ModelDeps:
    source_tables: tuple[tuple[str, str], ...] = ()  # (source name, table name)
    models: tuple[str, ...] = ()


@dataclass
class ProjectShape:
    deps: dict[str, ModelDeps] = field(default_factory=dict)
    # Columns [(name, type)] of each model and segment; None when a source is unavailable.
    columns: dict[str, list[tuple[str, str]] | None] = field(default_factory=dict)


def _walk(node: Any, tables: list[tuple[str, str, str]], ctes: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and "table_name" in node:
            tables.append(
                (node.get("catalog_name", ""), node.get("schema_name", ""), node["table_name"])
            )
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                if isinstance(entry, dict) and "key" in entry:
                    ctes.add(str(entry["key"]).lower())
        for value in node.values():
            _walk(value, tables, ctes)
    elif isinstance(node, list):
        for value in node:
            _walk(value, tables, ctes)


def table_references(sql: str) -> list[tuple[str, str, str]]:
    """(catalog, schema, table) of every table the SQL reads, CTE names left out."""
    con = duckdb.connect()
    try:
        raw = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    finally:
        con.close()
    parsed = json.loads(raw)
    if parsed.get("error"):
        raise ValueError(parsed.get("error_message", "cannot parse the SQL"))
    if len(parsed.get("statements", [])) != 1:
        raise ValueError("must be exactly one SELECT statement")
    tables: list[tuple[str, str, str]] = []
    ctes: set[str] = set()
    _walk(parsed["statements"], tables, ctes)
    return [t for t in tables if t[0] or t[1] or t[2].lower() not in ctes]


def model_dependencies(project: Project, name: str) -> ModelDeps:
    try:
        refs = table_references(project.model_sql[name])
    except ValueError as error:
        raise ConfigError(f"{project.where('models', name, 'sql')}: {error}") from None
    source_tables: list[tuple[str, str]] = []
    models: list[str] = []
    for catalog, schema, table in refs:
        owner = catalog or schema
        if owner in project.sources and project.sources[owner].kind == "duckdb":
            source_tables.append((owner, table))
        elif not catalog and schema == "models" and table in project.models:
            models.append(table)
        elif not owner and table in project.sources and project.sources[table].kind != "duckdb":
            source_tables.append((table, table))
        else:
            known = ", ".join(
                [f"{s}.<table>" for s, c in project.sources.items() if c.kind == "duckdb"]
                + [s for s, c in project.sources.items() if c.kind != "duckdb"]
                + [f"models.{m}" for m in project.models]
            )
            shown = ".".join(p for p in (catalog, schema, table) if p)
            raise ConfigError(
                f"{project.where('models', name, 'sql')}: reads '{shown}', which is not a "
                f"declared source or model; it can read: {known or 'nothing declared'}"
            )
    return ModelDeps(tuple(dict.fromkeys(source_tables)), tuple(dict.fromkeys(models)))


def _source_available(project: Project, source: str) -> bool:
    config = project.sources[source]
    location = resolve_path(config.location, project.project_root)
    return bool(glob.glob(location)) if config.kind != "duckdb" else os.path.exists(location)


def model_order(project: Project, deps: dict[str, ModelDeps]) -> list[str]:
    try:
        return list(TopologicalSorter({m: set(d.models) for m, d in deps.items()}).static_order())
    except CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ConfigError(f"models read each other in a cycle: {cycle}") from None


def describe_project(project: Project) -> ProjectShape:
    """Dependencies and columns of every model and segment; ConfigError on SQL errors."""
    shape = ProjectShape(deps={m: model_dependencies(project, m) for m in project.models})
    available = {s for s in project.sources if _source_available(project, s)}
    con = duckdb.connect()
    try:
        for source in sorted(available):
            config = project.sources[source]
            location = quote_literal(resolve_path(config.location, project.project_root))
            try:
                if config.kind == "duckdb":
                    con.execute(f"ATTACH {location} AS {quote_ident(source)} (READ_ONLY)")
                else:
                    reader = "read_parquet" if config.kind == "parquet" else "read_csv"
                    con.execute(
                        f"CREATE VIEW {quote_ident(source)} AS SELECT * FROM {reader}({location})"
                    )
            except duckdb.Error:
                available.discard(source)  # e.g. locked by its writer: checked again at run time
        con.execute("CREATE SCHEMA models; CREATE SCHEMA segments")
        for model in model_order(project, shape.deps):
            deps = shape.deps[model]
            ready = all(s in available for s, _ in deps.source_tables) and all(
                shape.columns.get(m) is not None for m in deps.models
            )
            if not ready:
                shape.columns[model] = None
                continue
            shape.columns[model] = _create_view(
                con, project, "models", model, project.model_sql[model], "sql"
            )
            _check_key(project, model, shape.columns[model])
        for segment, config in project.segments.items():
            if shape.columns.get(config.model) is None:
                shape.columns[segment] = None
                continue
            query = f"SELECT * FROM models.{quote_ident(config.model)} WHERE ({config.filter})"
            shape.columns[segment] = _create_view(
                con, project, "segments", segment, query, "filter"
            )
    finally:
        con.close()
    for activation in project.activations:
        check_mapping(
            project, activation, shape.columns.get(project.activations[activation].source)
        )
    return shape


def _create_view(
    con: duckdb.DuckDBPyConnection, project: Project, kind: str, name: str, sql: str, field_: str
) -> list[tuple[str, str]]:
    try:
        con.execute(f"CREATE VIEW {kind}.{quote_ident(name)} AS {sql}")
        rows = con.execute(f"DESCRIBE {kind}.{quote_ident(name)}").fetchall()
    except duckdb.Error as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"{project.where(kind, name, field_)}: {first_line}") from None
    return [(row[0], row[1]) for row in rows]


def _check_key(project: Project, model: str, columns: list[tuple[str, str]]) -> None:
    names = {c for c, _ in columns}
    missing = [k for k in project.models[model].primary_key if k not in names]
    if missing:
        raise ConfigError(
            f"{project.where('models', model, 'primary_key')}: unknown column(s) "
            f"{', '.join(missing)}; the model returns: {', '.join(sorted(names))}"
        )


def check_mapping(project: Project, activation: str, columns: list[tuple[str, str]] | None) -> None:
    """Every mapped column must exist in the activation's source."""
    mapping = project.activations[activation].mapping
    if not mapping or columns is None:
        return
    names = [c for c, _ in columns]
    missing = [c for c in mapping if c not in names]
    if missing:
        raise ConfigError(
            f"{project.where('activations', activation, 'mapping')}: unknown column(s) "
            f"{', '.join(repr(m) for m in missing)} in "
            f"'{project.activations[activation].source}'; available: {', '.join(names)}"
        )


def exported_columns(
    project: Project, activation: str, columns: list[str]
) -> list[tuple[str, str]]:
    """(source column, destination name) in export order: the mapping, or every column as is."""
    mapping = project.activations[activation].mapping
    if mapping:
        return list(mapping.items())
    return [(c, c) for c in columns]
