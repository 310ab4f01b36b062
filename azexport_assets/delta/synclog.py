"""The sync log: one row per exported key and run, read as `azexport_log.<activation>`.

`append` runs inside `commit_baseline`'s transaction, so the log and the baseline move
together: a run that fails before its commit leaves no log rows, and a retry that finds the
change set already committed logs nothing again. It is set-based: one `INSERT ... SELECT` per
exported change kind from the stored change set, plus `DELETE`s of runs past the retention.

`azexport_log.<activation>` is a view with the columns `run_id`, `logical_time` and
`committed_at` (TIMESTAMP, UTC), `operation` ('added' | 'updated' | 'removed'), then the
model's primary key columns under their own names and types. It joins two tables: the runs
(`<activation>__runs`: run number, run id, times, rows logged) and the keys
(`<activation>__keys`: run number, an operation code and the key columns). Repeating a 36-byte
run id and two timestamps on each of millions of rows would cost several times the insert of
the keys themselves. A key column that appears later (the key changed) is added; older rows
hold NULL in it.
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
# The view's columns besides the key (a key column may not have one of these names).
RESERVED_NAMES = frozenset({"run_id", "logical_time", "committed_at", "operation"})
OPERATIONS = {"added": 1, "updated": 2, "removed": 3}
RUNS_COLUMNS = (
    ("run_number", "INTEGER"),
    ("run_id", "VARCHAR"),
    ("logical_time", "TIMESTAMP"),
    ("committed_at", "TIMESTAMP"),
    ("rows", "BIGINT"),
)


@dataclass(frozen=True)
class SyncLogEntry:
    """What the log records about one commit: the run, its logical time, the retention."""

    run_id: str
    logical_time: datetime
    retention_days: int


@dataclass
class SyncLogSlice:
    """One run's rows in the log (how many, per operation, the first few) and what the log
    keeps in all after the run's commit (its retention applied)."""

    table: str  # the view, schema-qualified and quoted
    run_id: str
    rows: int
    operations: dict[str, int]
    columns: list[str]
    sample: list[tuple[Any, ...]] = field(default_factory=list)
    total_rows: int = 0  # rows kept, every run within the retention
    runs_kept: int = 0
    oldest_commit: datetime | None = None  # UTC, naive: the oldest run kept

    @property
    def query(self) -> str:
        """SQL that reads the run's slice from the warehouse."""
        return f"SELECT * FROM {self.table} WHERE run_id = {quote_literal(self.run_id)}"


def _relation(name: str) -> str:
    return f"{quote_ident(LOG_SCHEMA)}.{quote_ident(name)}"


def log_table(activation: str) -> str:
    """The view users read: `azexport_log.<activation>`."""
    check_activation(activation)
    return _relation(activation)


def runs_table(activation: str) -> str:
    return _relation(f"{activation}__runs")


def keys_table(activation: str) -> str:
    return _relation(f"{activation}__keys")


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _columns(con: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    return [
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
            "current_database() AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [LOG_SCHEMA, name],
        ).fetchall()
    ]


def _view_sql(activation: str, key_names: Sequence[str]) -> str:
    operation = "CASE k.operation " + " ".join(
        f"WHEN {code} THEN {quote_literal(kind)}" for kind, code in OPERATIONS.items()
    )
    keys = "".join(f", k.{quote_ident(name)}" for name in key_names)
    return (
        f"CREATE OR REPLACE VIEW {log_table(activation)} AS SELECT r.run_id, r.logical_time, "
        f"r.committed_at, {operation} END AS operation{keys} "
        f"FROM {keys_table(activation)} AS k JOIN {runs_table(activation)} AS r "
        "ON k.run_number = r.run_number"
    )


def _ensure_tables(
    con: duckdb.DuckDBPyConnection, activation: str, keys: Sequence[tuple[str, str]]
) -> None:
    """Create the schema, tables and view (or add key columns the keys table lacks); look
    before creating, as on DuckLake two writers creating the same object conflict."""
    if not state.relation_kind(con, f"{activation}__keys", LOG_SCHEMA):
        schemas = con.execute(
            "SELECT count(*) FROM duckdb_schemas() "
            "WHERE database_name = current_database() AND schema_name = ?",
            [LOG_SCHEMA],
        ).fetchone()[0]
        if not schemas:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(LOG_SCHEMA)}")
        runs = ", ".join(f"{name} {kind}" for name, kind in RUNS_COLUMNS)
        con.execute(f"CREATE TABLE {runs_table(activation)} ({runs})")
        columns = ", ".join(
            ["run_number INTEGER", "operation UTINYINT"]
            + [f"{quote_ident(name)} {kind}" for name, kind in keys]
        )
        con.execute(f"CREATE TABLE {keys_table(activation)} ({columns})")
        con.execute(_view_sql(activation, [name for name, _ in keys]))
        return
    existing = _columns(con, f"{activation}__keys")
    missing = [(n, k) for n, k in keys if n.lower() not in {e.lower() for e in existing}]
    for name, kind in missing:
        con.execute(f"ALTER TABLE {keys_table(activation)} ADD COLUMN {quote_ident(name)} {kind}")
    retyped = _retype_keys(con, activation, keys)
    if missing or retyped:
        con.execute(_view_sql(activation, [*existing[2:], *(n for n, _ in missing)]))


def _retype_keys(
    con: duckdb.DuckDBPyConnection, activation: str, keys: Sequence[tuple[str, str]]
) -> bool:
    """A key column whose type changed in the model (the run is then a full export) takes the
    new type when every logged value converts to it, else VARCHAR, which every value does:
    the rows of this run must fit, and the older ones stay readable. Checked before altering,
    since a failed statement would end the commit's transaction."""
    types = dict(
        con.execute(
            "SELECT lower(column_name), data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
            [LOG_SCHEMA, f"{activation}__keys"],
        ).fetchall()
    )
    table = keys_table(activation)
    changed = False
    for name, kind in keys:
        old = types.get(name.lower())
        if old is None or old.upper() == kind.upper():
            continue
        column = quote_ident(name)
        (unfit,) = con.execute(
            f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL "
            f"AND TRY_CAST({column} AS {kind}) IS NULL"
        ).fetchone()
        target = kind if unfit == 0 else "VARCHAR"
        if target.upper() != old.upper():
            con.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {target}")
            changed = True
    return changed


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
    _ensure_tables(con, activation, [(name, kind) for _, name, kind in keys])
    runs, log = runs_table(activation), keys_table(activation)
    now = state.utc_now()
    # Run numbers grow with commit time: expired runs are a prefix, which the keys table's
    # zone maps skip to without reading the rest.
    (expired,) = con.execute(
        f"SELECT max(run_number) FROM {runs} WHERE committed_at < ?",
        [now - timedelta(days=entry.retention_days)],
    ).fetchone()
    if expired is not None:
        con.execute(f"DELETE FROM {log} WHERE run_number <= ?", [expired])
        con.execute(f"DELETE FROM {runs} WHERE run_number <= ?", [expired])
    (number,) = con.execute(f"SELECT coalesce(max(run_number), 0) + 1 FROM {runs}").fetchone()
    names = ", ".join(["run_number", "operation", *(quote_ident(n) for _, n, _ in keys)])
    values = ", ".join(f"ch.{quote_ident(internal)}" for internal, _, _ in keys)
    logged = 0
    for kind in kinds:  # one constant operation per statement: no per-row CASE
        row = con.execute(
            f"INSERT INTO {log} ({names}) SELECT {int(number)}, {OPERATIONS[kind]}, {values} "
            f"FROM {state_table('changes', activation)} AS ch WHERE ch.kind = ?",
            [kind],
        ).fetchone()
        logged += int(row[0]) if row else 0
    con.execute(
        f"INSERT INTO {runs} VALUES (?, ?, ?, ?, ?)",
        [number, entry.run_id, _naive_utc(entry.logical_time), now, logged],
    )
    return logged


def run_slice(
    con: duckdb.DuckDBPyConnection, activation: str, run_id: str, sample: int = 10
) -> SyncLogSlice | None:
    """The rows one run logged (counts per operation and the first `sample`; none when it
    logged nothing, e.g. a retry of a committed run) and the log's totals, or None when the
    activation keeps no log yet."""
    if not state.relation_kind(con, f"{activation}__runs", LOG_SCHEMA):
        return None
    runs, total, oldest = con.execute(
        f"SELECT count(*), coalesce(sum(rows), 0), min(committed_at) FROM {runs_table(activation)}"
    ).fetchone()
    found = con.execute(
        f"SELECT run_number FROM {runs_table(activation)} WHERE run_id = ?", [run_id]
    ).fetchone()
    names = {code: kind for kind, code in OPERATIONS.items()}
    operations = {
        names[code]: int(count)
        for code, count in con.execute(
            f"SELECT operation, count(*) FROM {keys_table(activation)} WHERE run_number = ? "
            "GROUP BY operation ORDER BY operation",
            [found[0] if found else -1],
        ).fetchall()
    }
    table = log_table(activation)
    cursor = con.execute(f"SELECT * FROM {table} WHERE run_id = ? LIMIT ?", [run_id, sample])
    rows = cursor.fetchall()
    return SyncLogSlice(
        table=table,
        run_id=run_id,
        rows=sum(operations.values()),
        operations=dict(sorted(operations.items())),
        columns=[d[0] for d in cursor.description],
        sample=rows,
        total_rows=int(total),
        runs_kept=int(runs),
        oldest_commit=oldest,
    )
