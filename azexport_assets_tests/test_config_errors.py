"""Bad configuration is reported at load time with the file, the object and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import duckdb
import pytest
import yaml

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
      sql: SELECT id, name, age FROM crm.people
      primary_key: id
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
  activations:
    people_csv:
      source: people
      destination: lake
      file_name: people/{YYYY}-{MM}-{DD}
"""


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute("CREATE TABLE people AS SELECT 1 AS id, 'a' AS name, 30 AS age")
    con.close()
    (tmp_path / "defs" / "main").mkdir(parents=True)
    return tmp_path


def load(project_dir: Path, text: str, extra: dict[str, str] | None = None):
    (project_dir / "defs" / "main" / "defs.yaml").write_text(textwrap.dedent(text))
    for folder, body in (extra or {}).items():
        (project_dir / "defs" / folder).mkdir(parents=True, exist_ok=True)
        (project_dir / "defs" / folder / "defs.yaml").write_text(textwrap.dedent(body))
    project = load_project(project_dir / "defs", project_dir)
    describe_project(project)
    return project


def error_of(project_dir: Path, text: str, extra: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        load(project_dir, text, extra)
    return str(error.value)


def test_valid_base_loads(project_dir):
    project = load(project_dir, BASE)
    assert list(project.activations) == ["people_csv"]


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


FILE = "defs/main/defs.yaml"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            edit("file_name: people/{YYYY}-{MM}-{DD}", "file_name: people/{DATE}"),
            [FILE, "activation 'people_csv'", "field 'file_name'", "{DATE}", "{YYYY}"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      mapping: {agee: Age}",
            ),
            [
                FILE,
                "activation 'people_csv'",
                "field 'mapping'",
                "'agee'",
                "available: id, name, age",
            ],
        ),
        (
            edit("      source: people", "      source: persons"),
            [FILE, "activation 'people_csv'", "field 'source'", "'persons'", "known: people"],
        ),
        (
            edit("      destination: lake", "      destination: lakehouse"),
            [FILE, "activation 'people_csv'", "field 'destination'", "'lakehouse'", "known: lake"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      csv: {delimiter: ';;'}",
            ),
            [FILE, "activation 'people_csv'", "field 'csv.delimiter'", "exactly one character"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      sync_mode: upsert",
            ),
            [
                FILE,
                "activation 'people_csv'",
                "run_type 'full_only' cannot use sync_mode 'upsert'",
                "'upsert' needs run_type 'full_then_delta'",
            ],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      run_type: full_then_delta\n      sync_mode: snapshot",
            ),
            [FILE, "'full_then_delta' works with upsert / insert / difference"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      mapping: {id: ID, name: id}",
            ),
            [FILE, "activation 'people_csv'", "field 'mapping'", "'id' is used twice"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}", "      file_name: p\n      formt: csv"
            ),
            [FILE, "activation 'people_csv'", "field 'formt'", "unknown field"],
        ),
        (
            edit(
                "      sql: SELECT id, name, age FROM crm.people",
                "      sql: SELECT id, nme FROM crm.people",
            ),
            [FILE, "model 'people'", "field 'sql'", "nme"],
        ),
        (
            edit("      primary_key: id", "      primary_key: [id, email]"),
            [FILE, "model 'people'", "field 'primary_key'", "email"],
        ),
        (
            edit(
                "      sql: SELECT id, name, age FROM crm.people",
                "      sql: SELECT * FROM hr.people",
            ),
            [FILE, "model 'people'", "field 'sql'", "'hr.people'", "crm.<table>"],
        ),
        (
            edit("      container: exports", "      container: Exports_Bad"),
            [FILE, "destination 'lake'", "field 'container'", "lowercase"],
        ),
        (
            edit(
                "      sas_token: {env: LAKE_SAS}",
                "      sas_token: {env: LAKE_SAS}\n      account_key: {env: K}",
            ),
            [FILE, "destination 'lake'", "exactly one credential"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      timezone: Mars/Base",
            ),
            [FILE, "field 'timezone'", "IANA"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      schedule: every day",
            ),
            [FILE, "field 'schedule'", "cron"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      max_file_size: 12 parsecs",
            ),
            [FILE, "field 'max_file_size'", "'256MB'"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      mapping: {id: ID, name: Kind}\n"
                "      change_column: kind",
            ),
            [FILE, "activation 'people_csv'", "change_column 'kind'", "column 'name'"],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                '      file_name: p\n      csv: {delimiter: "\\n"}',
            ),
            [
                FILE,
                "activation 'people_csv'",
                "field 'csv.delimiter'",
                "a line break reads as none",
            ],
        ),
        (
            edit(
                "      file_name: people/{YYYY}-{MM}-{DD}",
                "      file_name: p\n      partition_by: [name]\n      max_partitions: 0",
            ),
            [
                FILE,
                "activation 'people_csv'",
                "field 'max_partitions'",
                "greater than or equal to 1",
            ],
        ),
    ],
    ids=[
        "unknown-template-variable",
        "unknown-mapping-column",
        "unknown-source",
        "unknown-destination",
        "bad-delimiter",
        "full-only-with-upsert",
        "delta-with-snapshot",
        "duplicate-destination-column",
        "unknown-field",
        "sql-error",
        "unknown-key-column",
        "undeclared-table",
        "bad-container",
        "two-credentials",
        "bad-timezone",
        "bad-cron",
        "bad-size",
        "change-column-clash",
        "line-break-delimiter",
        "max-partitions-zero",
    ],
)
def test_bad_input_is_named(project_dir, yaml_text, expected):
    message = error_of(project_dir, yaml_text)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_duplicate_name_across_folders(project_dir):
    other = """
    type: azexport_assets.components.AzureExport
    attributes:
      destinations:
        lake:
          account_url: https://other.blob.core.windows.net
          container: other
          sas_token: {env: OTHER_SAS}
    """
    message = error_of(project_dir, BASE, {"zz_other": other})
    # Both files, with the line and column of each declaration.
    assert message.startswith(
        "defs/zz_other/defs.yaml:5:5: destination 'lake' is already defined in "
        "defs/main/defs.yaml:11:5;"
    ), message


def test_cross_folder_reference_works(project_dir):
    other = """
    type: azexport_assets.components.AzureExport
    attributes:
      activations:
        people_again:
          source: people
          destination: lake
          file_name: again
    """
    project = load(project_dir, BASE, {"team_b": other})
    assert project.activations["people_again"].destination == "lake"


def other_folder(activations: dict, destinations: dict | None = None) -> str:
    """A second defs folder's defs.yaml with these activations (and destinations)."""
    attributes = {"destinations": destinations or {}, "activations": activations}
    return yaml.safe_dump(
        {"type": "azexport_assets.components.AzureExport", "attributes": attributes},
        sort_keys=False,
    )


PEOPLE_DAILY = {"source": "people", "destination": "lake", "file_name": "people/{YYYY}-{MM}-{DD}"}


def test_two_activations_writing_the_same_blobs_are_refused(project_dir):
    """Each run would replace the other's files (and each keeps its own baseline and lock)."""
    message = error_of(project_dir, BASE, {"team_b": other_folder({"people_copy": PEOPLE_DAILY})})
    assert message.startswith(
        "defs/team_b/defs.yaml:8:7: activation 'people_copy', field 'file_name': writes the "
        "same blobs as activation 'people_csv' (defs/main/defs.yaml:19:7): "
        "'people/{YYYY}-{MM}-{DD}.csv' in container 'exports'"
    ), message
    assert "another file_name" in message

    # Through another destination on the same account and container: the prefix joins the name.
    lake_people = {
        "account_url": "https://ACCT.blob.core.windows.net/",
        "container": "exports",
        "path_prefix": "people",
        "sas_token": {"env": "OTHER_SAS"},
    }
    via_prefix = {"source": "people", "destination": "lake_people", "file_name": "{YYYY}-{MM}-{DD}"}
    folder = other_folder({"people_copy": via_prefix}, {"lake_people": lake_people})
    assert "same blobs as activation 'people_csv'" in error_of(
        project_dir, BASE, {"team_b": folder}
    )

    # Two formats of one name, each with its manifest: one manifest name for both.
    with_manifest = {**PEOPLE_DAILY, "file_name": "people/{YYYY}", "manifest": True}
    folder = other_folder({"as_csv": with_manifest, "as_json": {**with_manifest, "format": "json"}})
    message = error_of(project_dir, BASE, {"team_b": folder})
    assert "writes the same blobs as activation 'as_csv'" in message
    assert "'people/{YYYY}_manifest.json'" in message

    # A `difference` activation's removed rows under another activation's file name.
    difference = {**PEOPLE_DAILY, "file_name": "crm/people", "run_type": "full_then_delta"}
    difference["sync_mode"] = "difference"
    removed = {**PEOPLE_DAILY, "file_name": "crm/people_removed"}
    folder = other_folder({"changes": difference, "removed_by_hand": removed})
    message = error_of(project_dir, BASE, {"team_b": folder})
    assert "same blobs as activation 'changes'" in message
    assert "'crm/people_removed.csv'" in message

    # Two Delta tables merged at one path.
    table = {"source": "people", "destination": "lake", "file_name": "lake/people"}
    table["format"] = "delta"
    folder = other_folder({"t1": table, "t2": table})
    assert "writes the same Delta table as activation 't1'" in error_of(
        project_dir, BASE, {"team_b": folder}
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"format": "json"},
        {"compression": "gzip"},
        {"file_name": "people/{YYYY}-{MM}"},
        {"file_name": "people/{YYYY}-{MM}-{DD}_{run_id}"},
        {"partition_by": ["age"]},
        {"destination": "elsewhere"},
        {"file_name": "{activation}/{YYYY}-{MM}-{DD}"},
        {"format": "json", "manifest": True},
    ],
    ids=[
        "format",
        "compression",
        "template",
        "run_id",
        "partition_by",
        "container",
        "name",
        "one_manifest",
    ],
)
def test_activations_writing_other_blobs_load(project_dir, changes):
    elsewhere = {
        "account_url": "https://acct.blob.core.windows.net",
        "container": "other",
        "sas_token": {"env": "LAKE_SAS"},
    }
    folder = other_folder({"people_other": {**PEOPLE_DAILY, **changes}}, {"elsewhere": elsewhere})
    project = load(project_dir, BASE, {"team_b": folder})
    assert set(project.activations) == {"people_csv", "people_other"}


def test_delta_needs_primary_key(project_dir):
    text = edit("      primary_key: id\n", "").replace(
        "      file_name: people/{YYYY}-{MM}-{DD}",
        "      file_name: p\n      run_type: full_then_delta\n      sync_mode: insert",
    )
    message = error_of(project_dir, text)
    assert "activation 'people_csv', field 'sync_mode'" in message and "primary key" in message


def test_bad_yaml_names_the_file(project_dir):
    message = error_of(project_dir, BASE + "\n  : : [unclosed\n")
    assert FILE in str(message) and "not valid YAML" in message


def test_missing_source_file_defers_column_checks(project_dir):
    (project_dir / "crm.duckdb").unlink()
    text = edit(
        "      file_name: people/{YYYY}-{MM}-{DD}", "      file_name: p\n      mapping: {agee: A}"
    )
    project = load(project_dir, text)  # no exception: the same check runs before data moves
    assert project.activations["people_csv"].mapping == {"agee": "A"}


CYCLE = """
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
  models:
    people:
      sql: SELECT id, name, age FROM crm.people
      primary_key: id
    a:
      sql: SELECT id FROM models.b
    b:
      sql_file: b.sql
"""


def test_model_cycle_names_file_line_object_field_and_path(project_dir):
    (project_dir / "defs" / "main" / "b.sql").write_text("SELECT id FROM models.a\n")
    message = error_of(project_dir, CYCLE)
    # Model 'a' (line 11, column 7: its 'sql') reads b, which reads a back.
    assert message.startswith(
        f"{FILE}:11:7: model 'a', field 'sql': reads models.b, and the models read each "
        "other in a cycle: a -> b -> a;"
    ), message


def test_model_reading_itself_is_a_cycle_of_one(project_dir):
    text = CYCLE.replace("SELECT id FROM models.b", "SELECT id FROM models.a").replace(
        "    b:\n      sql_file: b.sql\n", ""
    )
    message = error_of(project_dir, text)
    assert message.startswith(
        f"{FILE}:11:7: model 'a', field 'sql': reads models.a, and the models read each "
        "other in a cycle: a -> a;"
    ), message


def test_a_source_in_azure_needs_the_azure_extension(project, monkeypatch):
    """Loads where DuckDB's azure extension is available offline (the lake environment);
    elsewhere (DuckDB 2.x without extension files) it is refused at load, naming the file,
    the source and what to do."""
    from azexport_assets.warehouse.extensions import EXTENSIONS_ENV, available_offline

    monkeypatch.delenv(EXTENSIONS_ENV, raising=False)
    project.source_sql("CREATE TABLE t AS SELECT 1 AS id")
    project.write_defs(
        "models: {m: {sql: 'SELECT * FROM events', primary_key: id}}\n",
        extra_sources=(
            "events: {parquet: 'az://events/day=*/*.parquet', "
            "account_url: 'https://acct.blob.core.windows.net', default_azure_credential: true}"
        ),
    )
    if available_offline("azure"):
        assert "models/m" in {
            k.to_user_string() for k in project.definitions().resolve_all_asset_keys()
        }
        return
    with pytest.raises(Exception, match="lake environment") as raised:
        project.definitions()
    text = str(raised.value)
    assert "defs.yaml" in text and "source 'events'" in text and "azure" in text


@pytest.mark.parametrize(
    ("added", "expected"),
    [
        (
            "    people_csv:\n      source: people\n      destination: lake\n"
            "      file_name: other\n",
            "defs/main/defs.yaml:20:5: activation 'people_csv' is defined twice in this file "
            "(first at line 16); YAML keeps only the last one, so the first would be lost: "
            "give one of them another name, or remove one",
        ),
        (
            "      file_name: people/{YYYY}\n",
            "defs/main/defs.yaml:20:7: activation 'people_csv', field 'file_name': given twice "
            "(first at line 19); YAML keeps only the last one, so the first would be lost: "
            "remove one of them",
        ),
        (
            "attributes:\n  sources: {}\n",
            "defs/main/defs.yaml:20:1: key 'attributes' is given twice (first at line 3)",
        ),
    ],
    ids=["activation", "field", "attributes"],
)
def test_a_key_given_twice_in_one_file_is_refused(project_dir, added, expected):
    """YAML keeps the last of two equal keys: the first object or value would vanish silently."""
    message = error_of(project_dir, BASE + added)
    assert message.startswith(expected), message


def test_a_destination_or_model_defined_twice_in_one_file_is_refused(project_dir):
    twice = BASE.replace(
        "  destinations:\n",
        "  destinations:\n    lake:\n      account_url: https://other.blob.core.windows.net\n"
        "      container: other\n      sas_token: {env: OTHER_SAS}\n",
    )
    assert error_of(project_dir, twice).startswith(
        "defs/main/defs.yaml:15:5: destination 'lake' is defined twice in this file "
        "(first at line 11)"
    )
    twice = BASE.replace(
        "  models:\n", "  models:\n    people:\n      sql: SELECT 1 AS id\n      primary_key: id\n"
    )
    assert error_of(project_dir, twice).startswith(
        "defs/main/defs.yaml:10:5: model 'people' is defined twice in this file (first at line 7)"
    )


def test_yaml_anchors_and_merge_keys_still_load(project_dir):
    """A merge key (`<<: *anchor`) overridden by an explicit key is not a duplicate."""
    text = (
        BASE.replace(
            "  activations:\n",
            "  activations:\n"
            "    people_json:\n"
            "      <<: &common {source: people, destination: lake, format: csv}\n"
            "      format: json\n"
            "      file_name: people_json\n",
        )
        + "    people_again:\n      <<: *common\n      file_name: again\n"
    )
    project = load(project_dir, text)
    assert project.activations["people_json"].format == "json"
    assert project.activations["people_again"].format == "csv"
    assert project.activations["people_csv"].file_name == "people/{YYYY}-{MM}-{DD}"


ON_COLUMN = BASE.replace("SELECT id, name, age FROM", 'SELECT id, name, age, true AS "on" FROM')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ON_COLUMN + "      mapping: {id: id, on: flag}\n",
            "defs/main/defs.yaml:20:25: activation 'people_csv', field 'mapping.on': on is read "
            "by YAML as a boolean, not as the text 'on': write it in quotes ('on')",
        ),
        (
            BASE + "      mapping: {id: id, age: no}\n",
            "defs/main/defs.yaml:20:30: activation 'people_csv', field 'mapping.age': no is "
            "read by YAML as a boolean, not as the text 'no': write it in quotes ('no')",
        ),
        (
            ON_COLUMN.replace("primary_key: id", "primary_key: [id, on]"),
            "defs/main/defs.yaml:9:25: model 'people', field 'primary_key.1': on is read by "
            "YAML as a boolean",
        ),
        (
            BASE.replace("    people_csv:", "    yes:"),
            "defs/main/defs.yaml:16:5: activation name yes is read by YAML as a boolean, not as "
            "the text 'yes': write it in quotes ('yes')",
        ),
        (
            BASE.replace("    lake:", "    'null':").replace(
                "destination: lake", "destination: null"
            ),
            "defs/main/defs.yaml:18:20: activation 'people_csv', field 'destination': null is "
            "read by YAML as null (no value), not as the text 'null': write it in quotes",
        ),
        (
            BASE + "      mapping: {id: id, name: 123}\n",
            "defs/main/defs.yaml:20:31: activation 'people_csv', field 'mapping.name': 123 is "
            "read by YAML as a number",
        ),
    ],
    ids=["mapping-key", "mapping-value", "primary-key", "object-name", "reference", "number"],
)
def test_a_name_yaml_reads_as_another_type_says_to_quote_it(project_dir, text, expected):
    """A plain on / no / yes / null / 123 is a boolean, null or number to YAML 1.1, not text."""
    message = error_of(project_dir, text)
    assert message.startswith(expected), message


def test_quoted_names_that_look_like_booleans_load(project_dir):
    text = ON_COLUMN.replace("primary_key: id", "primary_key: [id, 'on']")
    text += "      mapping: {id: id, 'on': 'no', age: 'null'}\n"
    project = load(project_dir, text)
    assert list(project.models["people"].primary_key) == ["id", "on"]
    assert dict(project.activations["people_csv"].mapping) == {
        "id": "id",
        "on": "no",
        "age": "null",
    }


UNSET = "AZEXPORT_TEST_NEVER_SET"


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "file_name: people/{YYYY}-{MM}-{DD}",
            f'file_name: "{{{{ env.{UNSET} }}}}/people"',
            "19:7: activation 'people_csv', field 'file_name'",
        ),
        (
            "container: exports",
            f'container: "{{{{ env.{UNSET} }}}}"',
            "13:7: destination 'lake', field 'container'",
        ),
        (
            "account_url: https://acct.blob.core.windows.net",
            f'account_url: "{{{{ env.{UNSET} }}}}"',
            "12:7: destination 'lake', field 'account_url'",
        ),
    ],
    ids=["inside-text", "whole-value", "account-url"],
)
def test_a_template_reading_an_unset_variable_names_it(project_dir, monkeypatch, old, new, where):
    """Dagster's env.X is None when X is unset: 'None/people.csv', or a message naming no
    variable. It is one line naming the variable, with the way to give a default."""
    monkeypatch.delenv(UNSET, raising=False)
    message = error_of(project_dir, BASE.replace(old, new))
    assert message == (
        f"defs/main/defs.yaml:{where}: reads environment variable {UNSET}, which is not set; "
        f"set it (or put it in .env), or give a default: {{{{ env('{UNSET}', 'value') }}}}"
    )


def test_templates_with_a_default_for_an_unset_variable_load(project_dir, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    monkeypatch.setenv("AZEXPORT_TEST_FOLDER", "crm")
    text = BASE.replace(
        "file_name: people/{YYYY}-{MM}-{DD}",
        "file_name: \"{{ env.AZEXPORT_TEST_FOLDER }}/{{ env.UNSET_NAME or 'all' }}/"
        "{{ env.UNSET_NAME | default('people') }}\"\n"
        "      timezone: \"{{ env('UNSET_NAME', 'Europe/Paris') }}\"\n"
        "      schedule: \"{{ env('UNSET_NAME', none) }}\"\n"
        '      description: "{% if env.UNSET_NAME %}set{% else %}unset{% endif %}"'.replace(
            "UNSET_NAME", UNSET
        ),
    )
    activation = load(project_dir, text).activations["people_csv"]
    assert activation.file_name == "crm/all/people"
    assert activation.timezone == "Europe/Paris"
    assert activation.schedule is None
    assert activation.description == "unset"


def test_a_defs_yaml_that_is_not_utf8_is_named(project_dir):
    """Saved in Latin-1 (an editor's default on some systems): the file, line and column of
    the first byte that is not UTF-8, not a bare UnicodeDecodeError."""
    (project_dir / "defs" / "main" / "defs.yaml").write_text(textwrap.dedent(BASE))
    other = project_dir / "defs" / "team_b" / "defs.yaml"
    other.parent.mkdir()
    other.write_bytes(
        "type: azexport_assets.components.AzureExport\n"
        "attributes:\n"
        "  activations:\n"
        "    people_b: {source: people, destination: lake, file_name: b\u00f6rse}\n".encode(
            "latin-1"
        )
    )
    with pytest.raises(ConfigError) as error:
        load_project(project_dir / "defs", project_dir)
    assert str(error.value) == (
        "defs/team_b/defs.yaml:4:63: not UTF-8 text (byte 0xf6): save the file as UTF-8"
    )


def test_a_sql_file_that_is_not_utf8_is_named(project_dir):
    sql = project_dir / "defs" / "main" / "people.sql"
    sql.write_bytes("SELECT id,\n  name AS n\u00e4me FROM crm.people\n".encode("latin-1"))
    text = BASE.replace("sql: SELECT id, name, age FROM crm.people", "sql_file: people.sql")
    message = error_of(project_dir, text)
    assert message == (
        f"defs/main/defs.yaml:8:7: model 'people', field 'sql_file': {sql} is not UTF-8 text "
        "(byte 0xe4 at line 2, column 12): save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("type_name", "problem"),
    [
        (
            "azexport_assets.components.AzureExprt",
            "module azexport_assets.components has no AzureExprt; did you mean "
            "azexport_assets.components.AzureExport?",
        ),
        (
            "azexport_asets.components.AzureExport",
            "there is no module azexport_asets.components; azexport's component is "
            "azexport_assets.components.AzureExport",
        ),
        (
            "AzureExport",
            "write the module and the class, e.g. azexport_assets.components.AzureExport",
        ),
    ],
    ids=["class-typo", "module-typo", "no-module"],
)
def test_a_component_type_that_cannot_be_imported_is_named(project_dir, type_name, problem):
    """Dagster names the missing module or class, not the file: the file, line and field."""
    (project_dir / "defs" / "main" / "defs.yaml").write_text(textwrap.dedent(BASE))
    other = project_dir / "defs" / "team_b" / "defs.yaml"
    other.parent.mkdir()
    other.write_text(f"type: {type_name}\nattributes: {{}}\n")
    with pytest.raises(ConfigError) as error:
        load_project(project_dir / "defs", project_dir)
    assert str(error.value) == (
        f"defs/team_b/defs.yaml:1:7: field 'type': '{type_name}' is not a component type: "
        + problem
    )


def test_an_empty_defs_yaml_is_named(project_dir):
    """A folder scaffolded by hand (`touch defs/new/defs.yaml`): Dagster's own message names
    no file."""
    (project_dir / "defs" / "main" / "defs.yaml").write_text(textwrap.dedent(BASE))
    empty = project_dir / "defs" / "new" / "defs.yaml"
    empty.parent.mkdir()
    empty.write_text("# to do\n\n")
    with pytest.raises(ConfigError) as error:
        load_project(project_dir / "defs", project_dir)
    assert str(error.value) == (
        "defs/new/defs.yaml: holds no component (nothing but comments or blank lines): write "
        "`type: azexport_assets.components.AzureExport` and its `attributes:` in it, or remove it"
    )


def test_an_empty_document_after_a_component_is_named(project_dir):
    """A stray `---` at the end of a defs.yaml starts an empty second document."""
    message = error_of(project_dir, BASE + "---\n")
    assert message == (
        "defs/main/defs.yaml:21: this YAML document is not a component (Input should be an "
        "object): a document needs `type:` and `attributes:`; remove an empty one (a stray `---`)"
    )
