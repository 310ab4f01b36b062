"""A `csv:` source says how DuckDB reads it: the model step logs the sniffed dialect
(delimiter, quote, escape, header, skipped lines, columns) and warns when the sniffer skips
lines, which are then not read; the code location's load warns too, with file and line."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from azexport_assets.components.build import build_definitions
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource
from azexport_assets.warehouse.csv_dialect import sniff_csv_source

FILE = "defs/main/defs.yaml"

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    visits: {csv: visits/*.csv}
  models:
    visit_counts:
      sql: SELECT id, name, visits FROM visits
      primary_key: id
"""

PREAMBLE = "Exported by CRM on 2025-01-01\nid,name,visits\n1,Ann,3\n2,Bob,5\n"
PLAIN = "id,name,visits\n1,Ann,3\n2,Bob,5\n"


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "defs" / "main").mkdir(parents=True)
    (root / "defs" / "main" / "defs.yaml").write_text(DEFS)
    (root / "visits").mkdir()
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(root / "warehouse.duckdb"))
    return root


def run_model(root: Path) -> tuple[dg.ExecuteInProcessResult, list[tuple[int, str]]]:
    """Load the project, materialize the model; the run's log lines as (level, message)."""
    project = load_project(root / "defs", root)
    shape = describe_project(project)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        build_definitions(project, shape).assets,
        resources={WAREHOUSE_KEY: WarehouseResource()},
        instance=instance,
    )
    logs = [
        (entry.level, entry.user_message)
        for entry in instance.all_logs(result.run_id)
        if entry.dagster_event is None
    ]
    return result, logs


def model_rows(root: Path) -> list[tuple]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT id, name, visits FROM models.visit_counts ORDER BY id"
        ).fetchall()
    finally:
        con.close()


def test_a_skipped_preamble_line_is_logged_and_warned_in_the_model_step(project_dir):
    data = project_dir / "visits" / "a.csv"
    data.write_text(PREAMBLE)
    result, logs = run_model(project_dir)
    assert result.success
    assert model_rows(project_dir) == [(1, "Ann", 3), (2, "Bob", 5)]
    warnings = [message for level, message in logs if level == logging.WARNING]
    assert warnings == [
        f"source 'visits' (csv): DuckDB's CSV sniffer skips the first 1 line(s) of {data}; "
        "those lines are not read. If they hold data (not a title or a comment), fix the "
        "file: a csv source takes no reader options"
    ]
    infos = [message for level, message in logs if level == logging.INFO]
    assert (
        f"source 'visits' (csv): DuckDB reads {data} with delimiter ',', quote none, escape "
        "none, header yes, 1 line(s) skipped before it, 3 column(s): id BIGINT, name VARCHAR, "
        "visits BIGINT"
    ) in infos


def test_the_warning_counts_the_other_files_of_the_glob(project_dir):
    (project_dir / "visits" / "a.csv").write_text(PREAMBLE)
    (project_dir / "visits" / "b.csv").write_text("id,name,visits\n7,Cy,1\n8,Di,2\n")
    with pytest.raises(dg.Failure) as failure:
        run_model(project_dir)
    # b.csv has no preamble, yet its first line would be skipped too, its header lost and its
    # first data row taken for the header (7, Cy gone): the step fails naming it instead.
    assert (
        f"{project_dir / 'visits' / 'b.csv'} starts with '7,Cy,1', not the header of "
        f"{project_dir / 'visits' / 'a.csv'} ('id,name,visits')"
    ) in failure.value.description
    (project_dir / "visits" / "b.csv").write_text(
        "Exported by CRM on 2025-01-02\nid,name,visits\n7,Cy,1\n8,Di,2\n"
    )
    result, logs = run_model(project_dir)
    assert result.success
    assert model_rows(project_dir) == [(1, "Ann", 3), (2, "Bob", 5), (7, "Cy", 1), (8, "Di", 2)]
    warnings = [message for level, message in logs if level == logging.WARNING]
    assert len(warnings) == 1
    assert (
        f"skips the first 1 line(s) of {project_dir / 'visits' / 'a.csv'}, and as many at the "
        "top of each of the other 1 file(s) the glob matches (DuckDB reads every file with "
        "the first one's layout); those lines are not read"
    ) in warnings[0]


def test_a_file_without_preamble_is_logged_without_a_warning(project_dir):
    data = project_dir / "visits" / "a.csv"
    data.write_text('id,name,visits\n1,"Ann, Jr.",3\n2,Bob,5\n')
    result, logs = run_model(project_dir)
    assert result.success
    assert model_rows(project_dir) == [(1, "Ann, Jr.", 3), (2, "Bob", 5)]
    assert [m for level, m in logs if level == logging.WARNING] == []
    assert (
        f"source 'visits' (csv): DuckDB reads {data} with delimiter ',', quote '\"', escape "
        "none, header yes, 0 line(s) skipped before it, 3 column(s): id BIGINT, name VARCHAR, "
        "visits BIGINT"
    ) in [m for level, m in logs if level == logging.INFO]


def test_the_load_warns_with_file_and_line(project_dir, caplog):
    data = project_dir / "visits" / "a.csv"
    data.write_text(PREAMBLE)
    with caplog.at_level(logging.WARNING, logger="azexport_assets.introspect"):
        describe_project(load_project(project_dir / "defs", project_dir))
    assert [r.getMessage() for r in caplog.records] == [
        f"{FILE}:4:14: source 'visits' (csv): DuckDB's CSV sniffer skips the first 1 line(s) "
        f"of {data}; those lines are not read. If they hold data (not a title or a comment), "
        "fix the file: a csv source takes no reader options"
    ]


def test_nothing_to_sniff_without_files(tmp_path):
    con = duckdb.connect()
    try:
        assert sniff_csv_source(con, "visits", []) is None
        assert sniff_csv_source(con, "visits", [str(tmp_path / "missing.csv")]) is None
    finally:
        con.close()
