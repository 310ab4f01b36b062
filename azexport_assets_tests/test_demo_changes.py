"""The demo's simulated day of CRM changes: the counts it prints are the counts a delta of all
customers exports (real demo data, real DuckDB, real runs on Azurite, blobs read back)."""

from __future__ import annotations

import csv
import io

import dagster as dg
import duckdb
import pytest

from azexport_assets.demo.data import describe_changes, generate, simulate_changes
from azexport_assets.demo.runs import describe_export, export_blobs
from azexport_assets_tests.project_kit import export_metadata

DEFS = """
models:
  customers:
    sql: SELECT * FROM crm.customers
    primary_key: customer_id
activations:
  audit:
    source: customers
    destination: lake
    file_name: audit/customers_{X}
    run_type: full_then_delta
    sync_mode: difference
"""


def rows_of(kit, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(kit.download(name).decode())))


def emails(kit) -> dict[int, str]:
    con = duckdb.connect(str(kit.root / "crm.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT customer_id, email FROM customers").fetchall())
    finally:
        con.close()


@pytest.mark.parametrize(
    "round_number",
    [
        1,  # a departure id (x % 1000 == 7) falls among this round's sign-ups
        100,  # departures (x % 1000 == 700) are among the e-mail changes (x % 200 == 100)
    ],
)
def test_printed_changes_are_the_exported_changes(project, round_number):
    kit = project
    kit.source_sql("CREATE TABLE unused AS SELECT 1 AS x")  # the kit's own source
    generate(kit.root, rows=3_000)
    kit.write_defs(DEFS, extra_sources="crm: {duckdb: crm.duckdb}")
    kit.run("audit")
    before = emails(kit)

    changes = simulate_changes(kit.root, round_number)
    after = emails(kit)
    assert changes["inserted"] == len(after.keys() - before.keys()) == 100
    assert changes["deleted"] == len(before.keys() - after.keys()) >= 3
    changed = {k for k in after.keys() & before.keys() if after[k] != before[k]}
    assert changes["updated"] == len(changed) >= 10

    metadata = export_metadata(kit.run("audit"), "audit")
    exported = (metadata["added"], metadata["updated"], metadata["removed"])
    assert exported == (changes["inserted"], changes["updated"], changes["deleted"])
    files = {f["kind"]: f["blob"] for f in (r.data for r in metadata["files"].records)}
    assert {int(r["customer_id"]) for r in rows_of(kit, files["added"])} == (
        after.keys() - before.keys()
    )
    assert {int(r["customer_id"]) for r in rows_of(kit, files["removed"])} == (
        before.keys() - after.keys()
    )
    updated = {int(r["customer_id"]): r["email"] for r in rows_of(kit, files["updated"])}
    assert updated == {k: after[k] for k in changed}
    assert describe_changes(changes) == (
        f"{changes['updated']:,} customers changed e-mail, 100 signed up, "
        f"{changes['deleted']:,} left (three separate sets of customers)"
    )


def md(**values: object) -> dict[str, dg.MetadataValue]:
    """Export metadata as the export step writes it (`row_count` is `dagster/row_count`)."""
    typed = {
        bool: dg.MetadataValue.bool,
        int: dg.MetadataValue.int,
        str: dg.MetadataValue.text,
    }
    return {
        ("dagster/row_count" if k == "row_count" else k): typed[type(v)](v)
        for k, v in values.items()
    }


def test_describe_export_speaks_of_what_each_mode_wrote():
    snapshot = md(row_count=9, sync_mode="snapshot", snapshot_rows=9, full_export=True)
    assert describe_export(snapshot) == "snapshot of 9 rows"
    first = md(row_count=7, sync_mode="upsert", full_export=True, added=7, updated=0, removed=0)
    assert describe_export(first) == "full export of 7 rows (no earlier export to compare with)"
    delta = {"full_export": False, "added": 2, "updated": 3, "removed": 4}
    upsert = md(row_count=5, sync_mode="upsert", **delta)
    assert describe_export(upsert) == "2 added, 3 updated (upsert: 4 removed not sent)"
    insert = md(row_count=2, sync_mode="insert", **delta)
    assert describe_export(insert) == "2 added (insert: 3 updated, 4 removed not sent)"
    difference = md(row_count=9, sync_mode="difference", **delta)
    assert describe_export(difference) == "2 added, 3 updated, 4 removed"
    nothing = {"full_export": False, "added": 0, "updated": 0, "removed": 0}
    empty = md(row_count=0, sync_mode="difference", **nothing)
    assert describe_export(empty) == "no changes since the last export: nothing written"
    assert export_blobs(empty) == []
