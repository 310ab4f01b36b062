"""One activation's Delta Lake table in Azure, kept in step with its change sets (delta-rs).

`apply_change_set` writes the change set the last delta computed as one Delta commit:

- a full change set (full_only + snapshot; a first run, full resync or mapping change):
  overwrite, a new version holding exactly the snapshot's rows, schema from the model;
- upsert: MERGE on the key, update matched, insert not matched;
- insert: MERGE on the key, insert not matched only;
- difference: MERGE on the key, delete removed, update the rest matched, insert not matched.

Exactly once: every commit carries a Delta *application transaction* (`app_id` = `azexport:`
+ activation, version = the change set's `sequence`, a number that grows with every change
set). Before writing, the table's recorded version for the app id is read: equal means this
change set is already in the table (a retry after the commit, a re-executed export), and
nothing is written again; greater means the table holds a newer change set than the
warehouse's state (a restored warehouse), and the export stops. The caller advances the
baseline only after this returns, and holds the activation's lock around both, so two runs
of one activation never commit interleaved.

Nothing here imports Dagster. Rows stream from DuckDB as Arrow record batches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

from azexport_assets.delta import ChangeSet, DeltaSpec, change_rows_query
from azexport_assets.formats.columns import Column
from azexport_assets.lakehouse.types import (
    DeltaTypeError,
    table_columns,
    table_select,
    unrepresentable_error,
)
from azexport_assets.partition_limit import check_partition_count
from azexport_assets.sandbox import sandboxed_cursor
from azexport_assets.sql_text import quote_ident
from azexport_assets.storage import StorageError, redact

BATCH_ROWS = 65_536
KIND_COLUMN = "__azexport_change_kind"
APP_ID_PREFIX = "azexport:"
CDF_PROPERTY = "delta.enableChangeDataFeed"
# Delta's own default for how long removed files stay (what readers of old versions need).
DEFAULT_RETENTION_HOURS = 168

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class DeltaTarget:
    """Where the table is: `az://<container>/<path>` for delta-rs, its https URL for people,
    and the storage options (secrets: never shown)."""

    uri: str
    url: str
    storage_options: Mapping[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def at(
        cls, account_url: str, container: str, path: str, storage_options: Mapping[str, str]
    ) -> DeltaTarget:
        path = path.strip("/")
        return cls(
            uri=f"az://{container}/{path}",
            url=f"{account_url.rstrip('/')}/{container}/{path}",
            storage_options=dict(storage_options),
        )


@dataclass(frozen=True)
class TableCare:
    """How the table is laid out and kept: partition columns, change data feed, compaction
    every N commits, vacuum of files older than H hours that no version within H needs."""

    partition_by: tuple[str, ...] = ()
    max_partitions: int = 10_000  # partitions one commit may write to (`partition_limit`)
    change_data_feed: bool = False
    optimize_every: int | None = None
    vacuum_retain_hours: int | None = None


@dataclass
class TableCommit:
    """What one export did to the table."""

    uri: str
    url: str
    operation: str  # 'overwrite', 'merge' or 'none' (nothing to write, or already applied)
    version: int | None  # the table's version after this export (None: no table yet)
    committed: bool  # True when this export made a commit
    already_applied: bool = False  # the table already held this change set
    rows_written: int = 0  # rows sent to the table (the change set's rows)
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    schema: list[tuple[str, str]] = field(default_factory=list)  # (column, Delta type)
    maintenance: list[str] = field(default_factory=list)  # what compaction/vacuum did
    maintenance_error: str | None = None


class TableAheadError(RuntimeError):
    """The table already holds a newer change set of the activation than the one to apply."""


class TableMissingError(RuntimeError):
    """The baseline says rows were written to a table that is not there (removed or moved
    outside azexport): only a full resync can write it again."""


def app_id(activation: str) -> str:
    return f"{APP_ID_PREFIX}{activation}"


@contextmanager
def _translated_errors(target: DeltaTarget, columns: list[Column], action: str) -> Iterator[None]:
    """A value Delta cannot hold becomes a DeltaTypeError naming its column; any other failure
    of the write a StorageError naming the table (secrets redacted)."""
    try:
        yield
    except duckdb.Error as error:
        unrepresentable_error(error, columns)
    except (StorageError, DeltaTypeError):
        raise
    except Exception as error:
        if "azexport-delta-unrepresentable" in str(error):
            unrepresentable_error(error, columns)
        raise table_error(error, target, action) from None


def table_error(error: BaseException, target: DeltaTarget, action: str) -> StorageError:
    """A delta-rs failure as one redacted StorageError naming the table and the action."""
    text = _ANSI.sub("", redact(str(error)))
    lines = [line.strip(" ↳") for line in text.splitlines() if line.strip(" ↳")]
    reason = "; ".join(lines[:3]) or type(error).__name__
    if len(reason) > 400:
        reason = reason[:397] + "..."
    return StorageError(f"Delta table {target.url}: {action} failed: {reason}")


def open_table(target: DeltaTarget) -> DeltaTable | None:
    """The table, or None when there is none at the path yet."""
    try:
        return DeltaTable(target.uri, storage_options=dict(target.storage_options))
    except TableNotFoundError:
        return None
    except Exception as error:  # OSError / DeltaError from the Rust core
        raise table_error(error, target, "reading the table") from None


def _quote(name: str) -> str:
    """A column in a delta-rs (DataFusion) predicate: backticks, doubled inside."""
    return "`" + name.replace("`", "``") + "`"


def _type_text(data_type: Any) -> str:
    kind = getattr(data_type, "type", None)
    if isinstance(kind, str) and kind not in ("array", "map", "struct"):
        return kind
    if kind == "array":
        return f"array<{_type_text(data_type.element_type)}>"
    if kind == "map":
        return f"map<{_type_text(data_type.key_type)}, {_type_text(data_type.value_type)}>"
    if kind == "struct":
        inner = ", ".join(f"{f.name}: {_type_text(f.type)}" for f in data_type.fields)
        return f"struct<{inner}>"
    return str(data_type)


def table_schema(table: DeltaTable) -> list[tuple[str, str]]:
    """(column, Delta type) of the table's current version, in order."""
    return [(f.name, _type_text(f.type)) for f in table.schema().fields]


def _commit_properties(
    activation: str, change: ChangeSet, run_id: str, sequence: int
) -> CommitProperties:
    return CommitProperties(
        app_transactions=[Transaction(app_id(activation), sequence)],
        custom_metadata={
            "azexport.activation": activation,
            "azexport.change_set": change.delta_id,
            "azexport.run_id": run_id,
            "azexport.reason": change.reason,
        },
    )


def _merge_clauses(spec: DeltaSpec) -> tuple[list[str], str]:
    """(kinds to send, merge predicate on the key's destination names)."""
    exported = dict(spec.columns)
    missing = [k for k in spec.primary_key if k not in exported]
    if missing:
        raise ValueError(
            f"activation {spec.activation!r}: a Delta table is merged on the primary key, so "
            f"the mapping must export the key column(s) {', '.join(missing)}"
        )
    predicate = " AND ".join(
        f"target.{_quote(exported[k])} = source.{_quote(exported[k])}" for k in spec.primary_key
    )
    kinds = {
        "upsert": ["added", "updated"],
        "insert": ["added"],
        "difference": ["added", "updated", "removed"],
    }[spec.sync_mode]
    return kinds, predicate


def apply_change_set(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    target: DeltaTarget,
    care: TableCare,
    run_id: str,
    write_empty: bool = True,
    log: Callable[[str], None] | None = None,
) -> TableCommit:
    """Write change set `change` (read with `spec`) to the table as one commit; see the module
    docstring. Raises DeltaTypeError (a column or value Delta cannot hold: nothing committed),
    TableAheadError, or StorageError (redacted) for storage failures."""
    say = log or (lambda _text: None)
    sequence = change.sequence
    if sequence is None:
        raise ValueError(
            f"activation {spec.activation!r}: the change set has no computation time; run the "
            "delta again"
        )
    table = open_table(target)
    report = TableCommit(
        uri=target.uri, url=target.url, operation="none", version=None, committed=False
    )
    if table is not None:
        report.version = table.version()
        recorded = table.transaction_version(app_id(spec.activation))
        if recorded is not None and recorded == sequence:
            say(
                f"Delta table {target.url} already holds change set {change.delta_id}: not "
                "written again"
            )
            report.already_applied = True
            report.schema = table_schema(table)
            return report
        if recorded is not None and recorded > sequence:
            raise TableAheadError(
                f"Delta table {target.url} already holds a newer change set of activation "
                f"'{spec.activation}' than the one to apply (application transaction "
                f"{recorded} > {sequence}): the warehouse's state is older than the table. "
                "Run the activation with a full resync to rewrite the table from the model."
            )
    if change.full:
        rows = change.added
        if rows == 0 and not write_empty:
            say("no rows, and on_empty is 'skip': the table is left as it is")
            if table is not None:
                report.schema = table_schema(table)
            return report
        _overwrite(con, spec, change, target, care, table, run_id, sequence, report)
    else:
        kinds, predicate = _merge_clauses(spec)
        rows = sum(getattr(change, kind) for kind in kinds)
        if rows == 0:
            say("no changes: nothing committed to the table")
            if table is not None:
                report.schema = table_schema(table)
            return report
        if table is None:
            raise TableMissingError(
                f"Delta table {target.url} does not exist, but the baseline says its rows were "
                "written there: it was removed or moved outside azexport. Run the activation "
                "with a full resync to write it again."
            )
        _merge(con, spec, change, target, care, table, run_id, sequence, kinds, predicate, report)
    final = open_table(target)
    assert final is not None
    report.version = final.version()
    report.schema = table_schema(final)
    report.committed = True
    say(
        f"Delta table {target.url}: version {report.version} committed ({report.operation}: "
        f"{report.rows_inserted:,} inserted, {report.rows_updated:,} updated, "
        f"{report.rows_deleted:,} deleted)"
    )
    return report


def _reader(
    con: duckdb.DuckDBPyConnection, columns: list[Column], query: str, passthrough: int = 0
) -> pa.RecordBatchReader:
    """The rows as Arrow record batches, streamed from DuckDB as delta-rs consumes them."""
    return con.sql(table_select(query, columns, passthrough)).to_arrow_reader(BATCH_ROWS)


def _release(reader: pa.RecordBatchReader | None, cursor: duckdb.DuckDBPyConnection) -> None:
    """Close DuckDB's Arrow stream before the cursor it reads from, never after: delta-rs
    reads it through a handle of its own (kept by its merger after the call), which would
    otherwise release the stream whenever Python frees that handle."""
    try:
        if reader is not None:
            reader.close()
    finally:
        cursor.close()


def _check_partitions(cursor: duckdb.DuckDBPyConnection, query: str, care: TableCare) -> None:
    """The rows `query` sends to the table touch at most `care.max_partitions` partitions
    (checked before delta-rs writes anything: a column with a value per row would make a
    folder and a file per row)."""
    if not care.partition_by:
        return
    columns = ", ".join(quote_ident(c) for c in care.partition_by)
    # fetchall(): a result left unfinished would block the cursor for the write.
    ((count,),) = cursor.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {columns} FROM ({query}) AS _rows) AS _parts"
    ).fetchall()
    check_partition_count(int(count), care.partition_by, care.max_partitions)


def _ensure_cdf(table: DeltaTable, care: TableCare, target: DeltaTarget) -> None:
    if care.change_data_feed and table.metadata().configuration.get(CDF_PROPERTY) != "true":
        try:
            table.alter.set_table_properties({CDF_PROPERTY: "true"})
        except Exception as error:
            raise table_error(error, target, "enabling the change data feed") from None


def _overwrite(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    target: DeltaTarget,
    care: TableCare,
    table: DeltaTable | None,
    run_id: str,
    sequence: int,
    report: TableCommit,
) -> None:
    previous_rows = table.count() if table is not None else 0
    query = change_rows_query(spec, ("added",))
    cursor = sandboxed_cursor(con)
    try:
        _check_partitions(cursor, query, care)
        if table is not None:
            _ensure_cdf(table, care, target)
        columns = table_columns(cursor, query)
    except BaseException:
        cursor.close()
        raise
    reader: pa.RecordBatchReader | None = None
    try:
        with _translated_errors(target, columns, "writing the table"):
            reader = _reader(cursor, columns, query)
            write_deltalake(
                target.uri,
                reader,
                mode="overwrite",
                schema_mode="overwrite",
                # A list, even empty: None would keep the table's old partitioning.
                partition_by=list(care.partition_by),
                configuration={CDF_PROPERTY: "true"} if care.change_data_feed else None,
                storage_options=dict(target.storage_options),
                commit_properties=_commit_properties(spec.activation, change, run_id, sequence),
            )
    finally:
        _release(reader, cursor)
    report.operation = "overwrite"
    report.rows_written = change.added
    report.rows_inserted = change.added
    report.rows_deleted = previous_rows


def _merge(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    target: DeltaTarget,
    care: TableCare,
    table: DeltaTable,
    run_id: str,
    sequence: int,
    kinds: list[str],
    predicate: str,
    report: TableCommit,
) -> None:
    query = change_rows_query(spec, kinds, kind_column=KIND_COLUMN)
    kind = f"source.{_quote(KIND_COLUMN)}"
    cursor = sandboxed_cursor(con)
    try:
        _check_partitions(cursor, query, care)
        _ensure_cdf(table, care, target)
        columns = table_columns(cursor, query)
    except BaseException:
        cursor.close()
        raise
    reader: pa.RecordBatchReader | None = None
    try:
        with _translated_errors(target, columns, "merging into the table"):
            reader = _reader(cursor, columns, query, passthrough=1)
            merger = table.merge(
                source=reader,
                predicate=predicate,
                source_alias="source",
                target_alias="target",
                commit_properties=_commit_properties(spec.activation, change, run_id, sequence),
            )
            if spec.sync_mode == "difference":
                merger = merger.when_matched_delete(predicate=f"{kind} = 'removed'")
            if spec.sync_mode in ("upsert", "difference"):
                # Also on 'added' rows whose key is already there (a change set applied after an
                # earlier, uncommitted one): the table converges to the model's rows.
                merger = merger.when_matched_update_all(
                    predicate=f"{kind} <> 'removed'", except_cols=[KIND_COLUMN]
                )
            merger = merger.when_not_matched_insert_all(
                predicate=f"{kind} <> 'removed'", except_cols=[KIND_COLUMN]
            )
            metrics = merger.execute()
    finally:
        _release(reader, cursor)
    report.operation = "merge"
    report.rows_written = int(metrics.get("num_source_rows", 0))
    report.rows_inserted = int(metrics.get("num_target_rows_inserted", 0))
    report.rows_updated = int(metrics.get("num_target_rows_updated", 0))
    report.rows_deleted = int(metrics.get("num_target_rows_deleted", 0))


_NOT_WRITES = ("OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES")


def _writes_since_optimize(table: DeltaTable, limit: int) -> int:
    """Commits that wrote rows since the last OPTIMIZE (counting stops at `limit`)."""
    writes = 0
    for commit in table.history(4 * limit + 8):  # newest first; upkeep commits interleave
        operation = str(commit.get("operation", "")).upper()
        if operation == "OPTIMIZE" or writes >= limit:
            break
        if operation not in _NOT_WRITES:
            writes += 1
    return writes


def care_for_table(
    target: DeltaTarget, care: TableCare, log: Callable[[str], None] | None = None
) -> list[str]:
    """Compaction (every `optimize_every` commits) and vacuum (files removed from the table
    more than `vacuum_retain_hours` ago, which no version within that time reads). Returns
    what was done, one line each; raises StorageError when the storage refused."""
    say = log or (lambda _text: None)
    done: list[str] = []
    if care.optimize_every is None and care.vacuum_retain_hours is None:
        return done
    table = open_table(target)
    if table is None:
        return done
    every = care.optimize_every
    if every is not None and _writes_since_optimize(table, every) >= every:
        try:
            metrics = table.optimize.compact()
        except Exception as error:
            raise table_error(error, target, "compacting the table") from None
        line = (
            f"optimize: {metrics.get('numFilesRemoved', 0)} files compacted into "
            f"{metrics.get('numFilesAdded', 0)}"
        )
        done.append(line)
        say(line)
    if care.vacuum_retain_hours is not None:
        hours = care.vacuum_retain_hours
        enforce = hours >= DEFAULT_RETENTION_HOURS
        try:
            # A dry run first: a vacuum commits two log entries even when nothing is removed.
            removable = table.vacuum(
                retention_hours=hours, dry_run=True, enforce_retention_duration=enforce
            )
            removed = (
                table.vacuum(
                    retention_hours=hours, dry_run=False, enforce_retention_duration=enforce
                )
                if removable
                else []
            )
        except Exception as error:
            raise table_error(error, target, "vacuuming the table") from None
        line = f"vacuum: {len(removed)} files older than {hours} h removed"
        done.append(line)
        say(line)
    return done
