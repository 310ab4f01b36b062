"""Model SQL names sources and models the way DuckDB resolves them: ASCII letters in any case,
every other character exactly. `HSRC.Customers` and `MODELS.People` load, run and draw the
same lineage as their lower-case spelling; a name that differs by a non-ASCII letter (the
Kelvin sign U+212A, which Python's str.lower() would fold to 'k') is still refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from azexport_assets.asset_keys import model_key, source_key
from azexport_assets.components.build import build_definitions
from azexport_assets.config import ConfigError
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource

FILE = "defs/main/defs.yaml"
KELVIN = "\u212a"  # KELVIN SIGN: Python folds it to 'k', DuckDB does not

HEADER = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    hsrc: {duckdb: hsrc.duckdb}
    kunden: {duckdb: hsrc.duckdb}
    visits: {csv: visits.csv}
    kvisits: {csv: visits.csv}
  models:
"""

MODELS = """\
people:
  sql: SELECT id, name FROM HSRC.Customers
  primary_key: id
people_lower:
  sql: SELECT id FROM hsrc.customers
people_again:
  sql: SELECT p.id, p.name, v.visits FROM MODELS.People AS p JOIN Visits AS v USING (id)
  primary_key: id
german:
  sql: SELECT id FROM KUNDEN.CUSTOMERS
"""

SEGMENT = """\
  segments:
    first_people:
      model: people
      filter: id = (SELECT min(id) FROM MODELS.PEOPLE)
"""


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "defs" / "main").mkdir(parents=True)
    con = duckdb.connect(str(root / "hsrc.duckdb"))
    con.execute(
        "CREATE TABLE customers AS SELECT * FROM (VALUES (1, 'Ann'), (2, 'Bob')) t(id, name)"
    )
    con.close()
    (root / "visits.csv").write_text("id,visits\n1,3\n2,5\n")
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(root / "warehouse.duckdb"))
    return root


def write(root: Path, models: str, segments: str = "") -> None:
    text = HEADER + textwrap.indent(models, "    ") + segments
    (root / "defs" / "main" / "defs.yaml").write_text(text, encoding="utf-8")


def load_error(root: Path) -> str:
    with pytest.raises(ConfigError) as error:
        describe_project(load_project(root / "defs", root))
    return str(error.value)


def test_upper_case_names_load_run_and_keep_lineage(project_dir):
    write(project_dir, MODELS, SEGMENT)
    project = load_project(project_dir / "defs", project_dir)
    shape = describe_project(project)
    # Declared names, and one table whatever its spelling.
    assert shape.deps["people"].source_tables == (("hsrc", "customers"),)
    assert shape.deps["people_lower"].source_tables == (("hsrc", "customers"),)
    assert shape.deps["german"].source_tables == (("kunden", "customers"),)
    assert shape.deps["people_again"].models == ("people",)
    assert shape.deps["people_again"].source_tables == (("visits", "visits"),)

    defs = build_definitions(project, shape)
    resources = {WAREHOUSE_KEY: WarehouseResource()}
    graph = dg.Definitions(assets=defs.assets, resources=resources).resolve_asset_graph()
    customers = source_key("hsrc", "customers")
    assert graph.get(model_key("people")).parent_keys == {customers}
    assert graph.get(model_key("people_lower")).parent_keys == {customers}
    assert graph.get(model_key("people_again")).parent_keys == {
        model_key("people"),
        source_key("visits", "visits"),
    }

    result = dg.materialize(defs.assets, resources=resources)
    assert result.success
    con = duckdb.connect(str(project_dir / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT * FROM models.people ORDER BY id").fetchall() == [
            (1, "Ann"),
            (2, "Bob"),
        ]
        assert con.execute("SELECT * FROM models.people_again ORDER BY id").fetchall() == [
            (1, "Ann", 3),
            (2, "Bob", 5),
        ]
        assert con.execute("SELECT id FROM models.german ORDER BY id").fetchall() == [(1,), (2,)]
        assert con.execute("SELECT id, name FROM segments.first_people").fetchall() == [(1, "Ann")]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("sql", "shown"),
    [
        (f"SELECT id FROM {KELVIN}UNDEN.customers", f"{KELVIN}UNDEN.customers"),
        (f"SELECT id FROM {KELVIN}unden.main.customers", f"{KELVIN}unden.main.customers"),
        ("SELECT id FROM models.peop\u0130e", "models.peop\u0130e"),  # dotted capital I
        (f"SELECT id FROM {KELVIN}visits", f"{KELVIN}visits"),  # a file name to DuckDB
    ],
    ids=["kelvin-catalog", "kelvin-catalog-3-part", "dotted-i-model", "kelvin-file-source"],
)
def test_a_name_differing_by_a_non_ascii_letter_is_refused(project_dir, sql, shown):
    write(project_dir, MODELS + f"sneaky:\n  sql: {sql}\n")
    message = load_error(project_dir)
    assert message.startswith(f"{FILE}:20:7: model 'sneaky', field 'sql': "), message
    assert f"reads '{shown}', which is not a declared source or model" in message, message


def test_names_differing_only_in_ascii_case_are_refused(project_dir):
    write(project_dir, MODELS + "People:\n  sql: SELECT 1 AS id\n")
    message = load_error(project_dir)
    assert message.startswith(
        f"{FILE}:19:5: model 'People' differs from model 'people' ({FILE}:9:5) only in letter case;"
    ), message
