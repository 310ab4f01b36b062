"""`format: delta` at its edges, through real Dagster runs on Azurite: schema changes in every
sync mode, empty models, odd column names, partition values and types, a table moved or an
activation switched from files. Each test reads the table back and compares rows, or checks
the failure text."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from azexport_assets.asset_keys import delta_key
from azexport_assets_tests.project_kit import ProjectKit, export_metadata
from azexport_assets_tests.test_lakehouse_exactness import (  # noqa: F401
    OPTIONS,
    _emulator_endpoint,  # autouse: readers reach Azurite as its docs tell them
)
from azexport_assets_tests.test_source_confinement import failure_message


def table(kit: ProjectKit, path: str = "lake/t", version: int | None = None) -> DeltaTable:
    return DeltaTable(
        f"az://{kit.container.container_name}/{path}", version=version, storage_options=OPTIONS
    )


def rows(kit: ProjectKit, key: str = "id", path: str = "lake/t") -> list[dict]:
    return sorted(table(kit, path).to_pyarrow_table().to_pylist(), key=lambda r: r[key])


def activation_yaml(
    model_sql: str,
    mode: str,
    *,
    key: str = "id",
    mapping: str = "",
    extra: str = "",
    name: str = "t_lake",
    path: str = "lake/t",
) -> str:
    run_type = "full_only" if mode == "snapshot" else "full_then_delta"
    return f"""
models:
  t:
    sql: >-
      {model_sql}
    primary_key: {key}
activations:
  {name}:
    source: t
    destination: lake
    file_name: {path}
    format: delta
    run_type: {run_type}
    sync_mode: {mode}
{mapping}{extra}"""


def resync(activation: str) -> dict:
    op = "__".join(delta_key(activation).path)
    return {"ops": {op: {"config": {"full_resync": True}}}}


# --------------------------------------------------------------------------- empty models


@pytest.mark.parametrize("mode", ["upsert", "difference", "insert"])
def test_empty_first_run_with_on_empty_skip_then_rows(project: ProjectKit, mode: str) -> None:
    """First run: no rows and on_empty: skip, so no table and no baseline. Second run: the rows
    are written as a whole table (they failed with 'table does not exist' before)."""
    project.source_sql("CREATE TABLE src_t (id INTEGER, v VARCHAR)")
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", mode, extra="    on_empty: skip\n")
    )
    first = project.run("t_lake", raise_on_error=False)
    assert first.success, failure_message(first)
    assert project.blob_names("lake/t/") == []
    project.source_sql("INSERT INTO src_t VALUES (1, 'a'), (2, 'b')")
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project) == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]


@pytest.mark.parametrize("mode", ["upsert", "difference", "snapshot"])
def test_empty_first_run_writes_an_empty_table_then_rows(project: ProjectKit, mode: str) -> None:
    project.source_sql("CREATE TABLE src_t (id INTEGER, v VARCHAR, l INTEGER[])")
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", mode))
    first = project.run("t_lake", raise_on_error=False)
    assert first.success, failure_message(first)
    t = table(project)
    assert t.version() == 0
    assert t.to_pyarrow_table().num_rows == 0
    assert [f.name for f in t.schema().fields] == ["id", "v", "l"]
    project.source_sql("INSERT INTO src_t VALUES (1, 'a', [1]), (2, NULL, NULL)")
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project) == [{"id": 1, "v": "a", "l": [1]}, {"id": 2, "v": None, "l": None}]
    # everything deleted in the model
    project.source_sql("DELETE FROM src_t")
    third = project.run("t_lake", raise_on_error=False)
    assert third.success, failure_message(third)
    if mode in ("difference", "snapshot"):
        assert rows(project) == []
    else:
        assert len(rows(project)) == 2


# --------------------------------------------------------------------------- partitions


def test_partition_values_read_back_exactly(project: ProjectKit) -> None:
    """Partition values with '/', '=', '%', spaces and NULL read back exactly (an empty string
    is stored as a null partition value by the Delta protocol: docs/formats.md)."""
    values = ["a/b", "x=y", "50%", " sp ace ", None, "é", "#?&"]
    inserts = ", ".join(
        f"({i}, {'NULL' if v is None else repr(v)})" for i, v in enumerate(values, 1)
    )
    project.source_sql(f"CREATE TABLE src_t AS SELECT * FROM (VALUES {inserts}) t(id, p)")
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", "upsert", extra="    partition_by: [p]\n")
    )
    first = project.run("t_lake", raise_on_error=False)
    assert first.success, failure_message(first)
    expected = [{"id": i, "p": v} for i, v in enumerate(values, 1)]
    assert rows(project) == expected


def test_partition_values_merge_exactly(project: ProjectKit) -> None:
    """Same, but the odd values arrive by MERGE."""
    project.source_sql("CREATE TABLE src_t AS SELECT 0 AS id, 'z' AS p, 'v' AS v")
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", "difference", extra="    partition_by: [p]\n")
    )
    assert project.run("t_lake").success
    values = ["a/b", "x=y", "50%", " sp ace ", None]
    inserts = ", ".join(
        f"({i}, {'NULL' if v is None else repr(v)}, 'v')" for i, v in enumerate(values, 1)
    )
    project.source_sql(f"INSERT INTO src_t VALUES {inserts}")
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    expected = [{"id": 0, "p": "z", "v": "v"}] + [
        {"id": i, "p": v, "v": "v"} for i, v in enumerate(values, 1)
    ]
    assert rows(project) == expected
    # Update a row in each odd partition, and delete one.
    project.source_sql("UPDATE src_t SET v = 'w' WHERE id > 0", "DELETE FROM src_t WHERE id = 1")
    third = project.run("t_lake", raise_on_error=False)
    assert third.success, failure_message(third)
    expected = [{"id": 0, "p": "z", "v": "v"}] + [
        {"id": i, "p": v, "v": "w"} for i, v in enumerate(values, 1) if i != 1
    ]
    assert rows(project) == expected


# --------------------------------------------------------------------------- column names

# A backtick is refused at load (test_lakehouse_config): delta-rs merges cannot name it.
ODD_NAMES = ["a.b", 'q"t', "Prénom", "sp ace", "semi;colon", "eq=ual", "(par)"]


@pytest.mark.parametrize("mode", ["upsert", "difference"])
def test_odd_destination_names_merge(project: ProjectKit, mode: str) -> None:
    project.source_sql(
        "CREATE TABLE src_t AS SELECT * FROM (VALUES (1, 'a', 10), (2, 'b', 20)) t(id, s, n)"
    )
    mapping = "    mapping:\n" + "".join(
        f"      {src}: {dest!r}\n" if "'" not in dest else f'      {src}: "{dest}"\n'
        for src, dest in (("id", "k.e y"), ("s", "a.b"), ("n", "x;y"))
    )
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", mode, mapping=mapping))
    first = project.run("t_lake", raise_on_error=False)
    assert first.success, failure_message(first)
    assert rows(project, "k.e y") == [
        {"k.e y": 1, "a.b": "a", "x;y": 10},
        {"k.e y": 2, "a.b": "b", "x;y": 20},
    ]
    project.source_sql(
        "UPDATE src_t SET s = 'A' WHERE id = 1", "INSERT INTO src_t VALUES (3, 'c', 30)"
    )
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project, "k.e y") == [
        {"k.e y": 1, "a.b": "A", "x;y": 10},
        {"k.e y": 2, "a.b": "b", "x;y": 20},
        {"k.e y": 3, "a.b": "c", "x;y": 30},
    ]


@pytest.mark.parametrize("dest", ODD_NAMES)
def test_odd_column_name_round_trip_and_merge(project: ProjectKit, dest: str) -> None:
    project.source_sql("CREATE TABLE src_t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, s)")
    quoted = dest.replace("'", "''")
    mapping = f"    mapping:\n      id: id\n      s: '{quoted}'\n"
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert", mapping=mapping))
    first = project.run("t_lake", raise_on_error=False)
    assert first.success, failure_message(first)
    assert rows(project) == [{"id": 1, dest: "a"}, {"id": 2, dest: "b"}]
    project.source_sql("UPDATE src_t SET s = 'A' WHERE id = 1")
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project) == [{"id": 1, dest: "A"}, {"id": 2, dest: "b"}]


def test_dotted_key_name_merge(project: ProjectKit) -> None:
    project.source_sql("CREATE TABLE src_t AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, s)")
    mapping = "    mapping:\n      id: 'k.e y'\n      s: 'a.b'\n"
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "difference", mapping=mapping))
    assert project.run("t_lake").success
    project.source_sql(
        "UPDATE src_t SET s = 'A' WHERE id = 1",
        "INSERT INTO src_t VALUES (3, 'c')",
        "DELETE FROM src_t WHERE id = 2",
    )
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project, "k.e y") == [{"k.e y": 1, "a.b": "A"}, {"k.e y": 3, "a.b": "c"}]


# --------------------------------------------------------------------------- schema changes

BASE = "CREATE TABLE src_t AS SELECT * FROM (VALUES (1, 'a', 10), (2, 'b', 20)) t(id, s, n)"

CHANGES = {
    # name: (model sql of run 2, expected rows of run 2 (model rows), schema names)
    "add": (
        "SELECT id, s, n, n * 2 AS m FROM src.src_t",
        [{"id": 1, "s": "a", "n": 10, "m": 20}, {"id": 2, "s": "b", "n": 20, "m": 40}],
    ),
    "drop": (
        "SELECT id, s FROM src.src_t",
        [{"id": 1, "s": "a"}, {"id": 2, "s": "b"}],
    ),
    "rename": (
        "SELECT id, s, n AS n2 FROM src.src_t",
        [{"id": 1, "s": "a", "n2": 10}, {"id": 2, "s": "b", "n2": 20}],
    ),
    "widen": (
        "SELECT id, s, n::BIGINT AS n FROM src.src_t",
        [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}],
    ),
    "narrow": (
        "SELECT id, s, n::SMALLINT AS n FROM src.src_t",
        [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}],
    ),
    "to_varchar": (
        "SELECT id, s, n::VARCHAR AS n FROM src.src_t",
        [{"id": 1, "s": "a", "n": "10"}, {"id": 2, "s": "b", "n": "20"}],
    ),
    "key_type": (
        "SELECT id::BIGINT AS id, s, n FROM src.src_t",
        [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}],
    ),
}


@pytest.mark.parametrize("mode", ["upsert", "insert", "difference", "snapshot"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_model_schema_change(project: ProjectKit, mode: str, change: str) -> None:
    project.source_sql(BASE)
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", mode))
    assert project.run("t_lake").success
    sql, expected = CHANGES[change]
    project.write_defs(activation_yaml(sql, mode))
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    t = table(project)
    assert [f.name for f in t.schema().fields] == list(expected[0])
    assert rows(project) == expected
    # Then a normal delta on the new schema.
    project.source_sql(
        "INSERT INTO src_t VALUES (3, 'c', 30)", "UPDATE src_t SET s = 'A' WHERE id = 1"
    )
    third = project.run("t_lake", raise_on_error=False)
    assert third.success, failure_message(third)
    got = rows(project)
    assert len(got) == 3
    assert got[0]["s"] == ("a" if mode == "insert" else "A")
    assert got[2]["id"] == 3


@pytest.mark.parametrize("mode", ["upsert", "difference"])
def test_primary_key_change(project: ProjectKit, mode: str) -> None:
    project.source_sql(BASE)
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", mode))
    assert project.run("t_lake").success
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", mode, key="[id, s]"))
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project) == [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}]
    project.source_sql("UPDATE src_t SET s = 'A' WHERE id = 1")  # key (1,'a') gone, (1,'A') new
    third = project.run("t_lake", raise_on_error=False)
    assert third.success, failure_message(third)
    expected = [{"id": 1, "s": "A", "n": 10}, {"id": 2, "s": "b", "n": 20}]
    if mode == "upsert":
        expected.insert(0, {"id": 1, "s": "a", "n": 10})
    assert sorted(rows(project), key=lambda r: (r["id"], r["s"])) == sorted(
        expected, key=lambda r: (r["id"], r["s"])
    )


def test_schema_change_with_change_data_feed(project: ProjectKit) -> None:
    project.source_sql(BASE)
    cdf = "    delta: {change_data_feed: true}\n"
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "difference", extra=cdf))
    assert project.run("t_lake").success
    project.write_defs(
        activation_yaml(
            "SELECT id, s, n::VARCHAR AS n, 1 AS x FROM src.src_t", "difference", extra=cdf
        )
    )
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project) == [
        {"id": 1, "s": "a", "n": "10", "x": 1},
        {"id": 2, "s": "b", "n": "20", "x": 1},
    ]
    project.source_sql("UPDATE src_t SET s = 'A' WHERE id = 1")
    third = project.run("t_lake", raise_on_error=False)
    assert third.success, failure_message(third)
    assert rows(project)[0]["s"] == "A"


# --------------------------------------------------------------------------- partitioning


@pytest.mark.parametrize("mode", ["upsert", "snapshot"])
def test_partition_by_change_with_full_resync(project: ProjectKit, mode: str) -> None:
    project.source_sql(BASE)
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", mode, extra="    partition_by: [s]\n")
    )
    assert project.run("t_lake").success
    assert table(project).metadata().partition_columns == ["s"]
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", mode, extra="    partition_by: [n]\n")
    )
    config = resync("t_lake") if mode != "snapshot" else None
    second = project.run("t_lake", run_config=config, raise_on_error=False)
    assert second.success, failure_message(second)
    t = table(project)
    assert t.metadata().partition_columns == ["n"]
    assert rows(project) == [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}]


@pytest.mark.parametrize("mode", ["upsert", "snapshot"])
def test_removing_partition_by_unpartitions_the_table(project: ProjectKit, mode: str) -> None:
    """partition_by applies when the table is written in full; removing it and writing in full
    leaves an unpartitioned table (delta-rs keeps the old partitioning unless told [])."""
    project.source_sql(BASE)
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", mode, extra="    partition_by: [s]\n")
    )
    assert project.run("t_lake").success
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", mode))
    config = resync("t_lake") if mode != "snapshot" else None
    second = project.run("t_lake", run_config=config, raise_on_error=False)
    assert second.success, failure_message(second)
    assert export_metadata(second, "t_lake")["operation"] == "overwrite"
    assert rows(project) == [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}]
    assert table(project).metadata().partition_columns == []


PART_TYPES = {
    "date": ("DATE '2024-02-29'", "DATE '1900-01-01'"),
    "ts": ("TIMESTAMP '2025-01-01 10:00:00.123456'", "TIMESTAMP '1970-01-01 00:00:00'"),
    "tstz": ("TIMESTAMPTZ '2025-01-01 10:00:00.5+02'", "TIMESTAMPTZ '2000-01-01 00:00:00+00'"),
    "dbl": ("0.1::DOUBLE", "(-1e300)::DOUBLE"),
    "big": ("9223372036854775807::BIGINT", "(-1)::BIGINT"),
    "flag": ("true", "false"),
    "txt": ("'null'", "'NULL'"),
}


@pytest.mark.parametrize("kind", sorted(PART_TYPES))
def test_partition_column_types_read_back_exactly(project: ProjectKit, kind: str) -> None:
    a, b = PART_TYPES[kind]
    project.source_sql(
        f"CREATE TABLE src_t AS SELECT 1 AS id, {a} AS p UNION ALL SELECT 2, {b} "
        "UNION ALL SELECT 3, NULL"
    )
    import duckdb

    con = duckdb.connect(str(project.source_path), read_only=True)
    try:
        expected = con.sql("SELECT * FROM src_t ORDER BY id").to_arrow_table().to_pylist()
    finally:
        con.close()
    project.write_defs(
        activation_yaml("SELECT * FROM src.src_t", "difference", extra="    partition_by: [p]\n")
    )
    first = project.run("t_lake", raise_on_error=False)
    assert first.success, failure_message(first)
    assert rows(project) == expected
    # A merge touching those partitions
    project.source_sql("INSERT INTO src_t SELECT 4, p FROM src_t WHERE id = 1")
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert [r["p"] for r in rows(project)] == [e["p"] for e in expected] + [expected[0]["p"]]


def test_switching_an_activation_from_csv_to_delta(project: ProjectKit) -> None:
    """An activation exported CSV files with full_then_delta; switched to format: delta (its
    baseline says nothing about a table), its first run writes the whole table."""
    project.source_sql(BASE)
    csv = (
        activation_yaml("SELECT * FROM src.src_t", "upsert")
        .replace("    format: delta\n", "    format: csv\n")
        .replace("file_name: lake/t", "file_name: files/t")
    )
    project.write_defs(csv)
    assert project.run("t_lake").success
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert"))
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    meta = export_metadata(second, "t_lake")
    assert project.blob_names("lake/t/") != [], (meta["operation"], meta["committed"])
    assert rows(project) == [{"id": 1, "s": "a", "n": 10}, {"id": 2, "s": "b", "n": 20}]


def test_moving_the_table_path_without_changes(project: ProjectKit) -> None:
    """file_name moved from lake/t to lake/t2, the model's rows unchanged: the new table is
    written in full (not left absent because there were no changes)."""
    project.source_sql(BASE)
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert"))
    assert project.run("t_lake").success
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert", path="lake/t2"))
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    meta = export_metadata(second, "t_lake")
    assert project.blob_names("lake/t2/") != [], (meta["operation"], meta["committed"])
    assert rows(project, path="lake/t2") == [
        {"id": 1, "s": "a", "n": 10},
        {"id": 2, "s": "b", "n": 20},
    ]


def test_moving_the_table_path(project: ProjectKit) -> None:
    """file_name moved, and a row added: the new table holds every row."""
    project.source_sql(BASE)
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert"))
    assert project.run("t_lake").success
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert", path="lake/t2"))
    project.source_sql("INSERT INTO src_t VALUES (3, 'c', 30)")
    second = project.run("t_lake", raise_on_error=False)
    assert second.success, failure_message(second)
    assert rows(project, path="lake/t2") == [
        {"id": 1, "s": "a", "n": 10},
        {"id": 2, "s": "b", "n": 20},
        {"id": 3, "s": "c", "n": 30},
    ]


def test_two_activations_on_one_model_write_their_own_tables(project: ProjectKit) -> None:
    project.source_sql(BASE)
    a = activation_yaml("SELECT * FROM src.src_t", "upsert")
    b = (
        a.split("activations:\n", 1)[1]
        .replace("t_lake:", "t_lake2:")
        .replace("lake/t\n", "lake/t2\n")
        .replace("sync_mode: upsert", "sync_mode: difference")
    )
    project.write_defs(a + b)
    assert project.run("t_lake").success
    assert project.run("t_lake2").success
    project.source_sql("DELETE FROM src_t WHERE id = 1", "INSERT INTO src_t VALUES (3, 'c', 30)")
    assert project.run("t_lake2").success
    assert project.run("t_lake").success
    assert [r["id"] for r in rows(project)] == [1, 2, 3]
    assert [r["id"] for r in rows(project, path="lake/t2")] == [2, 3]


def test_a_table_removed_outside_is_named_and_a_full_resync_writes_it_again(
    project: ProjectKit,
) -> None:
    """The table's blobs deleted by hand: the next merge fails in one line that says so and
    what to do (not 'the next run exports the same changes', which would fail the same way);
    a full resync writes every row again."""
    project.source_sql(BASE)
    project.write_defs(activation_yaml("SELECT * FROM src.src_t", "upsert"))
    assert project.run("t_lake").success
    for name in project.blob_names("lake/t/"):
        project.container.delete_blob(name)
    project.source_sql("INSERT INTO src_t VALUES (3, 'c', 30)")
    failed = project.run("t_lake", raise_on_error=False)
    assert not failed.success
    message = failure_message(failed).strip()
    assert "does not exist, but the baseline says its rows were written there" in message
    assert message.endswith(
        "Run the activation with a full resync to write it again. The baseline was not advanced."
    ), message
    again = project.run("t_lake", run_config=resync("t_lake"), raise_on_error=False)
    assert again.success, failure_message(again)
    assert rows(project) == [
        {"id": 1, "s": "a", "n": 10},
        {"id": 2, "s": "b", "n": 20},
        {"id": 3, "s": "c", "n": 30},
    ]
