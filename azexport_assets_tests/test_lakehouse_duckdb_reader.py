"""A reader we did not write: DuckDB's own `delta` extension (DuckDB 1.5.5, the lake
environment's extension wheels) reads the Delta table an activation keeps, straight from the
container (Azurite, through the azure extension and a secret), after each sync mode and after
a delete: every row and type as the model has them, and the previous version through time
travel."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pytest

from azexport_assets.demo.azurite import DEV_ACCOUNT, DEV_KEY, Azurite
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


def table_uri(kit: ProjectKit) -> str:
    return f"az://{kit.container.container_name}/lake/people"


def read(
    table: str, azurite: Azurite, version: int | None = None
) -> tuple[list[tuple], list[tuple]]:
    """The table as DuckDB's delta extension reads it from the container."""
    con = duckdb.connect(
        config={"extension_directory": str(install_extensions(["delta", "azure"]))}
    )
    try:
        con.execute("LOAD delta")
        con.execute("LOAD azure")
        con.execute("SET TimeZone = 'UTC'")
        blob_endpoint = f"http://127.0.0.1:{azurite.port}/{DEV_ACCOUNT}"
        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={blob_endpoint};"
        )
        con.execute(f"CREATE SECRET azurite (TYPE azure, CONNECTION_STRING '{connection}')")
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


def test_duckdb_reads_every_version_exactly(project: ProjectKit, azurite, monkeypatch) -> None:
    # The delta extension reaches a storage emulator on its default port unless told.
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", f"http://127.0.0.1:{azurite.port}")
    project.source_sql(SOURCE)
    project.write_defs(DEFS)
    assert project.run("people_lake").success
    table = table_uri(project)
    types, rows = read(table, azurite)
    assert types == TYPES
    assert rows == FIRST

    project.source_sql(
        "UPDATE people SET name = 'Ann B.' WHERE id = 1",
        "DELETE FROM people WHERE id = 2",
        "INSERT INTO people VALUES (4, 'Dee', NULL, NULL, NULL, NULL, ['d'])",
    )
    assert project.run("people_lake").success
    types, rows = read(table, azurite)
    assert types == TYPES
    assert rows == [
        (1, "Ann B.", *FIRST[0][2:]),
        FIRST[2],
        (4, "Dee", None, None, None, None, ["d"]),
    ]
    # Time travel with DuckDB too: version 0 is the first state.
    assert read(table, azurite, version=0)[1] == FIRST
