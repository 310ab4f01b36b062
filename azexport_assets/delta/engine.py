"""Change sets and baselines: compute, read, commit, reset, as set-based SQL on a connection.

Lifecycle of one activation (see docs/delta.md):

1. `compute_change_set` compares the source's current mapped rows with the baseline and stores
   the change set (`changes__<stem>`). A full change set also stores the whole snapshot
   (`pending__<stem>`); a delta stores only the changed rows, because "baseline + change set"
   *is* the snapshot, which saves copying every row on every run.
2. The export writes `change_rows_query(...)` to files.
3. `commit_baseline` turns the snapshot into the baseline: renames the pending table (full) or
   applies the change set to the baseline (delta), in one transaction.

Nothing here opens or closes the database, and the caller must not hold an open transaction.
Each of the three is one transaction, run again after a commit conflict (DuckLake).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import timezone
from typing import Any, TypeVar

import duckdb

from azexport_assets.delta import sql, state, synclog
from azexport_assets.delta.spec import (
    STATE_SCHEMA,
    ChangeSet,
    DeltaSpec,
    KeyViolationError,
    check_activation,
    quote_table,
    state_name,
    state_table,
)
from azexport_assets.sql_text import quote_ident

FINGERPRINT_VERSION = 1

T = TypeVar("T")


# A delta commit deletes the updated and removed rows from the baseline; DuckDB keeps them in
# partly deleted row groups. Rewrite the baseline once deletions reach this share of its rows
# (about every 25 runs at 1% churn), so that scans do not slow down run after run.
COMPACT_AFTER_DEAD_RATIO = 0.25

# Baseline rows whose stored row hash is checked against this DuckDB's hash on every delta.
HASH_CHECK_SAMPLE = 2048


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0])


def fingerprint(con: duckdb.DuckDBPyConnection, spec: DeltaSpec) -> tuple[str, str]:
    """(hash, JSON) of what makes rows comparable with the baseline.

    Covers the key, the mapping (source column, destination name, order), the source types of
    those columns, run type + sync mode (a different contract with the consumer) and, for a
    Delta table, the table (a switch from files or a move starts a table that has no rows).
    When it differs from the baseline's, the next change set is a full export.
    """
    query = sql.source_columns_select(spec)
    try:
        described = con.execute(f"DESCRIBE {query}").fetchall()
    except duckdb.Error as error:
        raise ValueError(
            f"activation {spec.activation!r}: cannot read the key and mapped columns from "
            f"{spec.source_table}: {error}"
        ) from error
    # DESCRIBE lists the columns in SELECT order: pair them by position, not by name.
    types = {src: row[1] for (_, src), row in zip(sql.layout(spec).stored, described, strict=True)}
    detail = {
        "version": FINGERPRINT_VERSION,
        "run_type": spec.run_type,
        "sync_mode": spec.sync_mode,
        "primary_key": [[k, types[k]] for k in spec.primary_key],
        "columns": [[src, dest, types[src]] for src, dest in spec.columns],
    }
    if spec.destination:  # absent for files, so their fingerprints stay as they were
        detail["destination"] = spec.destination
    text = json.dumps(detail, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32], text


def _violations(
    con: duckdb.DuckDBPyConnection, relation: str, keys: Sequence[str], limit: int
) -> list[tuple[Any, ...]]:
    """(key values..., count) of NULL or duplicated keys of a relation; one aggregate."""
    key_list = ", ".join(keys)
    has_null = " OR ".join(f"{k} IS NULL" for k in keys)
    return con.execute(
        f"SELECT {key_list}, count(*) AS n FROM {relation} GROUP BY {key_list} "
        f"HAVING count(*) > 1 OR {has_null} "
        f"ORDER BY ({has_null}) DESC, n DESC, {key_list} LIMIT ?",
        [limit],
    ).fetchall()


def _as_dicts(primary_key: Sequence[str], rows: list[tuple[Any, ...]]) -> list[dict]:
    result = []
    for row in rows:
        key = dict(zip(primary_key, row[:-1], strict=True))
        problem = "null" if any(v is None for v in key.values()) else "duplicate"
        result.append({"key": key, "problem": problem, "count": int(row[-1])})
    return result


def key_violations(
    con: duckdb.DuckDBPyConnection, source_table: str, primary_key: Sequence[str], limit: int = 10
) -> list[dict]:
    """Keys that are NULL (any part) or duplicated, at most `limit`, NULL keys first.

    Each: {'key': {column: value}, 'problem': 'null' | 'duplicate', 'count': rows}.
    """
    keys = [quote_ident(k) for k in primary_key]
    relation = quote_table(source_table)
    if _key_is_clean(con, relation, keys):
        return []
    return _as_dicts(primary_key, _violations(con, relation, keys, limit))


def _key_is_clean(con: duckdb.DuckDBPyConnection, relation: str, keys: Sequence[str]) -> bool:
    """One streaming aggregate, about twice as fast as grouping every key to list offenders
    (which only runs when this says there is something to list)."""
    key = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
    any_null = " OR ".join(f"{k} IS NULL" for k in keys)
    total, distinct, nulls = con.execute(
        f"SELECT count(*), count(DISTINCT {key}), count(*) FILTER (WHERE {any_null}) "
        f"FROM {relation}"
    ).fetchall()[0]
    return nulls == 0 and total == distinct


def _column_types(fp_detail: str) -> dict[str, str]:
    """Source column -> DuckDB type, from a fingerprint's JSON."""
    detail = json.loads(fp_detail)
    return {
        **{key: kind for key, kind in detail["primary_key"]},
        **{src: kind for src, _, kind in detail["columns"]},
    }


def _compute_full(
    con: duckdb.DuckDBPyConnection, spec: DeltaSpec, lay: sql.Layout
) -> dict[str, int]:
    if not spec.is_delta:
        # full_only keeps no baseline, so nothing needs a copy: the change set is a view over
        # the source table, read once by the export.
        con.execute(sql.full_changes_view(spec.activation, f"({sql.snapshot_select(spec)})"))
        rows = _count(con, quote_table(spec.source_table))
        return {"added": rows, "updated": 0, "removed": 0, "current_rows": rows}
    pending = state_table("pending", spec.activation)
    rows = int(
        con.execute(
            f"CREATE TABLE {pending} AS {sql.hashed_snapshot_select(spec, lay)}"
        ).fetchone()[0]
    )
    if spec.is_delta:
        # The snapshot becomes the baseline; its keys must be unique for later joins.
        bad = _violations(con, pending, sql.layout(spec).keys, 10)
        if bad:
            raise KeyViolationError(spec.source_table, _as_dicts(spec.primary_key, bad))
    con.execute(sql.full_changes_view(spec.activation, pending))
    return {"added": rows, "updated": 0, "removed": 0, "current_rows": rows}


def _baseline_hashes_current(
    con: duckdb.DuckDBPyConnection, activation: str, lay: sql.Layout
) -> str | None:
    """None when the baseline's stored row hashes can be compared with the current rows',
    else why not (a baseline written before rows were hashed, or by another hash function)."""
    columns = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
        "current_database() AND table_schema = ? AND table_name = ?",
        [STATE_SCHEMA, state_name("baseline", activation)],
    ).fetchall()
    if sql.HASH_COLUMN not in {name for (name,) in columns}:
        return "it was written before baselines stored row hashes"
    differing = con.execute(sql.baseline_hash_check(activation, lay, HASH_CHECK_SAMPLE)).fetchone()[
        0
    ]
    if differing:
        return "its stored row hashes differ from this DuckDB version's hash function"
    return None


def _compute_delta(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    lay: sql.Layout,
    baseline_rows: int,
    log: Callable[[str], None] | None,
) -> dict[str, int]:
    changes = state_table("changes", spec.activation)
    stale = _baseline_hashes_current(con, spec.activation, lay)
    if stale:
        # Once: the baseline is rewritten with row hashes (about the cost of copying it).
        for statement in sql.rehash_baseline(spec.activation, lay):
            con.execute(statement)
        if log:
            log(
                f"baseline of '{spec.activation}': row hashes recomputed ({stale}); "
                "this delta is still compared with it"
            )
    con.execute(sql.delta_changes_table(spec, lay))
    counts = dict(con.execute(f"SELECT kind, count(*) FROM {changes} GROUP BY kind").fetchall())
    added, updated, removed = (int(counts.get(k, 0)) for k in ("added", "updated", "removed"))
    current_rows = _count(con, quote_table(spec.source_table))
    # Key check without aggregating the whole source: baseline keys are unique, so with
    # unique current keys every current row that is not 'added' matches exactly one
    # surviving baseline row. Duplicates among matched keys break that count; NULL or
    # duplicated new keys show up among the (few) 'added' rows.
    keys = lay.keys
    bad_new = _violations(con, f"(SELECT * FROM {changes} WHERE kind = 'added')", keys, 1)
    if bad_new or current_rows - added != baseline_rows - removed:
        violations = key_violations(con, spec.source_table, spec.primary_key)
        raise KeyViolationError(spec.source_table, violations)
    return {
        "added": added,
        "updated": updated,
        "removed": removed,
        "current_rows": current_rows,
        "rehashed": bool(stale),
    }


@state.retrying
def compute_change_set(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    delta_id: str,
    log: Callable[[str], None] | None = None,
    accept: Callable[[ChangeSet], None] | None = None,
) -> ChangeSet:
    """Snapshot the source's mapped rows, compare them with the baseline, store the change set.

    Replaces any earlier change set of the activation that was not committed. A full change
    set (every current row 'added') is produced for full_only, on the first run, after a reset
    and when the fingerprint (key, mapping, types, modes) differs from the baseline's.
    Otherwise rows are compared by key: new keys are 'added', vanished keys 'removed' (with the
    baseline's last exported values), and keys whose exported values differ (NULL-safe)
    'updated': found by a stored row hash, confirmed with IS DISTINCT FROM (see
    `sql.delta_changes_table`). Raises KeyViolationError for NULL or duplicated keys in delta
    modes; the previous state is then untouched. `log` receives a line when the baseline's
    row hashes had to be recomputed (once after an upgrade). `accept` sees the change set
    before it is stored: an error it raises leaves the previous state untouched.
    """
    with state.transaction(con):
        change = _compute_in_transaction(con, spec, delta_id, log)
        if accept is not None:
            accept(change)
        return change


def preview_change_set(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    inspect: Callable[[ChangeSet], T],
    log: Callable[[str], None] | None = None,
) -> tuple[ChangeSet, T]:
    """What `compute_change_set` would compute now, and `inspect(change)` of it, leaving
    nothing behind: the change set is computed in a transaction that is always rolled back,
    so the baseline, the last computed change set and the state row stay exactly as they
    were. `inspect` runs inside the transaction and may read `change_rows_query(spec, ...)`.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        change = _compute_in_transaction(con, spec, "preview", log)
        return change, inspect(change)
    finally:
        con.execute("ROLLBACK")


def _compute_in_transaction(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    delta_id: str,
    log: Callable[[str], None] | None,
) -> ChangeSet:
    activation = spec.activation
    state.ensure_schema(con)
    fp, fp_detail = fingerprint(con, spec)
    row = state.read(con, activation) or {}
    has_baseline = (
        row.get("baseline_delta_id") is not None
        and state.relation_kind(con, state_name("baseline", activation)) == "table"
    )
    if not spec.is_delta:
        reason = "full_only"
    elif not has_baseline:
        reason = "resync" if row.get("reset_at") else "first_run"
    elif row.get("baseline_fingerprint") != fp:
        reason = "mapping_changed"
    else:
        reason = "delta"
    state.drop_relation(con, state_name("changes", activation))
    state.drop_relation(con, state_name("pending", activation))
    baseline_rows = _count(con, state_table("baseline", activation)) if has_baseline else 0
    lay = sql.layout(spec, _column_types(fp_detail))
    computed_at = state.utc_now()
    if reason == "delta":
        counts = _compute_delta(con, spec, lay, baseline_rows, log)
    else:
        counts = _compute_full(con, spec, lay)
    change = ChangeSet(
        activation=activation,
        delta_id=delta_id,
        full=reason != "delta",
        reason=reason,
        added=counts["added"],
        updated=counts["updated"],
        removed=counts["removed"],
        unchanged=counts["current_rows"] - counts["added"] - counts["updated"],
        current_rows=counts["current_rows"],
        baseline_rows=baseline_rows,
        committed=False,
        computed_at=computed_at,
    )
    state.write(
        con,
        activation,
        {
            "pending_delta_id": delta_id,
            "pending_fingerprint": fp,
            "pending_columns": fp_detail,
            "pending_layout": json.dumps(
                {
                    "keys": list(lay.keys),
                    "stored": [name for name, _ in lay.stored],
                    "hash": True,
                }
            ),
            "compared_delta_id": row.get("baseline_delta_id") if has_baseline else None,
            "computed_at": computed_at,
            "full_export": change.full,
            "reason": reason,
            "added": change.added,
            "updated": change.updated,
            "removed": change.removed,
            "unchanged": change.unchanged,
            "current_rows": change.current_rows,
            "compared_rows": baseline_rows,
            "committed": False,
            **({"dead_rows": 0} if counts.get("rehashed") else {}),
        },
    )
    return change


def _change_from_row(activation: str, row: dict[str, Any]) -> ChangeSet:
    return ChangeSet(
        activation=activation,
        delta_id=row["pending_delta_id"],
        full=bool(row["full_export"]),
        reason=row["reason"],
        added=int(row["added"]),
        updated=int(row["updated"]),
        removed=int(row["removed"]),
        unchanged=int(row["unchanged"]),
        current_rows=int(row["current_rows"]),
        baseline_rows=int(row["compared_rows"]),
        committed=bool(row["committed"]),
        computed_at=row.get("computed_at"),
    )


def _mapping_of(detail: dict[str, Any]) -> tuple:
    """The parts of a fingerprint's JSON that decide how change rows are read (not types)."""
    return (
        detail["run_type"],
        detail["sync_mode"],
        tuple(k for k, _ in detail["primary_key"]),
        tuple((src, dest) for src, dest, _ in detail["columns"]),
    )


def change_set_spec(
    con: duckdb.DuckDBPyConnection, activation: str, source_table: str
) -> DeltaSpec | None:
    """The spec the last change set was computed with: what the export must read it with,
    even if the configuration changed since (then the next delta starts over in full)."""
    check_activation(activation)
    row = state.read(con, activation)
    if not row or row.get("pending_columns") is None:
        return None
    run_type, sync_mode, key, columns = _mapping_of(json.loads(row["pending_columns"]))
    return DeltaSpec(
        activation=activation,
        source_table=source_table,
        primary_key=key,
        columns=columns,
        run_type=run_type,
        sync_mode=sync_mode,
    )


def load_change_set(
    con: duckdb.DuckDBPyConnection, activation: str, spec: DeltaSpec | None = None
) -> ChangeSet | None:
    """The last computed change set (committed or not), or None if there is none to export.

    Pass `spec` to make sure it can be read with `change_rows_query(spec, ...)`: if the change
    set was computed for another key, mapping or mode (the configuration changed since), a
    ValueError says to run the delta again instead of exporting columns under wrong names.
    """
    check_activation(activation)
    row = state.read(con, activation)
    if not row or row.get("pending_delta_id") is None:
        return None
    if state.relation_kind(con, state_name("changes", activation)) is None:
        return None
    if spec is not None:
        stored = json.loads(row["pending_columns"])
        wanted = (
            spec.run_type,
            spec.sync_mode,
            spec.primary_key,
            tuple(tuple(pair) for pair in spec.columns),
        )
        if _mapping_of(stored) != wanted:
            raise ValueError(
                f"activation {activation!r}: the last change set ({row['pending_delta_id']}) "
                "was computed for another key, mapping or sync mode; run the delta again "
                "before exporting"
            )
    return _change_from_row(activation, row)


@state.retrying
def commit_baseline(
    con: duckdb.DuckDBPyConnection,
    activation: str,
    delta_id: str,
    sync_log: synclog.SyncLogEntry | None = None,
) -> bool:
    """Make the snapshot of change set `delta_id` the baseline, in one transaction.

    Returns False and changes nothing when `delta_id` is already committed, is not the latest
    computed change set, or was computed against a baseline that is no longer current.
    With `sync_log`, the exported rows' keys are appended to `azexport_log.<activation>` in
    the same transaction (see `synclog`).
    """
    check_activation(activation)
    with state.transaction(con):
        row = state.read(con, activation)
        if not row or row.get("pending_delta_id") != delta_id or row.get("committed"):
            return False
        if sync_log is not None:
            _log_change_set(con, activation, row, sync_log)
        baseline = state_table("baseline", activation)
        if row["full_export"] and not state.relation_kind(con, state_name("pending", activation)):
            pass  # full_only: no snapshot was copied and no baseline is kept
        elif row["full_export"]:
            # The snapshot table itself becomes the baseline: no copy. The change set view is
            # re-pointed so that re-exporting the committed change set still works.
            state.drop_relation(con, state_name("changes", activation))
            state.drop_relation(con, state_name("baseline", activation))
            con.execute(
                f"ALTER TABLE {state_table('pending', activation)} "
                f"RENAME TO {quote_ident(state_name('baseline', activation))}"
            )
            con.execute(sql.full_changes_view(activation, baseline))
        else:
            if row.get("compared_delta_id") != row.get("baseline_delta_id"):
                return False
            layout = json.loads(row["pending_layout"])
            hashed = bool(layout.get("hash"))
            for statement in sql.apply_changes(
                activation, layout["keys"], layout["stored"], hashed
            ):
                con.execute(statement)
            # Cheap invariant check: a wrong count means the change set did not fit this
            # baseline; rolling back keeps the old baseline, so nothing is lost.
            rows = _count(con, baseline)
            if rows != row["current_rows"]:
                raise RuntimeError(
                    f"activation {activation!r}: applying change set {delta_id!r} gave "
                    f"{rows} baseline rows instead of {row['current_rows']}; baseline unchanged"
                )
            dead_rows = (row.get("dead_rows") or 0) + row["updated"] + row["removed"]
            if dead_rows > COMPACT_AFTER_DEAD_RATIO * max(rows, 1):
                for statement in sql.compact_baseline(activation):
                    con.execute(statement)
                dead_rows = 0
        state.write(
            con,
            activation,
            {
                "dead_rows": 0 if row["full_export"] else dead_rows,
                "baseline_delta_id": delta_id,
                "baseline_fingerprint": row["pending_fingerprint"],
                "baseline_rows": row["current_rows"],
                "committed_at": state.utc_now(),
                "committed": True,
                "reset_at": None,
            },
        )
    return True


def _log_change_set(
    con: duckdb.DuckDBPyConnection,
    activation: str,
    row: dict[str, Any],
    entry: synclog.SyncLogEntry,
) -> int:
    """Append the exported keys of the pending change set to the sync log (before the
    baseline moves: the change set relation still reads as exported)."""
    detail = json.loads(row["pending_columns"])
    internal = json.loads(row["pending_layout"])["keys"]
    keys = [
        (name, column, kind)
        for name, (column, kind) in zip(internal, detail["primary_key"], strict=True)
    ]
    exported = _kinds(detail["sync_mode"], row["full_export"]).values()
    kinds = sorted({kind for group in exported for kind in group})
    return synclog.append(con, activation, entry, keys, kinds)


@state.retrying
def reset_baseline(con: duckdb.DuckDBPyConnection, activation: str) -> None:
    """Full resync: forget the baseline and any pending change set; the next run is full."""
    check_activation(activation)
    with state.transaction(con):
        state.ensure_schema(con)
        for kind in ("changes", "pending", "baseline"):
            state.drop_relation(con, state_name(kind, activation))
        cleared = {
            name: None
            for name in (
                "baseline_delta_id",
                "baseline_fingerprint",
                "baseline_rows",
                "committed_at",
                "pending_delta_id",
                "pending_fingerprint",
                "pending_columns",
                "pending_layout",
                "compared_delta_id",
                "committed",
                "dead_rows",
            )
        }
        state.write(con, activation, {**cleared, "reset_at": state.utc_now()})


def baseline_info(con: duckdb.DuckDBPyConnection, activation: str) -> dict | None:
    """{'rows', 'delta_id', 'committed_at' (ISO 8601, UTC), 'fingerprint'} or None."""
    check_activation(activation)
    row = state.read(con, activation)
    if not row or row.get("baseline_delta_id") is None:
        return None
    committed_at = row["committed_at"]
    return {
        "rows": int(row["baseline_rows"]),
        "delta_id": row["baseline_delta_id"],
        "committed_at": committed_at.replace(tzinfo=timezone.utc).isoformat()
        if committed_at
        else None,
        "fingerprint": row["baseline_fingerprint"],
    }


def export_kinds(spec: DeltaSpec, change: ChangeSet) -> dict[str, tuple[str, ...]]:
    """Files to write, as {file-name suffix: change kinds}.

    upsert: one file of added + updated; insert and snapshot: added only (on a full change
    set 'added' is every row); difference: _added/_updated/_removed, with nothing to put in
    _updated and _removed on a full run.
    """
    return _kinds(spec.sync_mode, change.full)


def _kinds(sync_mode: str, full: bool) -> dict[str, tuple[str, ...]]:
    if sync_mode == "difference":
        if full:
            return {"_added": ("added",), "_updated": (), "_removed": ()}
        return {"_added": ("added",), "_updated": ("updated",), "_removed": ("removed",)}
    if sync_mode == "upsert":
        return {"": ("added", "updated")}
    return {"": ("added",)}
