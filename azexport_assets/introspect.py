"""What the model SQL reads and returns, found with DuckDB before any data moves.

- `model_dependencies` parses each model's SQL (DuckDB's own parser, `json_serialize_sql`)
  to find the source tables and other models it reads: they become lineage edges.
- Before anything is bound, `sandbox.check_select` / `check_segment_filter` check the shape:
  one SELECT per model, one expression per segment filter, no table function that reads files
  or runs SQL; then every table read must be a declared source or model.
- `describe_project` binds every model and segment as views in an in-memory DuckDB (sources
  attached read-only, then sandboxed like the warehouse) to learn their columns, so unknown
  columns in a mapping or a primary key, and SQL errors, are reported at load time with the
  file, object and field. Binding runs no user statement: a view is only described.
  Sources that are not there yet (no file) are skipped; the same checks run again at run time.
- What parsing and binding found is kept on disk under a digest of everything it read
  (`shape_key`: the rendered configuration and SQL, the sources' files, DuckDB's version, this
  package's code) and read back by the next process that loads the same project
  (`validation_cache.py`); only a validation that passed is kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import duckdb

from azexport_assets.config import ConfigError, SourceConfig
from azexport_assets.lakehouse import DeltaTypeError, check_column_types
from azexport_assets.project import Project, partition_field
from azexport_assets.sandbox import (
    UnsafeSQLError,
    ascii_lower,
    check_segment_filter,
    check_select,
    filter_type_probe,
    lock_down,
    segment_query,
)
from azexport_assets.sql_text import quote_ident
from azexport_assets.validation_cache import (
    cache_folder,
    digest,
    file_state,
    load,
    package_state,
    store,
)
from azexport_assets.warehouse import (
    SourceEncodingError,
    WarehouseConfigError,
    attach_source,
    confine_sources,
    confinement_violation,
    resolve_path,
    source_files,
)
from azexport_assets.warehouse.confinement import CONFINE_ENV
from azexport_assets.warehouse.csv_dialect import sniff_csv_sources
from azexport_assets.warehouse.dbsources import (
    DatabaseSourceError,
    attach_lake_for_load,
    warehouse_lake_conninfo,
)
from azexport_assets.warehouse.extensions import EXTENSIONS_ENV, available_offline

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelDeps:
    source_tables: tuple[tuple[str, str], ...] = ()  # (source name, table name)
    models: tuple[str, ...] = ()


@dataclass
class ProjectShape:
    deps: dict[str, ModelDeps] = field(default_factory=dict)
    # Columns [(name, type)] of each model and segment; None when a source is unavailable.
    columns: dict[str, list[tuple[str, str]] | None] = field(default_factory=dict)


def table_references(sql: str) -> list[tuple[str, str, str]]:
    """(catalog, schema, table) of every table the SQL reads, CTE names left out.
    Raises UnsafeSQLError unless the SQL is one SELECT query of the allowed shape."""
    _, refs = check_select(sql)
    return list(refs.tables)


def model_dependencies(project: Project, name: str) -> ModelDeps:
    """The declared sources (source, table) and models a model's SQL reads, under their
    declared names; ConfigError naming the file, line, model and field for anything else.

    Names are matched the way DuckDB resolves them: ASCII letters in any case (`HSRC.Customers`
    is source `hsrc`'s table `customers`), every other character exactly (`ascii_lower`)."""
    field_ = _sql_field(project, name)
    try:
        refs = table_references(project.model_sql[name])
    except UnsafeSQLError as error:
        raise ConfigError(f"{project.where('models', name, field_)}: {error}") from None
    # Sources read as <source>.<table>: a DuckDB file, a database schema.
    duckdb_sources = _folded(s for s, c in project.sources.items() if _catalog_like(c))
    file_sources = _folded(s for s, c in project.sources.items() if not _catalog_like(c))
    models_by_name = _folded(project.models)
    source_tables: list[tuple[str, str]] = []
    models: list[str] = []
    for catalog, schema, table in refs:
        owner = ascii_lower(catalog or schema)
        if owner in duckdb_sources:
            source = duckdb_sources[owner]
            problem = database_table_problem(
                source, project.sources[source], catalog, schema, table
            )
            if problem:
                raise ConfigError(f"{project.where('models', name, field_)}: {problem}")
            # One table whatever its spelling, so one lineage asset: DuckDB's folded name.
            source_tables.append((source, ascii_lower(table)))
        elif not catalog and owner == "models" and ascii_lower(table) in models_by_name:
            models.append(models_by_name[ascii_lower(table)])
        elif not owner and ascii_lower(table) in file_sources:
            source = file_sources[ascii_lower(table)]
            source_tables.append((source, source))
        else:
            known = ", ".join(
                [f"{s}.<table>" for s in duckdb_sources.values()]
                + list(file_sources.values())
                + [f"models.{m}" for m in project.models]
            )
            shown = ".".join(p for p in (catalog, schema, table) if p)
            raise ConfigError(
                f"{project.where('models', name, field_)}: reads '{shown}', which is not a "
                f"declared source or model; it can read: {known or 'nothing declared'}"
            )
    return ModelDeps(tuple(dict.fromkeys(source_tables)), tuple(dict.fromkeys(models)))


def _catalog_like(config: SourceConfig) -> bool:
    return config.kind == "duckdb" or config.is_database


def database_table_problem(
    name: str, config: SourceConfig, catalog: str, schema: str, table: str
) -> str:
    """Why a model may not read `table` of a postgres or lake source ('' when it may): only the
    declared tables (all of the schema when none are listed), named `<source>.<table>` (or
    `<source>.<schema>.<table>` for Postgres)."""
    if not config.is_database:
        return ""
    shown = ".".join(p for p in (catalog, schema, table) if p)
    if catalog and not (
        config.kind == "postgres" and ascii_lower(schema) == ascii_lower(config.schema_name)
    ):
        return (
            f"reads '{shown}', outside the source's schema: a {config.kind} source reads "
            f"its schema '{config.schema_name}' only, as {name}.<table>"
        )
    if config.tables is not None and ascii_lower(table) not in map(ascii_lower, config.tables):
        return (
            f"reads '{shown}', which is not a declared table of source '{name}'; it declares: "
            f"{', '.join(config.tables)} (add the table to the source's 'tables' to read it)"
        )
    return ""


def _folded(names: Iterable[str]) -> dict[str, str]:
    """Declared names by their DuckDB-folded form (names differing only in ASCII case are
    refused when the project is built, so the map is one-to-one)."""
    return {ascii_lower(n): n for n in names}


def _sql_field(project: Project, model: str) -> str:
    return "sql" if project.models[model].sql else "sql_file"


def check_segment(project: Project, name: str) -> None:
    """A segment's filter must be one expression over its model's columns; subqueries in it
    may read that same model only (e.g. `ltv > (SELECT avg(ltv) FROM models.customers)`):
    anything else would be a dependency the job does not refresh, or a source the segment's
    step does not attach."""
    segment = project.segments[name]
    where = project.where("segments", name, "filter")
    try:
        refs = check_segment_filter(segment.model, segment.filter)
    except UnsafeSQLError as error:
        raise ConfigError(f"{where}: {error}") from None
    for catalog, schema, table in refs.tables:
        if (
            not catalog
            and ascii_lower(schema) == "models"
            and ascii_lower(table) == ascii_lower(segment.model)
        ):
            continue
        shown = ".".join(p for p in (catalog, schema, table) if p)
        raise ConfigError(
            f"{where}: reads '{shown}'; a filter's subqueries may read its own model only "
            f"(models.{segment.model}); join other data in a model instead"
        )


def segment_sql(project: Project, name: str) -> str:
    """The checked query that materializes a segment (ConfigError if the filter is unsafe)."""
    check_segment(project, name)
    segment = project.segments[name]
    return segment_query(segment.model, segment.filter)


def model_sql(project: Project, name: str) -> str:
    """The checked SQL of a model (ConfigError if it is not one safe SELECT)."""
    model_dependencies(project, name)
    return project.model_sql[name]


def _source_available(project: Project, source: str) -> bool:
    config = project.sources[source]
    if config.is_database:
        return True  # tried when attached; one that cannot be reached now is skipped there
    location = resolve_path(config.location, project.project_root)
    return (
        bool(source_files(config, project.project_root))
        if config.kind != "duckdb"
        else os.path.exists(location)
    )


def model_order(project: Project, deps: dict[str, ModelDeps]) -> list[str]:
    """Models in build order (each after the models it reads); ConfigError on a cycle."""
    try:
        return list(TopologicalSorter({m: set(d.models) for m, d in deps.items()}).static_order())
    except CycleError as error:
        # graphlib lists each node before the one that reads it: reversed, it reads
        # 'a -> b -> a' as "a reads b, which reads a".
        cycle = list(reversed(error.args[1]))
        first, second = cycle[0], cycle[1]
        raise ConfigError(
            f"{project.where('models', first, _sql_field(project, first))}: reads "
            f"models.{second}, and the models read each other in a cycle: "
            f"{' -> '.join(cycle)}; no model may read, even through others, a model that "
            "reads it: break the cycle, e.g. by reading the sources directly in one of them"
        ) from None


def check_source_locations(project: Project) -> None:
    """With AZEXPORT_CONFINE_SOURCES on, every source lives under the project root (its path,
    a glob's fixed prefix and the files it matches now, '..' and symlinks resolved). Steps
    check again when they attach the source (`warehouse.confinement`)."""
    if not confine_sources():
        return
    for name, config in project.sources.items():
        location = resolve_path(config.location, project.project_root)
        files = source_files(config, project.project_root) if config.kind != "duckdb" else []
        reason = confinement_violation(config, location, project.project_root, files)
        if reason:
            raise ConfigError(f"{project.where('sources', name, config.kind)}: {reason}")


def check_remote_sources(project: Project) -> None:
    """Sources in Azure need DuckDB's azure extension. It exists offline only as a wheel for
    DuckDB 1.5.5 (the lake environment) or as a file in $AZEXPORT_DUCKDB_EXTENSIONS; without
    either, the project is refused at load rather than at the first run."""
    remote = [name for name, config in project.sources.items() if config.remote]
    if not remote or available_offline("azure"):
        return
    name = remote[0]
    raise ConfigError(
        f"{project.where('sources', name, project.sources[name].kind)}: a source in Azure is "
        f"read through DuckDB's azure extension, which this environment (DuckDB "
        f"{duckdb.__version__}) does not have: use the lake environment (pip install "
        "'azexport_assets[lake]', DuckDB 1.5.5 with the extension wheels; `make test-lake` "
        "builds .venv-lake), or put azure.duckdb_extension for this DuckDB version in the "
        "folder named by $AZEXPORT_DUCKDB_EXTENSIONS"
    )


def check_database_sources(project: Project) -> None:
    """Postgres and lake sources are read through DuckDB's postgres (and ducklake) extensions,
    which exist offline in the lake environment; a lake source needs the DuckLake warehouse."""
    for name, config in project.sources.items():
        if not config.is_database:
            continue
        where = project.where("sources", name, config.kind)
        if config.kind == "lake" and warehouse_lake_conninfo() is None:
            raise ConfigError(
                f"{where}: reads schema '{config.lake}' of the warehouse's DuckLake, but the "
                "warehouse is a DuckDB file: set AZEXPORT_WAREHOUSE=ducklake:postgres:... "
                "(docs/deploy.md)"
            )
        needed = ["postgres_scanner"] + (["ducklake"] if config.kind == "lake" else [])
        missing = [e for e in needed if not available_offline(e)]
        if missing:
            raise ConfigError(
                f"{where}: a {config.kind} source is read through DuckDB's "
                f"{' and '.join(missing)} extension(s), which this environment (DuckDB "
                f"{duckdb.__version__}) does not have: use the lake environment (pip install "
                "'azexport_assets[lake]'), or put the extension files for this DuckDB version "
                "in the folder named by $AZEXPORT_DUCKDB_EXTENSIONS"
            )


def _attach_lake_for_load(
    con: duckdb.DuckDBPyConnection, project: Project, available: set[str]
) -> None:
    """Lake sources bind against the warehouse's lake, attached read-only; when it cannot be
    opened now they are skipped (and checked again at run time)."""
    lake_sources = [s for s in sorted(available) if project.sources[s].kind == "lake"]
    if not lake_sources:
        return
    try:
        attach_lake_for_load(con)
    except DatabaseSourceError as error:
        _log.warning("%s: %s", project.position("sources", lake_sources[0]), error)
        available.difference_update(lake_sources)


def describe_project(project: Project) -> ProjectShape:
    """Dependencies and columns of every model and segment; ConfigError on SQL errors.

    What DuckDB finds (parsing and binding) is kept on disk under a digest of everything it
    depends on (`shape_key`), so the next process that loads the same project with the same
    sources reads it back instead (`validation_cache.py`). The checks that read the file system
    or the environment, and those of each activation, run every time."""
    check_source_locations(project)
    check_remote_sources(project)
    check_database_sources(project)
    try:
        key = shape_key(project)
    except (OSError, TypeError, ValueError):
        key = None  # e.g. a value JSON cannot hold: validated as without a cache
    folder = cache_folder(project.project_root) if key else None
    found = _shape_from_cache(project, folder, key)
    if found is not None:
        shape, warnings = found
        for source, warning in warnings:
            _log.warning("%s: %s", project.position("sources", source, "csv"), warning)
    else:
        shape, warnings, complete = _introspect(project)
        if key and complete:
            store(folder, key, _shape_entry(shape, warnings))
    for activation in project.activations:
        columns = shape.columns.get(project.activations[activation].source)
        check_mapping(project, activation, columns)
        check_partition_columns(project, activation, columns)
        check_table_columns(project, activation, columns)
    return shape


def _introspect(project: Project) -> tuple[ProjectShape, list[tuple[str, str]], bool]:
    """(shape, the CSV sniffer's warnings as (source, text), complete): parse every model and
    segment and bind them in DuckDB. Not complete when a source that exists could not be
    attached (e.g. locked by its writer): its models were skipped, and that is not kept."""
    shape = ProjectShape(deps={m: model_dependencies(project, m) for m in project.models})
    for segment in project.segments:
        check_segment(project, segment)
    available = {s for s in project.sources if _source_available(project, s)}
    complete = True
    con = duckdb.connect()
    try:
        files: list[str] = []
        reachable = len(available)
        _attach_lake_for_load(con, project, available)
        complete = len(available) == reachable
        for source in sorted(available):
            try:
                files += attach_source(con, source, project.sources[source], project.project_root)
            except SourceEncodingError as error:
                # A file's content, not the configuration alone: the other activations still
                # load; the steps that read the source fail with the same line.
                _log.warning("%s: %s", project.where("sources", source, "csv"), error.detail)
                available.discard(source)
                complete = False
            except duckdb.Error:
                available.discard(source)  # e.g. locked by its writer: checked again at run time
                complete = False
            except WarehouseConfigError as error:  # unreachable, a table not loaded, no file
                _log.warning("%s: %s", project.position("sources", source), error)
                available.discard(source)
                complete = False
        # Our schemas first: the configuration is locked from here on.
        con.execute("CREATE SCHEMA models; CREATE SCHEMA segments")
        lock_down(con, files=files)
        warnings = _warn_about_skipped_lines(con, project, available)
        for model in model_order(project, shape.deps):
            deps = shape.deps[model]
            ready = all(s in available for s, _ in deps.source_tables) and all(
                shape.columns.get(m) is not None for m in deps.models
            )
            if not ready:
                shape.columns[model] = None
                continue
            shape.columns[model] = _create_view(
                con, project, "models", model, project.model_sql[model], _sql_field(project, model)
            )
            _check_key(project, model, shape.columns[model])
        for segment, config in project.segments.items():
            if shape.columns.get(config.model) is None:
                shape.columns[segment] = None
                continue
            _check_boolean(con, project, segment)
            query = segment_query(config.model, config.filter)
            shape.columns[segment] = _create_view(
                con, project, "segments", segment, query, "filter"
            )
    finally:
        con.close()
    return shape, warnings, complete


# --------------------------------------------------------------------------- kept on disk

SHAPE_ENTRY = "project-shape/1"  # what an entry holds, and the layout it has
# Variables read while sources are checked and attached (not through the configuration).
_SETTINGS = (CONFINE_ENV, EXTENSIONS_ENV)
# Sources whose files stand for their schemas; a project with any other kind is not kept.
_FILE_KINDS = ("duckdb", "parquet", "csv")


def shape_key(project: Project) -> str | None:
    """The digest of everything `_introspect` reads, or None when that cannot be told without
    doing the work (a Postgres or lake source, whose tables' schemas live in a database; a
    source in Azure that would be read at load). It covers:

    - the models' and segments' configuration and SQL text as loaded, i.e. after the
      templates of `defs.yaml` and SQL were rendered (so the variables they read count with
      their values), and every source's configuration;
    - each source's files as they are now (path, size, modification and change times,
      inode; a DuckDB file's WAL too; every file a glob matches), which stand for their schemas;
    - DuckDB's version, this package's code, the project root and the settings that decide
      how sources are read (`_SETTINGS`).

    Variables count through what they produce: a `{{ env.X }}` of defs.yaml or SQL through the
    rendered values, a `$VAR` or `~` in a source's path through the path it names."""
    sources: dict[str, Any] = {}
    for name, config in sorted(project.sources.items()):
        if config.kind not in _FILE_KINDS:
            return None  # tables of a database (Postgres, the lake): no file says they changed
        if config.remote:
            if _source_available(project, name):
                return None  # its schema lives in Azure: nothing local says it changed
            sources[name] = {"config": config.model_dump(mode="json"), "files": "remote"}
            continue
        location = resolve_path(config.location, project.project_root)
        if config.kind == "duckdb":
            files = [location, f"{location}.wal"]
        else:
            files = [location, *source_files(config, project.project_root)]
        sources[name] = {
            "config": config.model_dump(mode="json"),
            "files": [[f, file_state(f)] for f in files],
        }
    return digest(
        {
            "entry": SHAPE_ENTRY,
            "code": package_state(),
            "duckdb": duckdb.__version__,
            "root": str(project.project_root.resolve()),
            "settings": {name: os.environ.get(name) for name in _SETTINGS},
            "sources": sources,
            "models": {
                n: [m.model_dump(mode="json"), project.model_sql.get(n)]
                for n, m in sorted(project.models.items())
            },
            "segments": {n: s.model_dump(mode="json") for n, s in sorted(project.segments.items())},
        }
    )


def _shape_entry(shape: ProjectShape, warnings: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "entry": SHAPE_ENTRY,
        "deps": {
            name: {"source_tables": [list(t) for t in d.source_tables], "models": list(d.models)}
            for name, d in shape.deps.items()
        },
        "columns": {
            name: None if columns is None else [list(c) for c in columns]
            for name, columns in shape.columns.items()
        },
        "warnings": [list(w) for w in warnings],
    }


def _shape_from_cache(
    project: Project, folder: Path | None, key: str | None
) -> tuple[ProjectShape, list[tuple[str, str]]] | None:
    """The shape stored under `key`, checked to be one of this project; None otherwise."""
    if key is None:
        return None
    entry = load(folder, key)
    try:
        if not isinstance(entry, dict) or entry.get("entry") != SHAPE_ENTRY:
            return None
        deps = {
            str(name): ModelDeps(
                tuple((str(s), str(t)) for s, t in d["source_tables"]),
                tuple(str(m) for m in d["models"]),
            )
            for name, d in entry["deps"].items()
        }
        columns = {
            str(name): None if cols is None else [(str(c), str(t)) for c, t in cols]
            for name, cols in entry["columns"].items()
        }
        warnings = [(str(source), str(text)) for source, text in entry["warnings"]]
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if (
        set(deps) != set(project.models)
        or set(columns) != set(project.models) | set(project.segments)
        or any(m not in project.models for d in deps.values() for m in d.models)
        or any(s not in project.sources for d in deps.values() for s, _ in d.source_tables)
        or any(source not in project.sources for source, _ in warnings)
    ):
        return None
    try:
        order = model_order(project, deps)
    except ConfigError:
        return None  # no project that validated has a cycle: not an entry of ours
    # Built in the order `_introspect` builds it, so a kept shape equals a computed one.
    ordered = {m: columns[m] for m in order}
    ordered.update({s: columns[s] for s in project.segments})
    return ProjectShape(deps={m: deps[m] for m in project.models}, columns=ordered), warnings


def _warn_about_skipped_lines(
    con: duckdb.DuckDBPyConnection, project: Project, available: set[str]
) -> list[tuple[str, str]]:
    """A line in the code location's log when DuckDB's sniffer skips lines of a CSV source
    (the model step logs the whole dialect on every run); returns them as (source, text)."""
    attached = {s: project.sources[s] for s in sorted(available)}
    warnings = []
    for dialect in sniff_csv_sources(con, attached, project.project_root):
        warning = dialect.warning()
        if warning:
            _log.warning("%s: %s", project.position("sources", dialect.source, "csv"), warning)
            warnings.append((dialect.source, warning))
    return warnings


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


def _check_boolean(con: duckdb.DuckDBPyConnection, project: Project, segment: str) -> None:
    """A filter must be a boolean expression: DuckDB would cast an integer silently."""
    config = project.segments[segment]
    probe = filter_type_probe(config.model, config.filter)  # shape-checked with the filter
    try:
        kind = con.execute(f"DESCRIBE {probe}").fetchall()[0][1]
    except duckdb.Error as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConfigError(f"{project.where('segments', segment, 'filter')}: {first_line}") from None
    if kind != "BOOLEAN":
        raise ConfigError(
            f"{project.where('segments', segment, 'filter')}: must be a boolean expression "
            f"(it is {kind}), e.g. is_active AND country = 'FR'"
        )


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


def check_partition_columns(
    project: Project, activation: str, columns: list[tuple[str, str]] | None
) -> None:
    """Files: `partition_by` names exported (destination) columns (at load and at run time)."""
    config = project.activations[activation]
    if config.is_table or not config.partition_by or columns is None:
        return
    names = [dest for _, dest in exported_columns(project, activation, [c for c, _ in columns])]
    unknown = [c for c in config.partition_by if c not in names]
    if unknown:
        raise ConfigError(
            f"{project.where('activations', activation, 'partition_by')}: unknown "
            f"column(s) {', '.join(repr(c) for c in unknown)}; partition by exported "
            f"(destination) names: {', '.join(names)}"
        )


def check_table_columns(
    project: Project, activation: str, columns: list[tuple[str, str]] | None
) -> None:
    """`format: delta`: every exported column has an exact Delta type, and `partition_by`
    names exported columns (checked at load and again before any write)."""
    config = project.activations[activation]
    if not config.is_table or columns is None:
        return
    types = dict(columns)
    exported = exported_columns(project, activation, [c for c, _ in columns])
    try:
        check_column_types([(dest, types[src]) for src, dest in exported])
    except DeltaTypeError as error:
        field_ = "mapping" if config.mapping else "source"
        raise ConfigError(f"{project.where('activations', activation, field_)}: {error}") from None
    names = [dest for _, dest in exported]
    ticked = [n for n in names if "`" in n]
    if ticked:
        # delta-rs merges name columns in backticks and cannot escape one inside a name: the
        # first write would work and every merge after it fail.
        field_ = "mapping" if config.mapping else "source"
        raise ConfigError(
            f"{project.where('activations', activation, field_)}: column {ticked[0]!r} has a "
            "backtick, which a Delta table's merges cannot name; rename it in the mapping"
        )
    unknown = [c for c in config.table_partition_by if c not in names]
    if unknown:
        raise ConfigError(
            f"{project.where('activations', activation, partition_field(config))}: unknown "
            f"column(s) {', '.join(repr(c) for c in unknown)}; partition by exported "
            f"(destination) names: {', '.join(names)}"
        )
    source_of = {dest: src for src, dest in exported}
    for column in config.table_partition_by:
        reason = _partition_type_refusal(types[source_of[column]])
        if reason:
            raise ConfigError(
                f"{project.where('activations', activation, partition_field(config))}: "
                f"column {column!r} ({types[source_of[column]]}) cannot partition a Delta "
                f"table: {reason}. Partition by a text, integer, date or timestamp column "
                "(e.g. one the model derives with CAST(... AS VARCHAR))"
            )
    model = project.model_of(config.source)
    unexported = [k for k in project.models[model].primary_key if k not in dict(exported)]
    if config.is_delta and unexported:
        raise ConfigError(
            f"{project.where('activations', activation, 'mapping')}: a Delta table in "
            f"sync_mode '{config.sync_mode}' is merged on the primary key, so the mapping must "
            f"export the key column(s) {', '.join(unexported)} of model '{model}'"
        )


def _partition_type_refusal(type_text: str) -> str | None:
    """Why a Delta table cannot be partitioned by a column of this DuckDB type, or None."""
    upper = type_text.upper()
    if upper.startswith("DECIMAL") or upper in ("HUGEINT", "UHUGEINT"):
        # HUGEINT is written as DECIMAL(38,0). delta-rs writes a negative decimal's partition
        # value wrongly ('-1.50' as '-1.-50') and commits it: the table can no longer be read.
        return "delta-rs writes negative decimal partition values it cannot read back"
    if upper.endswith("]") or upper.startswith(("STRUCT", "MAP", "UNION")):
        return "a list, struct or map has no partition value"
    if upper == "BLOB":
        return "binary values have no partition value"
    return None


def exported_columns(
    project: Project, activation: str, columns: list[str]
) -> list[tuple[str, str]]:
    """(source column, destination name) in export order: the mapping, or every column as is."""
    mapping = project.activations[activation].mapping
    if mapping:
        return list(mapping.items())
    return [(c, c) for c in columns]
