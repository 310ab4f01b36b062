"""Asset factories for source tables (external), models and segments.

A model or segment is rebuilt only when what it reads changed (`builds`): its step compares the
fingerprint of its inputs (`fingerprints.input_fingerprint`) with the one its relation carries
in the warehouse (`BuildRecord`, the relation's COMMENT, written in the transaction that created
it and only after its key check passed). Unchanged, the step keeps the relation and the result
of its key check and reports the stored counts; the fingerprint is the asset's data version.
"""

import dagster as dg
import duckdb
from pydantic import Field

from azexport_assets.asset_keys import model_key, segment_key, source_key
from azexport_assets.components.activation_assets import WAREHOUSE_POOL
from azexport_assets.components.builds import Build, BuildRecord, build_unless_unchanged
from azexport_assets.components.csv_sources import log_csv_dialects
from azexport_assets.components.fingerprints import (
    reachable_sources,
    recipe_version,
    source_fingerprint,
)
from azexport_assets.components.lineage import is_view, sources_to_attach
from azexport_assets.components.metadata import build_metadata, markdown_table
from azexport_assets.components.signatures import signature_once
from azexport_assets.config import ConfigError
from azexport_assets.delta import key_violations
from azexport_assets.introspect import ProjectShape, check_segment, model_sql, segment_sql
from azexport_assets.project import Project
from azexport_assets.resources import WarehouseResource
from azexport_assets.sandbox import segment_query
from azexport_assets.secret_values import secrets_kept_out
from azexport_assets.sql_text import quote_ident
from azexport_assets.warehouse import (
    WarehouseConfigError,
    is_transient,
    reporting_retries,
    retry_on_conflict,
    retry_transient,
    source_encoding_error,
)

PRIMARY_KEY_CHECK = "primary_key_unique_not_null"
# A run tag that makes every model and segment of the run rebuild (see ModelRunConfig).
FORCE_REBUILD_TAG = "azexport/force_rebuild"
REBUILT_METADATA = "azexport/rebuilt"


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


def _missing_key_columns(
    con: duckdb.DuckDBPyConnection, sql: str, primary_key: list[str], error: duckdb.Error
) -> list[str]:
    """Key columns the query no longer returns, when `error` is DuckDB not finding a column
    (the key check then quotes the project's own query); else []."""
    if not primary_key or not isinstance(error, duckdb.BinderException):
        return []
    try:
        returned = {row[0] for row in con.execute(f"DESCRIBE ({sql})").fetchall()}
    except duckdb.Error:
        return []  # the SQL itself does not bind: its own error says why
    return [f"'{column}'" for column in primary_key if column not in returned]


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
    watched = {
        s: source_fingerprint(project, s, shape) for s in reachable_sources(project, shape, name)
    }
    run_id = context.run.run_id
    store = warehouse.open(project.project_root)

    def build_once() -> tuple[Build, list[tuple[str, str]], list[dict]]:
        with store.connect(holder=f"run {run_id[:8]} {kind}/{name}", sources=sources) as con:
            log_csv_dialects(context, con, sources, project.project_root)
            try:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {kind}")
                # On DuckLake two runs may rebuild a shared model at once: the later commit
                # conflicts and the whole transaction (fingerprint included) is run again.
                build = retry_on_conflict(
                    lambda: build_unless_unchanged(
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
                    ),
                    what=f"build of {kind}/{name}",
                )
            except duckdb.Error as error:
                if is_transient(error):
                    raise  # the lake's fault, not the SQL's: retried below
                unreadable = source_encoding_error(error, sources, project.project_root)
                if unreadable is not None:  # a later file of a CSV glob, not the first
                    raise unreadable from None
                missing = _missing_key_columns(con, sql, primary_key, error)
                if missing:  # the source changed after the code location was loaded
                    model = project.model_of(name)  # a segment's key is its model's
                    raise dg.Failure(
                        description=f"{project.where('models', model, 'primary_key')}: "
                        f"{', '.join(missing)} is not a column of {kind[:-1]} '{name}' any "
                        "more (its source changed since the project was loaded); fix the "
                        "key or the SQL. Nothing was built",
                        allow_retries=False,
                    ) from None
                raise dg.Failure(
                    description=f"{project.where(kind, name, field)}: {error}",
                    allow_retries=False,
                ) from None
            columns = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
            # key_violations quotes 'schema.name' itself; it lists offenders of a failed check.
            problems = [] if build.key_clean else key_violations(con, f"{kind}.{name}", primary_key)
        return build, columns, problems

    # A transient fault of the lake (catalog connection, az:// data) runs it all again.
    try:
        with reporting_retries(context.log.warning):
            build, columns, problems = retry_transient(build_once, what=f"{kind}/{name}")
    except WarehouseConfigError as error:  # e.g. a CSV source not in its encoding
        raise dg.Failure(description=str(error), allow_retries=False) from None
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
    @signature_once
    def _model(
        context: dg.AssetExecutionContext, config: ModelRunConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        field = "sql" if model.sql else "sql_file"
        with secrets_kept_out(project):
            checked = _checked(model_sql, project, name)  # the load-time checks, at run time
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
    @signature_once
    def _segment(
        context: dg.AssetExecutionContext, config: ModelRunConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        with secrets_kept_out(project):
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
