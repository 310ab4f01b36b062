"""`preview_<a>`: what the next run of an activation would export, as a job of one op.

The op calls `preview.preview` and turns its result into metadata on the step: rows per
change kind against the current baseline, the model's or segment's size, the blob names and
parts with rows and bytes, the exported columns with their types and a sample of rows. It
materializes nothing and writes nothing (no blob, no baseline, no IO manager output), so
launching it from the UI or `dagster job execute` is always safe.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from azexport_assets import preview as previewing
from azexport_assets.components.activation_assets import delta_run
from azexport_assets.components.metadata import table_schema
from azexport_assets.delta import KeyViolationError
from azexport_assets.export import MissingSourceTableError
from azexport_assets.introspect import ProjectShape
from azexport_assets.logical_time import logical_time
from azexport_assets.project import Project, path_names
from azexport_assets.resources import WarehouseResource
from azexport_assets.warehouse import ActivationBusyError, reporting_retries

PREVIEW_TAG = "azexport/preview"
# The next run's id is not known yet: the preview shows the variable itself.
RUN_ID_SHOWN = "{run_id}"


class PreviewConfig(dg.Config):
    sample_rows: int = Field(
        previewing.DEFAULT_SAMPLE_ROWS,
        ge=0,
        le=1000,
        description="Rows of each change kind (added / updated / removed) shown as a sample.",
    )


def preview_run(
    project: Project,
    shape: ProjectShape,
    name: str,
    logical: Any,
    holder: str,
    sample_rows: int = previewing.DEFAULT_SAMPLE_ROWS,
) -> previewing.PreviewRun:
    """What `preview.preview` needs for activation `name` (also used by the CLI)."""
    activation = project.activations[name]
    return previewing.PreviewRun(
        delta=delta_run(project, shape, name),
        activation=activation,
        path_prefix=project.destinations[activation.destination].path_prefix,
        logical_time=logical,
        names=path_names(project, name, RUN_ID_SHOWN),
        holder=holder,
        sample_rows=sample_rows,
    )


def preview_metadata(result: previewing.Preview) -> dict[str, Any]:
    change = result.change
    metadata: dict[str, Any] = {
        "rows": dg.MetadataValue.int(result.rows),
        "added": dg.MetadataValue.int(change.added),
        "updated": dg.MetadataValue.int(change.updated),
        "removed": dg.MetadataValue.int(change.removed),
        "unchanged": dg.MetadataValue.int(change.unchanged),
        "source rows": dg.MetadataValue.int(result.source_rows),
        "baseline rows": dg.MetadataValue.int(change.baseline_rows),
        "full export": dg.MetadataValue.bool(change.full),
        "reason": change.reason,
        "columns": dg.MetadataValue.table_schema(table_schema(result.columns)),
        "sample": dg.MetadataValue.table(
            records=[
                dg.TableRecord(
                    dict(
                        zip(
                            result.sample_columns,
                            (previewing.plain_value(v) for v in row),
                            strict=True,
                        )
                    )
                )
                for row in result.sample
            ],
            schema=table_schema(
                [(previewing.SAMPLE_KIND_COLUMN, "VARCHAR"), *_without_kind(result)]
            ),
        ),
    }
    if result.table is not None:
        metadata["table"] = result.table
        return metadata
    metadata["bytes"] = dg.MetadataValue.int(result.bytes)
    if result.encrypted:
        # The preview reads no key: the names are the run's (.pgp), the sizes the plain files'.
        metadata["encrypted"] = "OpenPGP: names as a run writes them; bytes before encryption"
    metadata["files"] = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "name": f.name,
                    "kind": f.kind,
                    "part": f.part or 0,
                    "rows": f.rows,
                    "bytes": f.bytes,
                }
            )
            for f in result.files
        ],
        schema=table_schema(
            [
                ("name", "string"),
                ("kind", "string"),
                ("part", "int"),
                ("rows", "int"),
                ("bytes", "int"),
            ]
        ),
    )
    if result.skipped:
        metadata["skipped (empty)"] = dg.MetadataValue.json(result.skipped)
    if result.manifest:
        metadata["manifest"] = result.manifest
    return metadata


def _without_kind(result: previewing.Preview) -> list[tuple[str, str]]:
    """The sample's exported columns (the change column, if any, is not in the sample)."""
    names = result.sample_columns[1:]
    types = dict(result.columns)
    return [(n, types.get(n, "")) for n in names]


def preview_job(project: Project, shape: ProjectShape, name: str) -> dg.JobDefinition:
    activation = project.activations[name]

    @dg.op(
        name=f"{name}_preview",
        out=dg.Out(dg.Nothing),
        description=(
            f"What the next run of activation `{name}` would export, against its current "
            "baseline; writes nothing and moves no baseline."
        ),
    )
    def _preview(
        context: dg.OpExecutionContext, config: PreviewConfig, warehouse: WarehouseResource
    ) -> None:
        store = warehouse.open(project.project_root)
        run = preview_run(
            project,
            shape,
            name,
            logical_time(context),  # type: ignore[arg-type]
            holder=f"preview {context.run.run_id[:8]}",
            sample_rows=config.sample_rows,
        )
        try:
            with reporting_retries(context.log.warning):
                result = previewing.preview(run, store, log=context.log.info)
        except (ActivationBusyError, MissingSourceTableError) as error:
            raise dg.Failure(f"activation '{name}': {error}") from None
        except KeyViolationError as error:
            raise dg.Failure(f"activation '{name}': {error}", allow_retries=False) from None
        context.log.info(previewing.summary(result))
        context.add_output_metadata(preview_metadata(result))

    @dg.job(
        name=f"preview_{name}",
        description=(
            f"Preview of activation `{name}` ({activation.run_type} + {activation.sync_mode}): "
            "rows per change kind, blob names and parts, columns and a sample of what the next "
            "run would export. Writes nothing, moves no baseline."
        ),
        tags={PREVIEW_TAG: name},
        executor_def=dg.in_process_executor,
    )
    def _job() -> None:
        _preview()

    return _job
