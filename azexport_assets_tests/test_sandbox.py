"""User SQL stays inside the declared sources: attack shapes are rejected at load with the file,
the object and the field, and the warehouse connection blocks them at run time even when the
load check is bypassed. Legitimate SQL (the demo, file sources, models over models) still runs.

Every attack aims at a real secret file and a real target folder, and tests assert that the
secret never shows up and nothing was written.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from azexport_assets.components import model_assets
from azexport_assets.components.build import build_definitions
from azexport_assets.config import ConfigError
from azexport_assets.demo.data import generate
from azexport_assets.introspect import ModelDeps, ProjectShape, describe_project
from azexport_assets.project import load_project
from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource
from azexport_assets.sandbox import (
    TEMP_DIR_ENV,
    ExportTempDirError,
    export_temp_root,
    process_scratch,
    segment_query,
)
from azexport_assets.warehouse import Warehouse

SECRET = "TOP-SECRET-7f3a"
FILE = "defs/main/defs.yaml"

BASE = """
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {{duckdb: crm.duckdb}}
    orders: {{parquet: orders/*.parquet}}
    visits: {{csv: visits/*.csv}}
  models:
    people:
      sql: SELECT id, name, age FROM crm.people
      primary_key: id
{models}
{segments}
"""


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """crm.duckdb + Parquet orders + CSV visits, a secret outside the sources, a secret next to
    the order files (same folder, not matched by the glob), and a private export temp root."""
    root = tmp_path / "project"
    (root / "defs" / "main").mkdir(parents=True)
    (root / "orders").mkdir()
    (root / "visits").mkdir()
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute(
        "CREATE TABLE people AS SELECT * FROM "
        "(VALUES (1, 'Ann', 31), (2, 'Bob', 45), (3, 'Cy', 28)) t(id, name, age)"
    )
    con.execute(
        "COPY (SELECT 1 AS id, 9.5 AS amount UNION ALL SELECT 2, 20.0) "
        f"TO '{root}/orders/a.parquet'"
    )
    con.execute(f"COPY (SELECT 1 AS id, 4.5 AS amount) TO '{root}/orders/b.parquet'")
    con.close()
    (root / "visits" / "v.csv").write_text("id,visits\n1,3\n2,5\n")
    (tmp_path / "secret.csv").write_text(f"secret\n{SECRET}\n")
    (root / "orders" / "notes.csv").write_text(f"secret\n{SECRET}\n")
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "link.csv").symlink_to(tmp_path / "secret.csv")
    monkeypatch.setenv(TEMP_DIR_ENV, str(tmp_path / "exports"))
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(root / "warehouse.duckdb"))
    return root


def write_defs(root: Path, models: str = "", segments: str = "", extra: str = "") -> None:
    text = BASE.format(
        models=textwrap.indent(textwrap.dedent(models), "    ") if models else "",
        segments="  segments:\n" + textwrap.indent(textwrap.dedent(segments), "    ")
        if segments
        else "",
    )
    (root / "defs" / "main" / "defs.yaml").write_text(text + extra)


def load(root: Path):
    project = load_project(root / "defs", root)
    return project, describe_project(project)


def model_yaml(sql: str, name: str = "evil") -> str:
    # A YAML block scalar keeps every quote and newline of the SQL as written.
    return f"{name}:\n  sql: |-\n" + textwrap.indent(sql, "    ") + "\n"


def segment_yaml(filter_sql: str, name: str = "evil") -> str:
    return f"{name}:\n  model: people\n  filter: |-\n" + textwrap.indent(filter_sql, "    ") + "\n"


def load_error(root: Path) -> str:
    with pytest.raises(ConfigError) as error:
        load(root)
    return str(error.value)


# --------------------------------------------------------------------------- model attacks

SECRET_PATH = "{tmp}/secret.csv"
MODEL_ATTACKS = [
    # file-reading table functions
    ("read_csv", "SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
    ("read_csv-secret", "SELECT * FROM read_csv('{secret}')", "read_csv()"),
    ("read_csv_auto", "SELECT * FROM read_csv_auto('{secret}')", "read_csv_auto()"),
    ("read_parquet", "SELECT * FROM read_parquet('{root}/orders/*.parquet')", "read_parquet()"),
    ("parquet_scan", "SELECT * FROM parquet_scan('{root}/orders/a.parquet')", "parquet_scan()"),
    ("read_json", "SELECT * FROM read_json('{secret}')", "read_json()"),
    ("read_json_objects", "SELECT * FROM read_json_objects('{secret}')", "read_json_objects()"),
    ("read_ndjson", "SELECT * FROM read_ndjson('{secret}')", "read_ndjson()"),
    ("read_text", "SELECT content FROM read_text('/etc/hostname')", "read_text()"),
    ("read_blob", "SELECT content FROM read_blob('{secret}')", "read_blob()"),
    ("glob", "SELECT * FROM glob('/etc/*')", "glob()"),
    ("sniff_csv", "SELECT * FROM sniff_csv('{secret}')", "sniff_csv()"),
    (
        "parquet_metadata",
        "SELECT * FROM parquet_metadata('{root}/orders/a.parquet')",
        "parquet_metadata()",
    ),
    (
        "read_duckdb",
        "SELECT * FROM read_duckdb('{root}/crm.duckdb', table_name => 'people')",
        "read_duckdb()",
    ),
    ("query", "SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", "query()"),
    ("query_table", "SELECT * FROM query_table('crm.people')", "query_table()"),
    ("schema-qualified", "SELECT * FROM main.read_text('/etc/hostname')", "read_text()"),
    (
        "in-scalar-subquery",
        "SELECT (SELECT max(content) FROM read_text('{secret}')) AS s",
        "read_text()",
    ),
    ("in-cte", "WITH s AS (FROM read_csv('{secret}')) SELECT * FROM s", "read_csv()"),
    ("lateral", "SELECT * FROM crm.people, LATERAL read_csv('{secret}')", "read_csv()"),
    # direct file references and globs (DuckDB's replacement scans)
    ("from-etc-passwd", "SELECT * FROM '/etc/passwd'", "'/etc/passwd', which is not a declared"),
    ("from-relative-csv", "SELECT * FROM 'x.csv'", "'x.csv', which is not a declared"),
    ("from-quoted-ident", 'SELECT * FROM "{secret}"', "which is not a declared"),
    ("from-glob", "SELECT * FROM 'orders/*.parquet'", "which is not a declared"),
    ("from-url", "SELECT * FROM 'https://example.com/x.csv'", "which is not a declared"),
    # a CTE name does not cover a file reference outside the CTE's scope
    (
        "cte-scope",
        'SELECT * FROM (WITH "{secret}" AS (SELECT 1) SELECT 1) a, "{secret}" b',
        "which is not a declared",
    ),
    (
        "cte-later-sibling",
        'WITH a AS (FROM "{secret}"), "{secret}" AS (SELECT 1) FROM a',
        "which is not a declared",
    ),
    (
        "cte-self-not-recursive",
        'WITH "{secret}" AS (FROM "{secret}") FROM "{secret}"',
        "which is not a declared",
    ),
    # other statements
    ("copy", "COPY (SELECT 1) TO '{tmp}/out.csv'", "of kind COPY"),
    ("attach", "ATTACH '{tmp}/other.duckdb' AS o", "of kind ATTACH"),
    ("detach", "DETACH crm", "of kind DETACH"),
    ("install", "INSTALL httpfs", "statement of kind"),
    ("load", "LOAD httpfs", "statement of kind"),
    ("pragma", "PRAGMA enable_external_access=true", "statement of kind"),
    ("set", "SET enable_external_access = true", "of kind SET"),
    ("reset", "RESET enable_external_access", "statement of kind"),
    ("call", "CALL pragma_version()", "of kind CALL"),
    (
        "create-secret",
        "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        "of kind CREATE",
    ),
    ("export-database", "EXPORT DATABASE '{tmp}/dump'", "statement of kind"),
    ("describe", "DESCRIBE crm.people", "DESCRIBE/SUMMARIZE/SHOW"),
    ("summarize-subquery", "SELECT * FROM (SUMMARIZE crm.people)", "DESCRIBE/SUMMARIZE/SHOW"),
    # several statements, with or without comments around the break
    ("two-selects", "SELECT 1 AS id; SELECT 2 AS id", "has 2 statements"),
    ("select-then-copy", "SELECT 1 AS id; COPY (SELECT 1) TO '{tmp}/out.csv'", "has 2 statements"),
    (
        "comment-then-attach",
        "SELECT 1 AS id -- harmless\n; ATTACH '{tmp}/o.duckdb'",
        "has 2 statements",
    ),
    ("block-comment", "SELECT 1 AS id /* ; */; SET threads = 1", "has 2 statements"),
    ("unterminated-comment", "SELECT 1 AS id /* COPY", "unterminated /* comment"),
    ("empty", "-- nothing but a comment", "is empty"),
    # tables outside the declared sources and models
    (
        "warehouse-state",
        "SELECT * FROM state.baselines",
        "'state.baselines', which is not a declared",
    ),
    ("python-variable", "SELECT * FROM python_secret", "'python_secret', which is not a declared"),
    ("system-catalog", "SELECT * FROM system.main.duckdb_settings()", "duckdb_settings()"),
]


@pytest.mark.parametrize(
    ("sql", "expected"), [c[1:] for c in MODEL_ATTACKS], ids=[c[0] for c in MODEL_ATTACKS]
)
def test_model_attack_is_rejected_at_load(project_dir, sql, expected):
    sql = sql.format(
        secret=project_dir.parent / "secret.csv", tmp=project_dir.parent, root=project_dir
    )
    write_defs(project_dir, models=model_yaml(sql))
    message = load_error(project_dir)
    assert FILE in message and "model 'evil'" in message and "field 'sql'" in message, message
    assert expected in message, message
    assert SECRET not in message
    assert not (project_dir.parent / "out.csv").exists()


def test_model_attack_in_sql_file_names_that_field(project_dir):
    (project_dir / "defs" / "main" / "evil.sql").write_text(
        "SELECT * FROM read_text('/etc/hostname')"
    )
    write_defs(project_dir, models="evil:\n  sql_file: evil.sql\n")
    message = load_error(project_dir)
    assert "model 'evil', field 'sql_file'" in message and "read_text()" in message


# --------------------------------------------------------------------------- segment attacks

SEGMENT_ATTACKS = [
    ("union-breakout", "1=1) UNION SELECT * FROM read_csv('{secret}') --", "syntax error"),
    (
        "union-models",
        "1=1) UNION ALL SELECT * FROM models.people --",
        "must be one boolean expression",
    ),
    (
        "union-breakout-newline",
        "1=1)\nUNION ALL SELECT 1, 'x', 2\n--",
        "must be one boolean expression",
    ),
    (
        "second-statement",
        "true); COPY (SELECT 1) TO '{tmp}/out.csv'; SELECT (1",
        "adds 2 more statement(s)",
    ),
    (
        "second-statement-comment",
        "true) /* hide */ ; ATTACH '{tmp}/o.duckdb' --",
        "one boolean expression",
    ),
    ("comment-eats-paren", "true) --", "syntax error"),
    ("unterminated-comment", "true /*", "unterminated /* comment"),
    ("order-by", "true) ORDER BY (1", "changes the query"),
    ("group-by", "true) GROUP BY ALL HAVING (true", "changes the query"),
    ("limit", "true) LIMIT (1", "changes the query"),
    ("subquery-reads-file", "id IN (SELECT 1 FROM read_csv('{secret}'))", "read_csv()"),
    ("exists-direct-file", "EXISTS (FROM '{secret}')", "reads '{secret}'"),
    ("subquery-reads-glob", "id IN (SELECT 1 FROM glob('/etc/*'))", "glob()"),
    ("subquery-reads-source", "id IN (SELECT id FROM crm.people)", "reads 'crm.people'"),
    ("subquery-reads-state", "id IN (SELECT 1 FROM state.baselines)", "reads 'state.baselines'"),
    ("describe", "id IN (SELECT 1 FROM (DESCRIBE models.people))", "DESCRIBE/SUMMARIZE/SHOW"),
    ("not-boolean", "age + 1", "must be a boolean expression (it is INTEGER)"),
    ("empty", "   ", "is empty"),
]


@pytest.mark.parametrize(
    ("filter_sql", "expected"),
    [c[1:] for c in SEGMENT_ATTACKS],
    ids=[c[0] for c in SEGMENT_ATTACKS],
)
def test_segment_attack_is_rejected_at_load(project_dir, filter_sql, expected):
    secret = project_dir.parent / "secret.csv"
    filter_sql = filter_sql.format(secret=secret, tmp=project_dir.parent)
    write_defs(project_dir, segments=segment_yaml(filter_sql))
    message = load_error(project_dir)
    assert FILE in message and "segment 'evil'" in message and "field 'filter'" in message, message
    assert expected.format(secret=secret) in message, message
    assert SECRET not in message
    assert not (project_dir.parent / "out.csv").exists()


MAPPING_ATTACK = """\
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
  activations:
    people_csv:
      source: people
      destination: lake
      file_name: people
      mapping:
        'id" FROM read_csv(''/etc/passwd'') --': id
"""


def test_mapping_cannot_inject_sql(project_dir):
    """Mapped names are only ever quoted identifiers; an unknown one is rejected at load."""
    write_defs(project_dir, extra=MAPPING_ATTACK)
    message = load_error(project_dir)
    assert FILE in message and "activation 'people_csv', field 'mapping'" in message, message
    assert "unknown column" in message


# --------------------------------------------------------------------------- legitimate SQL

LEGIT_MODELS = """
orders_by_person:
  primary_key: id
  sql: |-
    -- file sources through their views, a DuckDB source, a CTE and a comment
    WITH o AS (SELECT id, sum(amount) AS total FROM orders GROUP BY id) /* totals */
    SELECT p.id, p.name, o.total, v.visits
    FROM crm.people AS p
    LEFT JOIN o USING (id)
    LEFT JOIN visits AS v USING (id)
big_spenders:
  primary_key: id
  sql: SELECT id, name, total FROM models.orders_by_person WHERE total > 10;
numbers:
  sql: |-
    WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3)
    SELECT n, u.x FROM r, unnest([10, 20]) AS u(x) UNION ALL SELECT range, 0 FROM range(2)
"""

LEGIT_SEGMENTS = """
older:
  model: people
  filter: age > (SELECT avg(age) FROM models.people) -- above the average age
named:
  model: people
  filter: |-
    name IN ('Ann', 'Bob')
    /* a (parenthesis) in a comment */ AND id <> 2
"""


def test_legitimate_sql_validates_and_runs(project_dir):
    write_defs(project_dir, models=LEGIT_MODELS, segments=LEGIT_SEGMENTS)
    project, shape = load(project_dir)
    assert shape.deps["big_spenders"].models == ("orders_by_person",)
    assert set(shape.deps["orders_by_person"].source_tables) == {
        ("crm", "people"),
        ("orders", "orders"),
        ("visits", "visits"),
    }
    result = dg.materialize(
        build_definitions(project, shape).assets,
        resources={WAREHOUSE_KEY: WarehouseResource()},
    )
    assert result.success
    con = duckdb.connect(str(project_dir / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT * FROM models.orders_by_person ORDER BY id").fetchall()
        assert [(r[0], r[1], float(r[2]) if r[2] is not None else None, r[3]) for r in rows] == [
            (1, "Ann", 14.0, 3),
            (2, "Bob", 20.0, 5),
            (3, "Cy", None, None),
        ]
        assert con.execute("SELECT id FROM models.big_spenders ORDER BY id").fetchall() == [
            (1,),
            (2,),
        ]
        assert con.execute("SELECT count(*) FROM models.numbers").fetchall() == [(8,)]
        assert con.execute("SELECT id FROM segments.older").fetchall() == [(2,)]
        assert con.execute("SELECT id FROM segments.named").fetchall() == [(1,)]
    finally:
        con.close()


def test_demo_project_validates_and_runs(tmp_path, monkeypatch):
    """The shipped demo's defs.yaml and customers.sql, on a small copy of the demo data."""
    demo = Path(__file__).parents[1] / "azexport_assets" / "defs" / "demo"
    root = tmp_path / "demo"
    shutil.copytree(demo, root / "defs" / "demo")
    generate(root / ".azexport" / "demo", rows=500)
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(root / "warehouse.duckdb"))
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "http://127.0.0.1:1/devstoreaccount1")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", "sv=unused")
    project, shape = load(root)
    assets = [
        a
        for a in build_definitions(project, shape).assets
        if isinstance(a, dg.AssetsDefinition)
        and all(key.path[0] in ("models", "segments") for key in a.keys)
    ]
    assert dg.materialize(assets, resources={WAREHOUSE_KEY: WarehouseResource()}).success
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM models.customers").fetchall() == [(500,)]
        expected = con.execute(
            "SELECT count(*) FROM models.customers WHERE is_active AND country = 'FR'"
        ).fetchall()
        assert (
            con.execute("SELECT count(*) FROM segments.active_french_customers").fetchall()
            == expected
        )
        assert expected[0][0] > 0
        orders = con.execute("SELECT sum(order_count) FROM models.customers").fetchall()[0][0]
        assert orders == 1500
    finally:
        con.close()


# --------------------------------------------------------------------------- run time


def sandboxed(project_dir: Path):
    project = load_project(project_dir / "defs", project_dir)
    return Warehouse(project_root=project_dir).connect(holder="test", sources=project.sources)


RUNTIME_BLOCKED = [
    ("SELECT * FROM read_csv('{secret}')", "Permission Error"),
    ("SELECT * FROM read_text('/etc/hostname')", "Permission Error"),
    ("SELECT * FROM '{secret}'", "Permission Error"),
    (
        "SELECT * FROM read_csv('{root}/orders/notes.csv')",
        "Permission Error",
    ),  # beside the source files
    ("SELECT * FROM glob('{root}/orders/*')", "Permission Error"),
    ("SELECT * FROM glob('/etc/*')", "Permission Error"),
    ("SELECT * FROM read_blob('{root}/orders/../../secret.csv')", "Permission Error"),
    ("SELECT * FROM read_csv('{tmp}/exports/link.csv')", "Permission Error"),  # symlink out
    ("SELECT * FROM read_csv('https://example.com/x.csv')", "Permission Error"),
    ("COPY (SELECT 1) TO '{tmp}/out.csv'", "Permission Error"),
    ("EXPORT DATABASE '{tmp}/dump'", "Permission Error"),
    (
        "COPY models.x TO '{tmp}/exports-evil/out.csv'",
        "Permission Error",
    ),  # a sibling of the temp root
    ("ATTACH '{tmp}/other.duckdb' AS o", "Permission Error"),
    ("INSTALL httpfs", "Permission Error"),
    ("LOAD httpfs", "Permission Error"),
    ("CREATE PERSISTENT SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", "Permission Error"),
    ("SET enable_external_access = true", "configuration has been locked"),
    ("RESET enable_external_access", "configuration has been locked"),
    ("PRAGMA enable_external_access = true", "configuration has been locked"),
    ("SET allowed_directories = ['/']", "configuration has been locked"),
    ("SET allowed_paths = ['{secret}']", "configuration has been locked"),
    ("SET python_enable_replacements = true", "configuration has been locked"),
    ("SET lock_configuration = false", "configuration has been locked"),
    ("SELECT * FROM python_secret", "does not exist"),  # no Python replacement scans
]


@pytest.mark.parametrize(("sql", "reason"), RUNTIME_BLOCKED)
def test_runtime_connection_blocks_it_without_the_load_check(project_dir, sql, reason):
    write_defs(project_dir)
    python_secret = pa.table({"secret": [SECRET]})  # noqa: F841 - a replacement-scan target
    sql = sql.format(
        secret=project_dir.parent / "secret.csv", tmp=project_dir.parent, root=project_dir
    )
    with sandboxed(project_dir) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS models")
        con.execute("CREATE OR REPLACE TABLE models.x AS SELECT 1 AS id")
        with pytest.raises(duckdb.Error) as error:
            con.execute(sql).fetchall()
        assert reason in str(error.value) and SECRET not in str(error.value)
        # Still sandboxed after the attempt.
        assert con.execute("SELECT current_setting('enable_external_access')").fetchall() == [
            (False,)
        ]
    assert not (project_dir.parent / "out.csv").exists()
    assert not (project_dir.parent / "other.duckdb").exists()


def test_runtime_connection_keeps_what_our_code_needs(project_dir, tmp_path):
    write_defs(project_dir)
    workdir = process_scratch() / "azexport-x"
    workdir.mkdir()
    project = load_project(project_dir / "defs", project_dir)
    with Warehouse(project_root=project_dir).connect(
        holder="test", sources=project.sources, scratch=workdir
    ) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchall() == [(3,)]
        assert con.execute("SELECT count(*) FROM visits").fetchall() == [(2,)]
        assert con.execute("SELECT count(*) FROM crm.people").fetchall() == [(3,)]
        con.execute("CREATE SCHEMA IF NOT EXISTS models")
        con.execute("CREATE OR REPLACE TABLE models.x AS SELECT * FROM orders")
        con.execute(f"COPY models.x TO '{workdir}/x.parquet' (FORMAT parquet)")
        assert con.execute(
            f"SELECT count(*) FROM read_parquet('{workdir}/x.parquet')"
        ).fetchall() == [(3,)]
        cursor = con.cursor()  # the export streams text formats on a cursor
        try:
            assert cursor.execute("SELECT count(*) FROM models.x").fetchall() == [(3,)]
            with pytest.raises(duckdb.Error):
                cursor.execute(f"SELECT * FROM read_csv('{tmp_path}/secret.csv')").fetchall()
        finally:
            cursor.close()
    # The settings belong to that connection's database only: a new connection is unrestricted.
    con = duckdb.connect(str(project_dir / "warehouse.duckdb"))
    try:
        assert con.execute("SELECT current_setting('enable_external_access')").fetchall() == [
            (True,)
        ]
    finally:
        con.close()


def test_runtime_blocks_a_model_that_bypassed_the_load_check(project_dir, monkeypatch):
    """If the parser check were missed (here: switched off), the step still cannot read the
    secret file, and the failure names the model and the field."""
    secret = project_dir.parent / "secret.csv"
    write_defs(project_dir, models=model_yaml(f"SELECT * FROM read_csv('{secret}')"))
    project = load_project(project_dir / "defs", project_dir)
    shape = ProjectShape(deps={m: ModelDeps() for m in project.models})
    monkeypatch.setattr(model_assets, "model_sql", lambda p, n: p.model_sql[n])
    assets = [
        a for a in build_definitions(project, shape).assets if a.key.path == ["models", "evil"]
    ]
    result = dg.materialize(
        assets, resources={WAREHOUSE_KEY: WarehouseResource()}, raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "model 'evil', field 'sql'" in failure.message and "Permission Error" in failure.message
    assert SECRET not in failure.message


SEGMENT_BREAKOUTS = [
    # closes the parenthesis to add rows from a file
    "1=1) UNION ALL SELECT 1, secret, 0 FROM read_csv('{secret}') --",
    # a second statement that writes a file (the first one succeeds)
    "true); COPY (SELECT 'pwned') TO '{target}'; SELECT * FROM models.people WHERE (true",
]


@pytest.mark.parametrize("filter_sql", SEGMENT_BREAKOUTS, ids=["union-read", "copy-write"])
def test_runtime_blocks_a_segment_breakout_that_bypassed_the_load_check(
    project_dir, monkeypatch, filter_sql
):
    """The naive query (the filter pasted into WHERE (...) on one line), run by the step:
    the connection itself refuses the file read and the file write."""
    target = project_dir.parent / "pwned.csv"
    filter_sql = filter_sql.format(secret=project_dir.parent / "secret.csv", target=target)
    write_defs(project_dir, segments=segment_yaml(filter_sql))
    project = load_project(project_dir / "defs", project_dir)
    shape = ProjectShape(deps={"people": ModelDeps(source_tables=(("crm", "people"),))})
    naive = f"SELECT * FROM models.people WHERE ({filter_sql})"
    monkeypatch.setattr(model_assets, "check_segment", lambda p, n: None)
    monkeypatch.setattr(model_assets, "segment_sql", lambda p, n: naive)
    result = dg.materialize(
        build_definitions(project, shape).assets,
        resources={WAREHOUSE_KEY: WarehouseResource()},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "segment 'evil', field 'filter'" in failure.message, failure.message
    assert "Permission Error" in failure.message and SECRET not in failure.message
    assert not target.exists()


def test_segment_query_keeps_the_filter_on_its_own_lines():
    assert segment_query("people", "is_active -- note") == (
        'SELECT * FROM models."people" WHERE (\nis_active -- note\n)'
    )


# --------------------------------------------------------------------------- unicode + temp


@pytest.fixture
def system_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default set-up: no AZEXPORT_TEMP_DIR, the system temp folder (here a test's own),
    and another run's export file in it."""
    folder = tmp_path / "systmp"
    (folder / "x").mkdir(parents=True)
    (folder / "x" / "key.csv").write_text(f"secret\n{SECRET}\n")
    monkeypatch.delenv(TEMP_DIR_ENV, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def kelvin_model(target: Path, also: str = "") -> str:
    # U+212A KELVIN SIGN: Python's lower() folds it to 'k', DuckDB keeps it as is.
    hidden = str(target).replace("/key.csv", "/\u212aey.csv")
    return model_yaml(f'WITH "{hidden}" AS (SELECT 1 AS secret)\nSELECT * FROM "{target}"{also}')


def test_a_cte_named_with_a_non_ascii_letter_does_not_hide_a_file(project_dir, system_temp):
    """With a declared source absent at load (no binding in DuckDB), the parser check alone
    must see that the file read is not the CTE."""
    shutil.rmtree(project_dir / "orders")
    target = system_temp / "x" / "key.csv"
    write_defs(project_dir, models=kelvin_model(target, also=", (SELECT 1 FROM orders)"))
    message = load_error(project_dir)
    assert f"{FILE}:" in message and "model 'evil', field 'sql'" in message
    assert "key.csv" in message and SECRET not in message


def test_names_fold_like_duckdb():
    from azexport_assets.sandbox import ascii_lower, check_select

    assert ascii_lower("KEY_\u212a\u00c9") == "key_\u212a\u00c9"
    # Same name to DuckDB (ASCII folding): the CTE, not a table.
    _, refs = check_select('WITH "Key" AS (SELECT 1) SELECT * FROM "kEY"')
    assert refs.tables == ()
    _, refs = check_select('WITH "\u212aey" AS (SELECT 1) SELECT * FROM "key"')
    assert refs.tables == (("", "", "key"),)


def test_runtime_grants_no_temp_folder_to_model_steps(project_dir, system_temp, monkeypatch):
    """The run-time layer alone: a model step that bypassed the load check cannot read a file
    under the system temp folder, where other runs' export files live."""
    write_defs(project_dir, models=model_yaml("SELECT 1 AS id"))
    with sandboxed(project_dir) as con:
        with pytest.raises(duckdb.Error) as error:
            con.execute(f"SELECT * FROM '{system_temp}/x/key.csv'").fetchall()
        assert "Permission Error" in str(error.value) and SECRET not in str(error.value)
        # Not even the export temp root, nor another process's export folder in it.
        other = export_temp_root() / "run-1-other" / "people.csv"
        other.parent.mkdir(parents=True)
        other.write_text(f"secret\n{SECRET}\n")
        with pytest.raises(duckdb.Error, match="Permission Error"):
            con.execute(f"SELECT * FROM read_csv('{other}')").fetchall()


def test_an_export_step_may_write_only_its_own_folder(project_dir, system_temp):
    write_defs(project_dir)
    own = process_scratch() / "people-abc"
    own.mkdir()
    sibling = process_scratch() / "other-run"
    sibling.mkdir()
    (sibling / "part.csv").write_text(f"secret\n{SECRET}\n")
    with Warehouse(project_root=project_dir).connect(holder="t", scratch=own) as con:
        con.execute(f"COPY (SELECT 42 AS v) TO '{own}/x.parquet' (FORMAT parquet)")
        assert con.execute(f"SELECT v FROM read_parquet('{own}/x.parquet')").fetchall() == [(42,)]
        with pytest.raises(duckdb.Error, match="Permission Error"):
            con.execute(f"SELECT * FROM read_csv('{sibling}/part.csv')").fetchall()
        with pytest.raises(duckdb.Error, match="Permission Error"):
            con.execute(f"COPY (SELECT 1) TO '{sibling}/y.csv'")
    assert not (sibling / "y.csv").exists()


def test_the_default_export_folder_is_private(system_temp):
    root = export_temp_root()
    assert root.parent == system_temp.resolve() and root.name == f"azexport-{os.getuid()}"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert process_scratch().parent == root


def test_a_configured_temp_folder_is_created_when_missing(tmp_path, monkeypatch):
    # An emptyDir or tmpfs mounted at run time: the configured folder does not exist yet.
    wanted = tmp_path / "mounted" / "azexport"
    monkeypatch.setenv(TEMP_DIR_ENV, str(wanted))
    assert export_temp_root() == wanted.resolve()
    assert stat.S_IMODE(wanted.stat().st_mode) == 0o700
    scratch = process_scratch()
    assert scratch.parent == wanted.resolve() and scratch.is_dir()


@pytest.mark.parametrize("where", ["a-file", "a-file/below", "no-such-folder"])
def test_a_temp_folder_that_cannot_be_written_names_the_variable(tmp_path, monkeypatch, where):
    (tmp_path / "a-file").write_text("not a folder")
    value = "/proc/no-such-folder" if where == "no-such-folder" else str(tmp_path / where)
    monkeypatch.setenv(TEMP_DIR_ENV, value)
    reason = {
        "a-file": "it is a file, not a folder",
        "a-file/below": "Not a directory",
        "no-such-folder": "No such file or directory",
    }[where]
    with pytest.raises(ExportTempDirError) as error:
        process_scratch()
    assert str(error.value) == (
        f"{TEMP_DIR_ENV}={value!r}: cannot write export files there ({reason}): set it to a "
        "folder this user may create and write, or unset it for a private folder in the system "
        "temp folder"
    )


def test_a_planted_temp_folder_is_refused(system_temp):
    (system_temp / f"azexport-{os.getuid()}").symlink_to(system_temp / "x")
    with pytest.raises(PermissionError, match=TEMP_DIR_ENV):
        export_temp_root()


def test_an_end_to_end_run_cannot_export_another_runs_file(project_dir, system_temp, monkeypatch):
    """The escape as found, with the load checks switched off: the run-time layer alone stops
    a model step from reading a file under the system temp folder."""
    write_defs(project_dir, models=kelvin_model(system_temp / "x" / "key.csv"))
    project = load_project(project_dir / "defs", project_dir)
    shape = ProjectShape(deps={m: ModelDeps() for m in project.models})
    monkeypatch.setattr(model_assets, "model_sql", lambda p, n: p.model_sql[n])
    assets = [
        a for a in build_definitions(project, shape).assets if a.key.path == ["models", "evil"]
    ]
    result = dg.materialize(
        assets, resources={WAREHOUSE_KEY: WarehouseResource()}, raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].event_specific_data.error
    assert "model 'evil', field 'sql'" in failure.message and "Permission Error" in failure.message
    assert SECRET not in failure.message
