"""A key given twice in one mapping of a `defs.yaml` is an error, not a silent overwrite.

YAML loaders (PyYAML, hence Dagster's) keep the last of two equal keys in a mapping: a second
activation named like the first replaced it, a field given twice kept its last value, and
nothing said so. Every AzureExport file is therefore composed once more (libyaml's composer
when installed: a fraction of a millisecond per file) and each mapping's keys are compared.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from azexport_assets.config import OBJECT_KINDS, ConfigError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_duplicate_keys(path: Path, shown: str) -> None:
    """ConfigError naming the place of the first key given twice in any mapping of `path`
    (shown as `shown` in the message), the object and field it is, and the earlier line."""
    try:
        documents = list(yaml.compose_all(path.read_text(encoding="utf-8"), Loader=_Loader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # Dagster's own reading of the file reports what is wrong with it
    for document in documents:
        found = _first_duplicate(document, (), set())
        if found is not None:
            keys, first, again = found
            raise ConfigError(
                f"{shown}:{again.start_mark.line + 1}:{again.start_mark.column + 1}: "
                f"{_what(keys)} (first at line {first.start_mark.line + 1}); YAML keeps only "
                f"the last one, so the first would be lost: {_fix(keys)}"
            )


def _first_duplicate(
    node: yaml.Node | None, keys: tuple[str, ...], visited: set[int]
) -> tuple[tuple[str, ...], yaml.Node, yaml.Node] | None:
    """(path of keys, first key node, repeated key node) of the first repetition found."""
    if id(node) in visited:  # an alias of a node already walked (anchors may even recurse)
        return None
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    return (*keys, key.value), seen[key.value], key
                seen[key.value] = key
            label = key.value if isinstance(key, yaml.ScalarNode) else "?"
            found = _first_duplicate(value, (*keys, label), visited)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _first_duplicate(item, (*keys, str(index)), visited)
            if found is not None:
                return found
    return None


def _what(keys: tuple[str, ...]) -> str:
    if len(keys) >= 3 and keys[0] == "attributes" and keys[1] in OBJECT_KINDS:
        kind, name = keys[1][:-1], keys[2]
        if len(keys) == 3:
            return f"{kind} '{name}' is defined twice in this file"
        return f"{kind} '{name}', field '{'.'.join(keys[3:])}': given twice"
    return f"key '{'.'.join(keys)}' is given twice"


def _fix(keys: tuple[str, ...]) -> str:
    if len(keys) == 3 and keys[0] == "attributes" and keys[1] in OBJECT_KINDS:
        return "give one of them another name, or remove one"
    return "remove one of them"
