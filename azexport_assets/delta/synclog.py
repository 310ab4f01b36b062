"""The sync log: one row per exported key and run, in `azexport_log.<activation>`.

`append` runs inside `commit_baseline`'s transaction, so the log and the baseline move
together: a run that fails before its commit leaves no log rows, and a retry that finds the
change set already committed logs nothing again. It is one set-based `INSERT ... SELECT` from
the stored change set (its key columns and kind), plus a `DELETE` of rows past the retention.

Columns: `run_id`, `logical_time` and `committed_at` (TIMESTAMP, UTC), `operation` ('added' |
'updated' | 'removed'), then the model's primary key columns under their own names and types.
A key column that appears later (the key changed) is added to the table; older rows hold NULL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import duckdb

from azexport_assets.delta import state
from azexport_assets.delta.spec import check_activation, state_table
from azexport_assets.sql_text import quote_ident, quote_literal

LOG_SCHEMA = "azexport_log"
FIXED_COLUMNS = (
    ("run_id", "VARCHAR"),
    ("logical_time", "TIMESTAMP"),
    ("committed_at", "TIMESTAMP"),
    ("operation", "VARCHAR"),
)
RESERVED_NAMES = frozenset(name for name, _ in FIXED_COLUMNS)


@dataclass(frozen=True)
class SyncLogEntry:
    """What the log records about one commit: the run, its logical time, the retention."""

    run_id: str
    logical_time: datetime
    retention_days: int


@dataclass
class SyncLogSlice:
    """One run's rows in the log: how many, per operation, and the first few."""

    table: str  # schema-qualified, quoted
    run_id: str
    rows: int
    operations: dict[str, int]
    columns: list[str]
    sample: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def query(self) -> str:
        """SQL that reads the run's slice from the warehouse."""
        return f"SELECT * FROM {self.table} WHERE run_id = {quote_literal(self.run_id)}"


def log_table(activation: str) -> str:
    check_activation(activation)
    return f"{quote_ident(LOG_SCHEMA)}.{quote_ident(activation)}"


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _ensure_table(
    con: duckdb.DuckDBPyConnection, activation: str, keys: Sequence[tuple[str, str]]
) -> None:
    """Create the schema and the table (or add key columns it lacks); look before creating,
    as on DuckLake two writers creating the same object conflict."""
    if not state.relation_kind(con, activation, LOG_SCHEMA):
        schemas = con.execute(
            "SELECT count(*) FROM duckdb_schemas() "
            "WHERE database_name = current_database() AND schema_name = ?",
            [LOG_SCHEMA],
        ).fetchone()[0]
        if not schemas:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(LOG_SCHEMA)}")
        columns = ", ".join(f"{quote_ident(name)} {kind}" for name, kind in [*FIXED_COLUMNS, *keys])
        con.execute(f"CREATE TABLE {log_table(activation)} ({columns})")
        return
    existing = {
        row[0].lower()
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
            "current_database() AND table_schema = ? AND table_name = ?",
            [LOG_SCHEMA, activation],
        ).fetchall()
    }
    for name, kind in keys:
        if name.lower() not in existing:
            table = log_table(activation)
            con.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {kind}")


def append(
    con: duckdb.DuckDBPyConnection,
    activation: str,
    entry: SyncLogEntry,
    keys: Sequence[tuple[str, str, str]],
    kinds: Sequence[str],
) -> int:
    """Log the change set's rows of `kinds` (the exported ones); returns the rows logged.

    `keys`: (internal name in the change set, key column name, DuckDB type) in key order.
    Runs in the caller's transaction (`commit_baseline`)."""
    clash = [name for _, name, _ in keys if name.lower() in RESERVED_NAMES]
    if clash:
        raise ValueError(
            f"activation {activation!r}: key column {clash[0]!r} has the name of a sync log "
            f"column ({', '.join(sorted(RESERVED_NAMES))})"
        )
    _ensure_table(con, activation, [(name, kind) for _, name, kind in keys])
    now = state.utc_now()
    con.execute(
        f"DELETE FROM {log_table(activation)} WHERE committed_at < ?",
        [now - timedelta(days=entry.retention_days)],
    )
    logged = 0
    if kinds:
        names = ", ".join(
            [*(name for name, _ in FIXED_COLUMNS), *(quote_ident(n) for _, n, _ in keys)]
        )
        values = ", ".join(f"ch.{quote_ident(internal)}" for internal, _, _ in keys)
        wanted = ", ".join(quote_literal(k) for k in kinds)
        row = con.execute(
            f"INSERT INTO {log_table(activation)} ({names}) "
            f"SELECT ?, ?, ?, ch.kind, {values} "
            f"FROM {state_table('changes', activation)} AS ch WHERE ch.kind IN ({wanted})",
            [entry.run_id, _naive_utc(entry.logical_time), now],
        ).fetchone()
        logged = int(row[0]) if row else 0
    return logged


def run_slice(
    con: duckdb.DuckDBPyConnection, activation: str, run_id: str, sample: int = 10
) -> SyncLogSlice | None:
    """The rows one run logged (counts per operation and the first `sample`), or None when
    the activation has no log table."""
    if not state.relation_kind(con, activation, LOG_SCHEMA):
        return None
    table = log_table(activation)
    operations = {
        str(kind): int(count)
        for kind, count in con.execute(
            f"SELECT operation, count(*) FROM {table} WHERE run_id = ? GROUP BY operation "
            "ORDER BY operation",
            [run_id],
        ).fetchall()
    }
    cursor = con.execute(f"SELECT * FROM {table} WHERE run_id = ? LIMIT ?", [run_id, sample])
    rows = cursor.fetchall()
    return SyncLogSlice(
        table=table,
        run_id=run_id,
        rows=sum(operations.values()),
        operations=operations,
        columns=[d[0] for d in cursor.description],
        sample=rows,
    )
