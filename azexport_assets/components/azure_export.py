"""The AzureExport component: YAML sources/models/segments/destinations/activations -> Dagster.

Each `defs.yaml` with `type: azexport_assets.components.AzureExport` builds the assets, checks,
jobs and schedules of the objects it declares. Validation sees every such file at once
(names are global, references may cross folders) and fails the load with the file, the
object and the field before anything runs.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from azexport_assets.components.activation_assets import delta_asset, export_asset
from azexport_assets.components.jobs import activation_job, activation_schedule
from azexport_assets.components.model_assets import model_asset, segment_asset, source_table_specs
from azexport_assets.config import ConfigError
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.resources import destination_resource, destination_resource_key


class AzureExport(dg.Component, dg.Model, dg.Resolvable):
    """Exports DuckDB models and segments to Azure Blob Storage (see README for every field)."""

    sources: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, Any] = Field(default_factory=dict)
    segments: dict[str, Any] = Field(default_factory=dict)
    destinations: dict[str, Any] = Field(default_factory=dict)
    activations: dict[str, Any] = Field(default_factory=dict)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        try:
            project = load_project(context.defs_module_path, context.project_root)
            shape = describe_project(project)
        except ConfigError as error:
            # Re-raised bare so the message (file, object, field) is what users see first.
            raise ConfigError(str(error)) from None
        own_file = (context.path / "defs.yaml").resolve()

        def mine(kind: str) -> list[str]:
            objects = getattr(project, kind)
            return [n for n in objects if project.file_of(kind, n).resolve() == own_file]

        models, segments, activations = mine("models"), mine("segments"), mine("activations")
        assets: list[Any] = source_table_specs(project, shape, models)
        assets += [model_asset(project, shape, m) for m in models]
        assets += [segment_asset(project, s) for s in segments]
        jobs, schedules = [], []
        for name in activations:
            assets += [delta_asset(project, name), export_asset(project, name)]
            jobs.append(activation_job(project, shape, name))
            schedule = activation_schedule(project, name, jobs[-1])
            if schedule:
                schedules.append(schedule)
        resources = {
            destination_resource_key(d): destination_resource(project.destinations[d])
            for d in mine("destinations")
        }
        return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, resources=resources)
