"""`preview_activation`: what the next run of an activation would export, as a job of one op.

The op calls `preview.preview` and turns its result into metadata on the step: rows per
change kind against the current baseline, the model's or segment's size, the blob names and
parts with rows and bytes, the exported columns with their types and a sample of rows. It
materializes nothing and writes nothing (no blob, no baseline, no IO manager output), so
launching it from the UI or `dagster job execute` is always safe.
"""

import hashlib
from typing import Any

import dagster as dg

from azexport_assets import preview as previewing
from azexport_assets.components.activation_assets import delta_run
from azexport_assets.components.metadata import table_schema
from azexport_assets.delta import KeyViolationError
from azexport_assets.export import MissingSourceTableError
from azexport_assets.introspect import ProjectShape
from azexport_assets.logical_time import logical_time
from azexport_assets.partition_limit import PartitionError
from azexport_assets.project import Project, path_names
from azexport_assets.resources import WarehouseResource
from azexport_assets.warehouse import ActivationBusyError, reporting_retries

PREVIEW_TAG = "azexport/preview"
# The next run's id is not known yet: the preview shows the variable itself.
RUN_ID_SHOWN = "{run_id}"


PREVIEW_JOB = "preview_activation"
PREVIEW_OP = "preview"
MAX_SAMPLE_ROWS = 1000


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


def preview_job(project: Project, shape: ProjectShape) -> dg.JobDefinition:
    """One job previews any activation, named in its run configuration.

    One job for the whole project rather than one per activation: Dagster builds, resolves
    and snapshots every job of a code location when it loads (`definitions validate`, the
    code server, every run), so a job per activation made a project's load grow with it
    twice as fast; and 100 preview jobs crowd the UI's job list. The activation is an enum,
    so the Launchpad offers the names and a misspelt one is refused before a run exists.
    """
    names = list(project.activations)

    @dg.op(
        name=PREVIEW_OP,
        out=dg.Out(dg.Nothing),
        config_schema={
            "activation": dg.Field(
                # Dagster knows a config type by its name, within a process: one name per set
                # of activations (a process may build two projects, or one twice after a change).
                dg.Enum(f"Activation_{_digest(names)}", [dg.EnumValue(n) for n in names]),
                description=f"The activation to preview: {_listed(names)}.",
            ),
            "sample_rows": dg.Field(
                int,
                default_value=previewing.DEFAULT_SAMPLE_ROWS,
                description="Rows of each change kind (added / updated / removed) shown as a "
                f"sample, 0 to {MAX_SAMPLE_ROWS}.",
            ),
        },
        description=(
            "What the next run of the activation would export, against its current baseline; "
            "writes nothing and moves no baseline."
        ),
    )
    def _preview(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
        name: str = context.op_config["activation"]
        sample_rows: int = context.op_config["sample_rows"]
        if not 0 <= sample_rows <= MAX_SAMPLE_ROWS:
            raise dg.Failure(
                f"sample_rows is {sample_rows}: use 0 to {MAX_SAMPLE_ROWS}", allow_retries=False
            )
        # The runs list can then be filtered by the activation previewed.
        context.instance.add_run_tags(context.run_id, {PREVIEW_TAG: name})
        store = warehouse.open(project.project_root)
        run = preview_run(
            project,
            shape,
            name,
            logical_time(context),  # type: ignore[arg-type]
            holder=f"preview {context.run.run_id[:8]}",
            sample_rows=sample_rows,
        )
        try:
            with reporting_retries(context.log.warning):
                result = previewing.preview(run, store, log=context.log.info)
        except (ActivationBusyError, MissingSourceTableError) as error:
            raise dg.Failure(f"activation '{name}': {error}") from None
        except (KeyViolationError, PartitionError) as error:
            raise dg.Failure(f"activation '{name}': {error}", allow_retries=False) from None
        context.log.info(previewing.summary(result))
        context.add_output_metadata(preview_metadata(result))

    @dg.job(
        name=PREVIEW_JOB,
        description=(
            "Preview of an activation (run config `activation`): rows per change kind, blob "
            "names and parts, columns and a sample of what its next run would export. Writes "
            "nothing, moves no baseline."
        ),
        executor_def=dg.in_process_executor,
    )
    def _job() -> None:
        _preview()

    return _job


def _listed(names: list[str], most: int = 30) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def _digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]


def preview_run_config(name: str, sample_rows: int | None = None) -> dict[str, Any]:
    """The run configuration of the preview job for activation `name`."""
    config: dict[str, Any] = {"activation": name}
    if sample_rows is not None:
        config["sample_rows"] = sample_rows
    return {"ops": {PREVIEW_OP: {"config": config}}}
