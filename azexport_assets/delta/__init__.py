"""The delta engine: per-activation baselines and change sets, as set-based SQL over DuckDB.

No Dagster here. The delta asset calls `compute_change_set`, the export asset writes
`change_rows_query(spec, kinds)` for each entry of `export_kinds(...)` and then calls
`commit_baseline`. See docs/delta.md for the state layout and the rules.
"""

from azexport_assets.delta.engine import (
    baseline_info,
    change_set_spec,
    commit_baseline,
    compute_change_set,
    export_kinds,
    fingerprint,
    key_violations,
    load_change_set,
    preview_change_set,
    reset_baseline,
)
from azexport_assets.delta.spec import (
    STATE_SCHEMA,
    ChangeSet,
    DeltaSpec,
    KeyViolationError,
)
from azexport_assets.delta.sql import (
    change_rows_query,
    clustered_changes_query,
    partition_counts_query,
)
from azexport_assets.delta.synclog import LOG_SCHEMA, SyncLogEntry, SyncLogSlice, run_slice

__all__ = [
    "LOG_SCHEMA",
    "STATE_SCHEMA",
    "ChangeSet",
    "DeltaSpec",
    "KeyViolationError",
    "SyncLogEntry",
    "SyncLogSlice",
    "baseline_info",
    "change_rows_query",
    "clustered_changes_query",
    "change_set_spec",
    "commit_baseline",
    "compute_change_set",
    "export_kinds",
    "fingerprint",
    "key_violations",
    "load_change_set",
    "partition_counts_query",
    "preview_change_set",
    "reset_baseline",
    "run_slice",
]
