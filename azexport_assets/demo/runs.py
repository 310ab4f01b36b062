"""Launch activation jobs through a running Dagster and read back the blobs they wrote.

Runs go through the webserver's GraphQL API (`DagsterGraphQLClient`), so they belong to the
code location: the Jobs and Runs pages list them and the UI can re-execute them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlsplit

import dagster as dg
from dagster_graphql import DagsterGraphQLClient

from azexport_assets.asset_keys import export_key, sync_log_key

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class WrittenBlob:
    """One blob an export wrote: data file (with rows) or manifest (rows is None); or a
    Delta table's commit (bytes is None, name says the table and version)."""

    name: str
    bytes: int | None
    rows: int | None
    url: str | None = None


def launch(client: DagsterGraphQLClient, job_name: str, run_config: dict | None = None) -> str:
    """Submit `job_name` to the instance's run queue; returns the run id."""
    return client.submit_job_execution(
        job_name, run_config=run_config or {}, tags={"azexport/launched_by": "demo"}
    )


def wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout: float = 900.0):
    """Poll until the run has finished; returns its final DagsterRunStatus."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in FINISHED:
            return status
        time.sleep(1.0)
    raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")


def _blob_urls(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, str]:
    """Blob name -> URL, from the export's url metadata (or the older `blob_urls` list)."""
    urls = [v.value for v in metadata.values() if isinstance(v, dg.UrlMetadataValue)]
    legacy = metadata.get("blob_urls")
    if legacy is not None and isinstance(legacy.value, list):
        urls += [u for u in legacy.value if isinstance(u, str)]
    by_name = {}
    for url in urls:
        # http://host/account/container/<blob name>?sas: the name is the path after container
        parts = unquote(urlsplit(url).path).lstrip("/").split("/", 2)
        if len(parts) == 3:
            by_name[parts[2]] = url
    return by_name


def _table_rows(value: dg.TableMetadataValue) -> list[dict]:
    return [dict(record.data) for record in value.records]


def export_blobs(metadata: Mapping[str, dg.MetadataValue]) -> list[WrittenBlob]:
    """The blobs named by an export materialization's metadata, manifest last.

    Reads the `files` table (columns blob, rows, bytes, md5); metadata written before that
    table existed has the same facts as the JSON list `blob_files` (name, rows, bytes)."""
    urls = _blob_urls(metadata)
    if "table_uri" in metadata:
        # A Delta table: one line for its commit (rows inserted, updated or deleted).
        version = metadata["delta_version"].value if "delta_version" in metadata else "?"
        url = metadata["table_url"].value if "table_url" in metadata else None
        name = f"{metadata['table_uri'].value} (Delta table, version {version})"
        return [WrittenBlob(name, None, _value(metadata, "dagster/row_count"), str(url or ""))]
    files = metadata.get("files")
    if isinstance(files, dg.TableMetadataValue):
        rows = [(r["blob"], r["bytes"], r["rows"]) for r in _table_rows(files)]
    elif "blob_files" in metadata:
        rows = [(f["name"], f["bytes"], f["rows"]) for f in metadata["blob_files"].value]
    else:
        return []
    blobs = [WrittenBlob(n, int(b), int(r), urls.get(n)) for n, b, r in rows]
    if "manifest" in metadata:
        name = str(metadata["manifest"].value)
        size = int(metadata["manifest_bytes"].value) if "manifest_bytes" in metadata else 0
        blobs.append(WrittenBlob(name, size, None, urls.get(name)))
    return blobs


def _export_materializations(
    instance: dg.DagsterInstance, run_id: str, key_of: Callable[[str], dg.AssetKey] = export_key
) -> dict[str, Mapping[str, dg.MetadataValue]]:
    """Activation name -> metadata of its export (or of the asset `key_of` names, such as its
    sync log) materialized by the run."""
    found: dict[str, Mapping[str, dg.MetadataValue]] = {}
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    for entry in entries:
        materialization = entry.asset_materialization
        if materialization is None:
            continue
        path = materialization.asset_key.path
        if len(path) == 3 and materialization.asset_key == key_of(path[1]):
            found[path[1]] = materialization.metadata
    return found


def run_exports(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[WrittenBlob]]:
    """Activation name -> blobs written, for every export materialized by the run."""
    found = _export_materializations(instance, run_id).items()
    return {name: export_blobs(metadata) for name, metadata in found}


def _value(metadata: Mapping[str, dg.MetadataValue], key: str) -> int:
    value = metadata.get(key)
    return int(value.value) if value is not None else 0  # type: ignore[arg-type]


def describe_export(metadata: Mapping[str, dg.MetadataValue]) -> str:
    """What an export wrote, in the words of its sync mode, from its metadata."""
    rows = _value(metadata, "dagster/row_count")
    mode_value = metadata.get("sync_mode")
    mode = str(mode_value.value) if mode_value is not None else None
    full = metadata.get("full_export")
    if "snapshot_rows" in metadata:
        return f"snapshot of {rows:,} rows"
    if full is not None and full.value:
        return f"full export of {rows:,} rows (no earlier export to compare with)"
    added, updated, removed = (_value(metadata, k) for k in ("added", "updated", "removed"))
    if rows == 0 and not (added or updated or removed):
        return "no changes since the last export: nothing written"
    if mode == "insert":
        return f"{added:,} added (insert: {updated:,} updated, {removed:,} removed not sent)"
    if mode == "upsert":
        return f"{added:,} added, {updated:,} updated (upsert: {removed:,} removed not sent)"
    return f"{added:,} added, {updated:,} updated, {removed:,} removed"


def export_summaries(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Activation name -> `describe_export` of its export in the run."""
    found = _export_materializations(instance, run_id).items()
    return {name: describe_export(metadata) for name, metadata in found}


def describe_sync_log(metadata: Mapping[str, dg.MetadataValue]) -> str:
    """What a sync log asset's materialization says: keys logged this run, rows kept."""
    operations = metadata.get("operations_this_run")
    counts = operations.value if operations is not None else {}
    detail = ", ".join(f"{n:,} {op}" for op, n in sorted(counts.items()))  # type: ignore[union-attr]
    table = metadata.get("dagster/table_name")
    return (
        f"sync log {table.value if table is not None else ''}: "
        f"{_value(metadata, 'rows_this_run'):,} keys this run{f' ({detail})' if detail else ''}, "
        f"{_value(metadata, 'rows_kept'):,} kept ({_value(metadata, 'retention_days')} days)"
    )


def sync_log_summaries(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Activation name -> `describe_sync_log` of its sync log asset in the run."""
    found = _export_materializations(instance, run_id, sync_log_key).items()
    return {name: describe_sync_log(metadata) for name, metadata in found}


IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def runs_since(instance: dg.DagsterInstance, since: datetime, exclude: set[str]) -> list:
    """Runs created since `since` (oldest first), except the ids in `exclude`: the runs that
    sensors or schedules started meanwhile."""
    runs = instance.get_runs(filters=dg.RunsFilter(created_after=since))
    return [r for r in reversed(runs) if r.run_id not in exclude]


def wait_until_finished(instance: dg.DagsterInstance, run_id: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return run
        time.sleep(1.0)
    raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")


def cancel_orphaned_runs(instance: dg.DagsterInstance, since: datetime) -> list[str]:
    """Mark as canceled the runs created since `since` that are still in progress.

    Called once the Dagster that ran them has been stopped: their processes are gone, and
    without this they would show as running forever (the default run launcher has no
    run-worker health check)."""
    stuck = instance.get_runs(filters=dg.RunsFilter(created_after=since, statuses=IN_PROGRESS))
    for run in stuck:
        instance.report_run_canceled(run, "Dagster was stopped (Ctrl-C) while the run was going")
    return [r.run_id for r in stuck]
