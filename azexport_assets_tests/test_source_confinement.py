"""`AZEXPORT_CONFINE_SOURCES=1` keeps every source under the project root: `..`, absolute
paths, `$VARS` and symlinks that lead outside are refused when the code location loads (file,
line, source and field) and again when a step attaches the source (a symlink swapped in after
the load). Off, the default on a laptop, sources may live anywhere. Remote URLs are not paths
and are left alone."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from azexport_assets.components.build import build_definitions
from azexport_assets.config import ConfigError
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource
from azexport_assets.sandbox import TEMP_DIR_ENV
from azexport_assets.warehouse import CONFINE_ENV, Warehouse, WarehouseConfigError
from azexport_assets.warehouse.confinement import fixed_prefix

FILE = "defs/main/defs.yaml"
SECRET = "OUTSIDE-SECRET-41c9"
REPO = Path(__file__).parents[1]

# The source under test is 'ext', declared on line 5 (its field at column 11).
DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {{duckdb: crm.duckdb}}
    ext: {{{kind}: '{location}'}}
  models:
    people:
      sql: SELECT id, name FROM crm.people
      primary_key: id
    from_ext:
      sql: SELECT * FROM {table}
"""


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with its own data, and a folder beside it holding data it must not reach."""
    root = tmp_path / "project"
    (root / "defs" / "main").mkdir(parents=True)
    (root / "data").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'Ann'), (2, 'Bob')) t(id, name)")
    con.close()
    con = duckdb.connect(str(outside / "secret.duckdb"))
    con.execute(f"CREATE TABLE people AS SELECT 9 AS id, '{SECRET}' AS name")
    con.close()
    (root / "data" / "a.csv").write_text("id,name\n1,Ann\n2,Bob\n")
    (outside / "secret.csv").write_text(f"id,name\n9,{SECRET}\n")
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(root / "warehouse.duckdb"))
    monkeypatch.setenv(CONFINE_ENV, "1")
    # A temp root of its own: the default (the system temp folder) would hold both folders.
    (tmp_path / "exports").mkdir()
    monkeypatch.setenv(TEMP_DIR_ENV, str(tmp_path / "exports"))
    return root


def write(root: Path, kind: str, location: str) -> None:
    table = "ext.people" if kind == "duckdb" else "ext"
    text = DEFS.format(kind=kind, location=location, table=table)
    (root / "defs" / "main" / "defs.yaml").write_text(text)


def load(root: Path):
    project = load_project(root / "defs", root)
    return project, describe_project(project)


def load_error(root: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load(root)
    return str(error.value)


def run_from_ext(project, shape) -> dg.ExecuteInProcessResult:
    assets = [
        a
        for a in build_definitions(project, shape).assets
        if isinstance(a, dg.AssetsDefinition) and a.key.path == ["models", "from_ext"]
    ]
    return dg.materialize(
        assets, resources={WAREHOUSE_KEY: WarehouseResource()}, raise_on_error=False
    )


def rows_of_from_ext(root: Path) -> list[tuple]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT id, name FROM models.from_ext ORDER BY id").fetchall()
    finally:
        con.close()


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The step's error and its causes, as the UI shows them."""
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


# --------------------------------------------------------------------------- at load


def outside_cases(tmp: Path) -> list[tuple[str, str, str, str]]:
    """(kind, location, what to set up, the resolved path the message names)."""
    outside = tmp / "outside"
    return [
        ("duckdb", "../outside/secret.duckdb", "", f"resolves to {outside}/secret.duckdb"),
        ("duckdb", str(outside / "secret.duckdb"), "", f"resolves to {outside}/secret.duckdb"),
        ("duckdb", "$OUTSIDE_DIR/secret.duckdb", "", f"resolves to {outside}/secret.duckdb"),
        ("duckdb", "link.duckdb", "file-link", f"resolves to {outside}/secret.duckdb"),
        ("csv", "../outside/*.csv", "", f"resolves to {outside}"),
        ("csv", "data/../../outside/none/*.csv", "", f"resolves to {outside}/none"),
        ("csv", "linked/*.csv", "dir-link", f"resolves to {outside}"),
        ("csv", "data/**/*.csv", "nested-dir-link", f"matches {outside}/secret.csv"),
        ("csv", "data/*.csv", "file-link-csv", f"matches {outside}/secret.csv"),
    ]


CASE_IDS = [
    "duckdb-dotdot",
    "duckdb-absolute",
    "duckdb-env-var",
    "duckdb-symlink",
    "glob-dotdot",
    "glob-dotdot-no-match",
    "glob-symlinked-folder",
    "glob-match-through-symlinked-subfolder",
    "glob-match-is-a-symlink",
]


def set_up(root: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = root.parent / "outside"
    monkeypatch.setenv("OUTSIDE_DIR", str(outside))
    if how == "file-link":
        (root / "link.duckdb").symlink_to(outside / "secret.duckdb")
    elif how == "dir-link":
        (root / "linked").symlink_to(outside)
    elif how == "nested-dir-link":
        (root / "data" / "more").symlink_to(outside)
    elif how == "file-link-csv":
        (root / "data" / "b.csv").symlink_to(outside / "secret.csv")


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_a_source_outside_the_project_is_refused_at_load(project_dir, monkeypatch, case):
    kind, location, how, resolved = outside_cases(project_dir.parent)[case]
    set_up(project_dir, how, monkeypatch)
    write(project_dir, kind, location)
    message = load_error(project_dir)
    assert message.startswith(
        f"{FILE}:5:11: source 'ext', field '{kind}': '{location}' {resolved} "
        "(with '..' and symlinks resolved), outside the project root "
        f"{os.path.realpath(project_dir)}; with {CONFINE_ENV}=1 every source must live under "
        "the project root"
    ), message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("kind", "location", "how"),
    [
        ("duckdb", "crm.duckdb", ""),
        ("duckdb", "data/../crm.duckdb", ""),
        ("duckdb", "inner.duckdb", "inner-link"),
        ("csv", "data/*.csv", ""),
        ("csv", "./data/../data/a.csv", ""),
        ("csv", "*/a.csv", ""),
    ],
    ids=["plain", "dotdot-inside", "symlink-inside", "glob", "dotdot-file", "wildcard-folder"],
)
def test_sources_inside_the_project_load_and_run(project_dir, kind, location, how):
    if how == "inner-link":
        (project_dir / "inner.duckdb").symlink_to(project_dir / "crm.duckdb")
    write(project_dir, kind, location)
    project, shape = load(project_dir)
    result = run_from_ext(project, shape)
    assert result.success
    assert rows_of_from_ext(project_dir) == [(1, "Ann"), (2, "Bob")]


def test_off_by_default_sources_may_live_anywhere(project_dir, monkeypatch):
    monkeypatch.delenv(CONFINE_ENV)
    write(project_dir, "csv", "../outside/*.csv")
    project, shape = load(project_dir)
    result = run_from_ext(project, shape)
    assert result.success
    assert rows_of_from_ext(project_dir) == [(9, SECRET)]


def test_remote_urls_are_not_confined_here(project_dir):
    from azexport_assets.warehouse.extensions import available_offline

    write(project_dir, "parquet", "az://container/data/*.parquet")
    path = project_dir / "defs" / "main" / "defs.yaml"
    credential = ", account_url: 'https://acct.blob.core.windows.net', sas_token: {env: SAS}"
    path.write_text(path.read_text().replace("*.parquet'", "*.parquet'" + credential, 1))
    assert credential in path.read_text()
    if not available_offline("azure"):  # DuckDB 2.x without extension files: refused for that
        assert "lake environment" in load_error(project_dir)
        return
    project, shape = load(project_dir)  # no ConfigError: remote sources follow their own rules
    assert shape.columns["from_ext"] is None  # nothing local to describe at load


def test_a_value_that_is_neither_on_nor_off_is_an_error(project_dir, monkeypatch):
    monkeypatch.setenv(CONFINE_ENV, "ture")
    write(project_dir, "csv", "data/*.csv")
    with pytest.raises(WarehouseConfigError) as error:
        load(project_dir)
    assert str(error.value).startswith(f"{CONFINE_ENV}='ture' is neither on nor off")


def test_the_deploy_image_turns_it_on():
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    assert f"{CONFINE_ENV}=1" in dockerfile


def test_fixed_prefix_stops_at_the_first_wildcard():
    assert fixed_prefix("/p/data/**/x*.csv") == "/p/data"
    assert fixed_prefix("/p/data/[ab]/x.csv") == "/p/data"
    assert fixed_prefix("/p/data/a?.csv") == "/p/data"
    assert fixed_prefix("/p/data/a.csv") == "/p/data/a.csv"


# --------------------------------------------------------------------------- at run time


def test_a_file_swapped_for_a_symlink_after_load_is_refused_at_run_time(project_dir):
    write(project_dir, "csv", "data/*.csv")
    project, shape = load(project_dir)  # inside: loads
    (project_dir / "data" / "a.csv").unlink()
    (project_dir / "data" / "a.csv").symlink_to(project_dir.parent / "outside" / "secret.csv")
    message = failure_message(run_from_ext(project, shape))
    assert (
        f"source 'ext' (csv): 'data/*.csv' matches {project_dir.parent}/outside/secret.csv "
        "(with '..' and symlinks resolved), outside the project root"
    ) in message, message
    assert SECRET not in message
    assert _no_from_ext(project_dir)


def test_a_duckdb_file_swapped_for_a_symlink_after_load_is_refused_at_run_time(project_dir):
    write(project_dir, "duckdb", "ext.duckdb")
    (project_dir / "crm.duckdb").rename(project_dir / "ext.duckdb")
    write_crm_again(project_dir)
    project, shape = load(project_dir)
    (project_dir / "ext.duckdb").unlink()
    (project_dir / "ext.duckdb").symlink_to(project_dir.parent / "outside" / "secret.duckdb")
    message = failure_message(run_from_ext(project, shape))
    assert (
        f"source 'ext' (duckdb): 'ext.duckdb' resolves to {project_dir.parent}/outside/"
        "secret.duckdb (with '..' and symlinks resolved), outside the project root"
    ) in message, message
    assert _no_from_ext(project_dir)


def write_crm_again(root: Path) -> None:
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute("CREATE TABLE people AS SELECT 1 AS id, 'Ann' AS name")
    con.close()


def _no_from_ext(root: Path) -> bool:
    if not (root / "warehouse.duckdb").exists():
        return True
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        found = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'from_ext'"
        ).fetchall()
        return found == [(0,)]
    finally:
        con.close()


def test_documented_for_users():
    security = (REPO / "docs" / "security.md").read_text()
    section = security.split("## Where sources may live", 1)[1]
    assert CONFINE_ENV in section and "symlink" in section
    assert CONFINE_ENV in (REPO / "README.md").read_text()


def test_a_swap_during_the_step_is_refused_by_duckdb_itself(project_dir):
    """After the check, the connection may read only the resolved files it was given."""
    write(project_dir, "csv", "data/*.csv")
    project, _ = load(project_dir)
    warehouse = Warehouse(project_root=project_dir)
    with warehouse.connect(holder="test", sources={"ext": project.sources["ext"]}) as con:
        assert con.execute("SELECT count(*) FROM ext").fetchall() == [(2,)]
        (project_dir / "data" / "a.csv").unlink()
        (project_dir / "data" / "a.csv").symlink_to(project_dir.parent / "outside" / "secret.csv")
        with pytest.raises(duckdb.Error) as error:
            con.execute("SELECT * FROM ext").fetchall()
    assert "Permission Error" in str(error.value) and SECRET not in str(error.value)


SQL_FILE_DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {{duckdb: crm.duckdb}}
  models:
    people:
      sql_file: '{sql_file}'
      primary_key: id
"""


@pytest.mark.parametrize(
    "sql_file", ["../../../outside/secret.sql", "{outside}/secret.sql", "linked.sql"]
)
def test_a_sql_file_outside_the_project_is_refused_at_load(project_dir, sql_file):
    """Read, a file elsewhere would have its first words quoted back by the parse error."""
    outside = project_dir.parent / "outside"
    (outside / "secret.sql").write_text(f"{SECRET} is not SQL\n")
    (project_dir / "defs" / "main" / "linked.sql").symlink_to(outside / "secret.sql")
    text = SQL_FILE_DEFS.format(sql_file=sql_file.format(outside=outside))
    (project_dir / "defs" / "main" / "defs.yaml").write_text(text)
    message = load_error(project_dir)
    assert message.startswith(f"{FILE}:7:7: model 'people', field 'sql_file': "), message
    assert f"resolves to {os.path.realpath(outside / 'secret.sql')}" in message
    assert f"{CONFINE_ENV}=1 every SQL file must live under the project root" in message
    assert SECRET not in message


def test_a_sql_file_inside_the_project_loads_and_off_it_may_live_anywhere(project_dir, monkeypatch):
    (project_dir / "sql").mkdir()
    (project_dir / "sql" / "people.sql").write_text("SELECT id, name FROM crm.people\n")
    text = SQL_FILE_DEFS.format(sql_file="../../sql/people.sql")
    (project_dir / "defs" / "main" / "defs.yaml").write_text(text)
    project, _ = load(project_dir)
    assert project.model_sql["people"] == "SELECT id, name FROM crm.people\n"

    outside = project_dir.parent / "outside"
    (outside / "people.sql").write_text("SELECT id FROM crm.people\n")
    text = SQL_FILE_DEFS.format(sql_file="../../../outside/people.sql")
    (project_dir / "defs" / "main" / "defs.yaml").write_text(text)
    assert "every SQL file must live under the project root" in load_error(project_dir)
    monkeypatch.delenv(CONFINE_ENV)
    project, _ = load(project_dir)
    assert project.model_sql["people"] == "SELECT id FROM crm.people\n"
