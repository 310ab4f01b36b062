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

from azexport_assets.components.build import build_definitions
from azexport_assets.config import ConfigError
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project


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
        return build_definitions(project, shape, only_file=context.path / "defs.yaml")
