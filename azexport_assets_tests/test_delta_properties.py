"""Property test: consumers that replay the exported files end up with the source's rows.

Random sequences of source mutations and runs (some failing: change set computed, never
committed) are applied to one source shared by three activations. After every committed
run, replaying the files in order must reproduce the source:

- difference: added/updated/removed applied to an empty table == the mapped source, exactly;
- upsert: upserting every file gives every surviving source row its current values;
- insert: every current key has been exported at least once.

Column `l` is a list whose values include `[]`, `[NULL]` and NULL, which DuckDB's hash cannot
tell apart: its changes must be found all the same (such columns are compared directly).
"""

from __future__ import annotations

from typing import Any

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azexport_assets.delta import (
    DeltaSpec,
    change_rows_query,
    commit_baseline,
    compute_change_set,
    export_kinds,
)

COLUMNS = (("a", "A key"), ("b", 'b "key"'), ("x", "x"), ("y", "why not"), ("l", "l"))
SPECS = {
    mode: DeltaSpec(
        activation=f"prop_{mode}",
        source_table="src.t",
        primary_key=("a", "b"),
        columns=COLUMNS,
        run_type="full_then_delta",
        sync_mode=mode,
    )
    for mode in ("difference", "upsert", "insert")
}

keys = st.tuples(st.integers(0, 2), st.sampled_from(["k", "K", "k k"]))
xs = st.none() | st.integers(-2, 2)
ys = st.none() | st.sampled_from(["", "a", "a,b", 'q"', "é\n"])
zs = st.integers(0, 3)
ls = st.none() | st.lists(st.none() | st.integers(0, 1), max_size=2)
mutations = st.one_of(
    st.tuples(st.just("insert"), keys, xs, ys, zs, ls),
    st.tuples(st.just("update_x"), st.integers(0, 99), xs),
    st.tuples(st.just("update_l"), st.integers(0, 99), ls),
    st.tuples(st.just("update_y"), st.integers(0, 99), ys),
    st.tuples(st.just("update_hidden"), st.integers(0, 99), zs),
    st.tuples(st.just("delete"), st.integers(0, 99)),
    st.tuples(st.just("reinsert"), st.integers(0, 99), xs, ys),
)
runs = st.tuples(st.just("run"), st.sampled_from(sorted(SPECS)), st.booleans())
# Rounds of a few mutations followed by one or more runs, so that most examples commit
# several deltas per activation (a flat list of operations rarely does).
rounds = st.lists(
    st.tuples(st.lists(mutations, max_size=4), st.lists(runs, min_size=1, max_size=3)),
    max_size=12,
)
initial_rows = st.lists(st.tuples(st.just("insert"), keys, xs, ys, zs, ls), max_size=8)


def source_rows(con: duckdb.DuckDBPyConnection) -> dict[tuple, tuple]:
    return {
        (a, b): (a, b, x, y, lst)
        for a, b, x, y, lst in con.execute("SELECT a, b, x, y, l FROM src.t").fetchall()
    }


def pick_key(con: duckdb.DuckDBPyConnection, index: int) -> tuple | None:
    existing = sorted(source_rows(con))
    return existing[index % len(existing)] if existing else None


def mutate(con: duckdb.DuckDBPyConnection, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "insert":
        _, (a, b), x, y, z, lst = op
        if (a, b) not in source_rows(con):
            con.execute("INSERT INTO src.t VALUES (?, ?, ?, ?, ?, ?)", [a, b, x, y, z, lst])
        return
    key = pick_key(con, op[1])
    if key is None:
        return
    where = "WHERE a = ? AND b = ?"
    if kind in ("update_x", "update_y", "update_hidden", "update_l"):
        column = {"update_x": "x", "update_y": "y", "update_hidden": "z", "update_l": "l"}[kind]
        con.execute(f"UPDATE src.t SET {column} = ? {where}", [op[2], *key])
    elif kind == "delete":
        con.execute(f"DELETE FROM src.t {where}", list(key))
    elif kind == "reinsert":  # delete the key and insert it again, with the same or new values
        con.execute(f"DELETE FROM src.t {where}", list(key))
        con.execute("INSERT INTO src.t VALUES (?, ?, ?, ?, 0, NULL)", [*key, op[2], op[3]])


def exported(con, spec: DeltaSpec, kinds: tuple[str, ...]) -> list[tuple]:
    return con.execute(change_rows_query(spec, kinds)).fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial_rows, rounds)
def test_replaying_committed_exports_reproduces_the_source(initial, steps):
    con = duckdb.connect()  # in memory: the engine does not care, and examples stay fast
    con.execute("CREATE SCHEMA src")
    con.execute(
        "CREATE TABLE src.t (a INTEGER, b VARCHAR, x INTEGER, y VARCHAR, z INTEGER, l INTEGER[])"
    )
    replicas: dict[str, dict[tuple, tuple]] = {mode: {} for mode in SPECS}
    run_number = 0
    ops = [*initial, *(op for batch, batch_runs in steps for op in (*batch, *batch_runs))]
    ops += [("run", mode, True) for mode in sorted(SPECS)]  # every example ends committed
    for op in ops:
        if op[0] != "run":
            mutate(con, op)
            continue
        _, mode, succeeds = op
        spec = SPECS[mode]
        run_number += 1
        change = compute_change_set(con, spec, f"run-{run_number}")
        files = {
            suffix: exported(con, spec, kinds)
            for suffix, kinds in export_kinds(spec, change).items()
        }
        all_rows = exported(con, spec, ("added", "updated", "removed"))
        assert len(all_rows) == change.added + change.updated + change.removed
        if not succeeds:
            continue  # the export failed: nothing reached the consumer, nothing is committed
        assert commit_baseline(con, spec.activation, change.delta_id)
        replica, source = replicas[mode], source_rows(con)
        if mode == "difference":
            for row in files["_removed"]:
                assert replica.pop(row[:2]) == row  # removed rows are as last exported
            for row in files["_updated"]:
                assert row[:2] in replica and replica[row[:2]] != row
                replica[row[:2]] = row
            for row in files["_added"]:
                assert row[:2] not in replica
                replica[row[:2]] = row
            assert replica == source
        elif mode == "upsert":
            for row in files[""]:
                replica[row[:2]] = row
            assert {key: replica.get(key) for key in source} == source
        else:
            for row in files[""]:
                replica.setdefault(row[:2], row)
            assert set(source) <= set(replica)
    con.close()
