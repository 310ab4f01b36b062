"""The `defs.yaml` behind a load error that Dagster raises without naming a file.

Both are looked for only once loading has failed, so a project that loads pays nothing:

- a file that is not UTF-8 (Dagster's read raises a bare `UnicodeDecodeError`): found by its
  bytes, with the line and column of the first byte that is not UTF-8;
- a `type:` that names no importable component (a typo: `AzureExprt`, `azexport_asets`):
  Dagster says which module or attribute is missing, not in which file;
- an empty `defs.yaml` (Dagster: "No components found in YAML file", with no file).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
OUR_TYPE = "azexport_assets.components.AzureExport"

Shown = Callable[[Path], str]


def not_utf8(error: UnicodeDecodeError, defs_root: Path, shown: Shown) -> str:
    """'file:line:col: not UTF-8 text (byte 0x..): save the file as UTF-8'."""
    for path in sorted(defs_root.rglob("*.y*ml")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if data != error.object:
            continue
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        byte = data[error.start : error.start + 1].hex()
        return (
            f"{shown(path)}:{line}:{column}: not UTF-8 text (byte 0x{byte}): save the file as UTF-8"
        )
    return f"a YAML file under {defs_root} is not UTF-8 text ({error.reason}): save it as UTF-8"


def unloadable_file(defs_root: Path, shown: Shown) -> str | None:
    """'file:line:col: ...' for the first defs.yaml that is empty or whose component type
    cannot be imported, or None when there is none."""
    for path in sorted(defs_root.rglob("defs.yaml")):
        try:
            documents = list(yaml.compose_all(path.read_text(encoding="utf-8"), Loader=_Loader))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if all(document is None for document in documents):
            return (
                f"{shown(path)}: holds no component (nothing but comments or blank lines): "
                f"write `type: {OUR_TYPE}` and its `attributes:` in it, or remove it"
            )
        for document in documents:
            node = _type_node(document)
            if node is None:
                continue
            problem = _import_problem(node.value)
            if problem is not None:
                at = f"{shown(path)}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"
                return f"{at}: field 'type': '{node.value}' {problem}"
    return None


def _type_node(document: yaml.Node | None) -> yaml.ScalarNode | None:
    if not isinstance(document, yaml.MappingNode):
        return None
    for key, value in document.value:
        if getattr(key, "value", None) == "type" and isinstance(value, yaml.ScalarNode):
            return value
    return None


def _import_problem(name: str) -> str | None:
    """Why `name` ('module.Attribute') is not an importable component type, or None."""
    module_name, _, attribute = name.rpartition(".")
    hint = f"; azexport's component is {OUR_TYPE}"
    if not module_name or not attribute:
        return f"is not a component type: write the module and the class, e.g. {OUR_TYPE}"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return f"is not a component type: there is no module {module_name}{hint}"
    if hasattr(module, attribute):
        return None
    close = difflib.get_close_matches(attribute, [n for n in dir(module) if n[:1].isupper()], 1)
    maybe = f"; did you mean {module_name}.{close[0]}?" if close else hint
    return f"is not a component type: module {module_name} has no {attribute}{maybe}"
