"""What a delta is computed for (DeltaSpec), what it produced (ChangeSet), and how names become SQL.

Everything here is pure: no database access. Every name that reaches SQL goes through
`quote_ident` / `quote_table`, so destination names with spaces or quotes and odd activation
names can never change the meaning of a statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from azexport_assets.sql_text import quote_ident

STATE_SCHEMA = "azexport_state"
KINDS = ("added", "updated", "removed")
REASONS = ("full_only", "first_run", "resync", "mapping_changed", "delta")

VALID_COMBINATIONS = {
    "full_only": ("snapshot",),
    "full_then_delta": ("upsert", "insert", "difference"),
}

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RunType = Literal["full_only", "full_then_delta"]
SyncMode = Literal["snapshot", "upsert", "insert", "difference"]


class KeyViolationError(ValueError):
    """The source has NULL or duplicated primary keys, so no correct delta exists."""

    def __init__(self, source_table: str, violations: list[dict]):
        self.source_table = source_table
        self.violations = violations
        shown = "; ".join(f"{v['problem']} key {v['key']} ({v['count']} rows)" for v in violations)
        super().__init__(
            f"{source_table}: the primary key must be unique and not NULL for a delta export; "
            f"offending keys: {shown or 'unknown'}"
        )


@dataclass(frozen=True)
class DeltaSpec:
    """One activation's view of its source: key, exported columns (in order) and modes."""

    activation: str
    source_table: str
    primary_key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    run_type: RunType
    sync_mode: SyncMode
    # What the changes are applied to, when its state outlives a run (a Delta table: its
    # container and path). Empty for files, which each run writes anew.
    destination: str = ""

    def __post_init__(self) -> None:
        check_activation(self.activation)
        if not self.primary_key:
            raise ValueError(f"activation {self.activation!r}: a primary key is required")
        if len(set(self.primary_key)) != len(self.primary_key):
            raise ValueError(f"activation {self.activation!r}: primary key repeats a column")
        if not self.columns:
            raise ValueError(f"activation {self.activation!r}: no columns to export")
        sources = [src for src, _ in self.columns]
        if len(set(sources)) != len(sources):
            raise ValueError(f"activation {self.activation!r}: a source column is mapped twice")
        # DuckDB compares identifiers case-insensitively, so "Name" and "name" would collide.
        dests = [dest.lower() for _, dest in self.columns]
        if len(set(dests)) != len(dests) or any(not d.strip() for d in dests):
            raise ValueError(
                f"activation {self.activation!r}: destination names must be non-empty and "
                "unique (case-insensitive)"
            )
        valid = VALID_COMBINATIONS.get(self.run_type)
        if valid is None or self.sync_mode not in valid:
            raise ValueError(
                f"activation {self.activation!r}: run_type {self.run_type!r} with sync_mode "
                f"{self.sync_mode!r} is not valid; use full_only + snapshot or full_then_delta + "
                "upsert / insert / difference"
            )
        split_table(self.source_table)  # fail early on an unusable table name

    @property
    def is_delta(self) -> bool:
        return self.run_type == "full_then_delta"


@dataclass(frozen=True)
class ChangeSet:
    """The rows one run exports, counted by kind; `committed` once it became the baseline."""

    activation: str
    delta_id: str
    full: bool
    reason: str
    added: int
    updated: int
    removed: int
    unchanged: int
    current_rows: int
    baseline_rows: int
    committed: bool
    computed_at: datetime | None = None  # UTC, naive; when the change set was computed

    @property
    def sequence(self) -> int | None:
        """A number that grows with every change set of the activation: its computation time
        in microseconds since 1970 (UTC). A Delta table records it as the activation's
        application transaction version, so a change set is never applied twice."""
        if self.computed_at is None:
            return None
        since = self.computed_at - datetime(1970, 1, 1)
        return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds

    @property
    def snapshot(self) -> bool:
        """A full_only + snapshot run: every current row, with no baseline to compare with
        (its rows are counted as `added` only so that every change set has the same shape)."""
        return self.reason == "full_only"


def check_activation(activation: str) -> None:
    """Activation names are identifiers (letters, digits, '_'), as in the configuration."""
    if not isinstance(activation, str) or not _IDENTIFIER.match(activation):
        raise ValueError(f"activation name {activation!r} is not a valid identifier")


def split_table(qualified: str) -> tuple[str, ...]:
    """'segments.vip' -> ('segments', 'vip'); 1 to 3 non-empty dot-separated parts."""
    parts = tuple(qualified.split("."))
    if not 1 <= len(parts) <= 3 or any(not p.strip() for p in parts):
        raise ValueError(
            f"table name {qualified!r} must be 'table', 'schema.table' or 'catalog.schema.table'"
        )
    return parts


def quote_table(qualified: str) -> str:
    """'segments.vip' -> '"segments"."vip"'."""
    return ".".join(quote_ident(p) for p in split_table(qualified))


def table_stem(activation: str) -> str:
    """A per-activation table-name stem that stays unique although DuckDB ignores case.

    'crm_vip' -> 'crm_vip'; 'CrmVip' -> '^crm^vip' (a '^' marks each upper-case letter, and
    lower-case names never contain '^', so two activations can never share tables).
    """
    return "".join("^" + ch.lower() if ch.isupper() else ch for ch in activation)


StateKind = Literal["baseline", "pending", "changes", "compacted"]


def state_name(kind: StateKind, activation: str) -> str:
    """Unquoted name of one of an activation's state relations (for catalog lookups)."""
    return f"{kind}__{table_stem(activation)}"


def baseline_name(activation: str) -> str:
    return state_name("baseline", activation)


def state_table(kind: StateKind, activation: str) -> str:
    """The quoted, schema-qualified name of one of an activation's state relations."""
    return f"{quote_ident(STATE_SCHEMA)}.{quote_ident(state_name(kind, activation))}"
