"""`format: delta` through real Dagster runs on Azurite: each sync mode as a table operation,
read back with readers we did not write (deltalake, Polars), time travel, exact types,
exactly-once commits, and the run metadata."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from azexport_assets.asset_keys import export_key
from azexport_assets.delta import baseline_info
from azexport_assets.demo.azurite import DEV_ACCOUNT, DEV_KEY
from azexport_assets.demo.runs import run_exports
from azexport_assets_tests.project_kit import ProjectKit, export_metadata

SOURCE = """
CREATE TABLE people AS
SELECT * FROM (VALUES
    (1, 'Ann', 'ann@x.io', 10.50, DATE '1990-01-02', TIMESTAMP '2025-01-01 10:00:00.123456',
     TIMESTAMPTZ '2025-01-01 10:00:00+02', ['a', 'b'], {'city': 'Lyon', 'zip': 69001}, 'a'),
    (2, 'Bob', 'bob@x.io', 20.00, NULL, NULL, NULL, [], NULL, 'b'),
    (3, 'Cid', NULL, NULL, DATE '2000-02-29', TIMESTAMP '1999-12-31 23:59:59',
     TIMESTAMPTZ '1999-12-31 23:59:59+00', NULL, {'city': NULL, 'zip': NULL}, 'c'),
    (4, 'Dee', 'dee@x.io', 40.25, DATE '2024-04-14', TIMESTAMP '2024-04-14 00:00:00',
     TIMESTAMPTZ '2024-04-14 00:00:00-05', [NULL], {'city': 'Nice', 'zip': 6000}, 'd')
) AS t(id, name, email, score, born, seen, seen_tz, tags, address, internal)
"""

MODEL = """
models:
  people:
    sql: >-
      SELECT id::BIGINT AS id, name, email, score::DECIMAL(10,2) AS score, born, seen,
      seen_tz, tags, address, internal FROM src.people
    primary_key: id
"""


def activation(mode: str, run_type: str = "full_then_delta", extra: str = "") -> str:
    return (
        MODEL
        + f"""
activations:
  people_lake:
    source: people
    destination: lake
    file_name: lake/people
    format: delta
    run_type: {run_type}
    sync_mode: {mode}
    mapping:
      id: Customer ID
      name: Name
      email: E-mail
      score: Score
      born: Born
      seen: Seen
      seen_tz: Seen TZ
      tags: Tags
      address: Address
{extra}"""
    )


@pytest.fixture(autouse=True)
def _emulator_endpoint(azurite, monkeypatch) -> None:
    """Readers reach Azurite the way its documentation tells consumers to."""
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", f"http://127.0.0.1:{azurite.port}")


def storage_options(kit: ProjectKit, azurite) -> dict[str, str]:
    return {
        "azure_storage_use_emulator": "true",
        "account_name": DEV_ACCOUNT,
        "account_key": DEV_KEY,
        "allow_http": "true",
    }


def table_uri(kit: ProjectKit) -> str:
    return f"az://{kit.container.container_name}/lake/people"


def open_table(kit: ProjectKit, azurite, version: int | None = None) -> DeltaTable:
    return DeltaTable(
        table_uri(kit), version=version, storage_options=storage_options(kit, azurite)
    )


def rows_by_key(table: DeltaTable) -> dict[int, dict]:
    rows = table.to_pyarrow_table().to_pylist()
    return {r["Customer ID"]: r for r in rows}


def polars_rows(kit: ProjectKit, azurite, version: int | None = None) -> list[dict]:
    frame = pl.read_delta(
        table_uri(kit), version=version, storage_options=storage_options(kit, azurite)
    )
    return frame.sort("Customer ID").to_dicts()


UTC = dt.timezone.utc
EXPECTED_FIRST = {
    1: {
        "Customer ID": 1,
        "Name": "Ann",
        "E-mail": "ann@x.io",
        "Score": Decimal("10.50"),
        "Born": dt.date(1990, 1, 2),
        "Seen": dt.datetime(2025, 1, 1, 10, 0, 0, 123456),
        "Seen TZ": dt.datetime(2025, 1, 1, 8, 0, tzinfo=UTC),
        "Tags": ["a", "b"],
        "Address": {"city": "Lyon", "zip": 69001},
    },
    2: {
        "Customer ID": 2,
        "Name": "Bob",
        "E-mail": "bob@x.io",
        "Score": Decimal("20.00"),
        "Born": None,
        "Seen": None,
        "Seen TZ": None,
        "Tags": [],
        "Address": None,
    },
    3: {
        "Customer ID": 3,
        "Name": "Cid",
        "E-mail": None,
        "Score": None,
        "Born": dt.date(2000, 2, 29),
        "Seen": dt.datetime(1999, 12, 31, 23, 59, 59),
        "Seen TZ": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        "Tags": None,
        "Address": {"city": None, "zip": None},
    },
    4: {
        "Customer ID": 4,
        "Name": "Dee",
        "E-mail": "dee@x.io",
        "Score": Decimal("40.25"),
        "Born": dt.date(2024, 4, 14),
        "Seen": dt.datetime(2024, 4, 14),
        "Seen TZ": dt.datetime(2024, 4, 14, 5, 0, tzinfo=UTC),
        "Tags": [None],
        "Address": {"city": "Nice", "zip": 6000},
    },
}

EXPECTED_SCHEMA = [
    ("Customer ID", "long"),
    ("Name", "string"),
    ("E-mail", "string"),
    ("Score", "decimal(10,2)"),
    ("Born", "date"),
    ("Seen", "timestamp_ntz"),
    ("Seen TZ", "timestamp"),
    ("Tags", "array<string>"),
    ("Address", "struct<city: string, zip: integer>"),
]


def normalise(row: dict) -> dict:
    """Time zone objects differ between readers (UTC vs ZoneInfo('UTC')): compare instants."""
    out = dict(row)
    if out.get("Seen TZ") is not None:
        out["Seen TZ"] = out["Seen TZ"].astimezone(UTC)
    return out


def mutate(kit: ProjectKit) -> None:
    kit.source_sql(
        "INSERT INTO people VALUES (5, 'Eve', 'eve@x.io', 50, NULL, NULL, NULL, ['e'], NULL, 'e')",
        "UPDATE people SET name = 'Ann B.' WHERE id = 1",  # updated
        "UPDATE people SET internal = 'zz' WHERE id = 2",  # not exported: no change
        "DELETE FROM people WHERE id = 3",  # removed
        "UPDATE people SET email = NULL WHERE id = 4",  # value to NULL: updated
    )


def expected_after_mutation(mode: str) -> dict[int, dict]:
    rows = {k: dict(v) for k, v in EXPECTED_FIRST.items()}
    new = {
        "Customer ID": 5,
        "Name": "Eve",
        "E-mail": "eve@x.io",
        "Score": Decimal("50.00"),
        "Born": None,
        "Seen": None,
        "Seen TZ": None,
        "Tags": ["e"],
        "Address": None,
    }
    rows[5] = new
    if mode in ("upsert", "difference"):
        rows[1]["Name"] = "Ann B."
        rows[4]["E-mail"] = None
    if mode == "difference":
        del rows[3]
    return rows


def check_schema(table: DeltaTable) -> None:
    from azexport_assets.lakehouse import table_schema

    assert table_schema(table) == EXPECTED_SCHEMA
    arrow = pa.schema(table.schema().to_arrow())
    assert arrow.field("Score").type == pa.decimal128(10, 2)
    assert arrow.field("Seen").type == pa.timestamp("us")
    assert arrow.field("Seen TZ").type == pa.timestamp("us", tz="UTC")
    assert arrow.field("Born").type == pa.date32()


@pytest.mark.parametrize("mode", ["upsert", "insert", "difference"])
def test_sync_modes_keep_the_table(project: ProjectKit, azurite, mode: str) -> None:
    project.source_sql(SOURCE)
    project.write_defs(activation(mode))
    first = project.run("people_lake")
    assert first.success
    table = open_table(project, azurite)
    assert table.version() == 0
    check_schema(table)
    got = {k: normalise(v) for k, v in rows_by_key(table).items()}
    assert got == EXPECTED_FIRST
    assert [normalise(r) for r in polars_rows(project, azurite)] == [
        EXPECTED_FIRST[k] for k in sorted(EXPECTED_FIRST)
    ]
    meta = export_metadata(first, "people_lake")
    assert meta["delta_version"] == 0
    assert meta["operation"] == "overwrite"
    assert meta["rows_inserted"] == 4
    assert meta["table_url"] == (
        f"{azurite.account_url}/{project.container.container_name}/lake/people"
    )
    schema = meta["dagster/column_schema"]
    assert [(c.name, c.type) for c in schema.columns] == EXPECTED_SCHEMA

    mutate(project)
    second = project.run("people_lake")
    assert second.success
    table = open_table(project, azurite)
    assert table.version() == 1
    expected = expected_after_mutation(mode)
    assert {k: normalise(v) for k, v in rows_by_key(table).items()} == expected
    assert [normalise(r) for r in polars_rows(project, azurite)] == [
        expected[k] for k in sorted(expected)
    ]
    meta = export_metadata(second, "people_lake")
    assert meta["operation"] == "merge"
    assert meta["delta_version"] == 1
    assert meta["rows_inserted"] == 1
    assert meta["rows_updated"] == (2 if mode != "insert" else 0)
    assert meta["rows_deleted"] == (1 if mode == "difference" else 0)
    # Time travel: the previous version is the previous state, for both readers.
    previous = open_table(project, azurite, version=0)
    assert {k: normalise(v) for k, v in rows_by_key(previous).items()} == EXPECTED_FIRST
    assert [normalise(r) for r in polars_rows(project, azurite, version=0)] == [
        EXPECTED_FIRST[k] for k in sorted(EXPECTED_FIRST)
    ]
    # Each commit records the change set as the activation's application transaction.
    con = _warehouse(project)
    try:
        info = baseline_info(con, "people_lake")
    finally:
        con.close()
    assert info is not None and info["rows"] == 4  # the model's rows: 1, 2, 4, 5
    assert table.transaction_version("azexport:people_lake") is not None

    # No change: no new version.
    third = project.run("people_lake")
    assert third.success
    assert open_table(project, azurite).version() == 1
    assert export_metadata(third, "people_lake")["committed"] is False


def _warehouse(kit: ProjectKit):
    import duckdb

    return duckdb.connect(str(kit.warehouse_path), read_only=True)


def test_snapshot_overwrites_each_run(project: ProjectKit, azurite) -> None:
    project.source_sql(SOURCE)
    project.write_defs(activation("snapshot", run_type="full_only"))
    assert project.run("people_lake").success
    mutate(project)
    second = project.run("people_lake")
    assert second.success
    table = open_table(project, azurite)
    assert table.version() == 1
    expected = expected_after_mutation("difference")
    # What `make demo` lists for the run: one line for the table's commit, with its rows.
    (listed,) = run_exports(project.instance, second.run_id)["people_lake"]
    assert "(Delta table, version 1)" in listed.name and listed.bytes is None
    assert listed.rows == len(expected) and listed.url
    assert {k: normalise(v) for k, v in rows_by_key(table).items()} == expected
    history = table.history()
    assert [h["operation"] for h in history][:2] == ["WRITE", "WRITE"]
    assert {k: normalise(v) for k, v in rows_by_key(open_table(project, azurite, 0)).items()} == (
        EXPECTED_FIRST
    )


def test_difference_with_change_data_feed(project: ProjectKit, azurite) -> None:
    project.source_sql(SOURCE)
    project.write_defs(activation("difference", extra="    delta: {change_data_feed: true}\n"))
    assert project.run("people_lake").success
    mutate(project)
    assert project.run("people_lake").success
    table = open_table(project, azurite)
    assert table.metadata().configuration.get("delta.enableChangeDataFeed") == "true"
    feed = pa.table(table.load_cdf(starting_version=1)).to_pylist()
    changes = sorted((r["_change_type"], r["Customer ID"], r["Name"]) for r in feed)
    assert changes == [
        ("delete", 3, "Cid"),
        ("insert", 5, "Eve"),
        ("update_postimage", 1, "Ann B."),
        ("update_postimage", 4, "Dee"),
        ("update_preimage", 1, "Ann"),
        ("update_preimage", 4, "Dee"),
    ]


def test_reexecuted_export_does_not_apply_twice(project: ProjectKit, azurite) -> None:
    """The Delta commit succeeded but the baseline did not advance (the process died in
    between): running the export again finds the change set in the table and only commits
    the baseline."""
    import duckdb

    from azexport_assets.delta import load_change_set

    project.source_sql(SOURCE)
    project.write_defs(activation("upsert"))
    assert project.run("people_lake").success
    mutate(project)
    assert project.run("people_lake").success
    table = open_table(project, azurite)
    assert table.version() == 1
    # Roll the warehouse's state back to "change set computed, not committed": what a crash
    # between the Delta commit and the baseline commit leaves.
    con = duckdb.connect(str(project.warehouse_path))
    try:
        con.execute(
            "UPDATE azexport_state.state__people_lake SET committed = false, "
            "baseline_delta_id = compared_delta_id"
        )
        # The baseline itself must be the old rows again: undo the applied change set.
        con.execute("DELETE FROM azexport_state.baseline__people_lake WHERE c0 IN (1, 4, 5)")
        con.execute(
            "INSERT INTO azexport_state.baseline__people_lake (c0, c1, c2, c3, c4, c5, c6, c7, "
            "c8, h) SELECT id, name, email, score::DECIMAL(10,2), born, seen, seen_tz, tags, "
            "address, 0 FROM (VALUES (1, 'Ann', 'ann@x.io', 10.50, DATE '1990-01-02', "
            "TIMESTAMP '2025-01-01 10:00:00.123456', TIMESTAMPTZ '2025-01-01 10:00:00+02', "
            "['a', 'b'], {'city': 'Lyon', 'zip': 69001}), (4, 'Dee', 'dee@x.io', 40.25, "
            "DATE '2024-04-14', TIMESTAMP '2024-04-14 00:00:00', "
            "TIMESTAMPTZ '2024-04-14 00:00:00-05', [NULL], {'city': 'Nice', 'zip': 6000})) "
            "AS t(id, name, email, score, born, seen, seen_tz, tags, address)"
        )
        change = load_change_set(con, "people_lake")
        assert change is not None and not change.committed
    finally:
        con.close()
    # Only the export, as a re-execution from the UI would.
    job = project.definitions().resolve_job_def("activate_people_lake")
    result = job.execute_in_process(
        instance=project.instance, asset_selection=[export_key("people_lake")]
    )
    assert result.success
    meta = export_metadata(result, "people_lake")
    assert meta["already_applied"] is True
    assert meta["committed"] is False
    assert meta["baseline_advanced"] is True
    table = open_table(project, azurite)
    assert table.version() == 1  # nothing applied twice
    expected = expected_after_mutation("upsert")
    assert {k: normalise(v) for k, v in rows_by_key(table).items()} == expected


def test_table_care_partitions_compacts_and_vacuums(project: ProjectKit, azurite) -> None:
    """partition_by lays the table out by a column; optimize_every compacts after N commits;
    vacuum removes only files no version within the retention reads (0 hours: all of them,
    so the latest version stays readable and older ones are gone)."""
    project.source_sql(SOURCE)
    extra = "    delta: {partition_by: [Name], optimize_every: 3, vacuum_retain_hours: 0}\n"
    project.write_defs(activation("upsert", extra=extra))
    assert project.run("people_lake").success
    table = open_table(project, azurite)
    assert table.metadata().partition_columns == ["Name"]
    names = {b for b in project.blob_names("lake/people/") if b.endswith(".parquet")}
    assert any("/Name=Ann/" in b for b in names)
    for n in range(3):
        # A new row in Zed's partition each time: a new small file there.
        project.source_sql(
            f"INSERT INTO people VALUES ({10 + n}, 'Zed', NULL, NULL, NULL, NULL, NULL, NULL, "
            "NULL, 'x')",
            f"UPDATE people SET email = 'v{n}@x.io' WHERE id = 1",
        )
        result = project.run("people_lake")
        assert result.success
        if n == 1:  # the third commit that wrote rows
            upkeep = export_metadata(result, "people_lake")["table_upkeep"]
            assert any(line.startswith("optimize: ") for line in upkeep), upkeep
    meta = export_metadata(result, "people_lake")
    history = [h["operation"] for h in open_table(project, azurite).history()]
    assert history.count("OPTIMIZE") == 1
    assert any(line.startswith("vacuum:") for line in meta["table_upkeep"])
    table = open_table(project, azurite)
    expected = {k: dict(v) for k, v in EXPECTED_FIRST.items()}
    expected[1]["E-mail"] = "v2@x.io"
    for n in range(3):
        expected[10 + n] = {
            **{k: None for k in EXPECTED_FIRST[1]},
            "Customer ID": 10 + n,
            "Name": "Zed",
        }
    assert {k: normalise(v) for k, v in rows_by_key(table).items()} == expected
    # Only the files the current version reads are left.
    left = {b for b in project.blob_names("lake/people/") if b.endswith(".parquet")}
    current = {u.split("/lake/people/", 1)[1] for u in table.file_uris()}
    assert {b.split("lake/people/", 1)[1] for b in left} == current


def _step_failure(result) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.user_failure_data.description


def test_more_partitions_than_max_partitions_fail_before_the_table_is_written(
    project: ProjectKit, azurite
) -> None:
    """`max_partitions` holds for a Delta table as for files: a first write (overwrite) or a
    merge whose rows fall into more partitions fails before delta-rs writes a file or a commit,
    and the baseline stays, so the run after the limit is raised writes exactly those rows."""
    project.source_sql(SOURCE)
    partitioned = "    delta: {partition_by: [Name]}\n"
    project.write_defs(activation("upsert", extra=partitioned + "    max_partitions: 3\n"))
    result = project.run("people_lake", raise_on_error=False)
    assert not result.success
    assert _step_failure(result) == (
        "activation 'people_lake': partition_by [Name] gives 4 partitions in this run, more "
        "than max_partitions (3); partition by a coarser column (e.g. a month instead of a "
        "day) or raise max_partitions. Nothing was written and the baseline was not advanced."
    )
    assert project.blob_names("lake/people/") == []  # no data file, no _delta_log
    project.write_defs(activation("upsert", extra=partitioned + "    max_partitions: 4\n"))
    assert project.run("people_lake").success
    assert {k: normalise(v) for k, v in rows_by_key(open_table(project, azurite)).items()} == (
        EXPECTED_FIRST
    )
    version = open_table(project, azurite).version()
    blobs = project.blob_names("lake/people/")

    # A merge touching three partitions (two new names, one changed row) over a limit of 2.
    project.source_sql(
        "INSERT INTO people VALUES (5, 'Eve', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'e'), "
        "(6, 'Fay', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'f')",
        "UPDATE people SET email = 'new@x.io' WHERE id = 1",
    )
    project.write_defs(activation("upsert", extra=partitioned + "    max_partitions: 2\n"))
    result = project.run("people_lake", raise_on_error=False)
    assert not result.success
    assert "gives 3 partitions in this run, more than max_partitions (2)" in _step_failure(result)
    assert open_table(project, azurite).version() == version
    assert project.blob_names("lake/people/") == blobs
    project.write_defs(activation("upsert", extra=partitioned + "    max_partitions: 3\n"))
    result = project.run("people_lake")
    assert result.success
    expected = {k: dict(v) for k, v in EXPECTED_FIRST.items()}
    expected[1]["E-mail"] = "new@x.io"
    for key, name in ((5, "Eve"), (6, "Fay")):
        expected[key] = {**{k: None for k in EXPECTED_FIRST[1]}, "Customer ID": key, "Name": name}
    table = open_table(project, azurite)
    assert {k: normalise(v) for k, v in rows_by_key(table).items()} == expected
    assert table.version() == version + 1
