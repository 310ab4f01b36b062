"""A `view` model over file sources (CSV, Parquet) is exported like a table model.

A file source is a temporary view of the step's DuckDB connection; the export streams its
rows from a cursor of that connection, which does not share the connection's temporary views.
The cursor is given them again (`sandbox.sandboxed_cursor`): before, such an export failed
("infinite recursion ... view people" for a model named like its source, "does not exist"
otherwise). The cursor keeps the lock-down: Python variables never become tables there.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import urllib.parse

import duckdb
import pytest

from azexport_assets_tests.project_kit import ProjectKit

ROWS = [(1, "Ada"), (2, "Zoë"), (3, "Grace")]


def write_source(kit: ProjectKit, kind: str) -> str:
    """Two files of `people` in `data/`; the source's YAML line."""
    folder = kit.root / "data"
    folder.mkdir()
    con = duckdb.connect()
    for part, rows in (("a", ROWS[:2]), ("b", ROWS[2:])):
        values = ", ".join(f"({i}, '{name}')" for i, name in rows)
        select = f"SELECT * FROM (VALUES {values}) t(id, name)"
        options = "FORMAT parquet" if kind == "parquet" else "FORMAT csv, HEADER true"
        con.execute(f"COPY ({select}) TO '{folder / f'{part}.{kind}'}' ({options})")
    con.close()
    return f"people: {{{kind}: data/*.{kind}}}"


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("model", ["people", "persons"])
@pytest.mark.parametrize(
    ("options", "file"),
    [
        ("format: csv", "out.csv"),
        ("format: json, sync_mode: upsert, run_type: full_then_delta", "out.json"),
    ],
)
def test_a_view_model_over_file_sources_is_exported(
    project: ProjectKit, kind: str, model: str, options: str, file: str
):
    kit = project
    source = write_source(kit, kind)
    kit.write_defs(
        f"""\
        models:
          {model}: {{sql: "SELECT id, name FROM people", primary_key: id, materialized: view}}
        activations:
          out: {{source: {model}, destination: lake, file_name: out, {options}}}
        """,
        extra_sources=source,
    )
    assert kit.run("out").success
    data = kit.download(file).decode("utf-8")
    if file.endswith(".csv"):
        rows = [(int(r["id"]), r["name"]) for r in csv.DictReader(io.StringIO(data, newline=""))]
    else:
        rows = [(int(r["id"]), r["name"]) for r in json.loads(data)]
    assert sorted(rows) == ROWS


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_partitioned_export_of_a_view_model_reads_the_sources_for_every_partition(
    project: ProjectKit, kind: str
):
    """Every partition's file is written from the same cursor: each holds its own rows."""
    kit = project
    source = write_source(kit, kind)
    kit.write_defs(
        """\
        models:
          persons: {sql: "SELECT id, name FROM people", primary_key: id, materialized: view}
        activations:
          out: {source: persons, destination: lake, file_name: out, partition_by: [name]}
        """,
        extra_sources=source,
    )
    assert kit.run("out").success
    names = kit.blob_names()
    exported = {}
    for name in names:
        data = kit.download(name).decode("utf-8")
        for row in csv.DictReader(io.StringIO(data, newline="")):
            exported[name] = exported.get(name, []) + [(int(row["id"]), row["name"])]
    assert len(exported) == len(ROWS)
    for name, rows in exported.items():
        assert len(rows) == 1
        assert urllib.parse.unquote(name) == f"name={rows[0][1]}/out.csv"
    assert sorted(r for rows in exported.values() for r in rows) == ROWS


LOCKED_DOWN_CURSOR = """
import sys
import duckdb
import pyarrow as pa
from azexport_assets.sandbox import lock_down, sandboxed_cursor

allowed = sys.argv[1]
in_scope = pa.table({"secret": ["s3cr3t"]})  # what a replacement scan would read as a table
con = duckdb.connect()
con.execute(f"CREATE TEMP VIEW people AS SELECT * FROM read_csv(['{allowed}'])")
lock_down(con, files=[allowed])
cursor = sandboxed_cursor(con)
for query in ("SELECT * FROM in_scope", "SELECT * FROM read_csv('/etc/hostname')"):
    try:
        print("read", cursor.execute(query).fetchall())
    except duckdb.Error as error:
        print("refused", type(error).__name__)
print("people", cursor.execute("SELECT id FROM people").fetchall())
"""


def test_the_cursor_keeps_the_lock_down(tmp_path):
    """A cursor is a connection of its own: it starts from the global settings. Python
    variables in scope must not become tables there either, and files stay out of reach."""
    allowed = tmp_path / "a.csv"
    allowed.write_text("id\n1\n")
    # Replacement scans read the script's own variables: run it as a script.
    out = subprocess.run(
        [sys.executable, "-c", LOCKED_DOWN_CURSOR, str(allowed)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["refused CatalogException", "refused PermissionException", "people [(1,)]"]


@pytest.mark.parametrize("mode", ["snapshot", "upsert"])
def test_a_view_model_over_file_sources_is_merged_into_a_delta_table(
    project: ProjectKit, azurite, monkeypatch, mode: str
):
    """`format: delta` reads its rows from a cursor too."""
    from deltalake import DeltaTable

    from azexport_assets_tests.test_lakehouse_e2e import storage_options

    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", f"http://127.0.0.1:{azurite.port}")
    kit = project
    source = write_source(kit, "csv")
    run_type = "full_only" if mode == "snapshot" else "full_then_delta"
    kit.write_defs(
        f"""\
        models:
          people: {{sql: "SELECT id, name FROM people", primary_key: id, materialized: view}}
        activations:
          out: {{source: people, destination: lake, file_name: lake/people, format: delta,
                 sync_mode: {mode}, run_type: {run_type}}}
        """,
        extra_sources=source,
    )
    assert kit.run("out").success
    uri = f"az://{kit.container.container_name}/lake/people"
    table = DeltaTable(uri, storage_options=storage_options(kit, azurite))
    assert sorted((r["id"], r["name"]) for r in table.to_pyarrow_table().to_pylist()) == ROWS
