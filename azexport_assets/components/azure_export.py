"""The AzureExport component: YAML sources/models/segments/destinations/activations -> Dagster.

Each `defs.yaml` with `type: azexport_assets.components.AzureExport` is parsed and templated
by Dagster (`{{ env.X }}` works, an unset X being an error unless the template gives a
default: `template_env.py`; secrets still use `{env: VAR}` so they stay variable names and are
only read at run time, by the destination's resource). Its fields are the validated
config models of `config.py`; a problem is reported at load time with the file, the line,
the object and the field.

Names are global and references may cross folders, so the whole project is checked once per
code-location load (see `loading.py`), then each component builds the assets, checks, jobs and
schedules of the objects it declares.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import dagster as dg
from jinja2.nativetypes import native_concat
from pydantic import BaseModel, Field, PrivateAttr
from typing_extensions import Self

from azexport_assets.components.build import build_definitions
from azexport_assets.components.loading import ValidatedProject, validate_components
from azexport_assets.components.scaffold import AzureExportScaffolder
from azexport_assets.components.schema import AzureExportAttributes
from azexport_assets.components.sql_templates import (
    SQL_FIELDS,
    SqlTemplateError,
    render_sql,
    secret_in_templates,
    secret_variables,
)
from azexport_assets.components.template_env import StrictEnv, UnsetVariableError
from azexport_assets.components.yaml_keys import check_yaml_keys
from azexport_assets.config import (
    ActivationConfig,
    ConfigError,
    DestinationConfig,
    ExportFileConfig,
    Locate,
    ModelConfig,
    SegmentConfig,
    SourceConfig,
    file_position,
    parse_file_config,
)
from azexport_assets.project import DeclaredFile

# The project root of the component being loaded (see AzureExport.load).
_PROJECT_ROOT: ContextVar[Path | None] = ContextVar("azexport_project_root", default=None)


@dg.scaffold_with(AzureExportScaffolder)
class AzureExport(dg.Component, dg.Resolvable, dg.Model):
    """Exports DuckDB models and segments to Azure Blob Storage as CSV, JSON, XML or Parquet
    files, in full or as deltas. Object names are global across all defs.yaml files."""

    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    segments: dict[str, SegmentConfig] = Field(default_factory=dict)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    activations: dict[str, ActivationConfig] = Field(default_factory=dict)

    # Where the component was declared (None when built in Python), for messages and for
    # telling which objects are this component's own.
    _file: Path | None = PrivateAttr(None)
    _locate: Locate | None = PrivateAttr(None)
    # The whole project, validated once per component tree and shared by its components.
    _validated: ValidatedProject | None = PrivateAttr(None)

    @classmethod
    def model(cls) -> type[BaseModel]:
        """The YAML schema (JSON Schema for editors and `dg check yaml`)."""
        return AzureExportAttributes

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> Self:
        # Dagster resolves the attributes without the load context; the project root in it
        # shortens the file names in messages.
        token = _PROJECT_ROOT.set(context.project_root)
        try:
            return super().load(attributes, context)
        finally:
            _PROJECT_ROOT.reset(token)

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: BaseModel) -> Self:
        """Render the templates, then validate with the config models (one message per
        problem: 'file:line:col: activation 'x', field 'y': what is wrong')."""
        raw = model.model_dump(exclude_unset=True)
        file, shown, locate = _whereabouts(context)
        if file is not None:
            check_yaml_keys(file, shown)
        secrets = secret_variables(raw)
        # SQL is rendered apart, under stricter rules (sql_templates.py); every other field
        # by Dagster, with a destination's secrets out of reach of its templates too.
        sql_texts = _pop_sql_fields(raw)
        leak = secret_in_templates(raw, secrets)
        if leak is not None:
            loc, message = leak
            raise ConfigError(f"{file_position(shown, locate, loc)}: {_object_field(loc)}{message}")
        try:
            rendered = resolve_templates(context, raw)
        except UnsetVariableError as error:
            place = file_position(shown, locate, error.path)
            raise ConfigError(f"{place}: {_object_field(error.path)}{error}") from None
        for (kind, name, field), text in sql_texts.items():
            try:
                rendered[kind][name][field] = render_sql(text, secrets)
            except SqlTemplateError as error:
                place = file_position(shown, locate, (kind, name, field))
                raise ConfigError(
                    f"{place}: {kind[:-1]} '{name}', field '{field}': {error}"
                ) from None
        config = parse_file_config(shown, rendered, locate)
        _check_schedules(config, shown, locate)
        component = cls(**{kind: getattr(config, kind) for kind in ExportFileConfig.model_fields})
        component._file = file
        component._locate = locate
        return component

    def declared_file(self) -> DeclaredFile | None:
        """This component's objects and the defs.yaml that declared them."""
        if self._file is None:
            return None
        config = ExportFileConfig(
            sources=self.sources,
            models=self.models,
            segments=self.segments,
            destinations=self.destinations,
            activations=self.activations,
        )
        return DeclaredFile(path=self._file, config=config, locate=self._locate)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        validated = self._validated or _validate_tree(context)
        if self._file is None:
            return dg.Definitions()
        return build_definitions(validated.project, validated.shape, only_file=self._file)


def _validate_tree(context: dg.ComponentLoadContext) -> ValidatedProject:
    """Validate every AzureExport of this load once and share the result with all of them."""
    components = context.component_tree.get_all_components(of_type=AzureExport)
    validated = validate_components(components, context.project_root)
    for component in components:
        component._validated = validated
    return validated


# What starts a Jinja tag ({{ }}, {% %}, {# #}), or a line ending Jinja would normalize: a
# string without any renders to itself, read as a Python literal if it is one (a file name's
# `{YYYY}` is no tag).
_TEMPLATE_SYNTAX = re.compile(r"\{[{%#]|[\r\n]")


def resolve_templates(context: dg.ResolutionContext, value: Any, path: tuple = ()) -> Any:
    """What `context.resolve_value(value)` returns, without compiling a Jinja template for
    each string that holds no template syntax: most of a project's strings (names, file names,
    columns), whose templates were most of the cost of loading a large project. Those render,
    as in Dagster's native Jinja, to `native_concat([text])`; any other string is rendered by
    Dagster, at its path (for messages)."""
    if isinstance(value, dict):
        return {k: resolve_templates(context, v, (*path, k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [resolve_templates(context, v, (*path, i)) for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if not isinstance(value, str) or not value:
        return value
    if _TEMPLATE_SYNTAX.search(value) is None:
        return native_concat([value])
    at = context
    for part in path:
        at = at.at_path(part)
    env = StrictEnv()
    try:
        return at.with_scope(env=env).resolve_value(value)
    except Exception:
        if env.unset:  # the template failed on a variable that is not set: say which
            raise UnsetVariableError(path, env.unset) from None
        raise


def _object_field(loc: tuple[str | int, ...]) -> str:
    """ "model 'x', field 'y': " for a path into the attributes, as other messages say it."""
    if len(loc) >= 3:
        return f"{str(loc[0])[:-1]} '{loc[1]}', field '{'.'.join(str(p) for p in loc[2:])}': "
    return ""


def _pop_sql_fields(raw: dict) -> dict[tuple[str, str, str], str]:
    """Take the text of every SQL field out of `raw` (left in place: anything not text)."""
    taken: dict[tuple[str, str, str], str] = {}
    for kind, field in SQL_FIELDS:
        objects = raw.get(kind)
        if not isinstance(objects, dict):
            continue
        for name, attributes in objects.items():
            if isinstance(attributes, dict) and isinstance(attributes.get(field), str):
                taken[(kind, str(name), field)] = attributes.pop(field)
    return taken


def _whereabouts(context: dg.ResolutionContext) -> tuple[Path | None, str, Locate | None]:
    """(file, file as shown in messages, locate) of the defs.yaml being resolved."""
    tree = context.source_position_tree
    if tree is None or not tree.position.filename or tree.position.filename == "<string>":
        return None, "<attributes>", None
    file = Path(tree.position.filename).resolve()
    root = _PROJECT_ROOT.get()
    shown = str(file)
    if root is not None and file.is_relative_to(root.resolve()):
        shown = str(file.relative_to(root.resolve()))

    def locate(loc: tuple[str | int, ...]) -> tuple[int, int] | None:
        position, _ = tree.lookup_closest_and_path([*context.path, *loc], None)
        return position.start.line, position.start.col

    return file, shown, locate


def _check_schedules(config: ExportFileConfig, shown: str, locate: Locate | None) -> None:
    """Cron strings follow Dagster's own rules (5 fields, no 30 February)."""
    for name, activation in config.activations.items():
        if activation.schedule is None:
            continue
        try:
            dg.ScheduleDefinition(
                name=f"check_{name}",
                cron_schedule=activation.schedule,
                job_name=f"check_{name}",
                execution_timezone=activation.timezone,
            )
        except dg.DagsterInvalidDefinitionError:
            place = file_position(shown, locate, ("activations", name, "schedule"))
            raise ConfigError(
                f"{place}: activation '{name}', field 'schedule': {activation.schedule!r} is "
                "not a valid cron string: use 5 fields, e.g. '0 6 * * *' (06:00 every day)"
            ) from None
