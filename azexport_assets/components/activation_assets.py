"""Asset factories for an activation: its change set (`<a>_delta`) and its files (`<a>_export`).

Each asset is a short story around one function of `azexport_assets.export`:
`compute_changes` for the delta, `run_export` for the files. This module only turns Dagster's
context into their arguments and their results into metadata and check results.
"""

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone

import dagster as dg
import duckdb

from azexport_assets import export as exporting
from azexport_assets.asset_keys import delta_key, export_key, sync_log_key
from azexport_assets.components.checks import last_failures, warning_results, warning_specs
from azexport_assets.components.lineage import sources_to_attach
from azexport_assets.components.metadata import (
    change_metadata,
    export_metadata,
    sync_log_asset_metadata,
)
from azexport_assets.components.signatures import signature_once
from azexport_assets.config import ConfigError
from azexport_assets.delta import LOG_SCHEMA, ChangeSet, KeyViolationError
from azexport_assets.formats import FormatSpec
from azexport_assets.formats.errors import LocalDiskFullError, UnrepresentableValueError
from azexport_assets.formats.pgp import EncryptionKeyError
from azexport_assets.introspect import (
    ProjectShape,
    check_mapping,
    check_partition_columns,
    exported_columns,
)
from azexport_assets.lakehouse import DeltaTypeError, TableAheadError, TableMissingError
from azexport_assets.logical_time import logical_time
from azexport_assets.project import Project, path_names
from azexport_assets.resources import (
    WAREHOUSE_KEY,
    DestinationStorage,
    WarehouseResource,
    destination_resource_key,
    unset_variables,
)
from azexport_assets.sandbox import ExportTempDirError
from azexport_assets.secret_values import secrets_kept_out
from azexport_assets.storage import StorageError
from azexport_assets.warehouse import (
    ActivationBusyError,
    WarehouseBackend,
    WarehouseConfigError,
    reporting_retries,
    source_encoding_error,
)

# Model and segment steps (the warehouse's big writers) are in this Dagster pool, which the
# project's instances leave unlimited: Dagster 1.13's slot claims can strand a waiting step
# for good (docs/operating.md, "Pools"); the file warehouse's lock serializes writers itself.
# Delta and export steps are not in it: they hold the activation lock between them, and a
# delta waiting for that lock while holding a pool slot the other run's export needs would
# deadlock. Their runs queue by the `azexport/activation` tag instead.
WAREHOUSE_POOL = "azexport_warehouse"
ACTIVATION_TAG = "azexport/activation"


# The delta step's run config. A schema built once, not a `dg.Config` class in the signature
# (Dagster infers such a class's schema anew for every asset, a third of building one) nor a
# dict (converted anew for every asset).
DELTA_CONFIG_SCHEMA = dg.Field(
    {
        "full_resync": dg.Field(
            bool,
            default_value=False,
            description="Forget this activation's baseline first, so this run exports every row.",
        )
    }
)


def _activation_lock(warehouse: WarehouseBackend, name: str, context: dg.AssetExecutionContext):
    return warehouse.activation_lock(name, holder=f"run {context.run.run_id[:8]}")


def delta_run(project: Project, shape: ProjectShape, name: str) -> exporting.DeltaRun:
    activation = project.activations[name]

    def exported(columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        check_mapping(project, name, columns)
        check_partition_columns(project, name, columns)
        return exported_columns(project, name, [c for c, _ in columns])

    destination = ""
    if activation.is_table:
        folder = project.destinations[activation.destination]
        path = exporting.table_path(activation, folder.path_prefix, path_names(project, name, ""))
        destination = f"delta table {folder.container}/{path}"
    return exporting.DeltaRun(
        name=name,
        source_table=project.table_of(activation.source),
        primary_key=tuple(project.models[project.model_of(activation.source)].primary_key),
        run_type=activation.run_type,
        sync_mode=activation.sync_mode,
        exported=exported,
        sources=activation_sources(project, shape, name),
        destination=destination,
        on_empty=activation.on_empty,
    )


def activation_sources(project: Project, shape: ProjectShape, name: str) -> dict:
    """Sources to attach when the activation reads through a view model."""
    return sources_to_attach(
        project, shape, reads=[project.model_of(project.activations[name].source)]
    )


def delta_asset(project: Project, shape: ProjectShape, name: str) -> dg.AssetsDefinition:
    activation = project.activations[name]
    source = activation.source
    destination = project.destinations[activation.destination]

    @dg.asset(
        key=delta_key(name),
        deps=[dg.AssetKey(project.asset_path_of(source))],
        group_name="activations",
        kinds={"duckdb"},
        owners=list(activation.owners),
        description=_delta_description(name, source, activation.run_type, activation.sync_mode),
        tags={ACTIVATION_TAG: name},
        config_schema=DELTA_CONFIG_SCHEMA,
        required_resource_keys={WAREHOUSE_KEY},
    )
    @signature_once
    def _delta(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
        with secrets_kept_out(project):
            # Before any work: the export would fail on an unset variable after the change set.
            unset = unset_variables(activation.destination, destination.environment_variables)
            if unset:
                raise unset
            store = warehouse.open(project.project_root)
            lock = _activation_lock(store, name, context)
            try:
                # Held until this run's export commits: a second run of the activation waits here.
                lock.acquire()
                with reporting_retries(context.log.warning):
                    change = exporting.compute_changes(
                        replace(delta_run(project, shape, name), reexecuting=_run_group(context)),
                        store,
                        delta_id=context.run.run_id,
                        full_resync=context.op_execution_context.op_config["full_resync"],
                        log=context.log.info,
                    )
            except BaseException as error:
                lock.release()  # nothing was computed: the next run may go (a no-op if not held)
                raise _delta_failure(project, shape, name, error) from None
            context.log.info(_change_line(name, change))
            return dg.MaterializeResult(metadata=change_metadata(change))

    return _delta


def _delta_description(name: str, source: str, run_type: str, sync_mode: str) -> str:
    if sync_mode == "snapshot":
        return (
            f"Snapshot of activation `{name}`: every row of `{source}` as it is now "
            f"({run_type} + snapshot), for the export to write. No baseline is kept: every run "
            "exports every row."
        )
    return (
        f"Change set of activation `{name}`: rows of `{source}` to export "
        f"({run_type} + {sync_mode}), compared with the rows of its "
        "last successful export. Launch with config `full_resync: true` to export everything."
    )


def _change_line(name: str, change: ChangeSet) -> str:
    if change.snapshot:
        return f"snapshot of '{name}': {change.current_rows:,} rows (every row, every run)"
    return (
        f"change set of '{name}' ({change.reason}): {change.added:,} added, "
        f"{change.updated:,} updated, {change.removed:,} removed"
    )


def _delta_failure(
    project: Project, shape: ProjectShape, name: str, error: BaseException
) -> BaseException:
    """The step failure a user sees for a delta that could not run (or `error` itself)."""
    if isinstance(error, ActivationBusyError):
        return dg.Failure(f"activation '{name}': {error}")
    if isinstance(error, exporting.MissingSourceTableError):
        return dg.Failure(str(error))
    if isinstance(error, exporting.AlreadyExportedError):
        return dg.Failure(str(error), allow_retries=False)
    if isinstance(error, (ConfigError, WarehouseConfigError)):
        return dg.Failure(str(error), allow_retries=False)
    if isinstance(error, KeyViolationError):
        return dg.Failure(
            f"activation '{name}': {error}. Nothing was exported and the baseline is "
            "unchanged; fix the model's SQL.",
            allow_retries=False,
        )
    sources = activation_sources(project, shape, name)
    unreadable = source_encoding_error(error, sources, project.project_root)
    if unreadable is not None:  # read through a view model
        return dg.Failure(
            f"{unreadable}. Nothing was exported and the baseline is unchanged.",
            allow_retries=False,
        )
    return error


def export_asset(project: Project, shape: ProjectShape, name: str) -> dg.AssetsDefinition:
    activation = project.activations[name]
    destination = project.destinations[activation.destination]
    storage_key = destination_resource_key(activation.destination)
    prefix = f" under `{destination.path_prefix}/`" if destination.path_prefix else ""
    if activation.is_table:
        path = exporting.table_path(
            activation, destination.path_prefix, path_names(project, name, "")
        )
        what = (
            f"Delta table `{path}` in container `{destination.container}` "
            f"({activation.sync_mode}). Applies the change set of the last delta as one "
            "commit, then advances the baseline."
        )
    else:
        fmt = FormatSpec.from_activation(activation)
        what = (
            f"Files of activation `{name}` in container `{destination.container}`{prefix}: "
            f"`{activation.file_name}{fmt.extension}` ({activation.sync_mode}). "
            + (
                f"Writes every row of the snapshot taken by `{name}_delta`."
                if activation.sync_mode == "snapshot"
                else "Writes the change set of the last delta, then advances the baseline."
            )
        )

    specs = [
        dg.AssetSpec(
            key=export_key(name),
            deps=[delta_key(name)],
            group_name="activations",
            kinds={"azure", activation.format},
            owners=list(activation.owners),
            description=what,
            tags={ACTIVATION_TAG: name},
        )
    ]
    log_options = activation.sync_log_options
    if log_options is not None:
        specs.append(sync_log_spec(project, name, log_options.retention_days))

    # A multi-asset, so that the sync log (committed with the baseline, in this step) is an
    # asset of its own; its op keeps the name an `@asset` would have (step keys stay stable).
    @dg.multi_asset(
        name=export_key(name).to_python_identifier(),
        specs=specs,
        # The destination's resource key is per destination, so both are looked up by key.
        required_resource_keys={WAREHOUSE_KEY, storage_key},
        check_specs=warning_specs(project, name),
        # The export may be materialized alone (the UI's "Materialize" on its node): the log is
        # still written with the baseline, only its asset is not reported.
        can_subset=True,
    )
    @signature_once
    def _export(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        if export_key(name) not in context.selected_asset_keys:
            raise dg.Failure(
                f"the sync log of activation '{name}' is written by its export: select "
                f"{export_key(name).to_user_string()} too (the job activate_{name} does)",
                allow_retries=False,
            )
        with secrets_kept_out(project):
            warehouse: WarehouseResource = getattr(context.resources, WAREHOUSE_KEY)
            storage: DestinationStorage = getattr(context.resources, storage_key)
            store = warehouse.open(project.project_root)
            group = _reexecuted_runs(context, name)  # a retry without a delta of its own
            run = exporting.ExportRun(
                name=name,
                activation=activation,
                source_table=project.table_of(activation.source),
                container=destination.container,
                path_prefix=destination.path_prefix,
                logical_time=logical_time(context),
                run_id=context.run.run_id,
                sources=activation_sources(project, shape, name),
                # A retry or re-execution writes the names of the run it re-executes.
                names=path_names(project, name, context.run.root_run_id or context.run.run_id),
                reexecuting=group,
                exported_elsewhere=_exported_elsewhere(context, name, group),
                pgp_public_key=_pgp_public_key(activation.pgp_key_env),
            )
            client = storage.client()  # reads the destination's variables: one line if unset
            lock = _activation_lock(store, name, context)
            try:
                lock.acquire()
                with reporting_retries(context.log.warning):
                    outcome = exporting.run_export(run, store, client, log=context.log.info)
            except ActivationBusyError as error:
                raise dg.Failure(f"activation '{name}': {error}") from None
            except exporting.NoChangeSetError as error:
                raise dg.Failure(
                    f"{error} (materialize {delta_key(name).to_user_string()}; the job "
                    f"activate_{name} does)"
                ) from None
            except StorageError as error:
                raise dg.Failure(
                    f"activation '{name}': {error}. The baseline was not advanced: the next run "
                    "(or a re-execution) exports the same changes."
                ) from None
            except EncryptionKeyError as error:
                raise dg.Failure(
                    f"activation '{name}', field 'encryption.pgp_public_key': {error}. Nothing was "
                    "written and the baseline was not advanced.",
                    allow_retries=False,
                ) from None
            except (DeltaTypeError, TableAheadError, TableMissingError) as error:
                raise dg.Failure(
                    f"activation '{name}': {error} The baseline was not advanced.",
                    allow_retries=False,
                ) from None
            except exporting.PartitionError as error:
                raise dg.Failure(
                    f"activation '{name}': {error} and the baseline was not advanced.",
                    allow_retries=False,
                ) from None
            except ExportTempDirError as error:
                raise dg.Failure(
                    f"{error}. Nothing was written and the baseline was not advanced.",
                    allow_retries=False,
                ) from None
            except WarehouseConfigError as error:  # e.g. a memory limit DuckDB refuses
                raise dg.Failure(
                    f"{error}. Nothing was written and the baseline was not advanced.",
                    allow_retries=False,
                ) from None
            except UnrepresentableValueError as error:  # a value Parquet cannot hold exactly
                raise dg.Failure(
                    f"activation '{name}': {error} Nothing was written and the baseline was "
                    "not advanced.",
                    allow_retries=False,
                ) from None
            except LocalDiskFullError as error:  # retried: other runs' files may be gone then
                raise dg.Failure(
                    f"activation '{name}': {error}. Nothing was uploaded and the baseline was not "
                    "advanced: a retry or the next run exports the same changes."
                ) from None
            except (duckdb.Error, OSError) as error:
                # Read through a view model: a file of a CSV source not in its encoding.
                unreadable = source_encoding_error(error, run.sources, project.project_root)
                if unreadable is None:
                    raise
                raise dg.Failure(
                    f"{unreadable}. Nothing was written and the baseline was not advanced.",
                    allow_retries=False,
                ) from None
            finally:
                lock.release()
            report = outcome.report
            if outcome.table is not None:
                pass  # the table export logged its commit
            elif outcome.superseded_by:
                context.log.warning(
                    f"activation '{name}': nothing written: the change set this run was to export "
                    f"was already exported by run {outcome.superseded_by} (a newer change set "
                    "holding these changes, or this one: the changes are not sent twice)"
                )
            elif not report.files:
                nothing = "the snapshot is empty" if outcome.change.snapshot else "no changes"
                context.log.info(f"activation '{name}': {nothing}, nothing written")
            else:
                context.log.info(
                    f"activation '{name}': {report.rows:,} rows in {len(report.files)} blob(s), "
                    f"{report.bytes:,} bytes, in {outcome.total_seconds:.1f}s"
                )
            if report.stale_unchecked and (activation.max_file_size or activation.partition_by):
                # Only parts and partitions can leave files of an earlier run behind.
                context.log.warning(
                    f"activation '{name}': the destination's credential may not list the "
                    "container, so parts or partitions an earlier run wrote under this name "
                    "were not looked for: any it wrote beyond this run's are still there. Grant "
                    "'l' and 'd' (a SAS) to remove them, or let consumers read the manifest"
                )
            sas_expiry = _sas_expiry_inputs(project, name)
            log_key = sync_log_key(name) if log_options is not None else None
            yield dg.MaterializeResult(
                asset_key=export_key(name),
                metadata=export_metadata(outcome, run.logical_time, activation.sync_mode, log_key),
                check_results=warning_results(
                    project,
                    name,
                    outcome,
                    *sas_expiry,
                    failed_before=last_failures(
                        context.instance, project, name, context.run.run_id
                    ),
                ),
            )
            # No slice: superseded, nothing committed by this run, so the log did not change.
            logged = outcome.sync_log
            if log_options is not None and logged is not None:
                context.log.info(
                    f"sync log of '{name}': {logged.rows:,} rows this run, "
                    f"{logged.total_rows:,} kept ({log_options.retention_days} days)"
                )
                if sync_log_key(name) not in context.selected_asset_keys:
                    return  # the export was materialized alone
                yield dg.MaterializeResult(
                    asset_key=sync_log_key(name),
                    metadata=sync_log_asset_metadata(logged, log_options.retention_days),
                )

    return _export


def sync_log_spec(project: Project, name: str, retention_days: int) -> dg.AssetSpec:
    """The sync log's asset: the warehouse view `azexport_log.<activation>`, written in the
    export's step (in the transaction that advances the baseline), so downstream of it."""
    activation = project.activations[name]
    keys = ", ".join(
        f"`{k}`" for k in project.models[project.model_of(activation.source)].primary_key
    )
    return dg.AssetSpec(
        key=sync_log_key(name),
        deps=[export_key(name)],
        group_name="activations",
        kinds={"duckdb", "table"},
        owners=list(activation.owners),
        description=(
            f"Sync log of activation `{name}`: the view `{LOG_SCHEMA}.{name}` in the warehouse, "
            f"one row per key the export sent and run (`run_id`, `logical_time`, "
            f"`committed_at`, `operation` = added / updated / removed, then {keys}). "
            f"Written with the baseline, in the export's step; rows of runs committed more "
            f"than {retention_days} days ago are deleted at each commit."
        ),
        tags={ACTIVATION_TAG: name},
        # Materialized only when this run committed (a superseded run leaves the log alone).
        skippable=True,
    )


def _pgp_public_key(env: str | None) -> str | None:
    """The armored public key, read from its variable at run time (like every secret)."""
    return None if env is None else os.environ.get(env, "")


def _run_group(context: dg.AssetExecutionContext) -> frozenset[str] | None:
    """For a re-execution: the ids of its root run and of every run re-executing it."""
    run = context.run
    root = run.root_run_id or run.tags.get("dagster/root_run_id")
    if not root:
        return None
    runs = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/root_run_id": root}))
    return frozenset({root, run.run_id, *(r.run_id for r in runs)})


def _reexecuted_runs(context: dg.AssetExecutionContext, name: str) -> frozenset[str] | None:
    """For a re-execution (a retry) that does not compute its own change set: the ids of the
    runs of its group, any of which may have computed the change set it is to export."""
    steps = context.run.step_keys_to_execute
    if steps is None or delta_key(name).to_python_identifier() in steps:
        return None
    return _run_group(context)


# How far back a re-execution looks for its change set exported by another run: two failed
# runs retried in turn are a few materializations apart, not hundreds.
EXPORTS_LOOKED_AT = 50


def _exported_elsewhere(
    context: dg.AssetExecutionContext, name: str, group: frozenset[str] | None
) -> dict[str, str]:
    """{change set id: run id} of the activation's recent exports that committed a change set,
    by runs outside `group` (the re-execution's); empty when this run is not one."""
    if group is None:
        return {}
    records = context.instance.fetch_materializations(export_key(name), limit=EXPORTS_LOOKED_AT)
    exported: dict[str, str] = {}
    for record in records.records:
        materialization = record.asset_materialization
        if materialization is None or record.run_id in group:
            continue
        metadata = materialization.metadata
        delta_id = getattr(metadata.get("delta_id"), "value", None)
        committed = getattr(metadata.get("baseline_advanced"), "value", None)
        if isinstance(delta_id, str) and committed is True:
            exported.setdefault(delta_id, record.run_id)
    return exported


def _sas_expiry_inputs(project: Project, name: str) -> tuple[str | None, datetime]:
    """The SAS token (read at run time from its variable) and 'now' for the sas_expiry check."""
    destination = project.destinations[project.activations[name].destination]
    ref = destination.sas_token or destination.sas_url  # sas_expiry reads a URL's query too
    token = os.environ.get(ref.env, "") if ref else None
    return token, datetime.now(timezone.utc)
