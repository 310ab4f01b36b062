"""The JSON Schema of an AzureExport `defs.yaml`, derived from the config models.

Dagster shows this schema to editors (`dg utils generate-component-schema`), to the UI's docs
and to `dg check yaml`, which reports a typo such as `fromat: json` with its file, line and
column before anything loads. The schema is generated from the same pydantic models that
validate the files at load time (`config.py`), so the two cannot drift apart.

Two things differ from pydantic's own schema:
- every scalar option may also be a `{{ ... }}` template (rendered by Dagster at load time,
  e.g. `max_concurrency: "{{ env.UPLOADS }}"`), exactly like Dagster's own components;
- object names are identifiers (`propertyNames`), as they become table and asset names.
"""

from __future__ import annotations

import copy
from typing import Any

import pydantic
from pydantic import ConfigDict

from azexport_assets.config import NAME_PATTERN, OBJECT_KINDS, ExportFileConfig

TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"\{\{.*\}\}",
    "description": "A template such as '{{ env.VAR }}', rendered when the code location loads.",
}

_OBJECT_DESCRIPTIONS = {
    "sources": "Where raw tables come from, by name: {duckdb: path} | {parquet: glob} | "
    "{csv: glob, encoding: utf-8|latin-1|utf-16} | {postgres: {dsn: {env: VAR}, schema: name}, "
    "tables: [...]} | "
    "{lake: schema, tables: [...]}.",
    "models": "SQL models over sources (or other models), by name.",
    "segments": "Models narrowed by a SQL filter, by name.",
    "destinations": "Azure Blob Storage containers, by name. Secrets: {env: VAR} only.",
    "activations": "Exports of a model or segment to a destination, by name.",
}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace every {'$ref': '#/$defs/X'} by a copy of X (the models are not recursive)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = _inline_refs(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]), defs)
            extra = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **extra}
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _accepts_template(schema: dict[str, Any]) -> bool:
    """A free string already accepts a template; an enum or a pattern does not."""
    if schema.get("type") == "string" and "enum" not in schema and "pattern" not in schema:
        return True
    return any(_accepts_template(s) for s in schema.get("anyOf", []))


def _is_structure(schema: dict[str, Any]) -> bool:
    if schema.get("type") in ("object", "array") or "properties" in schema:
        return True
    return any(_is_structure(s) for s in schema.get("anyOf", []) if s.get("type") != "null")


def _allow_templates(schema: dict[str, Any]) -> dict[str, Any]:
    """Let every scalar property of every object also be a `{{ ... }}` template."""
    if "properties" in schema:
        properties = {}
        for name, prop in schema["properties"].items():
            prop = _allow_templates(prop)
            if not _accepts_template(prop) and not _is_structure(prop):
                shown = ("title", "description", "default")
                annotations = {k: prop.pop(k) for k in shown if k in prop}
                prop = {**annotations, "anyOf": [prop, TEMPLATE_SCHEMA]}
            properties[name] = prop
        schema = {**schema, "properties": properties}
    for key in ("anyOf", "allOf"):
        if key in schema:
            schema = {**schema, key: [_allow_templates(s) for s in schema[key]]}
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), dict):
            schema = {**schema, key: _allow_templates(schema[key])}
    return schema


def attributes_json_schema() -> dict[str, Any]:
    """The schema of `attributes:` in an AzureExport defs.yaml, self-contained (no $refs)."""
    raw = ExportFileConfig.model_json_schema(by_alias=True)
    schema = _inline_refs({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    schema = _allow_templates(schema)
    for kind in OBJECT_KINDS:
        prop = schema["properties"][kind]
        prop["propertyNames"] = {"pattern": NAME_PATTERN.pattern}
        prop["description"] = _OBJECT_DESCRIPTIONS[kind]
        prop.pop("default", None)
    schema["title"] = "AzureExport attributes"
    schema["description"] = (
        "Sources, models, segments, destinations and activations. Names are global across all "
        "defs.yaml files of the project; references may cross folders."
    )
    return schema


class AzureExportAttributes(pydantic.BaseModel):
    """The `attributes:` mapping as Dagster hands it to the component.

    Dagster checks attributes against this model before templates are rendered, so it accepts
    any mapping: the real validation (`config.parse_file_config`) runs on the rendered values
    and names the file, line, object and field. Its JSON Schema is the strict contract above.
    """

    model_config = ConfigDict(extra="allow")

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        return attributes_json_schema()
