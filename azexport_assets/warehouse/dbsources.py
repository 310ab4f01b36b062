"""Sources that are tables of a database: a Postgres schema, or a schema of the warehouse's lake.

- `postgres:` is attached read-only under the source's name, limited to its schema
  (`ATTACH <dsn> AS <source> (TYPE postgres, READ_ONLY, SCHEMA <schema>)`): models read
  `<source>.<table>`, and DuckDB's catalog holds that one schema only. The connection string is
  read from its environment variable when the source is attached and never appears in a
  message: DuckDB's and libpq's errors quote it, so they are cleaned first.
- `lake:` reads a schema of the DuckLake that is the warehouse (tables another tool loaded
  there). Its declared tables become views `<source>.<table>` in a small in-memory catalog named
  after the source; a source named like its schema reads the schema itself.

Every declared table must exist when the source is attached: a clear error names the source,
the table and the tables the schema has. What the sandbox can promise for database sources
(the SQL check, the attachment, the database's own grants) is in docs/security.md.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import duckdb

from azexport_assets.sandbox import ascii_lower
from azexport_assets.sql_text import quote_ident, quote_literal
from azexport_assets.warehouse.base import WarehouseConfigError
from azexport_assets.warehouse.extensions import install_extensions
from azexport_assets.warehouse.settings import LAKE_PREFIX, is_lake, redact, without_secrets

# What a connection string is replaced by in a message.
CONNECTION_STRING = "<connection string>"

if TYPE_CHECKING:  # the configuration layer may depend on Dagster; the warehouse does not
    from azexport_assets.config import SourceConfig

# The warehouse's lake, attached read-only where the project is described at load.
LOAD_LAKE_CATALOG = "azexport_lake"


class DatabaseSourceError(WarehouseConfigError):
    """A postgres or lake source cannot be read: its variable is unset, its database refuses
    the connection, its schema or a declared table is missing. Never holds the connection
    string."""


def postgres_dsn(name: str, source: SourceConfig) -> str:
    """The connection string of a postgres source, from its environment variable."""
    assert source.postgres is not None
    variable = source.postgres.dsn.env
    value = os.environ.get(variable, "").strip()
    if not value:
        raise DatabaseSourceError(
            f"source '{name}' (postgres): the environment variable {variable} that holds its "
            "connection string is not set (e.g. from a Kubernetes secret, see docs/deploy.md)"
        )
    return value


def _first_lines(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).strip().splitlines()[:2])


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """LOAD an extension from the project's offline copies (see `extensions`)."""
    folder = install_extensions([name])
    con.execute(f"SET extension_directory = {quote_literal(str(folder))}")
    con.execute(f"LOAD {name}")


def attach_postgres(con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig) -> None:
    """ATTACH the source's schema read-only under `name` and check its declared tables."""
    assert source.postgres is not None
    dsn = postgres_dsn(name, source)
    schema = source.postgres.schema_name
    where = f"source '{name}' (postgres schema {schema}, dsn in ${source.postgres.dsn.env})"
    try:
        load_extension(con, "postgres_scanner")
        con.execute(
            f"ATTACH {quote_literal(dsn)} AS {quote_ident(name)} "
            f"(TYPE postgres, READ_ONLY, SCHEMA {quote_literal(schema)})"
        )
        tables = _tables(con, name, schema=None)
    except duckdb.Error as error:
        reason = without_secrets(_first_lines(error), [dsn], CONNECTION_STRING)
        raise DatabaseSourceError(f"{where}: cannot connect: {reason}") from None
    if not tables and not _schema_exists(con, name, schema):
        con.execute(f"DETACH {quote_ident(name)}")
        raise DatabaseSourceError(f"{where}: the database has no schema '{schema}'")
    _check_declared(where, source, tables)


def _schema_exists(con: duckdb.DuckDBPyConnection, catalog: str, schema: str) -> bool:
    rows = con.execute(
        "SELECT schema_name FROM duckdb_schemas() WHERE database_name = ?", [catalog]
    ).fetchall()
    return ascii_lower(schema) in {ascii_lower(r[0]) for r in rows}


def _tables(con: duckdb.DuckDBPyConnection, catalog: str, schema: str | None) -> list[str]:
    """Tables and views of `catalog` (in `schema`, when given), sorted."""
    found: set[str] = set()
    for function, column in (("duckdb_tables", "table_name"), ("duckdb_views", "view_name")):
        rows = con.execute(
            f"SELECT schema_name, {column} FROM {function}() WHERE database_name = ?", [catalog]
        ).fetchall()
        found |= {t for s, t in rows if schema is None or s == schema}
    return sorted(found)


def _check_declared(where: str, source: SourceConfig, tables: list[str]) -> list[str]:
    """The declared tables as the schema spells them; an error naming any that is missing."""
    present = {ascii_lower(t): t for t in tables}
    wanted = source.tables if source.tables is not None else tables
    missing = [t for t in wanted if ascii_lower(t) not in present]
    if missing:
        raise DatabaseSourceError(
            f"{where}: no table {', '.join(missing)} in the schema; it has: "
            f"{', '.join(tables) or 'no tables'}"
        )
    return [present[ascii_lower(t)] for t in wanted]


def lake_catalog(con: duckdb.DuckDBPyConnection) -> str | None:
    """The DuckLake attached to `con`: the warehouse's own (its main database on the lake
    backend; `LOAD_LAKE_CATALOG` where the project is described at load)."""
    rows = con.execute(
        "SELECT database_name FROM duckdb_databases() WHERE type = 'ducklake' ORDER BY 1"
    ).fetchall()
    return rows[0][0] if rows else None


def attach_lake_schema(con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig) -> None:
    """Make the declared tables of the lake schema readable as `<name>.<table>`."""
    assert source.lake
    schema = source.lake
    where = f"source '{name}' (lake schema {schema})"
    catalog = lake_catalog(con)
    if catalog is None:
        raise DatabaseSourceError(
            f"{where}: reads a schema of the warehouse's DuckLake, but the warehouse is a DuckDB "
            "file: set AZEXPORT_WAREHOUSE=ducklake:postgres:... (docs/deploy.md), or read the "
            "tables from files"
        )
    if not _schema_exists(con, catalog, schema):
        raise DatabaseSourceError(
            f"{where}: the warehouse's DuckLake has no schema '{schema}' (yet): create it, or "
            "load its tables first"
        )
    tables = _check_declared(where, source, _tables(con, catalog, schema))
    default = con.execute("SELECT current_database()").fetchall()[0][0]
    if catalog == default and ascii_lower(name) == ascii_lower(schema):
        return  # `<name>.<table>` already names the schema's tables
    con.execute(f"ATTACH ':memory:' AS {quote_ident(name)}")
    for table in tables:
        con.execute(
            f"CREATE VIEW {quote_ident(name)}.main.{quote_ident(table)} AS SELECT * FROM "
            f"{quote_ident(catalog)}.{quote_ident(schema)}.{quote_ident(table)}"
        )


def warehouse_lake_conninfo() -> str | None:
    """The catalog connection string of the warehouse's lake, from $AZEXPORT_WAREHOUSE
    ('ducklake:postgres:<conninfo>'), or None for a DuckDB file warehouse."""
    from azexport_assets.warehouse.file import WAREHOUSE_ENV  # file -> sources -> this module

    location = os.environ.get(WAREHOUSE_ENV, "")
    if not is_lake(location):
        return None
    kind, _, conninfo = location[len(LAKE_PREFIX) :].partition(":")
    return conninfo.strip() if kind == "postgres" and conninfo.strip() else None


def attach_lake_for_load(con: duckdb.DuckDBPyConnection) -> None:
    """Attach the warehouse's lake read-only (its catalog only: no data file is read), so a
    load-time description can bind models over lake sources."""
    conninfo = warehouse_lake_conninfo()
    if conninfo is None:
        raise DatabaseSourceError(
            "lake sources read a schema of the warehouse's DuckLake, but AZEXPORT_WAREHOUSE "
            "names a DuckDB file: set it to ducklake:postgres:... (docs/deploy.md)"
        )
    try:
        load_extension(con, "postgres_scanner")
        load_extension(con, "ducklake")
        con.execute(
            f"ATTACH {quote_literal(LAKE_PREFIX + 'postgres:' + conninfo)} AS "
            f"{LOAD_LAKE_CATALOG} (READ_ONLY)"
        )
    except duckdb.Error as error:
        raise DatabaseSourceError(
            f"cannot open the warehouse's DuckLake: {redact(_first_lines(error))}"
        ) from None


def attach_database_source(con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig) -> None:
    """Attach a postgres or lake source (see the module docstring)."""
    if source.kind == "postgres":
        attach_postgres(con, name, source)
    else:
        attach_lake_schema(con, name, source)
