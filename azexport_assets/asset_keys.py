"""Every asset key of the project, built in one place.

The Dagster UI labels a node with the last part of its key, so each last part says on its own
which object it is: `crm.customers` (a source table), `customers` (a model),
`customers_snapshot_delta` / `customers_snapshot_export` (an activation's two steps) and
`customers_snapshot_sync_log` (its sync log, when it keeps one).
"""

from __future__ import annotations

import dagster as dg


def source_key(source: str, table: str) -> dg.AssetKey:
    """A table of a source: `sources/<source>/<source>.<table>` (a file source: its name)."""
    label = source if table == source else f"{source}.{table}"
    return dg.AssetKey(["sources", source, label])


def model_key(model: str) -> dg.AssetKey:
    return dg.AssetKey(["models", model])


def segment_key(segment: str) -> dg.AssetKey:
    return dg.AssetKey(["segments", segment])


def delta_key(activation: str) -> dg.AssetKey:
    """The change set of an activation: `activations/<a>/<a>_delta`."""
    return dg.AssetKey(["activations", activation, f"{activation}_delta"])


def export_key(activation: str) -> dg.AssetKey:
    """The files of an activation: `activations/<a>/<a>_export`."""
    return dg.AssetKey(["activations", activation, f"{activation}_export"])


def sync_log_key(activation: str) -> dg.AssetKey:
    """The sync log of an activation (`sync_log: true`): `activations/<a>/<a>_sync_log`."""
    return dg.AssetKey(["activations", activation, f"{activation}_sync_log"])


def op_name(key: dg.AssetKey) -> str:
    """The op name Dagster derives from an asset key (for run config: `ops: {<name>: ...}`)."""
    return "__".join(key.path)
