"""The sandbox for user SQL: what a model or segment filter may say, and what DuckDB may touch.

Two layers, both always on (see docs/security.md):

1. Shape checks with DuckDB's own parser (`extract_statements`, `json_serialize_sql`), at load
   and again at run time: a model is exactly one SELECT query; a segment filter is exactly one
   expression inside the query we build around it. Table functions outside a short list of
   pure ones (`range`, `unnest`, ...) are rejected, so `read_csv('/etc/passwd')`, `glob(...)`,
   `query('...')` never reach the binder. Which *tables* may be read is decided by the caller
   (introspect.py) from the references returned here.
2. `lock_down`: once our own code has attached the sources, the connection loses external
   access (`enable_external_access = false`), keeps only the declared source files
   (`allowed_paths`) and our temp root (`allowed_directories`), and locks its configuration,
   so no statement can SET, RESET or PRAGMA its way back. ATTACH, INSTALL/LOAD of extension
   files, COPY and file readers then fail in DuckDB itself even if a check above were missed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from azexport_assets.formats.errors import TEMP_DIR_VARIABLE
from azexport_assets.sql_text import quote_ident, quote_literal

TEMP_DIR_ENV = TEMP_DIR_VARIABLE  # one name for the setting, defined with its error

# Table functions that compute rows from their arguments alone: no files, no catalog, no SQL text.
PURE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest", "json_each", "json_tree"})

# Table references a query may use; SHOW_REF (DESCRIBE/SUMMARIZE), COLUMN_DATA, ... may not.
ALLOWED_REF_TYPES = frozenset(
    {"BASE_TABLE", "SUBQUERY", "JOIN", "TABLE_FUNCTION", "EXPRESSION_LIST", "EMPTY", "PIVOT"}
)
KNOWN_REF_TYPES = ALLOWED_REF_TYPES | {
    "SHOW_REF",
    "COLUMN_DATA",
    "DELIM_GET",
    "BOUND_TABLE_REF",
    "CTE",
    "EMPTY_FROM",
    "INVALID",
}

# Settings user SQL would need to escape; all are frozen by `lock_configuration`.
LOCKED_SETTINGS = ("enable_external_access", "allowed_paths", "allowed_directories")


# DuckDB folds identifiers with ASCII rules only (StringUtil::Lower): 'K' (U+212A, Kelvin sign)
# stays itself, where Python's str.lower() would make it 'k'. Comparing names with Python's
# folding would let a CTE named with such a letter hide a reference to a real table or file.
_ASCII_UPPER_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(name: str) -> str:
    """`name` folded the way DuckDB folds identifiers: A-Z to a-z, every other letter as is."""
    return name.translate(_ASCII_UPPER_TO_LOWER)


class UnsafeSQLError(ValueError):
    """User SQL that is not of the allowed shape; the message says what and why, not where."""


@dataclass(frozen=True)
class QueryRefs:
    """What one checked query reads: (catalog, schema, table) of every table, CTEs left out."""

    tables: tuple[tuple[str, str, str], ...] = ()
    table_functions: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- shape checks


_parser = threading.local()


def _parser_connection() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per thread for parsing: opening one costs more than a parse, and
    a project checks hundreds of SQL texts. It holds no data and runs only the parser."""
    con = getattr(_parser, "con", None)
    if con is None or getattr(_parser, "pid", None) != os.getpid():
        con = _parser.con = duckdb.connect()
        _parser.pid = os.getpid()
    return con


def _parse_tree(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of a SELECT (parser only: nothing is bound or executed)."""
    raw = _parser_connection().execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0]
    parsed = json.loads(raw)
    if parsed.get("error"):
        message = str(parsed.get("error_message") or "cannot parse the SQL")
        if "Only SELECT statements" in message:
            raise UnsafeSQLError("must be a single SELECT query")
        raise UnsafeSQLError(f"does not parse: {message.strip().splitlines()[0]}")
    return parsed


def _statement_types(sql: str) -> list[str]:
    try:
        statements = _parser_connection().extract_statements(sql)
    except duckdb.Error as error:
        raise UnsafeSQLError(f"does not parse: {str(error).strip().splitlines()[0]}") from None
    return [str(s.type).rsplit(".", 1)[-1] for s in statements]


def check_select(sql: str) -> tuple[dict[str, Any], QueryRefs]:
    """Parse `sql` as exactly one SELECT query; return its tree and what it reads.

    Raises UnsafeSQLError for several statements, any other statement (COPY, ATTACH, SET,
    PRAGMA, INSTALL, CALL, CREATE SECRET, ...), DESCRIBE/SUMMARIZE, and table functions that
    are not pure (every file reader, glob, query, query_table, ...)."""
    kinds = _statement_types(sql)
    if not kinds:
        raise UnsafeSQLError("is empty: write one SELECT query")
    if len(kinds) > 1:
        raise UnsafeSQLError(
            f"has {len(kinds)} statements ({', '.join(kinds)}); write exactly one SELECT query"
        )
    if kinds[0] != "SELECT":
        raise UnsafeSQLError(f"is a statement of kind {kinds[0]}; write exactly one SELECT query")
    parsed = _parse_tree(sql)
    statements = parsed.get("statements", [])
    if len(statements) != 1:
        raise UnsafeSQLError("write exactly one SELECT query")
    tables: list[tuple[str, str, str]] = []
    functions: list[str] = []
    _walk(statements[0], frozenset(), tables, functions)
    for name in functions:
        if name not in PURE_TABLE_FUNCTIONS:
            raise UnsafeSQLError(
                f"calls the table function {name}(), which may read files or run other SQL; "
                "read declared sources and models by name instead (allowed table functions: "
                f"{', '.join(sorted(PURE_TABLE_FUNCTIONS))})"
            )
    return statements[0], QueryRefs(tuple(tables), tuple(functions))


def _is_recursive(cte: dict[str, Any]) -> bool:
    node = cte.get("query_node") or (cte.get("query") or {}).get("node") or {}
    return isinstance(node, dict) and node.get("type") == "RECURSIVE_CTE_NODE"


def _walk(
    node: Any, ctes: frozenset[str], tables: list[tuple[str, str, str]], functions: list[str]
) -> None:
    """Collect table references and table functions, resolving CTE names by scope as DuckDB
    does: a CTE is visible in the rest of its query and in the CTEs after it, and in its own
    body only when recursive. (A name outside that scope is a table, or a file, to DuckDB.)"""
    if isinstance(node, list):
        for item in node:
            _walk(item, ctes, tables, functions)
        return
    if not isinstance(node, dict):
        return
    cte_map = node.get("cte_map")
    if isinstance(cte_map, dict) and cte_map.get("map"):
        visible = set(ctes)
        for entry in cte_map["map"]:
            name = ascii_lower(str(entry.get("key", "")))
            value = entry.get("value")
            own = {name} if isinstance(value, dict) and _is_recursive(value) else set()
            _walk(value, frozenset(visible | own), tables, functions)
            visible.add(name)
        ctes = frozenset(visible)
        node = {k: v for k, v in node.items() if k != "cte_map"}
    kind = node.get("type")
    if isinstance(kind, str) and "class" not in node and kind in KNOWN_REF_TYPES:
        if kind not in ALLOWED_REF_TYPES:
            shown = "DESCRIBE/SUMMARIZE/SHOW" if kind == "SHOW_REF" else kind
            raise UnsafeSQLError(f"uses {shown}, which is not allowed here; write a plain query")
        if kind == "BASE_TABLE":
            catalog = str(node.get("catalog_name") or "")
            schema = str(node.get("schema_name") or "")
            table = str(node.get("table_name") or "")
            if catalog or schema or ascii_lower(table) not in ctes:
                tables.append((catalog, schema, table))
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            functions.append(ascii_lower(str(function.get("function_name", ""))))
    for value in node.values():
        _walk(value, ctes, tables, functions)


def segment_query(model: str, filter_sql: str) -> str:
    """The query that materializes a segment. The filter sits on lines of its own, so a
    trailing `--` comment cannot swallow the closing parenthesis."""
    return f"SELECT * FROM models.{quote_ident(model)} WHERE (\n{filter_sql}\n)"


def check_segment_filter(model: str, filter_sql: str) -> QueryRefs:
    """The segment query must parse as exactly `SELECT * FROM models.<model> WHERE <one
    expression>`: a filter that closes the parenthesis to add UNION, ORDER BY, GROUP BY, a
    second statement or anything else changes that tree and is rejected. Returns what the
    filter itself reads (subqueries), so the caller can allow models only."""
    if not filter_sql.strip():
        raise UnsafeSQLError("is empty: write a boolean expression, e.g. is_active")
    query = segment_query(model, filter_sql)
    try:
        count = len(_statement_types(query))
        if count > 1:
            raise UnsafeSQLError(
                f"ends the query and adds {count - 1} more statement(s) after a ';'"
            )
        tree, _ = check_select(query)
    except UnsafeSQLError as error:
        raise UnsafeSQLError(f"must be one boolean expression: it {error}") from None
    node = tree.get("node") or {}
    star = node.get("select_list") or []
    source = node.get("from_table") or {}
    extra = (
        node.get("type") != "SELECT_NODE"
        or node.get("modifiers")
        or (node.get("cte_map") or {}).get("map")
        or node.get("group_expressions")
        or node.get("group_sets")
        or node.get("having")
        or node.get("qualify")
        or node.get("sample")
        or node.get("where_clause") is None
        or len(star) != 1
        or star[0].get("type") != "STAR"
        or star[0].get("exclude_list")
        or star[0].get("replace_list")
        or star[0].get("rename_list")
        or star[0].get("expr")
        or source.get("type") != "BASE_TABLE"
        or source.get("alias")
        or source.get("sample")
        or source.get("at_clause")
        or source.get("catalog_name")
        or source.get("schema_name") != "models"
        or source.get("table_name") != model
    )
    if extra:
        raise UnsafeSQLError(
            "must be one boolean expression over the model's columns; it changes the query "
            "around it (a parenthesis closed early, UNION, ORDER BY, ...)"
        )
    tables: list[tuple[str, str, str]] = []
    functions: list[str] = []
    _walk(node["where_clause"], frozenset(), tables, functions)
    _check_probe(model, filter_sql)
    return QueryRefs(tuple(tables), tuple(functions))


def filter_type_probe(model: str, filter_sql: str) -> str:
    """A query whose one column has the filter's type (DESCRIBE it to learn the type)."""
    return f"SELECT (\n{filter_sql}\n) AS keep FROM models.{quote_ident(model)}"


def _check_probe(model: str, filter_sql: str) -> None:
    # The probe puts the same text in another place; it must be just as harmless there.
    tree, _ = check_select(filter_type_probe(model, filter_sql))
    node = tree.get("node") or {}
    source = node.get("from_table") or {}
    if (
        node.get("type") != "SELECT_NODE"
        or len(node.get("select_list") or []) != 1
        or node.get("where_clause") is not None
        or node.get("modifiers")
        or source.get("type") != "BASE_TABLE"
        or source.get("schema_name") != "models"
        or source.get("table_name") != model
    ):
        raise UnsafeSQLError("must be one boolean expression over the model's columns")


# --------------------------------------------------------------------------- the connection


class ExportTempDirError(OSError):
    """$AZEXPORT_TEMP_DIR names a place where export files cannot be written."""


def export_temp_root() -> Path:
    """Where export files are written: $AZEXPORT_TEMP_DIR, else a folder private to this user
    under the system temp folder (`azexport-<uid>`, mode 0700), so no other user's process can
    read an export on its way to Azure, and no other folder of /tmp is ever granted to DuckDB."""
    configured = os.environ.get(TEMP_DIR_ENV)
    if configured:
        # Created (0700) when missing: an emptyDir or tmpfs mounted at run time starts empty.
        folder = Path(configured).expanduser().resolve()
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            problem = None if os.access(folder, os.W_OK | os.X_OK) else "not writable by this user"
        except FileExistsError:
            problem = "it is a file, not a folder"
        except OSError as error:
            problem = error.strerror or str(error)
        if problem is not None:
            raise ExportTempDirError(
                f"{TEMP_DIR_ENV}={configured!r}: cannot write export files there ({problem}): "
                "set it to a folder this user may create and write, or unset it for a private "
                "folder in the system temp folder"
            )
        return folder
    return _private_folder(Path(tempfile.gettempdir()).resolve() / f"azexport-{os.getuid()}")


def _private_folder(folder: Path) -> Path:
    """`folder`, created 0700 if missing; refused if it is a symlink or another user's."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(
            f"the export temp folder {folder} is not a folder of this user (a symlink, or "
            f"created by someone else): remove it, or set {TEMP_DIR_ENV} to a private folder"
        )
    if info.st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


_process_scratch: dict[tuple[int, Path], Path] = {}


def process_scratch() -> Path:
    """This process's own folder under the export temp root, removed when the process ends.
    Every export of the process writes below it, and the lake's shared DuckDB (which cannot
    change its allowed folders once locked) is granted only this folder."""
    pid = os.getpid()  # a forked child gets a folder of its own
    root = export_temp_root()
    folder = _process_scratch.get((pid, root))
    if folder is None or not folder.is_dir():
        folder = Path(tempfile.mkdtemp(prefix=f"run-{pid}-", dir=root))
        _process_scratch[(pid, root)] = folder
        atexit.register(shutil.rmtree, folder, True)
    return folder


def lock_down(
    con: duckdb.DuckDBPyConnection,
    files: Iterable[str] = (),
    directories: Iterable[str | Path] = (),
) -> None:
    """Cut `con` off from every file but `files` and those under `directories`, then freeze
    its configuration. Call after our own setup (ATTACH, views, SET): nothing can be changed
    afterwards, by user SQL or by us. DuckDB adds the database files it has open (the
    warehouse, attached sources, their WAL) and its own spill folder to the lists itself."""
    # A remote source's blobs (az://...) are granted one by one, as written.
    paths = sorted({f if "://" in f else os.path.realpath(f) for f in files})
    # DuckDB matches a directory as a path prefix ending in '/', so siblings stay out.
    # Remote prefixes (the lake's az://container/prefix/) are kept as written.
    dirs = sorted(
        {
            str(d).rstrip("/") + "/" if "://" in str(d) else os.path.join(os.path.realpath(d), "")
            for d in directories
        }
    )
    # Python variables in scope must not become tables either (replacement scans): also on
    # the connection's cursors, which start from the global settings (`sandboxed_cursor`).
    con.execute("SET python_enable_replacements = false")
    con.execute("SET GLOBAL python_enable_replacements = false")
    con.execute(f"SET allowed_paths = [{', '.join(quote_literal(p) for p in paths)}]")
    con.execute(f"SET allowed_directories = [{', '.join(quote_literal(d) for d in dirs)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


def sandboxed_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of a locked-down connection that reads what the connection reads: a stream
    that must not collide with results open on `con` reads from one. A cursor is a connection
    of its own on the same database: it shares the attached databases and the global settings
    (the lock-down), but not the connection's temporary views, which are the file sources
    (CSV, Parquet, blobs): without them a view model over such a source could not be read, or
    read a model of the same name. They are made again on the cursor, as `con` has them."""
    cursor = con.cursor()
    try:
        views = con.execute(
            "SELECT sql FROM duckdb_views() WHERE temporary AND NOT internal ORDER BY view_oid"
        ).fetchall()
        for (sql,) in views:
            cursor.execute(sql)
    except BaseException:
        cursor.close()
        raise
    return cursor
