"""Lakehouse tables: an activation's rows kept as a Delta Lake table in Azure (delta-rs).

No Dagster here. The export calls `apply_change_set` with the change set the last delta
computed, advances the baseline, then `care_for_table` (compaction, vacuum). See
docs/formats.md ("Delta Lake tables") for the mapping of sync modes and types.
"""

from azexport_assets.lakehouse.table import (
    APP_ID_PREFIX,
    DeltaTarget,
    TableAheadError,
    TableCare,
    TableCommit,
    TableMissingError,
    app_id,
    apply_change_set,
    care_for_table,
    open_table,
    table_schema,
)
from azexport_assets.lakehouse.types import DeltaTypeError, check_column_types

__all__ = [
    "APP_ID_PREFIX",
    "DeltaTarget",
    "DeltaTypeError",
    "TableAheadError",
    "TableMissingError",
    "TableCare",
    "TableCommit",
    "app_id",
    "apply_change_set",
    "care_for_table",
    "check_column_types",
    "open_table",
    "table_schema",
]
