"""Dagster's reading of each `defs.yaml`, on libyaml's parser.

Dagster's component loader reads every `defs.yaml` with the line and column of each value
(for its error messages), through PyYAML's pure-Python parser: about 8 ms per file on two
cores, 0.2 s of every process (each run, `definitions validate`, the code server) in a
project of 21 folders. libyaml's parser, which PyYAML ships with, gives the same nodes with
the same lines and columns in a tenth of the time.

`use_libyaml_for_dagster_components()` makes Dagster's component loader read files through
`parse_yamls_with_source_position` below: the same values and source positions (the tests
compare the two on every YAML construct a `defs.yaml` may use), built on libyaml's parser.
A file YAML cannot read is read again by Dagster's own function, so that its error, with the
file's excerpt, is Dagster's. One difference: libyaml reads a tab inside an unquoted value
(`a: x<TAB>y`, which YAML allows) where PyYAML's pure-Python scanner stops. Without libyaml,
or with a Dagster whose loader no longer calls the function this replaces, nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import yaml
from dagster_shared import yaml_utils
from dagster_shared.yaml_utils import YAML_TIMESTAMP_TAG
from dagster_shared.yaml_utils.source_position import (
    LineCol,
    SourcePosition,
    SourcePositionTree,
    ValueAndSourcePositionTree,
)

_dagsters_parse = yaml_utils.parse_yamls_with_source_position
_installed = threading.Lock()


class _PositionLoader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """libyaml's parser; each constructed value paired with the tree of its positions."""

    filename = "<string>"

    def construct_object(self, node: yaml.Node, deep: bool = False) -> ValueAndSourcePositionTree:
        # Always deep: a mapping's values are needed whole to split them from their positions.
        value = super().construct_object(node, True)
        position = SourcePosition(
            filename=self.filename,
            start=LineCol(line=node.start_mark.line + 1, col=node.start_mark.column + 1),
            end=LineCol(line=node.end_mark.line + 1, col=node.end_mark.column + 1),
        )
        if isinstance(value, dict):
            values: dict[Any, Any] = {}
            children: dict[Any, SourcePositionTree] = {}
            for key, item in value.items():
                values[key.value] = item.value
                # A key's subtree: where the key is, holding its value's children.
                children[key.value] = SourcePositionTree(
                    position=key.source_position_tree.position,
                    children=item.source_position_tree.children,
                )
            return ValueAndSourcePositionTree(values, SourcePositionTree(position, children))
        if isinstance(value, list):
            items = [item.value for item in value]
            trees = {i: item.source_position_tree for i, item in enumerate(value)}
            return ValueAndSourcePositionTree(items, SourcePositionTree(position, trees))
        return ValueAndSourcePositionTree(value, SourcePositionTree(position, {}))


# Dates stay text, as in Dagster's reading (it removes the same resolver).
_PositionLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != YAML_TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yamls_with_source_position(
    src: str,
    filename: str = "<string>",
    implicits_to_remove: Sequence[str] = (YAML_TIMESTAMP_TAG,),
) -> list[ValueAndSourcePositionTree]:
    """Every document of `src` with its source positions, as Dagster's function of the same
    name returns them; Dagster's own function for anything else (its errors included)."""
    if list(implicits_to_remove) != [YAML_TIMESTAMP_TAG] or not isinstance(src, str):
        return _dagsters_parse(src, filename, implicits_to_remove)

    def loader(stream: str) -> _PositionLoader:
        reader = _PositionLoader(stream)
        reader.filename = filename
        return reader

    try:
        return list(yaml.load_all(src, Loader=loader))  # type: ignore[arg-type]
    except yaml.YAMLError:
        return _dagsters_parse(src, filename, implicits_to_remove)  # raises Dagster's error


def use_libyaml_for_dagster_components() -> bool:
    """Have Dagster's component loader read `defs.yaml` files on libyaml (once per process);
    whether it does."""
    from dagster.components.core import decl

    with _installed:
        if decl.parse_yamls_with_source_position is parse_yamls_with_source_position:
            return True
        replaceable = decl.parse_yamls_with_source_position is _dagsters_parse
        if not (yaml.__with_libyaml__ and replaceable):
            return False
        decl.parse_yamls_with_source_position = parse_yamls_with_source_position
        return True
