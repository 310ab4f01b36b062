"""SQL text for snapshots, comparisons and change-set reads (pure string building).

State tables use internal column names so that destination names (which may hold spaces,
quotes or differ only in case from other names) never have to be stored as identifiers:
exported column i is `c<i>`, key part j that is not exported is `k<j>`, and change sets add a
`kind` column ('added' | 'updated' | 'removed').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from azexport_assets.delta.spec import (
    KINDS,
    DeltaSpec,
    baseline_name,
    quote_table,
    state_table,
)
from azexport_assets.sql_text import quote_ident, quote_literal


@dataclass(frozen=True)
class Layout:
    """Internal column names of an activation's state tables."""

    stored: tuple[tuple[str, str], ...]  # (internal name, source column), in storage order
    exported: tuple[tuple[str, str], ...]  # (internal name, destination name), export order
    keys: tuple[str, ...]  # internal names of the key parts, in key order
    compared: tuple[str, ...]  # exported internal names that can change (not key parts)


def layout(spec: DeltaSpec) -> Layout:
    exported_index = {src: f"c{i}" for i, (src, _) in enumerate(spec.columns)}
    stored = [(f"c{i}", src) for i, (src, _) in enumerate(spec.columns)]
    keys = []
    for j, src in enumerate(spec.primary_key):
        if src in exported_index:
            keys.append(exported_index[src])
        else:
            stored.append((f"k{j}", src))
            keys.append(f"k{j}")
    return Layout(
        stored=tuple(stored),
        exported=tuple((f"c{i}", dest) for i, (_, dest) in enumerate(spec.columns)),
        keys=tuple(keys),
        # Key parts are equal by the join condition; comparing them again is wasted work.
        compared=tuple(name for name, _ in stored if name.startswith("c") and name not in keys),
    )


def snapshot_select(spec: DeltaSpec) -> str:
    """The source's current rows in state-table layout."""
    items = ", ".join(f"{quote_ident(src)} AS {name}" for name, src in layout(spec).stored)
    return f"SELECT {items} FROM {quote_table(spec.source_table)}"


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


def delta_changes_table(spec: DeltaSpec) -> str:
    """One FULL OUTER JOIN of the current rows and the baseline on the key.

    A row is kept when its key is new ('added'), gone ('removed', with the baseline's values:
    what was last exported) or any exported column differs, compared exactly and NULL-safely
    with IS DISTINCT FROM ('updated'). Baseline keys are never NULL, so a NULL baseline key
    means "no match"; current rows with NULL keys come out as 'added' and are caught by the
    key check afterwards.
    """
    lay = layout(spec)
    k0 = lay.keys[0]
    on = " AND ".join(f"c.{k} = b.{k}" for k in lay.keys)
    removed = f"b.{k0} IS NOT NULL AND c.{k0} IS NULL"
    values = ", ".join(
        f"CASE WHEN {removed} THEN b.{name} ELSE c.{name} END AS {name}" for name, _ in lay.stored
    )
    kind = (
        f"CASE WHEN b.{k0} IS NULL THEN 'added' WHEN c.{k0} IS NULL THEN 'removed' "
        "ELSE 'updated' END AS kind"
    )
    changed = [f"b.{k0} IS NULL", f"c.{k0} IS NULL"]
    changed += [f"c.{name} IS DISTINCT FROM b.{name}" for name in lay.compared]
    return (
        f"CREATE TABLE {state_table('changes', spec.activation)} AS "
        f"SELECT {kind}, {values} "
        f"FROM ({snapshot_select(spec)}) AS c "
        f"FULL OUTER JOIN {state_table('baseline', spec.activation)} AS b ON {on} "
        f"WHERE {' OR '.join(changed)}"
    )


def apply_changes(activation: str, keys: Sequence[str], stored: Sequence[str]) -> list[str]:
    """Statements that turn the baseline into the snapshot a delta change set came from.

    `keys` and `stored` are the internal names of a `Layout` (kept in the state row, since
    committing only knows the activation). Unchanged rows keep the baseline's values, which
    are not distinct from the snapshot's: the result is the snapshot.
    """
    baseline = state_table("baseline", activation)
    changes = state_table("changes", activation)
    match = " AND ".join(f"b.{quote_ident(k)} = ch.{quote_ident(k)}" for k in keys)
    names = ", ".join(quote_ident(name) for name in stored)
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


def change_rows_query(spec: DeltaSpec, kinds: Sequence[str]) -> str:
    """The stored change set's rows of `kinds`, as destination columns in export order.

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
    where = f"ch.kind IN ({', '.join(quote_literal(k) for k in kinds)})" if kinds else "false"
    query = f"SELECT {items} FROM {state_table('changes', spec.activation)} AS ch WHERE {where}"
    if not spec.is_delta:
        return query
    return f"{query} ORDER BY {', '.join('ch.' + name for name in lay.keys)}"
