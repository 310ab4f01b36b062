"""Assemble the Dagster definitions of (part of) a validated project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from azexport_assets.components.activation_assets import delta_asset, export_asset
from azexport_assets.components.checks import warning_specs
from azexport_assets.components.jobs import (
    activation_job,
    schedule_for,
    scheduled_groups,
    tick_job,
    tick_job_names,
)
from azexport_assets.components.model_assets import model_asset, segment_asset, source_table_specs
from azexport_assets.components.preview_job import PREVIEW_JOB, preview_job
from azexport_assets.components.sensors import source_change_sensor, warning_webhook_sensor
from azexport_assets.components.watchdog import watchdog_definitions
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project
from azexport_assets.resources import (
    WAREHOUSE_KEY,
    WarehouseResource,
    destination_resource_definition,
    destination_resource_key,
)


def build_definitions(
    project: Project, shape: ProjectShape, only_file: Path | None = None
) -> dg.Definitions:
    """Assets, checks, jobs, schedules and destination resources of the objects declared in
    `only_file` (a component's own defs.yaml), or of the whole project."""

    own_file = only_file.resolve() if only_file is not None else None

    def declared(kind: str) -> list[str]:
        names = list(getattr(project, kind))
        if own_file is None:
            return names
        # Declaring files are stored resolved (one resolve per object per load, not per pair).
        return [n for n in names if project.file_of(kind, n) == own_file]

    models, segments, activations = (
        declared("models"),
        declared("segments"),
        declared("activations"),
    )
    assets: list[Any] = source_table_specs(project, shape, declared("sources"))
    assets += [model_asset(project, shape, m) for m in models]
    assets += [segment_asset(project, shape, s) for s in segments]
    jobs: dict[str, Any] = {}
    schedules = []
    sensors = []
    for name in activations:
        assets += [delta_asset(project, shape, name), export_asset(project, shape, name)]
        job = jobs[f"activate_{name}"] = activation_job(project, shape, name)
        if project.activations[name].trigger == "on_change":
            sensors.append(source_change_sensor(project, shape, name, job))
        if project.activations[name].warnings.webhook_url_env:
            checks = [spec.name for spec in warning_specs(project, name)]
            sensors.append(warning_webhook_sensor(project, name, checks))
    if activations and activations[0] == next(iter(project.activations)):
        # One preview job for the project, built by the component declaring its first
        # activation.
        jobs[PREVIEW_JOB] = preview_job(project, shape)
    groups = scheduled_groups(project)
    shared_names = tick_job_names(groups)
    for (cron, timezone), names in groups.items():
        # A schedule shared by several activations (maybe from several files) is built by the
        # component that declares the first of them.
        if names[0] not in activations:
            continue
        if len(names) == 1:
            job = jobs[f"activate_{names[0]}"]
        else:
            job = tick_job(project, shape, cron, timezone, names, shared_names[(cron, timezone)])
            jobs[job.name] = job
        schedules.append(schedule_for(cron, timezone, names, job))
    resources = {
        destination_resource_key(d): destination_resource_definition(d, project.destinations[d])
        for d in declared("destinations")
    }
    return dg.Definitions(
        assets=assets,
        jobs=list(jobs.values()),
        schedules=schedules,
        sensors=sensors,
        resources=resources,
    )


def project_definitions(
    defs_root: Path, project_root: Path, warehouse: WarehouseResource | None = None
) -> dg.Definitions:
    """Everything under defs_root plus the warehouse resource (tests and scripts use this).
    Built component by component, exactly as the code location builds it."""
    from azexport_assets.components.loading import definitions_from_folder  # imports us

    definitions = definitions_from_folder(defs_root, project_root)
    return dg.Definitions.merge(
        definitions,
        location_definitions(warehouse or WarehouseResource()),
    )


def location_definitions(warehouse: WarehouseResource) -> dg.Definitions:
    """What a code location adds once to its components' definitions: the warehouse
    resource and the run watchdog (`watchdog.py`)."""
    return dg.Definitions.merge(
        dg.Definitions(resources={WAREHOUSE_KEY: warehouse}), watchdog_definitions()
    )
