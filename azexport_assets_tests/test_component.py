"""The AzureExport component as a user meets it: dg's tooling, templating, scaffolding, and one
validation of the whole project per code-location load.

The `dg` tests run the real CLI in a subprocess on a throw-away dg project that uses the
installed `azexport_assets.components` registry module.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from azexport_assets.asset_keys import delta_key
from azexport_assets.components import AzureExport, loading
from azexport_assets.config import ConfigError, ExportFileConfig
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource
from azexport_assets_tests.many_folders import write_project
from azexport_assets_tests.test_load_cache import count_validations

TYPE = "azexport_assets.components.AzureExport"
DG = str(Path(sys.executable).parent / "dg")

PYPROJECT = """\
[project]
name = "userexports"
version = "0.0.1"

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "userexports"
registry_modules = ["azexport_assets.components"]
"""

DEFINITIONS = """\
from pathlib import Path

import dagster as dg

from azexport_assets.components.loading import config_errors_first


@dg.definitions
def defs() -> dg.Definitions:
    with config_errors_first(Path(__file__).resolve().parents[1]):
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""

# The documented definitions.py (azexport_assets/definitions.py is the same): the defs folder
# plus the warehouse resource and the run watchdog, built once per process.
WITH_WAREHOUSE = """\
from pathlib import Path

import dagster as dg

from azexport_assets.code_location import load_code_location


@dg.definitions
def defs() -> dg.Definitions:
    return load_code_location(Path(__file__).parent)
"""


@pytest.fixture
def dg_project(tmp_path: Path) -> Path:
    """A new user's dg project: pyproject.toml, a package with definitions.py, empty defs/."""
    root = tmp_path / "userproject"
    (root / "userexports" / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "userexports" / "__init__.py").write_text("")
    (root / "userexports" / "definitions.py").write_text(DEFINITIONS)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return root


def run_dg(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "DAGSTER_HOME": str(project.parent / "dagster_home"),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [DG, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )


def scaffold(project: Path, folder: str) -> Path:
    result = run_dg(project, "scaffold", "defs", TYPE, folder)
    assert result.returncode == 0, result.stdout + result.stderr
    return project / "userexports" / "defs" / folder / "defs.yaml"


# --------------------------------------------------------------------------- dg tooling


def test_scaffold_writes_a_commented_example_that_loads(dg_project):
    defs_yaml = scaffold(dg_project, "crm_exports")
    text = defs_yaml.read_text()
    assert text.startswith("# ") and f"type: {TYPE}" in text
    assert "crm_exports_customers_csv:" in text  # names come from the folder: no clashes

    second = scaffold(dg_project, "web-exports")
    assert "web_exports_customers_csv:" in second.read_text()

    checked = run_dg(dg_project, "check", "yaml", str(defs_yaml.parent))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    project = load_project(dg_project / "userexports" / "defs", dg_project)
    describe_project(project)  # the SQL binds (columns are skipped: the file is not there yet)
    assert set(project.activations) == {"crm_exports_customers_csv", "web_exports_customers_csv"}
    assert project.models["crm_exports_customers"].owners == ["team:data"]
    assert project.destinations["crm_exports_lake"].sas_token.env == "AZURE_STORAGE_SAS_TOKEN"


def test_dg_check_yaml_reports_a_typo_with_line_and_column(dg_project):
    defs_yaml = scaffold(dg_project, "crm_exports")
    lines = defs_yaml.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == "format: csv")
    lines[index] = lines[index].replace("format: csv", "fromat: json")
    defs_yaml.write_text("\n".join(lines) + "\n")
    line, column = index + 1, lines[index].index("fromat") + 1

    result = run_dg(dg_project, "check", "yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert (
        f"{defs_yaml}:{line} - {TYPE} attributes.activations.crm_exports_customers_csv.fromat"
        in (output)
    )
    assert "'fromat' was unexpected" in output
    # The snippet puts a caret under the offending key: its column.
    caret = next(ln for ln in output.splitlines() if ln.strip().startswith("|") and "^" in ln)
    assert caret.index("^") - caret.index("|") - 1 == column, caret


def test_make_check_validates_every_folder_and_names_the_file_with_the_typo(dg_project):
    # Two folders of the same component type: dg's whole-project check keeps one of them.
    scaffold(dg_project, "crm_exports")
    second = scaffold(dg_project, "web_exports")
    good = second.read_text()
    lines = good.splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip() == "format: csv")
    lines[index] = lines[index].replace("format: csv", "fromat: json")
    second.write_text("\n".join(lines) + "\n")

    checked = run_module(dg_project, "azexport_assets.dg_check")
    output = checked.stdout + checked.stderr
    assert checked.returncode == 1, output
    assert f"{second}:{index + 1} - {TYPE} attributes.activations.web_exports" in output
    assert "'fromat' was unexpected" in output
    assert "crm_exports/defs.yaml" not in output
    assert "validated successfully" not in output
    assert "loading the definitions" not in output  # stops at the YAML errors

    second.write_text(good)
    # The definitions load as the project's own do: with the warehouse resource.
    (dg_project / "userexports" / "definitions.py").write_text(WITH_WAREHOUSE)
    checked = run_module(dg_project, "azexport_assets.dg_check")
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "YAML of 2 folder(s) valid" in output
    assert "All definitions loaded successfully." in output
    # dg check defs runs without its own whole-project YAML pass and its false success line.
    assert "All component YAML validated successfully." not in output


def test_a_dg_project_using_load_code_location_builds_once_per_dagster_command(dg_project):
    """Dagster calls a project's `defs()` several times in one command: with Dagster's own
    loader each call builds (and validates) the project again; with `load_code_location` the
    project is built once, and has the warehouse resource."""
    scaffold(dg_project, "crm_exports")
    probe = dg_project / "count_validations.py"
    probe.write_text(count_validations("userexports.definitions"))
    validations = {}
    for name, text in (("dagster", DEFINITIONS), ("ours", WITH_WAREHOUSE)):
        (dg_project / "userexports" / "definitions.py").write_text(text)
        done = run_module(dg_project, "count_validations")
        output = done.stdout + done.stderr
        validations[name] = int(output.split("VALIDATIONS=")[1].split()[0])
        if name == "ours":
            assert done.returncode == 0, output[-3000:]
    assert validations["ours"] == 1
    assert validations["dagster"] > 1, validations


def run_module(project: Path, module: str) -> subprocess.CompletedProcess[str]:
    """`python -m module` in the project, with the environment `run_dg` gives dg."""
    env = {
        **os.environ,
        "VIRTUAL_ENV": sys.prefix,
        "DAGSTER_HOME": str(project.parent / "dagster_home"),
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_inspect_component_knows_the_documented_type_name(dg_project):
    result = run_dg(dg_project, "utils", "inspect-component", TYPE)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Exports DuckDB models and segments" in output
    assert '"sync_mode"' in output and '"path_prefix"' in output


def test_broken_defs_yaml_is_reported_first_by_dg_check_defs(dg_project):
    defs_yaml = scaffold(dg_project, "crm_exports")
    defs_yaml.write_text(defs_yaml.read_text().replace("container: exports", "container: Ex_p"))
    result = run_dg(dg_project, "check", "defs", "--no-check-yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    first_error = next(line for line in output.splitlines() if "Error" in line and ":" in line)
    assert first_error.startswith(
        "azexport_assets.config.ConfigError: userexports/defs/crm_exports/defs.yaml:"
    ), output
    assert "destination 'crm_exports_lake', field 'container'" in first_error
    assert re.search(r"defs\.yaml:\d+:\d+: ", first_error)
    assert "ComponentTreeException" not in output


# --------------------------------------------------------------------------- schema


def test_json_schema_holds_every_activation_field():
    schema = AzureExport.get_model_cls().model_json_schema()
    activations = schema["properties"]["activations"]
    assert activations["propertyNames"] == {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}
    activation = activations["additionalProperties"]
    assert activation["additionalProperties"] is False  # typos are errors
    fields = {f.alias or name for name, f in ExportFileConfig.model_fields.items()}
    assert fields == set(schema["properties"])
    from azexport_assets.config import ActivationConfig

    expected = {f.alias or name for name, f in ActivationConfig.model_fields.items()}
    assert expected == set(activation["properties"])
    assert {"json", "owners", "sync_mode", "mapping", "warnings"} <= expected
    # An enum stays an enum for editors, and may also be a template rendered at load time.
    sync_mode = activation["properties"]["sync_mode"]["anyOf"]
    assert sync_mode[0]["enum"] == ["snapshot", "upsert", "insert", "difference"]
    assert sync_mode[1]["pattern"] == r"\{\{.*\}\}"
    # Secrets are {env: VAR} only: no template branch.
    sas = schema["properties"]["destinations"]["additionalProperties"]["properties"]["sas_token"]
    assert "pattern" not in str(sas)


# --------------------------------------------------------------------------- templating


TEMPLATED = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: "{{ env.AZEXPORT_TEST_CRM_FILE }}"}
  models:
    people:
      sql: SELECT id, name FROM crm.people
      primary_key: id
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: "{{ env.AZEXPORT_TEST_CONTAINER }}"
      max_concurrency: "{{ env.AZEXPORT_TEST_UPLOADS }}"
      sas_token: {env: AZEXPORT_TEST_SAS}
  activations:
    people_csv:
      source: people
      destination: lake
      file_name: people
      format: "{{ env.AZEXPORT_TEST_FORMAT }}"
"""


def test_env_templates_are_rendered_and_validated(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute("CREATE TABLE people AS SELECT 1 AS id, 'a' AS name")
    con.close()
    (tmp_path / "defs" / "main").mkdir(parents=True)
    (tmp_path / "defs" / "main" / "defs.yaml").write_text(TEMPLATED)
    monkeypatch.setenv("AZEXPORT_TEST_CRM_FILE", "crm.duckdb")
    monkeypatch.setenv("AZEXPORT_TEST_CONTAINER", "templated-exports")
    monkeypatch.setenv("AZEXPORT_TEST_UPLOADS", "7")
    monkeypatch.setenv("AZEXPORT_TEST_FORMAT", "parquet")
    monkeypatch.setenv("AZEXPORT_TEST_SAS", "sv=secret-value")

    project = load_project(tmp_path / "defs", tmp_path)
    destination = project.destinations["lake"]
    assert destination.container == "templated-exports"
    assert destination.max_concurrency == 7
    assert project.activations["people_csv"].format == "parquet"
    assert project.sources["crm"].duckdb == "crm.duckdb"
    # {env: VAR} stays a reference: the secret's value is read at run time only.
    assert destination.sas_token.env == "AZEXPORT_TEST_SAS"
    assert "secret-value" not in repr(project)
    assert describe_project(project).columns["people"] == [("id", "INTEGER"), ("name", "VARCHAR")]

    # A rendered value is validated like a literal one, at the template's line.
    monkeypatch.setenv("AZEXPORT_TEST_CONTAINER", "Not_Valid")
    with pytest.raises(ConfigError) as error:
        load_project(tmp_path / "defs", tmp_path)
    assert str(error.value).startswith(
        "defs/main/defs.yaml:12:7: destination 'lake', field 'container': must be 3-63"
    ), str(error.value)


def test_templated_file_passes_dg_check_yaml(dg_project):
    folder = dg_project / "userexports" / "defs" / "templated"
    folder.mkdir()
    (folder / "defs.yaml").write_text(TEMPLATED)
    result = run_dg(dg_project, "check", "yaml", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- whole project


def test_project_is_validated_once_per_load(tmp_path, monkeypatch):
    """50 activations in 10 folders: one validation (SQL bound once), not one per defs.yaml."""
    calls: list[int] = []

    def counting(project):
        calls.append(len(project.activations))
        return describe_project(project)

    monkeypatch.setattr(loading, "describe_project", counting)
    defs_root = write_project(tmp_path, folders=10, per_folder=5)

    definitions = loading.definitions_from_folder(defs_root, tmp_path)
    assert calls == [50]
    definitions = dg.Definitions.merge(
        definitions, dg.Definitions(resources={WAREHOUSE_KEY: WarehouseResource()})
    )
    jobs = {job.name for job in definitions.resolve_all_job_defs()}
    assert {f"activate_people_{f:02d}_{a:02d}" for f in range(10) for a in range(5)} <= jobs

    # A reload with nothing changed reuses the build; after a change it validates again, once.
    loading.definitions_from_folder(defs_root, tmp_path)
    assert calls == [50]
    changed = defs_root / "f03" / "defs.yaml"
    changed.write_text(changed.read_text() + "\n")
    loading.definitions_from_folder(defs_root, tmp_path)
    assert calls == [50, 50]


def test_activation_exports_a_model_of_another_folder(tmp_path):
    """Through the code-location path: each component builds only its own objects."""
    defs_root = write_project(tmp_path, folders=2, per_folder=1)
    (defs_root / "f01" / "defs.yaml").write_text(
        (defs_root / "f01" / "defs.yaml").read_text()
        + textwrap.indent(
            "cross_folder:\n  source: people_00\n  destination: lake\n  file_name: cross\n",
            "    ",
        )
    )
    definitions = loading.definitions_from_folder(defs_root, tmp_path)
    graph = dg.Definitions.merge(
        definitions, dg.Definitions(resources={WAREHOUSE_KEY: WarehouseResource()})
    ).resolve_asset_graph()
    delta = graph.get(delta_key("cross_folder"))
    assert dg.AssetKey(["models", "people_00"]) in delta.parent_keys


def test_duplicate_name_names_both_files_through_the_code_location(tmp_path):
    defs_root = write_project(tmp_path, folders=2, per_folder=1)
    text = (defs_root / "f01" / "defs.yaml").read_text()
    (defs_root / "f01" / "defs.yaml").write_text(text.replace("people_01_00:", "people_00_00:"))
    with pytest.raises(ConfigError) as error:
        loading.definitions_from_folder(defs_root, tmp_path)
    message = str(error.value)
    assert re.match(
        r"defs/f01/defs\.yaml:\d+:\d+: activation 'people_00_00' is already defined in "
        r"defs/f00/defs\.yaml:\d+:\d+; names must be unique",
        message,
    ), message
    # Nothing of Dagster's wrapping stands in front of (or behind) the message.
    assert error.value.__cause__ is None and error.value.__suppress_context__


# --------------------------------------------------------------------------- new options


BASE = """\
type: azexport_assets.components.AzureExport
attributes:
  models:
    people:
      sql: SELECT 1 AS id
      primary_key: id
      owners: [ana@example.com, team:crm]
  segments:
    adults:
      model: people
      filter: id > 0
      owners: [team:crm]
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      path_prefix: /marketing/crm/
      sas_token: {env: LAKE_SAS}
  activations:
    people_csv:
      source: adults
      destination: lake
      file_name: people
      owners: [bob@example.org]
"""


def _load(tmp_path: Path, text: str):
    (tmp_path / "defs" / "main").mkdir(parents=True, exist_ok=True)
    (tmp_path / "defs" / "main" / "defs.yaml").write_text(text)
    return load_project(tmp_path / "defs", tmp_path)


def test_owners_and_path_prefix_are_parsed(tmp_path):
    project = _load(tmp_path, BASE)
    assert project.models["people"].owners == ["ana@example.com", "team:crm"]
    assert project.segments["adults"].owners == ["team:crm"]
    assert project.activations["people_csv"].owners == ["bob@example.org"]
    assert project.destinations["lake"].path_prefix == "marketing/crm"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "owners: [team:crm]\n  destinations",
            "owners: [crm]\n  destinations",
            "defs/main/defs.yaml:12:16: segment 'adults', field 'owners.0': 'crm' is not a "
            "valid owner: use an e-mail address",
        ),
        (
            "owners: [bob@example.org]",
            "owners: ['team:']",
            "activation 'people_csv', field 'owners.0': 'team:' is not a valid owner",
        ),
        (
            "path_prefix: /marketing/crm/",
            "path_prefix: marketing/../crm",
            "defs/main/defs.yaml:17:7: destination 'lake', field 'path_prefix': path prefix "
            "'marketing/../crm' has a '.' or '..' path segment",
        ),
        (
            "path_prefix: /marketing/crm/",
            'path_prefix: "marketing\\tcrm"',
            "field 'path_prefix': path prefix 'marketing\\tcrm' has a control character",
        ),
        (
            "path_prefix: /marketing/crm/",
            "path_prefix: a//b",
            "field 'path_prefix': path prefix 'a//b' has an empty path segment",
        ),
        (
            "path_prefix: /marketing/crm/",
            f"path_prefix: {'p' * 1025}",
            "field 'path_prefix': path prefix 'ppp",
        ),
        (
            "path_prefix: /marketing/crm/",
            # 1,010 + '/people' + '_removed.csv' (the longest a CSV activation writes) > 1,024
            f"path_prefix: {'p' * 1010}",
            "defs/main/defs.yaml:23:7: activation 'people_csv', field 'file_name': with the "
            "path_prefix of destination 'lake' the blob names reach",
        ),
    ],
    ids=[
        "owner-without-team",
        "empty-team",
        "dot-dot-segment",
        "control-character",
        "empty-segment",
        "prefix-too-long",
        "prefix-plus-name-too-long",
    ],
)
def test_bad_owner_or_prefix_is_named(tmp_path, old, new, expected):
    assert old in BASE
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, BASE.replace(old, new))
    assert expected in str(error.value), str(error.value)


def test_component_built_in_python_is_refused_with_a_reason(tmp_path):
    component = AzureExport(models={"people": {"sql": "SELECT 1 AS id"}})
    assert component.models["people"].sql == "SELECT 1 AS id"  # fields are the config models
    with pytest.raises(ConfigError, match="declare its objects in a defs.yaml"):
        loading.merge_components([component], tmp_path)
    assert loading.merge_components([AzureExport()], tmp_path).activations == {}
