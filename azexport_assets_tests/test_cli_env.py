"""An ad-hoc run from the command line, as the README shows it: `dg launch --job
activate_<name>` in the project root, with the destination's variables in `.env`.

Each test builds a throw-away dg project (pyproject.toml with [tool.dg], a package whose
definitions load the defs folder, a source DuckDB file) and runs the real `dg` CLI in a
subprocess against the session's Azurite, with the variables only in the project's `.env`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from azexport_assets.config import unset_variables_message
from azexport_assets.demo.dotenv import dotenv_lines
from azexport_assets.demo.environment import DEMO_CONTAINER
from azexport_assets.demo.instance import prepare_dagster_home
from azexport_assets_tests.test_component import PYPROJECT, WITH_WAREHOUSE

DG = str(Path(sys.executable).parent / "dg")
URL_ENV = "AZURE_STORAGE_ACCOUNT_URL"
SAS_ENV = "AZURE_STORAGE_SAS_TOKEN"

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {{duckdb: crm.duckdb}}
  models:
    people:
      sql: SELECT * FROM crm.people
      primary_key: id
  destinations:
    lake:
      account_url: {{env: AZURE_STORAGE_ACCOUNT_URL}}
      container: {container}
      path_prefix: adhoc
      sas_token: {{env: AZURE_STORAGE_SAS_TOKEN}}
      max_retries: 1
      retry_backoff_seconds: 0.05
  activations:
    people_csv:
      source: people
      destination: lake
      file_name: people
"""

PEOPLE = """
CREATE TABLE people AS
SELECT range AS id,
       CASE WHEN range % 3 = 0 THEN 'Doe, "Jane"' ELSE 'p' || range END AS name,
       CASE WHEN range % 5 = 0 THEN NULL ELSE range * 1.5 END AS score
FROM range(1, 201)
"""


@pytest.fixture
def cli_project(tmp_path: Path, container) -> Path:
    """A user's dg project whose one activation writes `adhoc/people.csv` to `container`."""
    root = tmp_path / "userproject"
    (root / "userexports" / "defs" / "crm").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "userexports" / "__init__.py").write_text("")
    (root / "userexports" / "definitions.py").write_text(WITH_WAREHOUSE)
    defs = DEFS.format(container=container.container_name)
    (root / "userexports" / "defs" / "crm" / "defs.yaml").write_text(defs)
    con = duckdb.connect(str(root / "crm.duckdb"))
    try:
        con.execute(PEOPLE)
    finally:
        con.close()
    return root


def write_env(root: Path, **values: str) -> None:
    lines = [f"AZEXPORT_WAREHOUSE={root / 'warehouse.duckdb'}"]
    lines += [f"{name}={value}" for name, value in values.items()]
    (root / ".env").write_text("\n".join(lines) + "\n")


def dg_launch(root: Path, tmp_path: Path, job: str) -> subprocess.CompletedProcess[str]:
    """`dg launch --job <job>` in the project root; the destination's variables and the
    warehouse are not in the process's environment, only in the project's .env."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in (URL_ENV, SAS_ENV, "AZEXPORT_WAREHOUSE") and not k.startswith("AZEXPORT_TEST")
    }
    env.update(
        VIRTUAL_ENV=sys.prefix,
        DAGSTER_HOME=str(prepare_dagster_home(tmp_path / "dagster_home")),
        NO_COLOR="1",
    )
    return subprocess.run(
        [DG, "launch", "--job", job],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_launch_reads_the_destination_from_env_file_and_exports(
    cli_project, tmp_path, azurite, container, sas_token
):
    write_env(cli_project, **{URL_ENV: azurite.account_url, SAS_ENV: sas_token})
    done = dg_launch(cli_project, tmp_path, "activate_people_csv")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    assert sas_token not in output

    blob = container.download_blob("adhoc/people.csv").readall().decode()
    exported = list(csv.reader(io.StringIO(blob)))
    assert exported[0] == ["id", "name", "score"]
    con = duckdb.connect(str(cli_project / "crm.duckdb"), read_only=True)
    try:
        source = con.execute("SELECT id, name, score FROM people ORDER BY id").fetchall()
    finally:
        con.close()
    as_text = [[str(i), name, "" if score is None else f"{score:.1f}"] for i, name, score in source]
    assert sorted(exported[1:], key=lambda r: int(r[0])) == as_text
    assert ["3", 'Doe, "Jane"', "4.5"] in exported and ["5", "p5", ""] in exported


# Lines of the output that name an exception class: `module.Class: message`.
EXCEPTION_LINE = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?(?:[A-Z]\w*(?:Error|Exception)|Failure): ")


def assert_one_line_failure(output: str, line: str) -> None:
    """The run failed with `line`, and with nothing else that reads as an error of ours."""
    assert line in output, output[-3000:]
    assert "Traceback (most recent call last)" not in output
    assert "The above exception" not in output
    assert "DagsterInvalidConfigError" not in output and "PostProcessingError" not in output
    errors = {m.strip() for m in output.splitlines() if EXCEPTION_LINE.match(m)}
    assert errors == {f"dagster._core.definitions.events.Failure: {line}"}, errors
    # The step that failed is the first one that needs the destination, before any export.
    assert 'Execution of step "activations__people_csv__people_csv_delta" failed.' in output


def test_an_unset_secret_fails_the_run_with_one_line_naming_it(
    cli_project, tmp_path, azurite, container
):
    write_env(cli_project, **{URL_ENV: azurite.account_url})
    done = dg_launch(cli_project, tmp_path, "activate_people_csv")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    line = (
        "destination 'lake': environment variable AZURE_STORAGE_SAS_TOKEN is not set; set it "
        "or add it to .env in the project root (the folder you run dg or dagster from)"
    )
    assert line == unset_variables_message("lake", [SAS_ENV])
    assert_one_line_failure(output, line)
    assert not list(container.list_blobs())


def test_an_unset_account_url_is_named_and_the_secret_value_never_shown(
    cli_project, tmp_path, azurite, container, sas_token
):
    write_env(cli_project, **{SAS_ENV: sas_token})
    done = dg_launch(cli_project, tmp_path, "activate_people_csv")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert_one_line_failure(output, unset_variables_message("lake", [URL_ENV]))
    assert "environment variable AZURE_STORAGE_ACCOUNT_URL is not set" in output
    assert sas_token not in output
    assert sas_token.split("sig=")[-1] not in output
    assert not list(container.list_blobs())


def test_the_message_names_every_unset_variable():
    assert unset_variables_message("lake", ["A_URL", "A_SAS"]) == (
        "destination 'lake': environment variables A_URL and A_SAS are not set; set them or "
        "add them to .env in the project root (the folder you run dg or dagster from)"
    )


def test_demo_dotenv_writes_working_variables_for_the_demos_azurite(azurite, blob_service):
    with contextlib.suppress(ResourceExistsError):
        blob_service.create_container(DEMO_CONTAINER)
    lines = dotenv_lines(azurite.port)
    values = dict(line.split("=", 1) for line in lines if not line.startswith("#"))
    assert set(values) == {URL_ENV, SAS_ENV, "AZEXPORT_WAREHOUSE", "DAGSTER_HOME"}
    assert values[URL_ENV] == azurite.account_url
    assert all(Path(values[k]).is_absolute() for k in ("AZEXPORT_WAREHOUSE", "DAGSTER_HOME"))
    # The SAS writes and reads the demo's container, as an export does.
    client = ContainerClient(values[URL_ENV], DEMO_CONTAINER, credential=values[SAS_ENV])
    client.upload_blob("dotenv-check.txt", b"ok", overwrite=True)
    assert client.download_blob("dotenv-check.txt").readall() == b"ok"
