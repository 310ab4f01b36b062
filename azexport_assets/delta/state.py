"""The `azexport_state.activation_state` table: one row per activation, and transactions.

The row records the committed baseline (delta id, fingerprint, rows, time) and the last
computed change set (delta id, fingerprint, counts, committed flag). Tables of an activation
live next to it: `baseline__<stem>`, `pending__<stem>` (a full snapshot awaiting commit) and
`changes__<stem>` (a table for deltas, a view over the snapshot for full change sets).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import duckdb

from azexport_assets.delta.spec import STATE_SCHEMA
from azexport_assets.sql_text import quote_ident

STATE_TABLE = f"{quote_ident(STATE_SCHEMA)}.activation_state"

_COLUMNS = {
    "activation": "VARCHAR NOT NULL",
    "baseline_delta_id": "VARCHAR",
    "baseline_fingerprint": "VARCHAR",
    "baseline_rows": "BIGINT",
    "committed_at": "TIMESTAMP",  # UTC
    "pending_delta_id": "VARCHAR",  # the last computed change set
    "pending_fingerprint": "VARCHAR",
    "pending_columns": "VARCHAR",  # JSON: what the fingerprint was computed from
    "pending_layout": "VARCHAR",  # JSON: internal key and stored column names
    "compared_delta_id": "VARCHAR",  # the baseline a delta change set was computed against
    "computed_at": "TIMESTAMP",  # UTC
    "full_export": "BOOLEAN",
    "reason": "VARCHAR",
    "added": "BIGINT",
    "updated": "BIGINT",
    "removed": "BIGINT",
    "unchanged": "BIGINT",
    "current_rows": "BIGINT",
    "compared_rows": "BIGINT",  # baseline rows the change set was computed against
    "committed": "BOOLEAN",
    "dead_rows": "BIGINT",  # baseline rows deleted by deltas since its last rewrite
    "reset_at": "TIMESTAMP",  # UTC; set by reset_baseline so the next full run says 'resync'
}


def utc_now() -> datetime:
    """Naive UTC time, as stored in TIMESTAMP columns."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}")
    columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} ({columns})")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error (DuckDB DDL is transactional too)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def read(con: duckdb.DuckDBPyConnection, activation: str) -> dict[str, Any] | None:
    """The activation's state row, or None (also when the state schema does not exist yet)."""
    if not relation_kind(con, "activation_state"):
        return None
    cursor = con.execute(f"SELECT * FROM {STATE_TABLE} WHERE activation = ?", [activation])
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def write(con: duckdb.DuckDBPyConnection, activation: str, values: dict[str, Any]) -> None:
    """Update (or create) the activation's row with `values`; other fields are kept."""
    unknown = set(values) - set(_COLUMNS)
    if unknown:
        raise KeyError(f"unknown state fields {sorted(unknown)}")
    names = list(values)
    params = [values[n] for n in names]
    assignments = ", ".join(f"{n} = ?" for n in names)
    updated = con.execute(
        f"UPDATE {STATE_TABLE} SET {assignments} WHERE activation = ?", [*params, activation]
    ).fetchone()
    if not updated or updated[0] == 0:
        columns = ", ".join(["activation", *names])
        marks = ", ".join("?" for _ in range(len(names) + 1))
        con.execute(
            f"INSERT INTO {STATE_TABLE} ({columns}) VALUES ({marks})", [activation, *params]
        )


def relation_kind(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """'table', 'view' or None for a relation in the state schema (name unquoted)."""
    row = con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
        [STATE_SCHEMA, name],
    ).fetchone()
    if row is None:
        return None
    return "view" if row[0] == "VIEW" else "table"


def drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a table or view of the state schema if it exists (DuckDB wants the right kind)."""
    kind = relation_kind(con, name)
    if kind:
        con.execute(f"DROP {kind.upper()} {quote_ident(STATE_SCHEMA)}.{quote_ident(name)}")
