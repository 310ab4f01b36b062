"""`format: delta` configuration errors are reported at load time with the file, the line, the
activation and the field; a column Delta cannot hold is named before any data moves."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import duckdb
import pytest

from azexport_assets.config import ConfigError
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project

BASE = """
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
  models:
    people:
      sql: SELECT id, name, seen_at, since FROM crm.people
      primary_key: id
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
  activations:
    people_lake:
      source: people
      destination: lake
      file_name: lake/people
      format: delta
      run_type: full_then_delta
      sync_mode: upsert
"""

FILE = "defs/main/defs.yaml"


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute(
        "CREATE TABLE people AS SELECT 1 AS id, 'a' AS name, TIME '10:00' AS seen_at, "
        "DATE '2020-01-01' AS since"
    )
    con.close()
    (tmp_path / "defs" / "main").mkdir(parents=True)
    return tmp_path


def load(project_dir: Path, text: str):
    (project_dir / "defs" / "main" / "defs.yaml").write_text(textwrap.dedent(text))
    project = load_project(project_dir / "defs", project_dir)
    describe_project(project)
    return project


def error_of(project_dir: Path, text: str) -> str:
    with pytest.raises(ConfigError) as error:
        load(project_dir, text)
    return str(error.value)


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


MAPPED = "      sync_mode: upsert\n      mapping: {id: ID, name: Name, since: Since}"


def test_a_valid_delta_activation_loads(project_dir):
    project = load(project_dir, edit("      sync_mode: upsert", MAPPED))
    assert project.activations["people_lake"].is_table


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            edit("file_name: lake/people", "file_name: lake/people_{YYYY}{MM}"),
            ["field 'file_name'", "cannot hold time variables", "{YYYY}, {MM}"],
        ),
        (
            edit("      sync_mode: upsert", MAPPED + "\n      manifest: true"),
            ["field 'manifest'", "the Delta log is the manifest"],
        ),
        (
            edit("      sync_mode: upsert", MAPPED + "\n      compression: gzip"),
            ["field 'compression'", "remove 'compression'"],
        ),
        (
            edit("      sync_mode: upsert", MAPPED + "\n      max_file_size: 64MB"),
            ["field 'max_file_size'", "optimize_every"],
        ),
        (
            edit("      sync_mode: upsert", MAPPED + "\n      change_column: change"),
            ["field 'change_column'", "delta.change_data_feed"],
        ),
        (
            # The time-of-day column is exported: Delta has no type for it.
            edit("      sync_mode: upsert", "      sync_mode: upsert"),
            ["field 'source'", "column 'seen_at' (TIME)", "Delta has no time-of-day type"],
        ),
        (
            edit("      sync_mode: upsert", "      sync_mode: upsert\n      mapping: {name: N}"),
            ["field 'mapping'", "merged on the primary key", "key column(s) id"],
        ),
        (
            edit(
                "      sync_mode: upsert",
                MAPPED + "\n      delta: {partition_by: [since]}",
            ),
            ["field 'delta.partition_by'", "unknown column(s) 'since'", "ID, Name, Since"],
        ),
        (
            # delta-rs writes '-1.50' as the partition value '-1.-50' and commits it; the
            # table then cannot be read: refused before any run.
            edit(
                "      sync_mode: upsert",
                "      sync_mode: upsert\n      mapping: {id: ID, amount: Amount}\n"
                "      partition_by: [Amount]",
            ).replace("seen_at, since FROM", "-1.5::DECIMAL(4,2) AS amount FROM"),
            [
                "field 'partition_by'",
                "column 'Amount' (DECIMAL(4,2)) cannot partition a Delta table",
                "negative decimal partition values",
                "CAST(... AS VARCHAR)",
            ],
        ),
        (
            edit(
                "      sync_mode: upsert",
                "      sync_mode: upsert\n      mapping: {id: ID, tags: Tags}\n"
                "      delta: {partition_by: [Tags]}",
            ).replace("seen_at, since FROM", "[name] AS tags FROM"),
            [
                "field 'delta.partition_by'",
                "column 'Tags' (VARCHAR[]) cannot partition a Delta table",
                "a list, struct or map has no partition value",
            ],
        ),
        (
            # delta-rs names merge columns in backticks and cannot escape one in a name.
            edit(
                "      sync_mode: upsert",
                "      sync_mode: upsert\n      mapping: {id: ID, name: 'N`m'}",
            ),
            ["field 'mapping'", "column 'N`m' has a backtick", "rename it in the mapping"],
        ),
        (
            edit("      sync_mode: upsert", MAPPED + "\n      delta: {optimize_every: 0}"),
            ["field 'delta.optimize_every'", "greater than or equal to 1"],
        ),
        (
            edit("      sync_mode: upsert", MAPPED + "\n      delta: {vaccum_retain_hours: 1}"),
            ["field 'delta.vaccum_retain_hours'", "unknown field"],
        ),
    ],
)
def test_bad_delta_configuration_is_named(project_dir, yaml_text, expected):
    message = error_of(project_dir, yaml_text)
    assert message.startswith(FILE), message
    assert re.match(rf"{re.escape(FILE)}:\d+:\d+: ", message), message
    assert "activation 'people_lake'" in message
    for part in expected:
        assert part in message, (part, message)


def test_type_refusals_name_the_column_and_what_to_do():
    from azexport_assets.lakehouse import DeltaTypeError, check_column_types

    check_column_types(
        [
            ("a", "HUGEINT"),
            ("b", "UBIGINT"),
            ("c", "STRUCT(x INTEGER[], y MAP(VARCHAR, UUID))"),
            ("d", "TIMESTAMP WITH TIME ZONE"),
            ("e", "ENUM('x', 'y')"),
            ("f", "INTEGER[3]"),
            ("g", "JSON"),
        ]
    )
    for type_text, hint in [
        ("INTERVAL", "no interval type"),
        ("TIMESTAMP_NS", "hold microseconds"),
        ("STRUCT(a TIME)", "time-of-day"),
        ("UNION(a INTEGER, b VARCHAR)", "no union type"),
        ("BIT", "bit-string"),
    ]:
        with pytest.raises(DeltaTypeError) as error:
            check_column_types([("ok", "INTEGER"), ("bad col", type_text)])
        assert error.value.column == "bad col"
        assert f"column 'bad col' ({type_text})" in str(error.value)
        assert hint in str(error.value)
