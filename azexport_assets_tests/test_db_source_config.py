"""Postgres and lake sources: their configuration is checked at load, with the file, line,
source and field, and a connection string written in the YAML is refused without being
repeated. (Reading them is tested in test_db_sources.py, in the lake environment.)"""

from __future__ import annotations

import pytest

from azexport_assets.config import ConfigError
from azexport_assets_tests import test_config_errors
from azexport_assets_tests.test_config_errors import BASE, FILE, load

project_dir = test_config_errors.project_dir  # the fixture: a project folder with crm.duckdb

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
            ["source 'crm'", "field 'tables.0'", "not a table name"],
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
