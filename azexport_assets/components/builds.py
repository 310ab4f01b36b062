"""One build of a model or segment in the warehouse, unless its inputs are unchanged.

`build_unless_unchanged` runs in one transaction: it compares the fingerprint of the inputs
(`fingerprints.input_fingerprint`) with the `BuildRecord` the relation carries as its COMMENT;
if they differ it drops and re-creates the relation, counts its rows and checks its key in one
pass, and stores the new record with it, only when the key check passed. Readers (and, on
DuckLake, other writers) see the old relation with its record or the new one with its own.
"""

import contextlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import duckdb

from azexport_assets.components.fingerprints import BuildInputs, input_fingerprint
from azexport_assets.components.metadata import PREVIEW_ROWS, markdown_table
from azexport_assets.delta.state import drop_relation
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project
from azexport_assets.sql_text import quote_ident, quote_literal

BUILD_RECORD = "azexport_build"  # the key that marks our COMMENT on a relation


@dataclass(frozen=True)
class BuildRecord:
    """What a model's or segment's relation carries as its COMMENT, written in the transaction
    that creates it and only when its key check passed: the fingerprint of its inputs, and
    what the UI shows of it (so an unchanged relation is never scanned again)."""

    relation: str  # 'table' | 'view': what holds the record
    fingerprint: str
    inputs: dict
    rows: int
    preview: str
    run_id: str
    built_at: str

    def comment(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if k != "relation"}
        return json.dumps({BUILD_RECORD: 1, **fields}, sort_keys=True)

    @classmethod
    def parse(cls, relation: str, comment: str | None) -> "BuildRecord | None":
        try:
            fields = json.loads(comment or "")
            if fields.pop(BUILD_RECORD) != 1:
                return None
            return cls(relation=relation, **fields)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None  # no record (a relation built before, or by hand), or a foreign one


def read_build(con: duckdb.DuckDBPyConnection, kind: str, name: str) -> BuildRecord | None:
    """The record of `kind.name` (a catalog lookup), None if it has none or does not exist."""
    found = con.execute(
        "SELECT 'table', comment FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ? "
        "UNION ALL SELECT 'view', comment FROM duckdb_views() "
        "WHERE database_name = current_database() AND schema_name = ? AND view_name = ? "
        "AND NOT internal",
        [kind, name, kind, name],
    ).fetchall()
    return BuildRecord.parse(*found[0]) if len(found) == 1 else None


@dataclass(frozen=True)
class Build:
    """What the step did: rebuilt or found unchanged, with the counts the UI shows."""

    rebuilt: bool
    reason: str
    inputs: BuildInputs
    rows: int
    key_clean: bool
    record: BuildRecord | None  # the stored one (kept, or written by this build)
    preview: str


def build_unless_unchanged(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    shape: ProjectShape,
    kind: str,
    name: str,
    sql: str,
    as_view: bool,
    primary_key: list[str],
    watched: dict[str, str | None],
    force: bool,
    run_id: str,
) -> Build:
    """One transaction: compare the fingerprints, and if they differ drop and re-create the
    relation, count and check it, and store the new record with it (readers see the old or the
    new relation, each with its own record)."""
    relation = "view" if as_view else "table"
    con.execute("BEGIN TRANSACTION")
    try:
        records: dict[tuple[str, str], BuildRecord | None] = {}

        def stored(kind_: str, name_: str) -> tuple[str, str] | None:
            if (kind_, name_) not in records:
                records[(kind_, name_)] = read_build(con, kind_, name_)
            found = records[(kind_, name_)]
            return (found.relation, found.fingerprint) if found else None

        inputs = input_fingerprint(project, shape, kind, name, sql, watched, stored)
        previous = read_build(con, kind, name)
        reason = _rebuild_reason(inputs, previous, relation, force)
        if reason is None:
            con.execute("ROLLBACK")  # nothing was written
            return Build(
                rebuilt=False,
                reason=f"not rebuilt: its inputs are unchanged since run {previous.run_id[:8]} "
                f"({previous.built_at}), whose rows passed the key check; run with "
                "force_rebuild to rebuild it",
                inputs=inputs,
                rows=previous.rows,
                key_clean=True,
                record=previous,
                preview=previous.preview,
            )
        table = f"{kind}.{quote_ident(name)}"
        drop_relation(con, name, schema=kind)  # table <-> view
        written = con.execute(f"CREATE {relation.upper()} {table} AS {sql}").fetchone()
        rows, clean = _count_and_check(con, table, primary_key, None if as_view else written)
        preview = con.execute(f"SELECT * FROM {table} LIMIT {PREVIEW_ROWS}")
        header = [d[0] for d in preview.description]
        preview_md = markdown_table(header, preview.fetchall())
        record = None
        if inputs.fingerprint and clean:  # a failed key check never becomes a good build
            record = BuildRecord(
                relation=relation,
                fingerprint=inputs.fingerprint,
                inputs=inputs.parts,
                rows=rows,
                preview=preview_md,
                run_id=run_id,
                built_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            )
            con.execute(
                f"COMMENT ON {relation.upper()} {table} IS {quote_literal(record.comment())}"
            )
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    try:
        con.execute("COMMIT")
    except duckdb.Error:
        with contextlib.suppress(duckdb.Error):  # a failed COMMIT ended the transaction
            con.execute("ROLLBACK")
        raise
    return Build(True, f"rebuilt: {reason}", inputs, rows, clean, record, preview_md)


def _rebuild_reason(
    inputs: BuildInputs, previous: BuildRecord | None, relation: str, force: bool
) -> str | None:
    """Why the relation must be built again, or None when the stored one is still right."""
    if force:
        return "forced (force_rebuild)"
    if inputs.fingerprint is None:
        return f"{inputs.unknown}, so its inputs cannot be compared (always rebuilt)"
    if previous is None:
        return "no earlier build with a fingerprint and a passed key check"
    if previous.relation != relation:
        return f"it becomes a {relation}"
    if previous.fingerprint != inputs.fingerprint:
        changed = inputs.changes_since(previous.inputs)
        return f"{', '.join(changed) or 'its inputs'} changed since run {previous.run_id[:8]}"
    return None


def _count_and_check(
    con: duckdb.DuckDBPyConnection, table: str, primary_key: list[str], written: tuple | None
) -> tuple[int, bool]:
    """(rows, key is clean) in at most one pass over the relation: the rows a CREATE TABLE AS
    reports need no pass at all; a key check counts the rows in the same aggregate."""
    if not primary_key:
        if written is not None:
            return int(written[0]), True
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]), True
    keys = [quote_ident(k) for k in primary_key]
    key = keys[0] if len(keys) == 1 else f"({', '.join(keys)})"
    any_null = " OR ".join(f"{k} IS NULL" for k in keys)
    total, distinct, nulls = con.execute(
        f"SELECT count(*), count(DISTINCT {key}), count(*) FILTER (WHERE {any_null}) FROM {table}"
    ).fetchone()
    return int(total), nulls == 0 and distinct == total
