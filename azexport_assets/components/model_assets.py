"""Asset factories for source tables (external), models and segments.

A model or segment is rebuilt only when what it reads changed: its step compares the
fingerprint of its inputs (`fingerprints.input_fingerprint`) with the one its relation carries
in the warehouse (`BuildRecord`, the relation's COMMENT, written in the transaction that created
it and only after its key check passed). Unchanged, the step keeps the relation and the result
of its key check and reports the stored counts; the fingerprint is the asset's data version.
"""

import contextlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import dagster as dg
import duckdb
from pydantic import Field

from azexport_assets.asset_keys import model_key, segment_key, source_key
from azexport_assets.components.activation_assets import WAREHOUSE_POOL
from azexport_assets.components.fingerprints import (
    BuildInputs,
    input_fingerprint,
    reachable_sources,
    recipe_version,
    source_fingerprint,
)
from azexport_assets.components.lineage import is_view, sources_to_attach
from azexport_assets.components.metadata import PREVIEW_ROWS, build_metadata, markdown_table
from azexport_assets.config import ConfigError
from azexport_assets.delta import key_violations
from azexport_assets.delta.state import drop_relation
from azexport_assets.introspect import ProjectShape, check_segment, model_sql, segment_sql
from azexport_assets.project import Project
from azexport_assets.resources import WarehouseResource
from azexport_assets.sandbox import segment_query
from azexport_assets.sql_text import quote_ident, quote_literal
from azexport_assets.warehouse import retry_on_conflict

PRIMARY_KEY_CHECK = "primary_key_unique_not_null"
# A run tag that makes every model and segment of the run rebuild (see ModelRunConfig).
FORCE_REBUILD_TAG = "azexport/force_rebuild"
REBUILT_METADATA = "azexport/rebuilt"
BUILD_RECORD = "azexport_build"  # the key that marks our COMMENT on a relation


def source_table_specs(project: Project, shape: ProjectShape, sources: list[str]) -> list:
    """External assets for the tables of `sources` that any model of the project reads (each
    is declared once, by the component that declares its source)."""
    specs = {}
    for model in project.models:
        for source, table in shape.deps[model].source_tables:
            if source not in sources:
                continue
            config = project.sources[source]
            specs[(source, table)] = dg.AssetSpec(
                key=source_key(source, table),
                group_name="sources",
                kinds={config.kind},
                description=config.description
                or f"Table `{table}` of source `{source}` ({config.kind}: `{config.location}`).",
            )
    return list(specs.values())


class ModelRunConfig(dg.Config):
    force_rebuild: bool = Field(
        False,
        description=(
            "Rebuild and check the key even if nothing it reads changed since its last build "
            f"(the run tag `{FORCE_REBUILD_TAG}: true` does it for every model and segment)."
        ),
    )


@dataclass(frozen=True)
class BuildRecord:
    """What a model's or segment's relation carries as its COMMENT, written in the transaction
    that creates it and only when its key check passed: the fingerprint of its inputs, and
    what the UI shows of it (so an unchanged relation is never scanned again)."""

    relation: str  # 'table' | 'view': what holds the record
    fingerprint: str
    inputs: dict
    rows: int
    preview: str
    run_id: str
    built_at: str

    def comment(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "relation"}
        return json.dumps({BUILD_RECORD: 1, **fields}, sort_keys=True)

    @classmethod
    def parse(cls, relation: str, comment: str | None) -> "BuildRecord | None":
        try:
            fields = json.loads(comment or "")
            if fields.pop(BUILD_RECORD) != 1:
                return None
            return cls(relation=relation, **fields)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # no record (a relation built before, or by hand), or a foreign one


def read_build(con: duckdb.DuckDBPyConnection, kind: str, name: str) -> BuildRecord | None:
    """The record of `kind.name` (a catalog lookup), None if it has none or does not exist."""
    found = con.execute(
        "SELECT 'table', comment FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
        "UNION ALL SELECT 'view', comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND schema_name = ? AND view_name = ? "
        "AND NOT internal",
        [kind, name, kind, name],
    ).fetchall()
    return BuildRecord.parse(*found[0]) if len(found) == 1 else None


@dataclass(frozen=True)
class Build:
    """What the step did: rebuilt or found unchanged, with the counts the UI shows."""

    rebuilt: bool
    reason: str
    inputs: BuildInputs
    rows: int
    key_clean: bool
    record: BuildRecord | None  # the stored one (kept, or written by this build)
    preview: str


def materialize_table(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project: Project,
    shape: ProjectShape,
    kind: str,
    name: str,
    sql: str,
    field: str,
    primary_key: list[str],
    sources: dict,
    force: bool,
) -> dg.MaterializeResult:
    """Rebuild the table (or view) unless the fingerprint of its inputs equals the one stored
    with it; count its rows and check its key in one pass over the new rows; all in one
    warehouse hold. SQL errors name the file, the object and the field."""
    table = f"{kind}.{quote_ident(name)}"
    as_view = is_view(project, project.model_of(name))  # a segment follows its model
    force = force or context.run.tags.get(FORCE_REBUILD_TAG, "").lower() == "true"
    # Taken before any data are read: a source written meanwhile only causes one more rebuild.
    watched = {s: source_fingerprint(project, s) for s in reachable_sources(project, shape, name)}
    run_id = context.run.run_id
    with warehouse.open(project.project_root).connect(
        holder=f"run {run_id[:8]} {kind}/{name}",
        sources=sources,
    ) as con:
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {kind}")
            # On DuckLake two runs may rebuild a shared model at once: the later commit
            # conflicts and the whole transaction (fingerprint included) is run again.
            build = retry_on_conflict(
                lambda: _build_unless_unchanged(
                    con,
                    project,
                    shape,
                    kind,
                    name,
                    sql,
                    as_view,
                    primary_key,
                    watched,
                    force,
                    run_id,
                )
            )
        except duckdb.Error as error:
            raise dg.Failure(
                description=f"{project.where(kind, name, field)}: {error}", allow_retries=False
            ) from None
        columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
        # key_violations quotes 'schema.name' itself; it lists offenders of a failed check.
        problems = [] if build.key_clean else key_violations(con, f"{kind}.{name}", primary_key)
    context.log.info(f"{kind}/{name}: {build.reason}")
    metadata = build_metadata(table, columns, build.rows, build.preview)
    metadata[REBUILT_METADATA] = build.rebuilt
    metadata["azexport/inputs_fingerprint"] = build.inputs.fingerprint or "none"
    version = build.inputs.fingerprint or f"run-{run_id}"
    checks = []
    if primary_key:
        checks = [
            _key_check(context.assets_def.key, primary_key, problems)
            if build.rebuilt
            else _unchanged_key_check(context.assets_def.key, build.record)
        ]
    return dg.MaterializeResult(
        metadata=metadata, check_results=checks, data_version=dg.DataVersion(version)
    )


def _build_unless_unchanged(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    shape: ProjectShape,
    kind: str,
    name: str,
    sql: str,
    as_view: bool,
    primary_key: list[str],
    watched: dict[str, str | None],
    force: bool,
    run_id: str,
) -> Build:
    """One transaction: compare the fingerprints, and if they differ drop and re-create the
    relation, count and check it, and store the new record with it (readers see the old or the
    new relation, each with its own record)."""
    relation = "view" if as_view else "table"
    con.execute("BEGIN TRANSACTION")
    try:
        builds: dict[tuple[str, str], BuildRecord | None] = {}

        def stored(kind_: str, name_: str) -> tuple[str, str] | None:
            if (kind_, name_) not in builds:
                builds[(kind_, name_)] = read_build(con, kind_, name_)
            found = builds[(kind_, name_)]
            return (found.relation, found.fingerprint) if found else None

        inputs = input_fingerprint(project, shape, kind, name, sql, watched, stored)
        previous = read_build(con, kind, name)
        reason = _rebuild_reason(inputs, previous, relation, force)
        if reason is None:
            con.execute("ROLLBACK")  # nothing was written
            return Build(
                rebuilt=False,
                reason=f"not rebuilt: its inputs are unchanged since run {previous.run_id[:8]} "
                f"({previous.built_at}), whose rows passed the key check; run with "
                "force_rebuild to rebuild it",
                inputs=inputs,
                rows=previous.rows,
                key_clean=True,
                record=previous,
                preview=previous.preview,
            )
        table = f"{kind}.{quote_ident(name)}"
        drop_relation(con, name, schema=kind)  # table <-> view
        written = con.execute(f"CREATE {relation.upper()} {table} AS {sql}").fetchone()
        rows, clean = _count_and_check(con, table, primary_key, None if as_view else written)
        preview = con.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
        header = [d[0] for d in preview.description]
        preview_md = markdown_table(header, preview.fetchall())
        record = None
        if inputs.fingerprint and clean:  # a failed key check never becomes a good build
            record = BuildRecord(
                relation=relation,
                fingerprint=inputs.fingerprint,
                inputs=inputs.parts,
                rows=rows,
                preview=preview_md,
                run_id=run_id,
                built_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            )
            con.execute(
                f"COMMENT ON {relation.upper()} {table} IS {quote_literal(record.comment())}"
            )
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT ended the transaction
            con.execute("ROLLBACK")
        raise
    return Build(True, f"rebuilt: {reason}", inputs, rows, clean, record, preview_md)


def _rebuild_reason(
    inputs: BuildInputs, previous: BuildRecord | None, relation: str, force: bool
) -> str | None:
    """Why the relation must be built again, or None when the stored one is still right."""
    if force:
        return "forced (force_rebuild)"
    if inputs.fingerprint is None:
        return f"{inputs.unknown}, so its inputs cannot be compared (always rebuilt)"
    if previous is None:
        return "no earlier build with a fingerprint and a passed key check"
    if previous.relation != relation:
        return f"it becomes a {relation}"
    if previous.fingerprint != inputs.fingerprint:
        changed = inputs.changes_since(previous.inputs)
        return f"{', '.join(changed) or 'its inputs'} changed since run {previous.run_id[:8]}"
    return None


def _count_and_check(
    con: duckdb.DuckDBPyConnection, table: str, primary_key: list[str], written: tuple | None
) -> tuple[int, bool]:
    """(rows, key is clean) in at most one pass over the relation: the rows a CREATE TABLE AS
    reports need no pass at all; a key check counts the rows in the same aggregate."""
    if not primary_key:
        if written is not None:
            return int(written[0]), True
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]), True
    keys = [quote_ident(k) for k in primary_key]
    key = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
    any_null = " OR ".join(f"{k} IS NULL" for k in keys)
    total, distinct, nulls = con.execute(
        f"SELECT count(*), count(DISTINCT {key}), count(*) FILTER (WHERE {any_null}) FROM {table}"
    ).fetchone()
    return int(total), nulls == 0 and distinct == total


def _key_check(asset_key: dg.AssetKey, key: list[str], problems: list[dict]) -> dg.AssetCheckResult:
    rows = [(str(p["key"]), p["problem"], p["count"]) for p in problems]
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=PRIMARY_KEY_CHECK,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if not problems
        else f"primary key ({', '.join(key)}) has NULL or duplicate values; fix the model's SQL",
        metadata={
            "offending_keys": dg.MetadataValue.md(
                markdown_table(["key", "problem", "rows"], rows) if rows else "none"
            ),
            "offending_count_shown": len(rows),
        },
    )


def _unchanged_key_check(asset_key: dg.AssetKey, record: BuildRecord) -> dg.AssetCheckResult:
    """The relation holds the rows whose key passed the check in the build that stored it."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=PRIMARY_KEY_CHECK,
        passed=True,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"unchanged since run {record.run_id[:8]}, where the key check passed",
        metadata={
            "offending_keys": dg.MetadataValue.md("none"),
            "offending_count_shown": 0,
            "checked_in_run": record.run_id,
        },
    )


def code_version(project: Project, name: str, sql: str) -> str:
    """The asset's code version: its SQL as run, its key and its materialization."""
    return recipe_version(project, name, sql)


def _checked(check, project: Project, name: str) -> str:
    try:
        return check(project, name)
    except ConfigError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


def model_asset(project: Project, shape: ProjectShape, name: str) -> dg.AssetsDefinition:
    """One model: a SQL query materialized as a warehouse table."""
    model = project.models[name]
    key = model_key(name)
    deps = [source_key(s, t) for s, t in shape.deps[name].source_tables]
    deps += [model_key(m) for m in shape.deps[name].models]
    check_specs = (
        [
            dg.AssetCheckSpec(
                PRIMARY_KEY_CHECK,
                asset=key,
                blocking=True,
                description=f"({', '.join(model.primary_key)}) is never NULL nor duplicated.",
            )
        ]
        if model.primary_key
        else []
    )
    sql = project.model_sql[name]
    description = (model.description or f"Model `{name}`.") + f"\n\n```sql\n{sql.strip()}\n```"
    if model.primary_key:
        description += f"\n\nPrimary key: `{', '.join(model.primary_key)}`"

    sources = sources_to_attach(
        project,
        shape,
        reads=list(shape.deps[name].models),
        own=[source for source, _ in shape.deps[name].source_tables],
    )

    @dg.asset(
        key=key,
        deps=deps,
        group_name="models",
        kinds={"duckdb", "sql"},
        description=description,
        check_specs=check_specs,
        owners=list(model.owners),
        pool=WAREHOUSE_POOL,
        tags={"azexport/model": name},
        code_version=code_version(project, name, sql),
    )
    def _model(
        context: dg.AssetExecutionContext, config: ModelRunConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        field = "sql" if model.sql else "sql_file"
        checked = _checked(model_sql, project, name)  # the load-time checks, again at run time
        return materialize_table(
            context,
            warehouse,
            project,
            shape,
            "models",
            name,
            checked,
            field,
            model.primary_key,
            sources,
            force=config.force_rebuild,
        )

    return _model


def segment_asset(project: Project, shape: ProjectShape, name: str) -> dg.AssetsDefinition:
    """One segment: a model narrowed by a filter, materialized like its model."""
    segment = project.segments[name]
    sources = sources_to_attach(project, shape, reads=[segment.model])
    model = project.models[segment.model]
    key = segment_key(name)
    check_segment(project, name)  # at load; again in the step (segment_sql)
    check_specs = (
        [
            dg.AssetCheckSpec(
                PRIMARY_KEY_CHECK,
                asset=key,
                blocking=True,
                description=f"({', '.join(model.primary_key)}) is never NULL nor duplicated.",
            )
        ]
        if model.primary_key
        else []
    )

    @dg.asset(
        key=key,
        deps=[model_key(segment.model)],
        group_name="segments",
        kinds={"duckdb", "sql"},
        description=(segment.description or f"Segment `{name}` of model `{segment.model}`.")
        + f"\n\n```sql\nWHERE {segment.filter}\n```",
        check_specs=check_specs,
        owners=list(segment.owners),
        pool=WAREHOUSE_POOL,
        tags={"azexport/segment": name},
        code_version=code_version(project, name, segment_query(segment.model, segment.filter)),
    )
    def _segment(
        context: dg.AssetExecutionContext, config: ModelRunConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        query = _checked(segment_sql, project, name)
        return materialize_table(
            context,
            warehouse,
            project,
            shape,
            "segments",
            name,
            query,
            "filter",
            model.primary_key,
            sources,
            force=config.force_rebuild,
        )

    return _segment
