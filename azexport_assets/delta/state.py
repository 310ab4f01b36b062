"""An activation's state row (`azexport_state.state__<stem>`), and transactions.

The row records the committed baseline (delta id, fingerprint, rows, time) and the last
computed change set (delta id, fingerprint, counts, committed flag). Each activation has a
table of its own holding just its row, next to its other tables: `baseline__<stem>`,
`pending__<stem>` (a full snapshot awaiting commit) and `changes__<stem>` (a table for deltas,
a view over the snapshot for full change sets). So no two activations ever write the same
table, and on DuckLake their transactions never conflict.

Warehouses written before kept every row in one shared table, `activation_state`; an
activation's row moves from it to its own table on its next write.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import duckdb

from azexport_assets.delta.spec import STATE_SCHEMA, table_stem
from azexport_assets.sql_text import quote_ident
from azexport_assets.warehouse.retries import retry_on_conflict

# The shared table of earlier versions, read until each activation has its own row table.
LEGACY_TABLE = f"{quote_ident(STATE_SCHEMA)}.activation_state"
LEGACY_NAME = "activation_state"

T = TypeVar("T")

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


def row_table_name(activation: str) -> str:
    """Unquoted name of the table holding the activation's state row."""
    return f"state__{table_stem(activation)}"


def row_table(activation: str) -> str:
    return f"{quote_ident(STATE_SCHEMA)}.{quote_ident(row_table_name(activation))}"


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the state schema unless it exists (the warehouse's init step creates it; on
    DuckLake two writers creating it at once would conflict, so look before creating)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_schemas() "
        "WHERE database_name = current_database() AND schema_name = ?",
        [STATE_SCHEMA],
    ).fetchone()[0]
    if not exists:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(STATE_SCHEMA)}")


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error (DuckDB DDL is transactional too).

    A COMMIT that fails (a DuckLake commit conflict) has ended the transaction: the
    connection is usable again, and `retrying` may run the whole transaction once more.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def retrying(function: Callable[..., T]) -> Callable[..., T]:
    """Run a function that is one `transaction` again after a commit conflict (DuckLake)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return retry_on_conflict(lambda: function(*args, **kwargs), what=function.__name__)

    return wrapper


def _fetch_row(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def read(con: duckdb.DuckDBPyConnection, activation: str) -> dict[str, Any] | None:
    """The activation's state row, or None (also when the state schema does not exist yet)."""
    if relation_kind(con, row_table_name(activation)):
        return _fetch_row(con.execute(f"SELECT * FROM {row_table(activation)}"))
    if relation_kind(con, LEGACY_NAME):
        return _fetch_row(
            con.execute(f"SELECT * FROM {LEGACY_TABLE} WHERE activation = ?", [activation])
        )
    return None


def _create_row_table(con: duckdb.DuckDBPyConnection, activation: str) -> None:
    """The activation's own state table, seeded with its row from the legacy shared table."""
    columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS.items())
    con.execute(f"CREATE TABLE {row_table(activation)} ({columns})")
    if relation_kind(con, LEGACY_NAME):
        names = ", ".join(_COLUMNS)
        con.execute(
            f"INSERT INTO {row_table(activation)} ({names}) "
            f"SELECT {names} FROM {LEGACY_TABLE} WHERE activation = ?",
            [activation],
        )
        con.execute(f"DELETE FROM {LEGACY_TABLE} WHERE activation = ?", [activation])


def write(con: duckdb.DuckDBPyConnection, activation: str, values: dict[str, Any]) -> None:
    """Update (or create) the activation's row with `values`; other fields are kept."""
    unknown = set(values) - set(_COLUMNS)
    if unknown:
        raise KeyError(f"unknown state fields {sorted(unknown)}")
    if not relation_kind(con, row_table_name(activation)):
        ensure_schema(con)
        _create_row_table(con, activation)
    table = row_table(activation)
    names = list(values)
    params = [values[n] for n in names]
    assignments = ", ".join(f"{n} = ?" for n in names)
    updated = con.execute(f"UPDATE {table} SET {assignments}", params).fetchone()
    if not updated or updated[0] == 0:
        columns = ", ".join(["activation", *names])
        marks = ", ".join("?" for _ in range(len(names) + 1))
        con.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", [activation, *params])


def relation_kind(
    con: duckdb.DuckDBPyConnection, name: str, schema: str = STATE_SCHEMA
) -> str | None:
    """'table', 'view' or None for a relation of `schema` (names unquoted)."""
    row = con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
        [schema, name],
    ).fetchone()
    if row is None:
        return None
    return "view" if row[0] == "VIEW" else "table"


def drop_relation(con: duckdb.DuckDBPyConnection, name: str, schema: str = STATE_SCHEMA) -> None:
    """Drop a table or view of `schema` if it exists (DuckDB wants the right kind)."""
    kind = relation_kind(con, name, schema)
    if kind:
        con.execute(f"DROP {kind.upper()} {quote_ident(schema)}.{quote_ident(name)}")
