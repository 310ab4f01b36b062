"""Asset factories for an activation: `activations/<a>/delta` and `activations/<a>/export`."""

import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
from dagster._utils.schedules import cron_string_iterator
from pydantic import Field

from azexport_assets import export as exporting
from azexport_assets.components.metadata import describe, markdown_table
from azexport_assets.components.model_assets import project_warehouse
from azexport_assets.config import ConfigError
from azexport_assets.delta import (
    ChangeSet,
    DeltaSpec,
    KeyViolationError,
    change_set_spec,
    commit_baseline,
    compute_change_set,
    load_change_set,
    reset_baseline,
)
from azexport_assets.formats import FormatSpec
from azexport_assets.introspect import check_mapping, exported_columns
from azexport_assets.logical_time import logical_time
from azexport_assets.project import Project
from azexport_assets.resources import WAREHOUSE_KEY, destination_resource_key
from azexport_assets.storage import StorageError, preflight, sas_expiry


class DeltaRunConfig(dg.Config):
    full_resync: bool = Field(
        False,
        description="Forget this activation's baseline first, so this run exports every row.",
    )


def delta_key(activation: str) -> dg.AssetKey:
    return dg.AssetKey(["activations", activation, "delta"])


def export_key(activation: str) -> dg.AssetKey:
    return dg.AssetKey(["activations", activation, "export"])


# --------------------------------------------------------------------------- delta


def delta_asset(project: Project, name: str) -> dg.AssetsDefinition:
    activation = project.activations[name]
    source = activation.source
    primary_key = project.models[project.model_of(source)].primary_key
    schema = project.asset_path_of(source)[0]

    @dg.asset(
        key=delta_key(name),
        deps=[dg.AssetKey(project.asset_path_of(source))],
        group_name="activations",
        kinds={"duckdb"},
        description=(
            f"Rows of `{source}` to export for activation `{name}` "
            f"({activation.run_type} + {activation.sync_mode}), compared with the rows of its "
            "last successful export. Launch with config `full_resync: true` to export everything."
        ),
        required_resource_keys={WAREHOUSE_KEY},
        tags={"azexport/activation": name},
    )
    def _delta(context: dg.AssetExecutionContext, config: DeltaRunConfig) -> dg.MaterializeResult:
        with project_warehouse(context, project).connect(
            holder=f"run {context.run.run_id[:8]} {name}/delta"
        ) as con:
            try:
                columns = describe(con, schema, source)
            except duckdb.CatalogException:
                raise dg.Failure(
                    f"activation '{name}': table {schema}.{source} does not exist yet; "
                    f"materialize {schema}/{source} first (the job activate_{name} does)"
                ) from None
            try:
                check_mapping(project, name, columns)
            except ConfigError as error:
                raise dg.Failure(str(error), allow_retries=False) from None
            spec = DeltaSpec(
                activation=name,
                source_table=project.table_of(source),
                primary_key=tuple(primary_key),
                columns=tuple(exported_columns(project, name, [c for c, _ in columns])),
                run_type=activation.run_type,
                sync_mode=activation.sync_mode,
            )
            if config.full_resync:
                reset_baseline(con, name)
                context.log.info(f"full resync: baseline of '{name}' reset")
            try:
                # Checks the key itself (cheaply, while it reads the rows) in delta modes.
                change = compute_change_set(con, spec, delta_id=context.run.run_id)
            except KeyViolationError as error:
                raise dg.Failure(
                    f"activation '{name}': {error}. Nothing was exported and the baseline is "
                    "unchanged; fix the model's SQL.",
                    allow_retries=False,
                ) from None
        return dg.MaterializeResult(metadata=change_metadata(change))

    return _delta


def change_metadata(change: ChangeSet) -> dict:
    return {
        "full_export": change.full,
        "reason": change.reason,
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
        "unchanged": change.unchanged,
        "current_rows": change.current_rows,
        "baseline_rows": change.baseline_rows,
        "delta_id": change.delta_id,
    }


# --------------------------------------------------------------------------- export


def warning_specs(project: Project, name: str) -> list[dg.AssetCheckSpec]:
    activation = project.activations[name]
    warnings = activation.warnings
    key = export_key(name)
    specs = []
    if warnings.min_rows is not None:
        specs.append(dg.AssetCheckSpec("min_rows", asset=key, description="Enough rows exported."))
    if warnings.max_removed_ratio is not None:
        specs.append(dg.AssetCheckSpec("max_removed_ratio", asset=key))
    if warnings.max_change_ratio is not None:
        specs.append(dg.AssetCheckSpec("max_change_ratio", asset=key))
    if (
        warnings.sas_expiry_days is not None
        and project.destinations[activation.destination].sas_token
    ):
        specs.append(dg.AssetCheckSpec("sas_expiry", asset=key))
    if activation.format == "xml":
        specs.append(
            dg.AssetCheckSpec(
                "xml_removed_characters",
                asset=key,
                description="No XML-invalid characters had to be removed from values.",
            )
        )
    return specs


def next_scheduled_run(cron: str | None, tz: str) -> datetime | None:
    if not cron:
        return None
    ticks = cron_string_iterator(time.time(), cron, tz)
    return next(ticks).astimezone(timezone.utc)


def _warning_results(
    project: Project, name: str, change: ChangeSet, report: exporting.ExportReport
) -> list[dg.AssetCheckResult]:
    activation = project.activations[name]
    warnings = activation.warnings
    key = export_key(name)
    results = []

    def result(check: str, passed: bool, **metadata) -> None:
        results.append(
            dg.AssetCheckResult(
                asset_key=key,
                check_name=check,
                passed=passed,
                severity=dg.AssetCheckSeverity.WARN,
                metadata=metadata,
            )
        )

    base = max(change.baseline_rows, 1)
    if warnings.min_rows is not None:
        result("min_rows", report.rows >= warnings.min_rows, rows=report.rows)
    if warnings.max_removed_ratio is not None:
        ratio = change.removed / base if not change.full else 0.0
        result("max_removed_ratio", ratio <= warnings.max_removed_ratio, ratio=ratio)
    if warnings.max_change_ratio is not None:
        ratio = (change.added + change.updated + change.removed) / base if not change.full else 0.0
        result("max_change_ratio", ratio <= warnings.max_change_ratio, ratio=ratio)
    destination = project.destinations[activation.destination]
    if warnings.sas_expiry_days is not None and destination.sas_token:
        expiry = sas_expiry(os.environ.get(destination.sas_token.env, ""))
        limit = datetime.now(timezone.utc) + timedelta(days=warnings.sas_expiry_days)
        next_run = next_scheduled_run(activation.schedule, activation.timezone)
        if next_run:
            # The token must also outlive the next scheduled run.
            limit = max(limit, next_run)
        result(
            "sas_expiry",
            expiry is None or expiry > limit,
            expires_at=expiry.isoformat() if expiry else "unknown",
            next_scheduled_run=next_run.isoformat() if next_run else "not scheduled",
        )
    if activation.format == "xml":
        result(
            "xml_removed_characters",
            report.xml_removed_chars == 0,
            removed_characters=report.xml_removed_chars,
        )
    return results


def export_asset(project: Project, name: str) -> dg.AssetsDefinition:
    activation = project.activations[name]
    destination = project.destinations[activation.destination]
    storage_key = destination_resource_key(activation.destination)
    fmt = FormatSpec.from_activation(activation)

    @dg.asset(
        key=export_key(name),
        deps=[delta_key(name)],
        group_name="activations",
        kinds={"azure", activation.format},
        description=(
            f"Files of activation `{name}` in container `{destination.container}`"
            f"{' under `' + destination.path_prefix + '/`' if destination.path_prefix else ''}: "
            f"`{activation.file_name}{fmt.extension}` ({activation.sync_mode}). "
            "Writes the change set of the last delta, then advances the baseline."
        ),
        required_resource_keys={WAREHOUSE_KEY, storage_key},
        check_specs=warning_specs(project, name),
        tags={"azexport/activation": name},
    )
    def _export(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        started = time.monotonic()
        when = logical_time(context)
        stem = exporting.stem_name(activation, destination.path_prefix, when)
        warehouse = project_warehouse(context, project)
        storage = getattr(context.resources, storage_key)
        with (
            tempfile.TemporaryDirectory(prefix=f"azexport-{name}-") as workdir,
            storage.container(destination.container) as container,
        ):
            try:
                preflight(container)
            except StorageError as error:
                raise dg.Failure(f"activation '{name}': {error}") from None
            with warehouse.connect(holder=f"run {context.run.run_id[:8]} {name}/export") as con:
                spec = change_set_spec(con, name, project.table_of(activation.source))
                change = load_change_set(con, name, spec) if spec else None
                if spec is None or change is None:
                    raise dg.Failure(
                        f"activation '{name}' has no change set yet: materialize "
                        f"activations/{name}/delta first (the job activate_{name} does)"
                    )
                file_sets = exporting.write_local_files(
                    con, spec, change, activation, Path(workdir)
                )
            written = time.monotonic()
            try:
                report = exporting.upload_files(container, stem, file_sets, fmt)
                exporting.remove_stale_parts(container, report, fmt)
                if activation.manifest and report.files:
                    document = exporting.manifest_document(
                        report, name, activation, change, context.run.run_id, when
                    )
                    exporting.upload_manifest(container, report, document)
            except StorageError as error:
                raise dg.Failure(
                    f"activation '{name}': upload failed: {error}. The baseline was not "
                    "advanced: the next run (or a re-execution) exports the same changes."
                ) from None
        with warehouse.connect(holder=f"run {context.run.run_id[:8]} {name}/commit") as con:
            advanced = commit_baseline(con, name, change.delta_id)
        if not report.files:
            context.log.info(f"activation '{name}': no changes, nothing written")
        return dg.MaterializeResult(
            metadata=_export_metadata(report, change, when, advanced, started, written),
            check_results=_warning_results(project, name, change, report),
        )

    return _export


def _export_metadata(
    report: exporting.ExportReport,
    change: ChangeSet,
    when: datetime,
    advanced: bool,
    started: float,
    written: float,
) -> dict:
    now = time.monotonic()
    files = [(f.blob.name, f.rows, f.blob.bytes, f.blob.md5_hex) for f in report.files]
    metadata = {
        "rows": report.rows,
        "bytes": report.bytes,
        "files": len(report.files),
        "blobs": dg.MetadataValue.md(
            markdown_table(["blob", "rows", "bytes", "md5"], files) if files else "no changes"
        ),
        "blob_urls": dg.MetadataValue.json([f.blob.url for f in report.files]),
        "blob_files": dg.MetadataValue.json(
            [{"name": n, "rows": r, "bytes": b, "md5": m} for n, r, b, m in files]
        ),
        "logical_time": when.isoformat(),
        "full_export": change.full,
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
        "baseline_advanced": advanced,
        "duration_seconds": round(now - started, 3),
        "write_seconds": round(written - started, 3),
        "upload_seconds": round(now - written, 3),
    }
    if report.skipped:
        metadata["skipped_empty"] = dg.MetadataValue.json(report.skipped)
    if report.manifest:
        metadata["manifest"] = report.manifest.name
        metadata["manifest_bytes"] = report.manifest.bytes
    if report.stale_removed:
        metadata["stale_parts_removed"] = dg.MetadataValue.json(report.stale_removed)
    if report.stale_left:
        metadata["stale_parts_left"] = dg.MetadataValue.json(report.stale_left)
    if report.xml_element_names:
        metadata["xml_element_names"] = dg.MetadataValue.json(report.xml_element_names)
    return metadata
