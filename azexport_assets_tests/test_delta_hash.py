"""The delta's row hash: candidates from a narrow join, confirmed exactly; baselines keep it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from azexport_assets.delta import (
    DeltaSpec,
    change_rows_query,
    commit_baseline,
    compute_change_set,
    engine,
    sql,
)
from azexport_assets.delta.spec import state_table


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    connection.execute("CREATE SCHEMA models")
    yield connection
    connection.close()


def make_spec(columns: tuple[str, ...], sync_mode: str = "difference") -> DeltaSpec:
    return DeltaSpec(
        activation="hashed",
        source_table="models.t",
        primary_key=("id",),
        columns=tuple((c, c.upper()) for c in columns),
        run_type="full_then_delta",
        sync_mode=sync_mode,
    )


def run(con, spec: DeltaSpec, delta_id: str, log=None):
    change = compute_change_set(con, spec, delta_id, log=log)
    assert commit_baseline(con, spec.activation, delta_id)
    return change


def kinds(change) -> tuple[int, int, int]:
    return change.added, change.updated, change.removed


def baseline_columns(con) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {state_table('baseline', 'hashed')}").fetchall()]


def test_baseline_stores_the_row_hash_of_the_compared_columns(con):
    con.execute("CREATE TABLE models.t AS SELECT 1 AS id, 'a' AS s, 2.5::DOUBLE AS x")
    run(con, make_spec(("id", "s", "x")), "r1")
    assert baseline_columns(con) == ["c0", "c1", "c2", "h"]
    stored, computed = con.execute(
        f"SELECT h, hash(c1, c2) FROM {state_table('baseline', 'hashed')}"
    ).fetchone()
    assert stored == computed
    con.execute("UPDATE models.t SET s = 'b'")
    run(con, make_spec(("id", "s", "x")), "r2")  # the commit writes the new row's hash
    stored, computed = con.execute(
        f"SELECT h, hash(c1, c2) FROM {state_table('baseline', 'hashed')}"
    ).fetchone()
    assert stored == computed


def test_a_differing_hash_alone_is_never_an_update(con, monkeypatch):
    """Every candidate is confirmed with IS DISTINCT FROM: rows whose hashes differ while their
    values are equal (a salted hash here; -0.0 vs 0.0 or a collation in real data) are not
    updates."""
    con.execute(
        "CREATE TABLE models.t AS SELECT i AS id, 'v' || i AS s, i / 2 AS x, "
        "CASE WHEN i % 3 = 0 THEN NULL ELSE [i, i] END AS l FROM range(50) r(i)"
    )
    spec = make_spec(("id", "s", "x", "l"))
    run(con, spec, "r1")
    # The baseline's hashes no longer match any current row's, and the check that would
    # rewrite them is skipped: every row is a candidate.
    monkeypatch.setattr(sql, "row_hash", lambda names: f"hash({', '.join(names)}, 'salt')")
    monkeypatch.setattr(engine, "_baseline_hashes_current", lambda *args: None)
    con.execute("UPDATE models.t SET s = s || '!' WHERE id IN (3, 4)")
    con.execute("UPDATE models.t SET l = NULL WHERE id = 5")
    con.execute("DELETE FROM models.t WHERE id = 6")
    con.execute("INSERT INTO models.t VALUES (100, 'new', 1, [1])")
    change = run(con, spec, "r2")
    assert kinds(change) == (1, 3, 1)
    updated = con.execute(change_rows_query(spec, ("updated",))).fetchall()
    assert [r[0] for r in updated] == [3, 4, 5]
    assert con.execute(change_rows_query(spec, ("removed",))).fetchall() == [(6, "v6", 3.0, None)]


@pytest.mark.parametrize(
    ("column", "before", "after"),
    [
        ("INTEGER[]", "[]", "NULL"),
        ("INTEGER[]", "[]", "[NULL]"),
        ("INTEGER[][]", "[[1], [2]]", "[[1, 2]]"),
        ("STRUCT(a INTEGER)", "{'a': NULL}", "NULL"),
        ("MAP(INTEGER, INTEGER)", "MAP {1: 2, 3: 4}", "MAP {1: 4, 3: 2}"),
        ("HUGEINT", "(1::HUGEINT << 64) + 2", "(2::HUGEINT << 64) + 1"),
        ("HUGEINT", "0", "(5::HUGEINT << 64) + 5"),
        ("DECIMAL(38, 0)", "0", "((5::HUGEINT << 64) + 5)::DECIMAL(38, 0)"),
        (
            "UUID",
            "'00000000-0000-0001-0000-000000000002'",
            "'00000000-0000-0002-0000-000000000001'",
        ),
        ("INTERVAL", "INTERVAL 1 DAY", "INTERVAL 2 DAY"),
    ],
)
def test_types_the_hash_confuses_are_compared_value_by_value(
    con, monkeypatch, column, before, after
):
    """DuckDB's hash gives these pairs the same value (or could, for 128-bit numbers): such
    columns are compared directly in the key join, so even a hash that never differs (here:
    a constant) cannot hide their changes."""
    con.execute(f"CREATE TABLE models.t (id INTEGER, s VARCHAR, v {column})")
    con.execute(f"INSERT INTO models.t VALUES (1, 'a', {before}), (2, 'b', {before})")
    spec = make_spec(("id", "s", "v"))
    run(con, spec, "r1")
    assert run(con, spec, "same").updated == 0
    con.execute(f"UPDATE models.t SET v = {after} WHERE id = 1")
    assert kinds(run(con, spec, "real-hash")) == (0, 1, 0)
    monkeypatch.setattr(sql, "row_hash", lambda names: "0::UBIGINT")
    con.execute(f"UPDATE models.t SET v = {before} WHERE id = 1")
    assert kinds(run(con, spec, "constant-hash")) == (0, 1, 0)


def test_hashed_types_and_their_smallest_changes(con):
    con.execute(
        "CREATE TABLE models.t (id BIGINT, s VARCHAR, b BLOB, d DECIMAL(18, 4), f FLOAT, "
        "x DOUBLE, ts TIMESTAMPTZ, flag BOOLEAN, u UBIGINT)"
    )
    con.execute(
        "INSERT INTO models.t VALUES (1, 'a', 'x'::BLOB, 1.0001, 0.5, -0.0, "
        "TIMESTAMPTZ '2024-01-01 00:00:00.000001+00', true, 18446744073709551615), "
        "(2, NULL, NULL, NULL, NULL, 'nan', NULL, NULL, NULL)"
    )
    spec = make_spec(("id", "s", "b", "d", "f", "x", "ts", "flag", "u"))
    assert sql.layout(spec, engine._column_types(engine.fingerprint(con, spec)[1])).direct == ()
    run(con, spec, "r1")
    con.execute("UPDATE models.t SET x = 0.0 WHERE id = 1")  # -0.0 = 0.0: not a change
    assert run(con, spec, "zero").updated == 0
    updates = [
        "s = 'b'",
        "s = ''",
        "b = 'x\\x00'::BLOB",
        "d = 1.0002",
        "f = 0.50000006",
        "x = 5e-324",
        "ts = TIMESTAMPTZ '2024-01-01 00:00:00.000002+00'",
        "flag = NULL",
        "u = 0",
    ]
    for n, assignment in enumerate(updates):
        con.execute(f"UPDATE models.t SET {assignment} WHERE id = 1")
        assert kinds(run(con, spec, f"u{n}")) == (0, 1, 0), assignment


def test_a_colliding_hash_is_the_documented_limit(con, monkeypatch):
    """docs/delta.md: a change is missed only when every changed column is hashed and the row
    hash stays the same. Forced here with a constant hash: the hashed column's change is not
    seen, while a directly compared column's change is."""
    con.execute("CREATE TABLE models.t AS SELECT 1 AS id, 'a' AS s, [1] AS l")
    spec = make_spec(("id", "s", "l"))
    monkeypatch.setattr(sql, "row_hash", lambda names: "0::UBIGINT")
    run(con, spec, "r1")
    con.execute("UPDATE models.t SET s = 'b'")
    assert kinds(run(con, spec, "collides")) == (0, 0, 0)
    con.execute("UPDATE models.t SET s = 'c', l = [2]")
    change = compute_change_set(con, spec, "seen")
    assert kinds(change) == (0, 1, 0)
    assert con.execute(change_rows_query(spec, ("updated",))).fetchall() == [(1, "c", [2])]


def test_a_baseline_without_hashes_is_rehashed_once_and_keeps_working(con):
    """Baselines written before rows were hashed: the first delta adds the hashes (log line),
    compares as usual, and later deltas do not rewrite the baseline again."""
    con.execute("CREATE TABLE models.t AS SELECT i AS id, 'v' || i AS s FROM range(10) r(i)")
    spec = make_spec(("id", "s"), sync_mode="upsert")
    run(con, spec, "r1")
    baseline = state_table("baseline", "hashed")
    con.execute(f"CREATE TABLE old AS SELECT c0, c1 FROM {baseline}")
    con.execute(f"DROP TABLE {baseline}")
    con.execute(f"CREATE TABLE {baseline} AS SELECT * FROM old")
    assert baseline_columns(con) == ["c0", "c1"]
    con.execute("UPDATE models.t SET s = 'changed' WHERE id = 2")
    lines: list[str] = []
    change = run(con, spec, "r2", log=lines.append)
    assert kinds(change) == (0, 1, 0)
    assert len(lines) == 1 and "row hashes recomputed" in lines[0] and "before" in lines[0]
    assert baseline_columns(con) == ["c0", "c1", "h"]
    lines.clear()
    con.execute("UPDATE models.t SET s = 'again' WHERE id = 3")
    assert kinds(run(con, spec, "r3", log=lines.append)) == (0, 1, 0)
    assert lines == []


def test_a_changed_hash_function_rehashes_the_baseline(con, monkeypatch):
    """A DuckDB whose `hash` differs from the one that wrote the baseline: the sample check
    notices, the stored hashes are recomputed, and only real changes are reported."""
    con.execute("CREATE TABLE models.t AS SELECT i AS id, 'v' || i AS s FROM range(3000) r(i)")
    spec = make_spec(("id", "s"))
    run(con, spec, "r1")
    monkeypatch.setattr(sql, "row_hash", lambda names: f"hash({', '.join(names)}, 'other')")
    con.execute("UPDATE models.t SET s = 'x' WHERE id = 2500")
    lines: list[str] = []
    assert kinds(run(con, spec, "r2", log=lines.append)) == (0, 1, 0)
    assert len(lines) == 1 and "hash function" in lines[0]
    stored, computed = con.execute(
        f"SELECT count(*) FILTER (WHERE h = hash(c1, 'other')), count(*) "
        f"FROM {state_table('baseline', 'hashed')}"
    ).fetchone()
    assert stored == computed == 3000


def test_a_change_set_computed_before_hashes_still_commits(con):
    """A change set computed by an earlier version (no `h`, layout without 'hash') against an
    old baseline commits as before."""
    con.execute("CREATE TABLE models.t AS SELECT i AS id, 'v' || i AS s FROM range(5) r(i)")
    spec = make_spec(("id", "s"))
    run(con, spec, "r1")
    con.execute("UPDATE models.t SET s = 'x' WHERE id = 1")
    compute_change_set(con, spec, "r2")
    for kind in ("baseline", "changes"):
        table = state_table(kind, "hashed")
        con.execute(f"CREATE TABLE tmp AS SELECT * EXCLUDE (h) FROM {table}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM tmp")
        con.execute("DROP TABLE tmp")
    con.execute(
        "UPDATE azexport_state.state__hashed SET pending_layout = "
        """'{"keys": ["c0"], "stored": ["c0", "c1"]}'"""
    )
    assert commit_baseline(con, "hashed", "r2")
    assert con.execute(
        f"SELECT c1 FROM {state_table('baseline', 'hashed')} WHERE c0 = 1"
    ).fetchone() == ("x",)
