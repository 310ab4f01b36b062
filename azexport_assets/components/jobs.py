"""One job per activation (`activate_<name>`) and its optional schedule."""

from __future__ import annotations

import dagster as dg

from azexport_assets.components.activation_assets import delta_key, export_key
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project


def upstream_models(project: Project, shape: ProjectShape, model: str) -> list[str]:
    """The model and every model it reads, transitively."""
    seen: list[str] = []
    pending = [model]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.append(current)
            pending += list(shape.deps[current].models)
    return seen


def activation_job(
    project: Project, shape: ProjectShape, name: str
) -> dg.UnresolvedAssetJobDefinition:
    """Runs the activation's upstream models and segment, then its delta and export."""
    source = project.activations[name].source
    keys = [
        dg.AssetKey(["models", m])
        for m in upstream_models(project, shape, project.model_of(source))
    ]
    if source in project.segments:
        keys.append(dg.AssetKey(["segments", source]))
    keys += [delta_key(name), export_key(name)]
    return dg.define_asset_job(
        name=f"activate_{name}",
        selection=dg.AssetSelection.assets(*keys),
        description=f"Refresh `{source}` and export it for activation `{name}`.",
        tags={"azexport/activation": name},
    )


def activation_schedule(
    project: Project, name: str, job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition | None:
    activation = project.activations[name]
    if not activation.schedule:
        return None
    return dg.ScheduleDefinition(
        name=f"activate_{name}_schedule",
        job=job,
        cron_schedule=activation.schedule,
        execution_timezone=activation.timezone,
        # Declaring a schedule in YAML is the intent to run it.
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Runs activation `{name}` at `{activation.schedule}` ({activation.timezone}).",
    )
