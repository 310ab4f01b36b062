"""A reader we did not write: DuckDB's own `delta` extension (DuckDB 1.5.5, the lake
environment's extension wheels) reads the Delta table an activation keeps, after each sync
mode and after a delete: every row and type as the model has them, and the previous version
through time travel."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from azexport_assets.warehouse.extensions import install_extensions
from azexport_assets_tests.project_kit import ProjectKit

pytestmark = pytest.mark.lake

SOURCE = """
CREATE TABLE people AS SELECT * FROM (VALUES
  (1, 'Ann', 10.50::DECIMAL(10,2), DATE '1990-01-02', TIMESTAMP '2025-01-01 10:00:00.123456',
   TIMESTAMPTZ '2025-01-01 10:00:00+02', ['a', 'b']),
  (2, 'Bob', NULL, NULL, NULL, NULL, []),
  (3, 'Cid', 3.00::DECIMAL(10,2), DATE '2000-02-29', NULL, NULL, NULL)
) AS t(id, name, score, born, seen, seen_tz, tags)
"""

DEFS = """
models:
  people:
    sql: SELECT id::BIGINT AS id, name, score, born, seen, seen_tz, tags FROM src.people
    primary_key: id
activations:
  people_lake:
    source: people
    destination: lake
    file_name: lake/people
    format: delta
    run_type: full_then_delta
    sync_mode: difference
"""


def local_copy(kit: ProjectKit, folder: Path) -> Path:
    """The table's blobs as they are in the container, in a local folder."""
    for name in kit.blob_names("lake/people/"):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(kit.download(name))
    return folder / "lake" / "people"


def read(table: Path, version: int | None = None) -> tuple[list[tuple], list[tuple]]:
    con = duckdb.connect(config={"extension_directory": str(install_extensions(["delta"]))})
    try:
        con.execute("LOAD delta")
        con.execute("SET TimeZone = 'UTC'")
        options = f", version := {version}" if version is not None else ""
        relation = f"delta_scan('{table}'{options})"
        types = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        rows = con.execute(f"SELECT * FROM {relation} ORDER BY 1").fetchall()
        return [(t[0], t[1]) for t in types], rows
    finally:
        con.close()


TYPES = [
    ("id", "BIGINT"),
    ("name", "VARCHAR"),
    ("score", "DECIMAL(10,2)"),
    ("born", "DATE"),
    ("seen", "TIMESTAMP"),
    ("seen_tz", "TIMESTAMP WITH TIME ZONE"),
    ("tags", "VARCHAR[]"),
]
UTC = dt.timezone.utc
FIRST = [
    (
        1,
        "Ann",
        Decimal("10.50"),
        dt.date(1990, 1, 2),
        dt.datetime(2025, 1, 1, 10, 0, 0, 123456),
        dt.datetime(2025, 1, 1, 8, 0, tzinfo=UTC),
        ["a", "b"],
    ),
    (2, "Bob", None, None, None, None, []),
    (3, "Cid", Decimal("3.00"), dt.date(2000, 2, 29), None, None, None),
]


def test_duckdb_reads_every_version_exactly(project: ProjectKit, tmp_path: Path) -> None:
    project.source_sql(SOURCE)
    project.write_defs(DEFS)
    assert project.run("people_lake").success
    types, rows = read(local_copy(project, tmp_path / "v0"))
    assert types == TYPES
    assert rows == FIRST

    project.source_sql(
        "UPDATE people SET name = 'Ann B.' WHERE id = 1",
        "DELETE FROM people WHERE id = 2",
        "INSERT INTO people VALUES (4, 'Dee', NULL, NULL, NULL, NULL, ['d'])",
    )
    assert project.run("people_lake").success
    table = local_copy(project, tmp_path / "v1")
    types, rows = read(table)
    assert types == TYPES
    assert rows == [
        (1, "Ann B.", *FIRST[0][2:]),
        FIRST[2],
        (4, "Dee", None, None, None, None, ["d"]),
    ]
    # Time travel with DuckDB too: version 0 is the first state.
    assert read(table, version=0)[1] == FIRST
