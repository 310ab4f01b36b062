"""`{{ env.X }}` in SQL: only AZEXPORT_SQL_* variables, never a secret, refused at load with
the file, line, object and field; a secret's value never reaches the warehouse or a blob."""

from __future__ import annotations

import csv
import io
import os

import pytest

from azexport_assets.config import ConfigError
from azexport_assets_tests.project_kit import SAS_ENV, ProjectKit

SOURCE = "CREATE TABLE people AS SELECT * FROM (VALUES (1, 'ada'), (2, 'bob')) t(id, name)"

ACTIVATION = """\
activations:
  people_csv:
    source: people
    destination: lake
    file_name: people
"""


def model(sql: str) -> str:
    return f"models:\n  people:\n    sql: {sql}\n    primary_key: id\n" + ACTIVATION


def load_error(project: ProjectKit) -> str:
    with pytest.raises(ConfigError) as error:
        project.definitions()
    return str(error.value)


@pytest.fixture
def kit(project: ProjectKit) -> ProjectKit:
    project.source_sql(SOURCE)
    return project


def test_a_secret_in_model_sql_is_refused_at_load(kit: ProjectKit) -> None:
    secret = kit_secret()
    kit.write_defs(model(f"\"SELECT id, name, '{{{{ env.{SAS_ENV} }}}}' AS c FROM src.people\""))
    message = load_error(kit)
    assert "defs/main/defs.yaml:" in message
    assert "model 'people', field 'sql'" in message
    assert SAS_ENV in message and "destination 'lake'" in message
    assert secret not in message
    assert not kit.warehouse_path.exists()  # nothing ran


def kit_secret() -> str:
    return os.environ[SAS_ENV]


@pytest.mark.parametrize(
    "template",
    [
        "{{ env('HOME') }}",  # not an AZEXPORT_SQL_ variable
        "{{ env.PATH }}",
        # Jinja's sandbox: no way around `env` to the environment
        "{{ env.__class__.__init__.__globals__['os'].environ['HOME'] }}",
        "{{ env._read('HOME', 1) }}",
    ],
)
def test_other_variables_cannot_reach_sql(kit: ProjectKit, template: str) -> None:
    kit.write_defs(model(f"\"SELECT id, name, '{template}' AS c FROM src.people\""))
    message = load_error(kit)
    assert "model 'people', field 'sql'" in message
    assert os.environ["HOME"] not in message.replace("defs/main", "")
    assert "unsafe" in message or "AZEXPORT_SQL_*" in message


def test_a_secret_in_a_segment_filter_is_refused(kit: ProjectKit) -> None:
    kit.write_defs(
        "models:\n  people: {sql: SELECT id, name FROM src.people, primary_key: id}\n"
        "segments:\n  some:\n    model: people\n"
        f"    filter: \"name <> '{{{{ env.{SAS_ENV} }}}}'\"\n"
        "activations:\n  some_csv: {source: some, destination: lake, file_name: some}\n"
    )
    message = load_error(kit)
    assert "segment 'some', field 'filter'" in message and SAS_ENV in message
    assert kit_secret() not in message


def test_a_secret_in_another_field_template_is_refused(kit: ProjectKit) -> None:
    kit.write_defs(
        "models:\n  people: {sql: SELECT id, name FROM src.people, primary_key: id,\n"
        f'           description: "{{{{ env.{SAS_ENV} }}}}"}}\n' + ACTIVATION
    )
    message = load_error(kit)
    assert "model 'people', field 'description'" in message and SAS_ENV in message
    assert kit_secret() not in message


def test_a_secret_may_not_take_a_sql_variable_name(kit: ProjectKit) -> None:
    text = (kit.write_defs(model("SELECT id, name FROM src.people"))).read_text()
    path = kit.root / "defs" / "main" / "defs.yaml"
    path.write_text(
        text.replace(f"sas_token: {{env: {SAS_ENV}}}", "sas_token: {env: AZEXPORT_SQL_SAS}")
    )
    message = load_error(kit)
    assert "AZEXPORT_SQL_SAS" in message and "sas_token" in message


def test_an_allowed_variable_is_rendered_into_the_export(
    kit: ProjectKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZEXPORT_SQL_COUNTRY", "FR")
    kit.write_defs(
        model("\"SELECT id, name, '{{ env.AZEXPORT_SQL_COUNTRY }}' AS country FROM src.people\"")
    )
    kit.run("people_csv")
    rows = list(csv.DictReader(io.StringIO(kit.download("people.csv").decode())))
    assert sorted((r["id"], r["name"], r["country"]) for r in rows) == [
        ("1", "ada", "FR"),
        ("2", "bob", "FR"),
    ]


def test_an_unset_allowed_variable_names_itself(kit: ProjectKit) -> None:
    kit.write_defs(
        model("\"SELECT id, name, '{{ env.AZEXPORT_SQL_UNSET }}' AS c FROM src.people\"")
    )
    message = load_error(kit)
    assert "AZEXPORT_SQL_UNSET" in message and "not set" in message
