"""Keys of a `defs.yaml` that YAML would silently lose or change are errors.

- **A key given twice** in one mapping: YAML loaders (PyYAML, hence Dagster's) keep the last,
  so a second activation named like the first replaced it, and a field given twice kept its
  last value, without a word.
- **A name YAML reads as something else**: every key of the attributes (object names, column
  names in `mapping`, metadata names) and every value that names an object or a column
  (`source`, `destination`, `model`, `primary_key`, `partition_by`, `mapping`) is text, but
  YAML 1.1 reads a plain `on`, `off`, `yes`, `no`, `true`, `null`, `~` or `123` as a boolean,
  null or number, which then failed with "Input should be a valid string" under a name the
  user never wrote ('True', '1'). The message says to quote it.

Every AzureExport file is composed once more for this (libyaml's composer when installed: a
fraction of a millisecond per file); nothing is constructed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import yaml

from azexport_assets.config import OBJECT_KINDS, ConfigError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"
_READ_AS = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null (no value)",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
}

Keys = tuple[str, ...]


def check_yaml_keys(path: Path, shown: str) -> None:
    """ConfigError at the first key given twice in a mapping of `path`, or the first name YAML
    would not read as text; `shown` is the file as messages name it."""
    try:
        documents = list(yaml.compose_all(path.read_text(encoding="utf-8"), Loader=_Loader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # Dagster's own reading of the file reports what is wrong with it
    for document in documents:
        for keys, key, first in _keys(document, (), set()):
            if first is not None:
                raise ConfigError(
                    f"{_at(shown, key)}: {_what(keys)} (first at line "
                    f"{first.start_mark.line + 1}); YAML keeps only the last one, so the first "
                    f"would be lost: {_fix(keys)}"
                )
            if keys[:1] == ("attributes",) and _not_read_as_text(key):
                raise ConfigError(f"{_at(shown, key)}: {_not_text(keys, key)}")
        for keys, value in _name_values(document):
            if _not_read_as_text(value):
                raise ConfigError(f"{_at(shown, value)}: {_not_text(keys, value)}")


def _not_read_as_text(node: yaml.Node) -> bool:
    # An empty value is left to the field's own check ("maps to an empty destination name").
    return node.tag in _READ_AS and node.value != ""


def _keys(
    node: yaml.Node | None, path: Keys, visited: set[int]
) -> Iterator[tuple[Keys, yaml.ScalarNode, yaml.Node | None]]:
    """(path, key node, the earlier equal key or None) of every scalar key, depth first."""
    if id(node) in visited:  # an alias of a node already walked (anchors may even recurse)
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}  # (tag, text): `on` and 'on' differ
        for key, value in node.value:
            label = key.value if isinstance(key, yaml.ScalarNode) else "?"
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
                yield (*path, label), key, seen.get((key.tag, label))
                seen[(key.tag, label)] = key
            yield from _keys(value, (*path, label), visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _keys(item, (*path, str(index)), visited)


# Fields whose values are names (of objects or columns): text, one or a list.
NAME_FIELDS = ("source", "destination", "model", "primary_key", "partition_by")


def _name_values(document: yaml.Node | None) -> Iterator[tuple[Keys, yaml.ScalarNode]]:
    """(path, node) of each value that names an object or a column: references, keys,
    `partition_by` columns and the destination names of a `mapping`."""
    for kind, objects in _items(document, "attributes"):
        for name, attributes in _items(objects):
            for field, value in _items(attributes):
                path = ("attributes", kind, name, field)
                if field == "mapping":
                    values = list(_items(value))
                elif field in NAME_FIELDS and isinstance(value, yaml.SequenceNode):
                    values = [(str(i), item) for i, item in enumerate(value.value)]
                elif field in NAME_FIELDS:
                    values = [("", value)]
                else:
                    continue
                for sub, node in values:
                    if isinstance(node, yaml.ScalarNode):
                        yield (*path, sub) if sub else path, node


def _items(node: yaml.Node | None, only: str | None = None) -> Iterator[tuple[str, yaml.Node]]:
    """(key, value) of a mapping node's scalar keys; with `only`, that key's value's items."""
    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        if only is None:
            yield key.value, value
        elif key.value == only:
            yield from _items(value)


def _at(shown: str, node: yaml.Node) -> str:
    return f"{shown}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _what(keys: Keys) -> str:
    if len(keys) >= 3 and keys[0] == "attributes" and keys[1] in OBJECT_KINDS:
        kind, name = keys[1][:-1], keys[2]
        if len(keys) == 3:
            return f"{kind} '{name}' is defined twice in this file"
        return f"{kind} '{name}', field '{'.'.join(keys[3:])}': given twice"
    return f"key '{'.'.join(keys)}' is given twice"


def _fix(keys: Keys) -> str:
    if len(keys) == 3 and keys[0] == "attributes" and keys[1] in OBJECT_KINDS:
        return "give one of them another name, or remove one"
    return "remove one of them"


def _not_text(keys: Keys, node: yaml.ScalarNode) -> str:
    """What the name is, what YAML reads it as, and the fix."""
    text = node.value
    read_as = _READ_AS[node.tag]
    quoted = f"'{text}'"
    if len(keys) >= 3 and keys[0] == "attributes" and keys[1] in OBJECT_KINDS:
        kind, name = keys[1][:-1], keys[2]
        if len(keys) == 3:
            subject = f"{kind} name {text}"
        else:
            subject = f"{kind} '{name}', field '{'.'.join(keys[3:])}': {text}"
    else:
        subject = f"key '{'.'.join(keys)}': {text}"
    return (
        f"{subject} is read by YAML as {read_as}, not as the text {quoted}: "
        f"write it in quotes ({quoted})"
    )
