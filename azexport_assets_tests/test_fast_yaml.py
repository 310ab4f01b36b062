"""Dagster's component loader reads `defs.yaml` files on libyaml: the same values and the same
source positions (its error messages name lines and columns from them) as Dagster's reading,
and Dagster's own errors for files YAML cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster.components.core import decl
from dagster_shared.yaml_utils import parse_yamls_with_source_position as dagsters_parse

from azexport_assets.components.fast_yaml import parse_yamls_with_source_position
from azexport_assets.components.loading import load_project_from_folder
from azexport_assets.config import ConfigError

REPO = Path(__file__).resolve().parents[1]

# Every YAML construct a defs.yaml may use, and some it should not.
DOCUMENTS = {
    "mappings and lists": """\
type: azexport_assets.components.AzureExport
attributes:
  activations:
    people_csv:
      source: people
      destination: lake
      primary_key: [id, region]
      partition_by:
        - region
        - day
      metadata: {owner: crm, "tier": 2}
""",
    "anchors, aliases and merge keys": """\
defaults: &defaults
  destination: lake
  format: csv
activations:
  a:
    <<: *defaults
    source: people
  b:
    <<: [*defaults]
    format: json
    source: people
  c: *defaults
""",
    "block and quoted scalars": """\
sql: |
  SELECT id,
         name
  FROM src.people  -- a comment
folded: >-
  one
  two
kept: |+
  text

single: 'it''s'
double: "tab\\there \\u00e9 \\"quoted\\""
empty:
nothing: ~
""",
    "scalars YAML types": """\
int: 12
octal: 012
float: 1.5e3
bool_yes: yes
bool_true: true
null_word: null
date: 2024-05-01
datetime: 2024-05-01T10:00:00Z
version: 1.10
""",
    "several documents": """\
type: a
attributes: {x: 1}
---
type: b
attributes:
  y: [1, 2]
...
---
""",
    "non-ASCII before values on a line": """\
naïve: café
名前: 値
emoji: "😀 ok"
list: [é, 😀, z]
nested:
  clé: {sous-clé: valeur, 😀: 1}
""",
    "comments and blank lines": """\
# heading

a: 1   # trailing


b:
  # inside
  - x  # item
  - y
""",
    "flow collections across lines": """\
mapping: {a: 1,
  b: [x,
      y],
  c: {d: e}}
seq: [
  1, 2,
  3
]
""",
    "CRLF line endings": "a: 1\r\nb:\r\n  - x\r\n  - y\r\nc: |\r\n  one\r\n  two\r\n",
    "a byte order mark": "\ufeffa: 1\nb: [1, 2]\n",
    "empty file": "",
    "only a comment": "# nothing here\n",
    "a key given twice": "a: 1\nb: 2\na: 3\n",
    "a tab in a quoted value": "a: \"x\ty\"\nb: 'x\ty'\n",
    "explicit tags": "a: !!str 12\nb: !!int '7'\nc: !!binary aGVsbG8=\nd: !!set {x, y}\n",
    "long plain scalar over lines": "a: one two\n  three four\n  five\nb: end\n",
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_values_and_positions_are_dagsters(name):
    src = DOCUMENTS[name]
    assert parse_yamls_with_source_position(src, f"{name}.yaml") == dagsters_parse(
        src, f"{name}.yaml"
    )


def test_every_shipped_defs_yaml_reads_as_with_dagster():
    files = sorted((REPO / "azexport_assets").rglob("*.yaml"))
    assert files
    for path in files:
        src = path.read_text(encoding="utf-8")
        assert parse_yamls_with_source_position(src, str(path)) == dagsters_parse(src, str(path))


BROKEN = {
    "unclosed flow mapping": "a: {b: 1\nc: 2\n",
    "bad indentation": "a:\n  b: 1\n c: 2\n",
    "tab indentation": "a:\n\tb: 1\n",
    "unknown alias": "a: *nowhere\n",
    "unclosed quote": 'a: "open\nb: 2\n',
    "control character": "a: \x07\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_file_yaml_cannot_read_fails_with_dagsters_error(name):
    src = BROKEN[name]
    with pytest.raises(yaml.YAMLError) as theirs:
        dagsters_parse(src, f"/p/{name}.yaml")
    with pytest.raises(yaml.YAMLError) as ours:
        parse_yamls_with_source_position(src, f"/p/{name}.yaml")
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    if isinstance(ours.value, yaml.MarkedYAMLError):  # a reader error names no file
        assert f"/p/{name}.yaml" in str(ours.value)


def test_a_tab_inside_an_unquoted_value_is_read_as_written():
    """The one difference found: libyaml reads a tab inside a plain value (YAML allows it),
    where PyYAML's pure-Python scanner stops with "found character '\\t' that cannot start
    any token"."""
    src = "a: x\ty\nb: 2\n"
    with pytest.raises(yaml.YAMLError):
        dagsters_parse(src)
    (document,) = parse_yamls_with_source_position(src)
    assert document.value == {"a": "x\ty", "b": 2}


def test_the_project_loader_reads_through_libyaml_with_the_same_lines(tmp_path):
    """Loading a project hands Dagster's loader the libyaml reading; a configuration error
    deep in the file still names its line."""
    defs = tmp_path / "defs" / "crm"
    defs.mkdir(parents=True)
    (defs / "defs.yaml").write_text(
        "type: azexport_assets.components.AzureExport\n"
        "attributes:\n"
        "  sources:\n"
        "    src: {type: duckdb, path: src.duckdb}\n"
        "  destinations:\n"
        "    lake: {container: exports}\n"
        "  models:\n"
        "    people:\n"
        "      sql: SELECT 1 AS id\n"
        "  activations:\n"
        "    people_csv:\n"
        "      source: people\n"
        "      destination: lake\n"
        "      format: csvv\n"
    )
    with pytest.raises(ConfigError) as error:
        load_project_from_folder(tmp_path / "defs", tmp_path)
    assert decl.parse_yamls_with_source_position is parse_yamls_with_source_position
    assert "defs/crm/defs.yaml:14" in str(error.value)
    assert "format" in str(error.value)
