"""Asset factories for source tables (external), models and segments."""

import contextlib

import dagster as dg
import duckdb

from azexport_assets.asset_keys import model_key, segment_key, source_key
from azexport_assets.components.activation_assets import WAREHOUSE_POOL
from azexport_assets.components.csv_sources import log_csv_dialects
from azexport_assets.components.lineage import is_view, sources_to_attach
from azexport_assets.components.metadata import markdown_table, table_metadata
from azexport_assets.config import ConfigError
from azexport_assets.delta import key_violations
from azexport_assets.delta.state import drop_relation
from azexport_assets.introspect import ProjectShape, check_segment, model_sql, segment_sql
from azexport_assets.project import Project
from azexport_assets.resources import WarehouseResource
from azexport_assets.sql_text import quote_ident
from azexport_assets.warehouse import retry_on_conflict

PRIMARY_KEY_CHECK = "primary_key_unique_not_null"


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


def materialize_table(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    project: Project,
    kind: str,
    name: str,
    sql: str,
    field: str,
    primary_key: list[str],
    sources: dict,
) -> dg.MaterializeResult:
    """CREATE OR REPLACE the table, then describe it and check its key, in one warehouse hold.
    SQL errors name the file, the object and the field."""
    table = f"{kind}.{quote_ident(name)}"
    as_view = is_view(project, project.model_of(name))  # a segment follows its model
    with warehouse.open(project.project_root).connect(
        holder=f"run {context.run.run_id[:8]} {kind}/{name}",
        sources=sources,
    ) as con:
        log_csv_dialects(context, con, sources, project.project_root)
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {kind}")
            # On DuckLake two runs may rebuild a shared model at once: the later commit
            # conflicts and the whole replacement is simply run again.
            retry_on_conflict(
                lambda: _replace(
                    con, kind, name, f"CREATE {'VIEW' if as_view else 'TABLE'} {table} AS {sql}"
                )
            )
        except duckdb.Error as error:
            raise dg.Failure(
                description=f"{project.where(kind, name, field)}: {error}", allow_retries=False
            ) from None
        metadata = table_metadata(con, table)
        # key_violations quotes 'schema.name' itself.
        problems = key_violations(con, f"{kind}.{name}", primary_key) if primary_key else []
    checks = [_key_check(context.assets_def.key, primary_key, problems)] if primary_key else []
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _replace(con: duckdb.DuckDBPyConnection, kind: str, name: str, create: str) -> None:
    """Drop and re-create the relation in one transaction: readers see the old or the new."""
    con.execute("BEGIN TRANSACTION")
    try:
        drop_relation(con, name, schema=kind)  # table <-> view
        con.execute(create)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT ended the transaction
            con.execute("ROLLBACK")
        raise


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
    )
    def _model(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        field = "sql" if model.sql else "sql_file"
        checked = _checked(model_sql, project, name)  # the load-time checks, again at run time
        return materialize_table(
            context, warehouse, project, "models", name, checked, field, model.primary_key, sources
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
    )
    def _segment(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        query = _checked(segment_sql, project, name)
        return materialize_table(
            context,
            warehouse,
            project,
            "segments",
            name,
            query,
            "filter",
            model.primary_key,
            sources,
        )

    return _segment
