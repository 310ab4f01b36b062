"""Postgres and lake sources: their configuration is checked at load, with the file, line,
source and field, and a connection string written in the YAML is refused without being
repeated. (Reading them is tested in test_db_sources.py, in the lake environment.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from azexport_assets.config import ConfigError, ExportFileConfig
from azexport_assets_tests import test_config_errors
from azexport_assets_tests.test_config_errors import BASE, FILE, load

project_dir = test_config_errors.project_dir  # the fixture: a project folder with crm.duckdb

REPO = Path(__file__).resolve().parents[1]
SECRET = "pa55-" + "w0rd-in-the-yaml"


def with_source(source: str) -> str:
    text = BASE.replace("    crm: {duckdb: crm.duckdb}", f"    crm: {source}")
    assert text != BASE
    return text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{postgres: {dsn: 'postgresql://u:" + SECRET + "@db/crm'}}",
            ["source 'crm'", "field 'postgres.dsn'", "{env: VAR}", "never written in the YAML"],
        ),
        (
            "{postgres: {dsn: {env: CRM_DSN}, shema: sales}}",
            ["source 'crm'", "field 'postgres.shema'", "unknown field"],
        ),
        (
            "{postgres: {dsn: {env: CRM_DSN}}, sas_token: {env: X}}",
            ["source 'crm'", "sas_token: only for sources in Azure", "in the dsn"],
        ),
        (
            "{postgres: {dsn: {env: CRM_DSN}}, tables: [people, People]}",
            ["source 'crm'", "'tables' lists People, people more than once"],
        ),
        (
            "{postgres: {dsn: {env: CRM_DSN}}, tables: [sales.people]}",
            ["source 'crm'", "field 'tables.0'", "not a bare name"],
        ),
        (
            "{lake: raw, tables: []}",
            ["source 'crm'", "'tables' is empty"],
        ),
        (
            "{lake: azexport_state}",
            ["source 'crm'", "a schema of this project's own warehouse"],
        ),
        (
            "{duckdb: crm.duckdb, tables: [people]}",
            ["source 'crm'", "'tables' lists the tables of a postgres or lake source"],
        ),
        (
            "{duckdb: crm.duckdb, lake: raw}",
            ["source 'crm'", "give exactly one of", "'lake: <schema>'", "['duckdb', 'lake']"],
        ),
    ],
)
def test_bad_database_source_is_named(project_dir, source, expected):
    with pytest.raises(ConfigError) as error:
        load(project_dir, with_source(source))
    message = str(error.value)
    assert message.startswith(f"{FILE}:"), message
    for part in expected:
        assert part in message, (part, message)
    assert SECRET not in message


def test_lake_source_needs_the_lake_warehouse(project_dir, monkeypatch):
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(project_dir / "warehouse.duckdb"))
    with pytest.raises(ConfigError) as error:
        load(project_dir, with_source("{lake: raw}"))
    message = str(error.value)
    assert message.startswith(f"{FILE}:") and "source 'crm', field 'lake'" in message
    assert "the warehouse is a DuckDB file" in message


def _deploy_example() -> list[dict]:
    """The YAML blocks of docs/deploy.md's worked example for database sources, in order."""
    text = (REPO / "docs" / "deploy.md").read_text()
    section = text.split("### Sources in Postgres and in the lake", 1)[1].split("\n## ", 1)[0]
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", section, re.S)]


def test_the_deploy_example_gets_the_dsn_to_the_code_server_and_the_runs():
    defs, secret, deployment_patch = _deploy_example()
    sources = ExportFileConfig.model_validate(defs["attributes"]).sources
    names = {s.postgres.dsn.env for s in sources.values() if s.postgres is not None}
    assert names == {"CRM_DSN"}
    assert {s.kind for s in sources.values()} == {"postgres", "lake"}
    assert secret["kind"] == "Secret" and set(secret["stringData"]) == names

    # The patch, applied to the shipped values: the deployment keeps its own secrets and loads
    # the new one; the run pods inherit the deployment's configuration.
    shipped = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    (deployment,) = shipped["dagster-user-deployments"]["deployments"]
    (patch,) = deployment_patch["dagster-user-deployments"]["deployments"]
    assert patch["name"] == deployment["name"]
    loaded = [s["name"] for s in patch["envSecrets"]]
    assert loaded[: len(deployment["envSecrets"])] == [s["name"] for s in deployment["envSecrets"]]
    assert secret["metadata"]["name"] in loaded
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
