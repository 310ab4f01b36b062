"""Change signals of database sources: a value that changes whenever a table's rows change.

They feed the `on_change` sensors and the models' rebuild fingerprints
(`components.fingerprints`). Both are exact, and read through a plain libpq connection
(psycopg2): no DuckDB is opened.

- Postgres: per table, `count(*)` and the sum of a 64-bit hash of every row version's identity
  (its `ctid`, where it lies, and its `xmin`, the transaction that wrote it), read in one
  REPEATABLE READ, read-only transaction. Every insert, update or delete adds or removes row
  versions, so the set of identities, and with it the sum, changes (two changes cancelling out
  would take a 64-bit hash collision); rewriting the table (VACUUM FULL, CLUSTER) moves rows,
  which counts as a change and costs one needless rebuild. Unlike the statistics views
  (`pg_stat_user_tables`), which a backend reports up to seconds after its commit, this sees
  every committed change at once. It scans each table whole (computing on its row headers
  only): list the tables models read in `tables` to bound the cost. A view or a foreign table
  has no row versions: its source then cannot be fingerprinted (None), and models over it are
  rebuilt on every run.
  A signal is kept on disk with the transaction snapshot it was read in
  (`pg_current_snapshot()`: the transaction ids completed and in progress), under a digest of
  the server, database and user (never the password), schema, tables and snapshot
  (`validation_cache`'s entries, in `<cache folder>/postgres_signals`). A row change becomes
  visible only when the transaction that wrote it commits, and every commit or rollback of a
  transaction that wrote changes the snapshot; so a later read in an identical snapshot, by
  any process, sees the same rows and returns the kept signal without scanning. The on-change
  sensor and a kept model's step then cost one short query while the database is quiet (a
  replica loaded nightly), and scan again after any write anywhere in it is committed. The
  snapshot carries the server's start time: a server restored to an earlier point has
  restarted, and may hand out the same transaction ids again.
- The warehouse's lake: per table, its id (a table dropped and created again gets a new one) and
  the last snapshot whose changes name it (`ducklake_snapshot_changes`: inserts, deletes,
  inlined rows, schema changes, compactions), read from the lake's catalog in Postgres.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from azexport_assets import validation_cache
from azexport_assets.sandbox import ascii_lower
from azexport_assets.warehouse.dbsources import (
    CONNECTION_STRING,
    DatabaseSourceError,
    postgres_dsn,
    warehouse_lake_conninfo,
)
from azexport_assets.warehouse.pglock import _psycopg2
from azexport_assets.warehouse.settings import without_secrets

CONNECT_TIMEOUT_SECONDS = 10
_ROW_VERSIONS = {"r", "p", "m"}  # tables, partitioned tables, materialized views

_LAKE_TABLES = """
SELECT t.table_name, t.table_id,
       (SELECT max(c.snapshot_id) FROM ducklake_snapshot_changes AS c
         WHERE c.snapshot_id >= t.begin_snapshot
           AND c.changes_made ~ ('(^|,)[a-z_]+:' || t.table_id || '(,|$)'))
  FROM ducklake_table AS t JOIN ducklake_schema AS s ON s.schema_id = t.schema_id
 WHERE s.schema_name = %s AND s.end_snapshot IS NULL AND t.end_snapshot IS NULL
"""


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextmanager
def _session(conninfo: str, where: str, doing: str) -> Iterator[Any]:
    """A connection to `conninfo`, rolled back and closed when the block ends. A database
    error while connecting or in the block is a DatabaseSourceError naming `where` and
    what failed (`cannot connect`, or `doing`), without the connection string."""
    psycopg2 = _psycopg2()

    def failure(what: str, error: Exception) -> DatabaseSourceError:
        text = without_secrets(" ".join(str(error).split()), [conninfo], CONNECTION_STRING)
        return DatabaseSourceError(f"{where}: {what}: {text}")

    try:
        connection = psycopg2.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg2.Error as error:
        raise failure("cannot connect", error) from None
    try:
        yield connection
        connection.rollback()
    except psycopg2.Error as error:
        raise failure(doing, error) from None
    finally:
        connection.close()


def _wanted(found: dict[str, Any], tables: Iterable[str]) -> dict[str, Any]:
    """The entries of `found` (by table name) for `tables`, matched the way DuckDB does;
    a table that is not there is recorded as missing (it may be created later)."""
    by_folded = {ascii_lower(name): value for name, value in found.items()}
    return {t: by_folded.get(ascii_lower(t), "missing") for t in sorted(set(tables))}


def postgres_fingerprint(
    name: str, source: Any, tables: Iterable[str], kept_in: Path | None = None
) -> str | None:
    """The change signal of `tables` of a postgres source (see the module docstring); None
    when one of them is a view or a foreign table. `kept_in`: the folder where signals are
    kept by source and snapshot (`validation_cache`'s entries); None keeps nothing."""
    schema = source.postgres.schema_name
    where = f"source '{name}' (postgres schema {schema}, dsn in ${source.postgres.dsn.env})"
    dsn = postgres_dsn(name, source)
    wanted = sorted(set(tables))
    with _session(dsn, where, "cannot read its change signal") as connection:
        # The database the signal is of (host, port, database, user): never its password,
        # which libpq does not report.
        reported = connection.get_dsn_parameters()
        server = [reported.get(k) for k in ("host", "hostaddr", "port", "dbname", "user")]
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with connection.cursor() as cursor:
            snapshot = _snapshot(connection, cursor)
            entry = validation_cache.digest(["postgres signal", server, schema, wanted, snapshot])
            kept = validation_cache.load(kept_in, entry)
            if isinstance(kept, dict) and "signal" in kept:
                return kept["signal"]  # no transaction that wrote ended since: the same rows
            signal = _read_signal(cursor, schema, wanted)
    validation_cache.store(kept_in, entry, {"signal": signal})
    return signal


def _snapshot(connection: Any, cursor: Any) -> str:
    """The transaction's snapshot (it is fixed by this, the transaction's first statement) and
    the server's start time: a server restored to an earlier point must restart, and may then
    hand out transaction ids again."""
    # `txid_current_snapshot` is the function's name before Postgres 13.
    function = "pg" if connection.server_version >= 130000 else "txid"
    cursor.execute(
        f"SELECT {function}_current_snapshot()::text || '@' || pg_postmaster_start_time()::text"
    )
    return str(cursor.fetchone()[0])


def _read_signal(cursor: Any, schema: str, tables: Iterable[str]) -> str | None:
    """The signal of `tables` read through `cursor` (one REPEATABLE READ transaction)."""
    psycopg2 = _psycopg2()
    cursor.execute(
        "SELECT c.relname, c.oid::bigint, c.relkind FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s",
        [schema],
    )
    relations = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
    state: dict[str, Any] = {}
    for table, found in _wanted(relations, tables).items():
        if found == "missing":
            state[table] = found
            continue
        oid, relkind = found
        if relkind not in _ROW_VERSIONS:
            return None
        cursor.execute(
            "SELECT count(*), coalesce(sum(hashtextextended("
            "ctid::text || ':' || xmin::text, 0)), 0)::text "
            f"FROM {psycopg2.extensions.quote_ident(schema, cursor)}."  # noqa: S608
            f"{psycopg2.extensions.quote_ident(_name_of(relations, table), cursor)}"
        )
        state[table] = [oid, *cursor.fetchone()]
    return _digest(state)


def _name_of(found: dict[str, Any], table: str) -> str:
    """The schema's own spelling of `table` (matched with DuckDB's folding)."""
    return next(name for name in found if ascii_lower(name) == ascii_lower(table))


def lake_fingerprint(name: str, source: Any, tables: Iterable[str]) -> str:
    """The change signal of `tables` of a lake source (see the module docstring)."""
    where = f"source '{name}' (lake schema {source.lake})"
    conninfo = warehouse_lake_conninfo()
    if conninfo is None:
        raise DatabaseSourceError(
            f"{where}: the warehouse is not a DuckLake (AZEXPORT_WAREHOUSE=ducklake:postgres:...)"
        )
    catalog = f"{where}, the lake's catalog"
    with _session(conninfo, catalog, "cannot read it") as connection, connection.cursor() as cursor:
        cursor.execute(_LAKE_TABLES, [source.lake])
        found = {row[0]: [row[1], row[2]] for row in cursor.fetchall()}
    return _digest(_wanted(found, tables))
