"""Unit tests of the delta engine against a real temp-file DuckDB warehouse."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from azexport_assets.delta import (
    STATE_SCHEMA,
    ChangeSet,
    DeltaSpec,
    KeyViolationError,
    baseline_info,
    change_rows_query,
    commit_baseline,
    compute_change_set,
    export_kinds,
    key_violations,
    load_change_set,
    reset_baseline,
)


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    connection.execute("CREATE SCHEMA segments")
    connection.execute(
        "CREATE TABLE segments.vip (id INTEGER, name VARCHAR, city VARCHAR, score INTEGER)"
    )
    connection.execute(
        "INSERT INTO segments.vip VALUES (1, 'ann', 'oslo', 10), (2, 'bob', 'rome', 20), "
        "(3, 'cid', 'lima', 30)"
    )
    yield connection
    connection.close()


def make_spec(
    activation: str = "vip_crm",
    sync_mode: str = "difference",
    columns: tuple[tuple[str, str], ...] = (("id", "ID"), ("name", "Name"), ("city", "City")),
    primary_key: tuple[str, ...] = ("id",),
    source_table: str = "segments.vip",
    run_type: str | None = None,
) -> DeltaSpec:
    return DeltaSpec(
        activation=activation,
        source_table=source_table,
        primary_key=primary_key,
        columns=columns,
        run_type=run_type or ("full_only" if sync_mode == "snapshot" else "full_then_delta"),
        sync_mode=sync_mode,
    )


def rows(con, spec: DeltaSpec, *kinds: str) -> list[tuple]:
    return con.execute(change_rows_query(spec, kinds)).fetchall()


def run(con, spec: DeltaSpec, delta_id: str, commit: bool = True) -> ChangeSet:
    change = compute_change_set(con, spec, delta_id)
    if commit:
        assert commit_baseline(con, spec.activation, delta_id)
    return change


def counts(change: ChangeSet) -> tuple[int, int, int, int]:
    return change.added, change.updated, change.removed, change.unchanged


# --------------------------------------------------------------------------- basics


def test_first_run_is_full_then_deltas_classify_rows(con):
    spec = make_spec()
    first = compute_change_set(con, spec, "r1")
    assert (first.full, first.reason, first.committed) == (True, "first_run", False)
    assert counts(first) == (3, 0, 0, 0) and first.current_rows == 3 and first.baseline_rows == 0
    assert rows(con, spec, "added") == [(1, "ann", "oslo"), (2, "bob", "rome"), (3, "cid", "lima")]
    assert baseline_info(con, spec.activation) is None
    assert commit_baseline(con, spec.activation, "r1")

    info = baseline_info(con, spec.activation)
    assert info["rows"] == 3 and info["delta_id"] == "r1" and info["fingerprint"]
    assert dt.datetime.fromisoformat(info["committed_at"]).tzinfo is not None

    con.execute("UPDATE segments.vip SET name = 'BOB' WHERE id = 2")
    con.execute("DELETE FROM segments.vip WHERE id = 3")
    con.execute("INSERT INTO segments.vip VALUES (4, 'dan', 'kyiv', 40)")
    second = compute_change_set(con, spec, "r2")
    assert (second.full, second.reason) == (False, "delta")
    assert counts(second) == (1, 1, 1, 1)
    assert (second.current_rows, second.baseline_rows) == (3, 3)
    assert rows(con, spec, "added") == [(4, "dan", "kyiv")]
    assert rows(con, spec, "updated") == [(2, "BOB", "rome")]
    assert rows(con, spec, "removed") == [(3, "cid", "lima")]  # as last exported
    assert rows(con, spec, "added", "updated", "removed") == [
        (2, "BOB", "rome"),
        (3, "cid", "lima"),
        (4, "dan", "kyiv"),
    ]
    assert commit_baseline(con, spec.activation, "r2")
    assert counts(compute_change_set(con, spec, "r3")) == (0, 0, 0, 3)


def test_removed_rows_carry_last_exported_values_not_later_ones(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET city = 'nice' WHERE id = 3")
    compute_change_set(con, spec, "r2")  # failed run: never committed
    con.execute("DELETE FROM segments.vip WHERE id = 3")
    run(con, spec, "r3")
    assert rows(con, spec, "removed") == [(3, "cid", "lima")]


def test_changes_of_failed_runs_are_exported_by_the_next_successful_run(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r2")  # export failed: no commit
    con.execute("INSERT INTO segments.vip VALUES (5, 'eve', 'baku', 50)")
    compute_change_set(con, spec, "r3")  # failed again
    con.execute("DELETE FROM segments.vip WHERE id = 2")
    change = run(con, spec, "r4")
    assert counts(change) == (1, 1, 1, 1)
    assert rows(con, spec, "added") == [(5, "eve", "baku")]
    assert rows(con, spec, "updated") == [(1, "A", "oslo")]
    assert rows(con, spec, "removed") == [(2, "bob", "rome")]


def test_baseline_is_the_snapshot_the_change_set_came_from(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r2")
    # A change that lands between the delta and the end of the export ...
    con.execute("UPDATE segments.vip SET name = 'B' WHERE id = 2")
    assert commit_baseline(con, spec.activation, "r2")
    # ... is not swallowed by the commit: the next run exports it.
    change = compute_change_set(con, spec, "r3")
    assert counts(change) == (0, 1, 0, 2)
    assert rows(con, spec, "updated") == [(2, "B", "rome")]


def test_commit_is_idempotent_and_only_for_the_latest_change_set(con):
    spec = make_spec()
    assert not commit_baseline(con, spec.activation, "nothing-yet")
    compute_change_set(con, spec, "r1")
    compute_change_set(con, spec, "r2")  # replaces r1's pending snapshot
    assert not commit_baseline(con, spec.activation, "r1")
    assert commit_baseline(con, spec.activation, "r2")
    assert not commit_baseline(con, spec.activation, "r2")
    assert baseline_info(con, spec.activation)["delta_id"] == "r2"

    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r3")
    assert commit_baseline(con, spec.activation, "r3")
    assert not commit_baseline(con, spec.activation, "r3")  # a retry must not apply twice
    assert baseline_info(con, spec.activation)["rows"] == 3
    assert counts(compute_change_set(con, spec, "r4")) == (0, 0, 0, 3)


def test_recomputing_replaces_the_uncommitted_change_set(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r2")
    con.execute("UPDATE segments.vip SET name = 'ann' WHERE id = 1")  # reverted
    change = compute_change_set(con, spec, "r3")
    assert counts(change) == (0, 0, 0, 3)
    assert load_change_set(con, spec.activation) == change
    assert rows(con, spec, "added", "updated", "removed") == []


def test_load_change_set_allows_reexport_after_commit(con):
    spec = make_spec()
    assert load_change_set(con, spec.activation) is None
    first = compute_change_set(con, spec, "r1")
    assert load_change_set(con, spec.activation) == first
    commit_baseline(con, spec.activation, "r1")
    reloaded = load_change_set(con, spec.activation)
    assert reloaded.committed and reloaded.full and reloaded.delta_id == "r1"
    assert len(rows(con, spec, "added")) == 3  # the full change set survives its commit

    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r2")
    commit_baseline(con, spec.activation, "r2")
    con.execute("UPDATE segments.vip SET name = 'Z' WHERE id = 1")  # after the commit
    again = load_change_set(con, spec.activation)
    assert again.committed and again.delta_id == "r2" and counts(again) == (0, 1, 0, 2)
    assert rows(con, spec, "updated") == [(1, "A", "oslo")]


# --------------------------------------------------------------------------- identity


def test_activations_on_one_source_are_independent(con):
    crm = make_spec("crm", "difference")
    ads = make_spec("ads", "upsert", columns=(("id", "id"), ("city", "city")))
    run(con, crm, "c1")
    con.execute("UPDATE segments.vip SET city = 'pisa' WHERE id = 1")
    assert compute_change_set(con, ads, "a1").reason == "first_run"
    assert commit_baseline(con, "ads", "a1")
    con.execute("UPDATE segments.vip SET name = 'x' WHERE id = 2")
    crm_change = run(con, crm, "c2")
    ads_change = run(con, ads, "a2")
    assert counts(crm_change) == (0, 2, 0, 1)
    assert rows(con, crm, "updated") == [(1, "ann", "pisa"), (2, "x", "rome")]
    assert counts(ads_change) == (0, 0, 0, 3)  # 'name' is not exported by ads
    assert baseline_info(con, "crm")["delta_id"] == "c2"
    assert baseline_info(con, "ads")["delta_id"] == "a2"


def test_activation_names_differing_only_in_case_do_not_share_state(con):
    lower, upper = make_spec("vip"), make_spec("Vip")
    run(con, lower, "l1")
    assert compute_change_set(con, upper, "u1").reason == "first_run"
    con.execute("DELETE FROM segments.vip WHERE id = 1")
    assert counts(compute_change_set(con, lower, "l2")) == (0, 0, 1, 2)
    assert counts(load_change_set(con, "Vip")) == (3, 0, 0, 0)


def test_composite_key_not_exported(con):
    con.execute("CREATE TABLE segments.orders (shop VARCHAR, n INTEGER, total DECIMAL(10, 2))")
    con.execute("INSERT INTO segments.orders VALUES ('a', 1, 1.00), ('a', 2, 2.00), ('b', 1, 3)")
    spec = make_spec(
        source_table="segments.orders",
        primary_key=("shop", "n"),
        columns=(("total", "Total €"),),
    )
    run(con, spec, "r1")
    assert rows(con, spec, "added") == [(Decimal("1.00"),), (Decimal("2.00"),), (Decimal("3"),)]
    con.execute("UPDATE segments.orders SET total = 9 WHERE shop = 'a' AND n = 2")
    con.execute("DELETE FROM segments.orders WHERE shop = 'b'")
    con.execute("INSERT INTO segments.orders VALUES ('b', 2, 3.00)")  # same n, other shop
    change = run(con, spec, "r2")
    assert counts(change) == (1, 1, 1, 1)
    assert rows(con, spec, "updated") == [(Decimal("9.00"),)]
    assert rows(con, spec, "removed") == [(Decimal("3.00"),)]


def test_null_values_change_to_null_and_back(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET city = NULL WHERE id = 1")
    assert counts(run(con, spec, "r2")) == (0, 1, 0, 2)
    assert rows(con, spec, "updated") == [(1, "ann", None)]
    assert counts(run(con, spec, "r3")) == (0, 0, 0, 3)  # NULL = NULL: no change
    con.execute("UPDATE segments.vip SET city = 'oslo' WHERE id = 1")
    assert counts(run(con, spec, "r4")) == (0, 1, 0, 2)
    assert rows(con, spec, "updated") == [(1, "ann", "oslo")]


def test_delete_then_reinsert(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("DELETE FROM segments.vip WHERE id IN (1, 2)")
    con.execute("INSERT INTO segments.vip VALUES (1, 'ann', 'oslo', 99), (2, 'bob', 'oslo', 20)")
    change = run(con, spec, "r2")
    assert counts(change) == (0, 1, 0, 2)  # same values: no change; other values: updated
    assert rows(con, spec, "updated") == [(2, "bob", "oslo")]


def test_non_exported_column_never_causes_an_update(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET score = score + 1")
    assert counts(run(con, spec, "r2")) == (0, 0, 0, 3)


def test_types_and_exact_comparison(con):
    con.execute(
        "CREATE TABLE segments.typed (id BIGINT, s VARCHAR, d DECIMAL(38, 10), day DATE, "
        "ts TIMESTAMP, flag BOOLEAN, x DOUBLE)"
    )
    con.execute(
        "INSERT INTO segments.typed VALUES "
        "(1, 'a,\"b\"''c\n\td €😀', 1.1000000001, DATE '2024-02-29', "
        " TIMESTAMP '2024-01-01 00:00:00.000001', true, 0.1), "
        "(2, '', 12345678901234567890.1234567890, DATE '0001-01-01', "
        " TIMESTAMP '1970-01-01', false, 'nan'), "
        "(3, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    columns = tuple((c, c.upper()) for c in ("id", "s", "d", "day", "ts", "flag", "x"))
    spec = make_spec(source_table="segments.typed", columns=columns)
    run(con, spec, "r1")
    first = rows(con, spec, "added")
    assert first[0][1] == 'a,"b"\'c\n\td €😀' and first[1][1] == ""
    assert first[0][2] == Decimal("1.1000000001")
    assert run(con, spec, "r2").updated == 0  # NaN and NULLs compare equal to themselves

    # The smallest possible change in each type is an update.
    updates = [
        "s = 'a,\"b\"''c\n\td €😁'",
        "d = 1.1000000002",
        "day = DATE '2024-03-01'",
        "ts = TIMESTAMP '2024-01-01 00:00:00.000002'",
        "flag = false",
        "x = 0.1 + 1e-16",
    ]
    for n, assignment in enumerate(updates):
        con.execute(f"UPDATE segments.typed SET {assignment} WHERE id = 1")
        change = run(con, spec, f"u{n}")
        assert counts(change) == (0, 1, 0, 2), assignment
    con.execute("UPDATE segments.typed SET s = NULL WHERE id = 2")  # '' -> NULL is a change
    assert run(con, spec, "u-null").updated == 1


# --------------------------------------------------------------------------- names


def test_identifiers_are_quoted_everywhere(con):
    con.execute('CREATE SCHEMA "odd ""schema"""')
    con.execute(
        'CREATE TABLE "odd ""schema"""."my table" ("key col" INTEGER, "va""l" VARCHAR, c0 INT)'
    )
    con.execute('INSERT INTO "odd ""schema"""."my table" VALUES (1, \'x\', 5), (2, \'y\', 6)')
    evil = 'x"; DROP TABLE segments.vip; --'
    spec = make_spec(
        activation="Odd_Name",
        source_table='odd "schema".my table',  # raw parts joined by dots; quoted by the engine
        primary_key=("key col",),
        columns=(('va"l', evil), ("c0", "c1"), ("key col", "c0")),
    )
    run(con, spec, "r1")
    cursor = con.execute(change_rows_query(spec, ("added",)))
    assert [d[0] for d in cursor.description] == [evil, "c1", "c0"]
    # ORDER BY uses the key, not a destination column that happens to be called "c0".
    assert cursor.fetchall() == [("x", 5, 1), ("y", 6, 2)]
    con.execute('UPDATE "odd ""schema"""."my table" SET "va""l" = \'z\' WHERE "key col" = 2')
    assert counts(run(con, spec, "r2")) == (0, 1, 0, 1)
    assert con.execute("SELECT count(*) FROM segments.vip").fetchone()[0] == 3


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError, match="identifier"):
        make_spec(activation='x"; --')
    with pytest.raises(ValueError, match="not valid"):
        make_spec(sync_mode="snapshot", run_type="full_then_delta")
    with pytest.raises(ValueError, match="unique"):
        make_spec(columns=(("id", "A"), ("name", "a")))
    with pytest.raises(ValueError, match="primary key"):
        make_spec(primary_key=())
    with pytest.raises(ValueError, match="kinds"):
        change_rows_query(make_spec(), ("added", "x'); DROP TABLE t; --"))
    with pytest.raises(ValueError, match="identifier"):
        commit_baseline(None, 'a"b', "r1")


# --------------------------------------------------------------------------- full exports


def test_mapping_key_type_or_mode_change_forces_a_full_export(con):
    spec = make_spec()
    run(con, spec, "r1")
    changed_specs = [
        make_spec(columns=(("id", "ID"), ("name", "Full name"), ("city", "City"))),
        make_spec(columns=(("id", "ID"), ("city", "City"), ("name", "Name"))),
        make_spec(columns=(("id", "ID"), ("name", "Name"))),
        make_spec(primary_key=("id", "name")),
        make_spec(sync_mode="upsert"),
    ]
    for n, changed in enumerate(changed_specs):
        change = compute_change_set(con, changed, f"m{n}")
        assert (change.full, change.reason, change.added) == (True, "mapping_changed", 3)
        assert change.baseline_rows == 3
    # Going back to the committed mapping before committing is an ordinary delta again.
    assert compute_change_set(con, spec, "back").reason == "delta"

    con.execute("ALTER TABLE segments.vip ALTER city TYPE VARCHAR(10)")  # same type: no change
    assert compute_change_set(con, spec, "same").reason == "delta"
    con.execute("ALTER TABLE segments.vip ALTER id TYPE BIGINT")
    change = compute_change_set(con, spec, "typed")
    assert change.reason == "mapping_changed" and change.full
    assert commit_baseline(con, spec.activation, "typed")
    con.execute("UPDATE segments.vip SET city = 'x' WHERE id = 1")
    assert counts(compute_change_set(con, spec, "after")) == (0, 1, 0, 2)


def test_reset_makes_the_next_run_full_and_voids_the_pending_change_set(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r2")
    reset_baseline(con, spec.activation)
    assert baseline_info(con, spec.activation) is None
    assert load_change_set(con, spec.activation) is None
    assert not commit_baseline(con, spec.activation, "r2")
    change = compute_change_set(con, spec, "r3")
    assert (change.full, change.reason, change.added, change.baseline_rows) == (
        True,
        "resync",
        3,
        0,
    )
    assert commit_baseline(con, spec.activation, "r3")
    assert compute_change_set(con, spec, "r4").reason == "delta"
    reset_baseline(con, "never_ran")
    assert compute_change_set(con, make_spec("never_ran"), "n1").reason == "resync"


def test_full_only_exports_everything_every_time(con):
    spec = make_spec(sync_mode="snapshot")
    first = run(con, spec, "r1")
    assert (first.full, first.reason, first.added) == (True, "full_only", 3)
    con.execute("DELETE FROM segments.vip WHERE id = 1")
    con.execute("INSERT INTO segments.vip VALUES (2, 'bob', 'aaa', 0)")  # duplicate key is fine
    second = run(con, spec, "r2")
    # full_only keeps no baseline: nothing to compare with, nothing copied.
    assert (second.full, second.reason, second.added, second.baseline_rows) == (
        True,
        "full_only",
        3,
        0,
    )
    # The rows come in the model's own order (no sort of a whole snapshot).
    assert (
        rows(con, spec, "added")
        == con.execute("SELECT id, name, city FROM segments.vip").fetchall()
    )
    assert sorted(rows(con, spec, "added")) == [
        (2, "bob", "aaa"),
        (2, "bob", "rome"),
        (3, "cid", "lima"),
    ]
    assert export_kinds(spec, second) == {"": ("added",)}


# --------------------------------------------------------------------------- keys


def test_key_violations_reports_nulls_and_duplicates(con):
    assert key_violations(con, "segments.vip", ["id"]) == []
    con.execute(
        "INSERT INTO segments.vip VALUES (1, 'x', 'y', 0), (1, 'z', 'y', 0), (NULL, 'n', 'y', 0),"
        " (2, 'b', 'y', 0)"
    )
    assert key_violations(con, "segments.vip", ["id"]) == [
        {"key": {"id": None}, "problem": "null", "count": 1},
        {"key": {"id": 1}, "problem": "duplicate", "count": 3},
        {"key": {"id": 2}, "problem": "duplicate", "count": 2},
    ]
    assert len(key_violations(con, "segments.vip", ["id"], limit=1)) == 1
    composite = key_violations(con, "segments.vip", ["id", "city"])
    assert {"key": {"id": None, "city": "y"}, "problem": "null", "count": 1} in composite
    assert key_violations(con, "segments.vip", ["id", "name"]) == [
        {"key": {"id": None, "name": "n"}, "problem": "null", "count": 1},
    ]


@pytest.mark.parametrize(
    "mutation",
    [
        "INSERT INTO segments.vip VALUES (2, 'bob', 'rome', 20)",  # exact duplicate, no change
        "INSERT INTO segments.vip VALUES (2, 'bob2', 'rome', 20)",  # duplicate of a known key
        "INSERT INTO segments.vip VALUES (7, 'a', 'b', 1), (7, 'a', 'b', 1)",  # new duplicate
        "INSERT INTO segments.vip VALUES (NULL, 'a', 'b', 1)",  # NULL key
    ],
)
def test_delta_refuses_bad_keys_and_keeps_the_previous_state(con, mutation):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    previous = compute_change_set(con, spec, "r2")
    con.execute(mutation)
    with pytest.raises(KeyViolationError, match="segments.vip") as error:
        compute_change_set(con, spec, "r3")
    assert error.value.violations
    assert load_change_set(con, spec.activation) == previous
    assert commit_baseline(con, spec.activation, "r2")  # the earlier change set still commits


def test_first_run_refuses_bad_keys(con):
    con.execute("INSERT INTO segments.vip VALUES (1, 'x', 'y', 0)")
    with pytest.raises(KeyViolationError, match=r"duplicate key \{'id': 1\}"):
        compute_change_set(con, make_spec(), "r1")
    assert load_change_set(con, "vip_crm") is None


# --------------------------------------------------------------------------- export plan


def test_export_kinds_per_sync_mode(con):
    full = ChangeSet("a", "d", True, "first_run", 3, 0, 0, 0, 3, 0, False)
    delta = ChangeSet("a", "d", False, "delta", 1, 1, 1, 1, 3, 3, False)
    assert export_kinds(make_spec(sync_mode="upsert"), delta) == {"": ("added", "updated")}
    assert export_kinds(make_spec(sync_mode="insert"), delta) == {"": ("added",)}
    assert export_kinds(make_spec(sync_mode="snapshot"), full) == {"": ("added",)}
    assert export_kinds(make_spec(sync_mode="difference"), delta) == {
        "_added": ("added",),
        "_updated": ("updated",),
        "_removed": ("removed",),
    }
    assert export_kinds(make_spec(sync_mode="difference"), full) == {
        "_added": ("added",),
        "_updated": (),
        "_removed": (),
    }
    spec = make_spec()
    run(con, spec, "r1")
    assert rows(con, spec) == []  # no kinds: no rows, valid SQL


def test_state_lives_in_its_own_schema(con):
    spec = make_spec()
    run(con, spec, "r1")
    con.execute("UPDATE segments.vip SET name = 'A' WHERE id = 1")
    compute_change_set(con, spec, "r2")
    tables = con.execute(
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_schema = ? ORDER BY table_name",
        [STATE_SCHEMA],
    ).fetchall()
    assert tables == [
        ("baseline__vip_crm", "BASE TABLE"),
        ("changes__vip_crm", "BASE TABLE"),
        ("state__vip_crm", "BASE TABLE"),  # the activation's own state row
    ]


def test_delta_commits_rewrite_the_baseline_once_deletions_pile_up(con):
    from azexport_assets.delta import engine, state

    con.execute("INSERT INTO segments.vip SELECT i, 'n', 'c', 0 FROM range(10, 110) AS r(i)")
    spec = make_spec()
    run(con, spec, "r1")  # 103 rows
    physical = (
        "SELECT sum(count) FROM pragma_storage_info('azexport_state.baseline__vip_crm') "
        "WHERE column_path = '[0]'"
    )
    con.execute("UPDATE segments.vip SET name = 'u' WHERE id < 20")  # 13 rows
    run(con, spec, "r2")
    assert state.read(con, "vip_crm")["dead_rows"] == 13  # below 25% of 103: kept
    con.execute("DELETE FROM segments.vip WHERE id BETWEEN 20 AND 39")  # 20 rows
    run(con, spec, "r3")
    assert state.read(con, "vip_crm")["dead_rows"] == 0  # 33 > 25% of 83: rewritten
    con.execute("CHECKPOINT")
    assert con.execute(physical).fetchone()[0] == 83
    assert baseline_info(con, "vip_crm")["rows"] == 83
    assert engine.COMPACT_AFTER_DEAD_RATIO == 0.25
    con.execute("UPDATE segments.vip SET city = 'z' WHERE id = 99")
    assert counts(run(con, spec, "r4")) == (0, 1, 0, 82)


def test_load_change_set_refuses_a_change_set_of_another_mapping(con):
    spec = make_spec()
    change = run(con, spec, "r1")
    assert load_change_set(con, spec.activation, spec) == load_change_set(con, spec.activation)
    assert load_change_set(con, spec.activation, spec).delta_id == change.delta_id
    reordered = make_spec(columns=(("id", "ID"), ("city", "City"), ("name", "Name")))
    with pytest.raises(ValueError, match="run the delta again"):
        load_change_set(con, spec.activation, reordered)


def test_change_set_spec_is_the_spec_the_change_set_was_computed_with(con):
    from azexport_assets.delta import change_set_spec

    assert change_set_spec(con, "vip_crm", "segments.vip") is None
    computed = make_spec(columns=(("id", "ID"), ("city", "Town name")), primary_key=("id",))
    run(con, computed, "d1", commit=False)
    # The configuration changes after the delta: the export still reads what was computed.
    assert change_set_spec(con, "vip_crm", "segments.vip") == computed
    assert rows(con, change_set_spec(con, "vip_crm", "segments.vip"), "added") == [
        (1, "oslo"),
        (2, "rome"),
        (3, "lima"),
    ]


def test_change_column_marks_each_rows_kind(con):
    spec = make_spec()
    compute_change_set(con, spec, "r1")
    assert con.execute(change_rows_query(spec, ("added",), "_change")).fetchall() == [
        (1, "ann", "oslo", "added"),
        (2, "bob", "rome", "added"),
        (3, "cid", "lima", "added"),
    ]
    assert commit_baseline(con, spec.activation, "r1")
    con.execute("UPDATE segments.vip SET name = 'BOB' WHERE id = 2")
    con.execute("DELETE FROM segments.vip WHERE id = 3")
    compute_change_set(con, spec, "r2")
    query = change_rows_query(spec, ("added", "updated", "removed"), "change kind")
    assert con.sql(query).columns == ["ID", "Name", "City", "change kind"]
    assert con.execute(query).fetchall() == [
        (2, "BOB", "rome", "updated"),
        (3, "cid", "lima", "removed"),
    ]
    with pytest.raises(ValueError, match="change_column 'city' is also the name .* 'City'"):
        change_rows_query(spec, ("added",), "city")
