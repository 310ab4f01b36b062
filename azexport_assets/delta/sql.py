"""SQL text for snapshots, comparisons and change-set reads (pure string building).

State tables use internal column names so that destination names (which may hold spaces,
quotes or differ only in case from other names) never have to be stored as identifiers:
exported column i is `c<i>`, key part j that is not exported is `k<j>`, and change sets add a
`kind` column ('added' | 'updated' | 'removed'). Baselines, pending snapshots and delta change
sets also keep `h`, the row hash of the compared columns (see `row_hash`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from azexport_assets.delta.spec import (
    KINDS,
    DeltaSpec,
    baseline_name,
    quote_table,
    state_table,
)
from azexport_assets.sql_text import quote_ident, quote_literal

HASH_COLUMN = "h"

# Types whose DuckDB `hash` mixes the whole value into 64 bits, agreeing with IS NOT DISTINCT
# FROM (equal values, -0.0/0.0 and NaNs included, hash alike). Every other type is compared
# value by value in the key join instead, because DuckDB's hash has structural collisions for
# them: `[]`, `[NULL]` and a NULL list hash alike, so do `[[1], [2]]` and `[[1, 2]]`,
# `{'a': NULL}` and a NULL struct, and a HUGEINT hashes as the XOR of its 64-bit halves
# (swapped or equal halves collide; UHUGEINT, UUID and DECIMAL wider than 18 digits alike).
HASHED_TYPES = frozenset(
    {
        "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
        "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DATE", "TIME", "TIMESTAMP", "TIMESTAMP_S",
        "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMP WITH TIME ZONE", "VARCHAR", "BLOB", "JSON",
    }
)  # fmt: skip
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*\d+\)$")


def hashed_type(duckdb_type: str) -> bool:
    """True when a column of this type (as DESCRIBE spells it) goes into the row hash."""
    decimal = _DECIMAL.match(duckdb_type)
    if decimal:
        return int(decimal.group(1)) <= 18  # stored as a 64-bit integer or narrower
    return duckdb_type in HASHED_TYPES


@dataclass(frozen=True)
class Layout:
    """Internal column names of an activation's state tables."""

    stored: tuple[tuple[str, str], ...]  # (internal name, source column), in storage order
    exported: tuple[tuple[str, str], ...]  # (internal name, destination name), export order
    keys: tuple[str, ...]  # internal names of the key parts, in key order
    compared: tuple[str, ...]  # exported internal names that can change (not key parts)
    hashed: tuple[str, ...] = ()  # compared names that go into the row hash
    direct: tuple[str, ...] = ()  # compared names compared value by value in the key join


def layout(spec: DeltaSpec, types: Mapping[str, str] | None = None) -> Layout:
    """The state-table layout of `spec`. With `types` (DuckDB type of each source column),
    compared columns are split into hashed and directly compared ones (see `hashed_type`);
    without, every compared column counts as hashed."""
    exported_index = {src: f"c{i}" for i, (src, _) in enumerate(spec.columns)}
    stored = [(f"c{i}", src) for i, (src, _) in enumerate(spec.columns)]
    keys = []
    for j, src in enumerate(spec.primary_key):
        if src in exported_index:
            keys.append(exported_index[src])
        else:
            stored.append((f"k{j}", src))
            keys.append(f"k{j}")
    # Key parts are equal by the join condition; comparing them again is wasted work.
    compared = tuple(name for name, _ in stored if name.startswith("c") and name not in keys)
    source_of = dict(stored)
    hashed = tuple(
        name for name in compared if types is None or hashed_type(types[source_of[name]])
    )
    return Layout(
        stored=tuple(stored),
        exported=tuple((f"c{i}", dest) for i, (_, dest) in enumerate(spec.columns)),
        keys=tuple(keys),
        compared=compared,
        hashed=hashed,
        direct=tuple(name for name in compared if name not in hashed),
    )


def row_hash(names: Sequence[str]) -> str:
    """SQL for the 64-bit hash of the given columns of a row (`h` in state tables).

    It only nominates candidates: rows whose hash differs are compared exactly. DuckDB's `hash`
    is not guaranteed stable across versions; `baseline_hash_check` notices when it changed.
    """
    if not names:
        return "0::UBIGINT"
    return f"hash({', '.join(names)})"


def snapshot_select(spec: DeltaSpec) -> str:
    """The source's current rows in state-table layout."""
    items = ", ".join(f"{quote_ident(src)} AS {name}" for name, src in layout(spec).stored)
    return f"SELECT {items} FROM {quote_table(spec.source_table)}"


def hashed_snapshot_select(spec: DeltaSpec, lay: Layout) -> str:
    """The current rows in state-table layout plus their row hash: what a baseline holds."""
    return f"SELECT *, {row_hash(lay.hashed)} AS {HASH_COLUMN} FROM ({snapshot_select(spec)})"


def source_columns_select(spec: DeltaSpec) -> str:
    """The mapped and key columns of the source under their own names (for DESCRIBE)."""
    items = ", ".join(quote_ident(src) for _, src in layout(spec).stored)
    return f"SELECT {items} FROM {quote_table(spec.source_table)}"


def full_changes_view(activation: str, snapshot_table: str) -> str:
    """A full change set is every snapshot row as 'added'; a view avoids a second copy.
    `snapshot_table` is a table name or a parenthesised SELECT in state-table layout."""
    return (
        f"CREATE VIEW {state_table('changes', activation)} AS "
        f"SELECT 'added' AS kind, * FROM {snapshot_table}"
    )


def delta_changes_table(spec: DeltaSpec, lay: Layout) -> str:
    """The change set, found on a narrow join first and confirmed on full rows.

    1. Candidates: the current rows (with their row hash, computed while scanning) FULL OUTER
       JOIN the baseline's keys and stored hashes (plus its directly compared columns) on the
       key. A key only in the current rows is 'added', only in the baseline 'removed', and a
       key in both is a candidate update when the hashes or a directly compared column differ.
       The join's hash table holds the narrow baseline side only, so it stays in memory where
       a join of full rows would spill.
    2. The candidates (few) are joined with the full baseline rows: removed rows take the
       baseline's values (what was last exported) and a candidate update is kept only if an
       exported column IS DISTINCT FROM its baseline value (exact, NULL-safe).

    So nothing is reported as updated that did not change. A change is missed only when all
    its differences are in hashed columns and the row hash is the same before and after (a
    64-bit collision; docs/delta.md quantifies it). Baseline keys are never NULL, so a NULL
    baseline key means "no match"; current rows with NULL keys come out as 'added' and are
    caught by the key check afterwards.
    """
    k0 = lay.keys[0]
    h = HASH_COLUMN
    on = " AND ".join(f"c.{k} = b.{k}" for k in lay.keys)
    narrow = ", ".join([*lay.keys, h, *lay.direct])
    kind = (
        f"CASE WHEN b.{k0} IS NULL THEN 'added' WHEN c.{k0} IS NULL THEN 'removed' "
        "ELSE 'updated' END AS kind"
    )
    candidate_items = [kind]
    candidate_items += [f"coalesce(c.{k}, b.{k}) AS {k}" for k in lay.keys]
    candidate_items += [f"c.{name}" for name in lay.compared] + [f"c.{h} AS {h}"]
    candidate = [f"b.{k0} IS NULL", f"c.{k0} IS NULL", f"c.{h} IS DISTINCT FROM b.{h}"]
    candidate += [f"c.{name} IS DISTINCT FROM b.{name}" for name in lay.direct]
    removed = "d.kind = 'removed'"
    values = [
        f"d.{name}" if name in lay.keys else f"CASE WHEN {removed} THEN b.{name} ELSE d.{name} END"
        for name, _ in lay.stored
    ]
    items = ", ".join(
        [
            "d.kind",
            *(f"{value} AS {name}" for value, (name, _) in zip(values, lay.stored, strict=True)),
            f"CASE WHEN {removed} THEN b.{h} ELSE d.{h} END AS {h}",
        ]
    )
    changed = " OR ".join(
        ["d.kind <> 'updated'", *(f"d.{name} IS DISTINCT FROM b.{name}" for name in lay.compared)]
    )
    baseline = state_table("baseline", spec.activation)
    return (
        f"CREATE TABLE {state_table('changes', spec.activation)} AS "
        "WITH d AS MATERIALIZED ("
        f"SELECT {', '.join(candidate_items)} "
        f"FROM ({hashed_snapshot_select(spec, lay)}) AS c "
        f"FULL OUTER JOIN (SELECT {narrow} FROM {baseline}) AS b ON {on} "
        f"WHERE {' OR '.join(candidate)}) "
        f"SELECT {items} FROM d LEFT JOIN {baseline} AS b "
        f"ON {' AND '.join(f'd.{k} = b.{k}' for k in lay.keys)} "
        f"WHERE {changed}"
    )


def baseline_hash_check(activation: str, lay: Layout, sample: int) -> str:
    """How many of the first `sample` baseline rows have a stored hash that differs from the
    hash this DuckDB computes: not 0 means the hash function changed, so the stored hashes must
    be recomputed (otherwise every row would be a candidate on every run)."""
    return (
        f"SELECT count(*) FROM (SELECT {HASH_COLUMN}, {row_hash(lay.hashed)} AS fresh "
        f"FROM {state_table('baseline', activation)} LIMIT {int(sample)}) "
        f"WHERE {HASH_COLUMN} IS DISTINCT FROM fresh"
    )


def rehash_baseline(activation: str, lay: Layout) -> list[str]:
    """Rewrite the baseline with freshly computed row hashes (a baseline written before rows
    were hashed, or by a DuckDB whose hash differs); the rewrite also compacts it."""
    baseline = state_table("baseline", activation)
    compacted = state_table("compacted", activation)
    stored = ", ".join(name for name, _ in lay.stored)
    return [
        f"CREATE TABLE {compacted} AS "
        f"SELECT {stored}, {row_hash(lay.hashed)} AS {HASH_COLUMN} FROM {baseline}",
        f"DROP TABLE {baseline}",
        f"ALTER TABLE {compacted} RENAME TO {quote_ident(baseline_name(activation))}",
    ]


def apply_changes(
    activation: str, keys: Sequence[str], stored: Sequence[str], hashed: bool = True
) -> list[str]:
    """Statements that turn the baseline into the snapshot a delta change set came from.

    `keys` and `stored` are the internal names of a `Layout` (kept in the state row, since
    committing only knows the activation). Unchanged rows keep the baseline's values, which
    are not distinct from the snapshot's: the result is the snapshot. `hashed`: the change set
    and the baseline carry row hashes (change sets computed before rows were hashed do not).
    """
    baseline = state_table("baseline", activation)
    changes = state_table("changes", activation)
    match = " AND ".join(f"b.{quote_ident(k)} = ch.{quote_ident(k)}" for k in keys)
    names = ", ".join(quote_ident(name) for name in [*stored, *([HASH_COLUMN] if hashed else [])])
    return [
        f"DELETE FROM {baseline} AS b USING {changes} AS ch "
        f"WHERE ch.kind IN ('updated', 'removed') AND {match}",
        f"INSERT INTO {baseline} ({names}) SELECT {names} FROM {changes} "
        "WHERE kind IN ('added', 'updated')",
    ]


def compact_baseline(activation: str) -> list[str]:
    """Rewrite the baseline: DuckDB keeps deleted rows of partly deleted row groups, so a
    baseline maintained by deltas grows and scans slower until it is rewritten."""
    baseline = state_table("baseline", activation)
    compacted = state_table("compacted", activation)
    return [
        f"CREATE TABLE {compacted} AS SELECT * FROM {baseline}",
        f"DROP TABLE {baseline}",
        f"ALTER TABLE {compacted} RENAME TO {quote_ident(baseline_name(activation))}",
    ]


def change_rows_query(
    spec: DeltaSpec,
    kinds: Sequence[str],
    change_column: str | None = None,
    *,
    kind_column: str | None = None,
    partition: Sequence[tuple[str, str | None]] = (),
    clustered: bool = False,
) -> str:
    """The stored change set's rows of `kinds`, as destination columns in export order:
    preceded by the change kind as `kind_column` (for table writers), and followed by a VARCHAR
    column `change_column` with each row's kind (the files' optional change column), when
    given. `partition` narrows the rows to one partition: (destination column, value as
    VARCHAR or None for NULL) pairs, as `partition_counts_query` lists them. `clustered`:
    read them from the connection's copy made by `clustered_changes_query` (same columns).

    Delta change sets are ordered by the primary key, so files are deterministic. full_only
    exports keep the model's own row order (DuckDB scans a table in insertion order): sorting
    every row of a large snapshot would cost more than writing it. A model that needs a fixed
    order says so with ORDER BY.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown change kinds {unknown}; valid: {', '.join(KINDS)}")
    lay = layout(spec)
    # Qualified with `ch.`: a destination alias such as "c0" must not capture ORDER BY c0.
    items = ", ".join(f"ch.{name} AS {quote_ident(dest)}" for name, dest in lay.exported)
    if kind_column is not None:
        items = f"ch.kind AS {quote_ident(kind_column)}, {items}"
    if change_column is not None:
        clash = [dest for _, dest in lay.exported if dest.lower() == change_column.lower()]
        if clash:
            raise ValueError(
                f"change_column {change_column!r} is also the name of the exported column "
                f"{clash[0]!r}; pick another name (or map that column to another one)"
            )
        items += f", ch.kind AS {quote_ident(change_column)}"
    where = f"ch.kind IN ({', '.join(quote_literal(k) for k in kinds)})" if kinds else "false"
    if partition and clustered:
        # Equality on the stored partition value: the copy's row groups are skipped by their
        # min/max statistics, so a partition reads only its own rows.
        for i, (_, value) in enumerate(partition):
            test = "IS NULL" if value is None else f"= {quote_literal(value)}"
            where += f" AND ch.{CLUSTER_PREFIX}{i} {test}"
    elif partition:
        internal = {dest: name for name, dest in lay.exported}
        for dest, value in partition:
            text = "NULL" if value is None else quote_literal(value)
            where += f" AND CAST(ch.{internal[dest]} AS VARCHAR) IS NOT DISTINCT FROM {text}"
    relation = CLUSTERED_CHANGES if clustered else state_table("changes", spec.activation)
    query = f"SELECT {items} FROM {relation} AS ch WHERE {where}"
    if not spec.is_delta:
        return query
    return f"{query} ORDER BY {', '.join('ch.' + name for name in lay.keys)}"


def partition_counts_query(spec: DeltaSpec, columns: Sequence[str]) -> str:
    """(value of each partition column as VARCHAR, kind, rows) of the stored change set, one
    row per partition and kind, in partition order (NULL last). `columns` are destination
    names of exported columns."""
    internal = {dest: name for name, dest in layout(spec).exported}
    missing = [c for c in columns if c not in internal]
    if missing:
        raise ValueError(f"partition column(s) {missing} are not exported")
    values = [f"CAST(ch.{internal[c]} AS VARCHAR)" for c in columns]
    items = ", ".join(f"{v} AS p{i}" for i, v in enumerate(values))
    groups = ", ".join(f"p{i}" for i in range(len(values)))
    return (
        f"SELECT {items}, ch.kind, count(*) FROM {state_table('changes', spec.activation)} AS ch "
        f"GROUP BY {groups}, ch.kind ORDER BY {groups}, ch.kind"
    )


# A connection's temporary copy of the change set clustered by partition (see below), and the
# prefix of its partition value columns (internal names never start with it).
CLUSTERED_CHANGES = "azexport_clustered_changes"
CLUSTER_PREFIX = "azexport_p"
_ROW = "azexport_row"


def clustered_changes_query(spec: DeltaSpec, columns: Sequence[str]) -> str:
    """A temporary copy of the stored change set sorted by its partition values (VARCHAR, as
    `partition_counts_query` gives them), rows of one partition in the change set's order.

    Without it every partition's file reads the whole change set: each read keeps only its
    partition's rows, but those lie in every row group, so all columns of all rows are read
    once per partition (DuckDB alone wrote 365 daily partitions of 1M rows as CSV in 39 s,
    the same rows as one file in 1 s).
    Sorted once, each partition's rows fill row groups of their own."""
    internal = {dest: name for name, dest in layout(spec).exported}
    values = [
        f"CAST(ch.{internal[c]} AS VARCHAR) AS {CLUSTER_PREFIX}{i}" for i, c in enumerate(columns)
    ]
    order = ", ".join(f"{CLUSTER_PREFIX}{i}" for i in range(len(columns)))
    # row_number() OVER () numbers rows as the scan yields them (the model's own order for a
    # full export), which the sort alone would not keep.
    return (
        f"CREATE OR REPLACE TEMP TABLE {CLUSTERED_CHANGES} AS SELECT {', '.join(values)}, "
        f"ch.* EXCLUDE ({_ROW}) FROM (SELECT *, row_number() OVER () AS {_ROW} "
        f"FROM {state_table('changes', spec.activation)}) AS ch ORDER BY {order}, ch.{_ROW}"
    )
