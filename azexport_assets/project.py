"""The whole project's configuration: every AzureExport `defs.yaml`, checked together.

Names are global (a model in one folder can be exported by an activation in another), so a
name used twice anywhere is an error, and every reference must resolve. Each object keeps the
file it came from, so every message can name the file, the object and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from azexport_assets.config import (
    ActivationConfig,
    ConfigError,
    DestinationConfig,
    ExportFileConfig,
    ModelConfig,
    SegmentConfig,
    SourceConfig,
    parse_file_config,
)

COMPONENT_TYPES = {
    "azexport_assets.components.AzureExport",
    "azexport_assets.components.azure_export.AzureExport",
}


@dataclass
class Project:
    """Every object by name, plus the file that declared it."""

    project_root: Path
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    segments: dict[str, SegmentConfig] = field(default_factory=dict)
    destinations: dict[str, DestinationConfig] = field(default_factory=dict)
    activations: dict[str, ActivationConfig] = field(default_factory=dict)
    origin: dict[tuple[str, str], Path] = field(default_factory=dict)
    model_sql: dict[str, str] = field(default_factory=dict)

    def file_of(self, kind: str, name: str) -> Path:
        return self.origin[(kind, name)]

    def shown(self, kind: str, name: str) -> Path:
        """The declaring file, relative to the project root when possible (for messages)."""
        return _display(self.file_of(kind, name), self.project_root)

    def where(self, kind: str, name: str, field_name: str) -> str:
        """'path/defs.yaml: activation 'crm', field 'mapping'' — the prefix of every message."""
        return f"{self.shown(kind, name)}: {kind[:-1]} '{name}', field '{field_name}'"

    def model_of(self, source: str) -> str:
        """The model behind a model or segment name."""
        return self.segments[source].model if source in self.segments else source

    def table_of(self, source: str) -> str:
        """The warehouse table of a model or segment, as 'schema.name' (names are identifiers)."""
        schema = "segments" if source in self.segments else "models"
        return f"{schema}.{source}"

    def asset_path_of(self, source: str) -> list[str]:
        return ["segments" if source in self.segments else "models", source]


def read_component_files(defs_root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(file, attributes) of every defs.yaml under defs_root whose type is AzureExport."""
    found = []
    for path in sorted(defs_root.rglob("defs.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from None
        for document in documents:
            if isinstance(document, dict) and document.get("type") in COMPONENT_TYPES:
                attributes = document.get("attributes") or {}
                if not isinstance(attributes, dict):
                    raise ConfigError(f"{path}: 'attributes' must be a mapping")
                found.append((path, attributes))
    return found


def build_project(files: list[tuple[Path, ExportFileConfig]], project_root: Path) -> Project:
    """Merge per-file configs, rejecting duplicate names and dangling references."""
    project = Project(project_root=project_root)
    for path, config in files:
        for kind in ("sources", "models", "segments", "destinations", "activations"):
            target: dict[str, Any] = getattr(project, kind)
            for name, obj in getattr(config, kind).items():
                if (kind, name) in project.origin:
                    raise ConfigError(
                        f"{_display(path, project_root)}: {kind[:-1]} '{name}' is already defined "
                        f"in {project.shown(kind, name)}; names must be unique across all defs.yaml"
                    )
                target[name] = obj
                project.origin[(kind, name)] = path
    _check_name_clashes(project)
    _read_model_sql(project)
    _check_references(project)
    return project


def _check_name_clashes(project: Project) -> None:
    # Models and segments share the activation 'source' namespace.
    for name in project.segments:
        if name in project.models:
            raise ConfigError(
                f"{project.shown('segments', name)}: segment '{name}' has the same name as "
                f"model '{name}' ({project.shown('models', name)}); an activation's 'source' "
                "must name exactly one of them"
            )


def _read_model_sql(project: Project) -> None:
    for name, model in project.models.items():
        if model.sql:
            project.model_sql[name] = model.sql
            continue
        path = project.file_of("models", name).parent / str(model.sql_file)
        try:
            project.model_sql[name] = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"{project.where('models', name, 'sql_file')}: cannot read {path}: {error.strerror}"
            ) from None


def _check_references(project: Project) -> None:
    for name, segment in project.segments.items():
        if segment.model not in project.models:
            raise ConfigError(
                f"{project.where('segments', name, 'model')}: unknown model '{segment.model}'; "
                f"known models: {', '.join(sorted(project.models)) or 'none'}"
            )
    for name, model in project.models.items():
        if not model.primary_key:
            continue
        if len(set(model.primary_key)) != len(model.primary_key):
            raise ConfigError(f"{project.where('models', name, 'primary_key')}: repeats a column")
    for name, activation in project.activations.items():
        if activation.source not in project.models and activation.source not in project.segments:
            known = sorted(project.models) + sorted(project.segments)
            raise ConfigError(
                f"{project.where('activations', name, 'source')}: unknown model or segment "
                f"'{activation.source}'; known: {', '.join(known) or 'none'}"
            )
        if activation.destination not in project.destinations:
            known = ", ".join(sorted(project.destinations)) or "none"
            raise ConfigError(
                f"{project.where('activations', name, 'destination')}: unknown destination "
                f"'{activation.destination}'; known: {known}"
            )
        model = project.models[project.model_of(activation.source)]
        if activation.is_delta and not model.primary_key:
            raise ConfigError(
                f"{project.where('activations', name, 'sync_mode')}: sync_mode "
                f"'{activation.sync_mode}' needs a primary key, but model "
                f"'{project.model_of(activation.source)}' has no 'primary_key'"
            )


def load_project(defs_root: Path, project_root: Path) -> Project:
    """Read, validate and merge every AzureExport defs.yaml under defs_root."""
    parsed = [
        (path, parse_file_config(_display(path, project_root), attributes))
        for path, attributes in read_component_files(defs_root)
    ]
    return build_project(parsed, project_root)


def _display(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path
