"""Run metadata shown in the Dagster UI: schemas, previews, file tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import dagster as dg

from azexport_assets.delta import ChangeSet, SyncLogSlice
from azexport_assets.export import ExportOutcome

PREVIEW_ROWS = 10


def table_schema(columns: list[tuple[str, str]]) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=n, type=t) for n, t in columns])


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def markdown_table(header: list[str], rows: list[tuple[Any, ...]]) -> str:
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def build_metadata(
    table: str, columns: list[tuple[str, str]], rows: int, preview: str
) -> dict[str, Any]:
    """Row count, column schema and a Markdown preview of a model or segment."""
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/column_schema": table_schema(columns),
        "preview": dg.MetadataValue.md(preview),
        "table": dg.MetadataValue.text(table),
    }


# Links per export in the metadata: beyond this, the file table lists the rest.
MAX_BLOB_LINKS = 20


def change_metadata(change: ChangeSet) -> dict[str, Any]:
    if change.snapshot:
        # No baseline, nothing compared: the rows are a snapshot, not additions.
        return {
            "dagster/row_count": dg.MetadataValue.int(change.current_rows),
            "full_export": True,
            "sync_mode": "snapshot",
            "snapshot_rows": change.current_rows,
            "delta_id": change.delta_id,
        }
    return {
        "dagster/row_count": dg.MetadataValue.int(change.added + change.updated + change.removed),
        "full_export": change.full,
        "reason": change.reason,
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
        "unchanged": change.unchanged,
        "current_rows": change.current_rows,
        "baseline_rows": change.baseline_rows,
        "delta_id": change.delta_id,
    }


FILE_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("blob", "string"),
        dg.TableColumn("kind", "string"),
        dg.TableColumn("part", "int"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("bytes", "int"),
        dg.TableColumn("md5", "string"),
    ]
)


def table_metadata(outcome: ExportOutcome, logical_time: datetime) -> dict[str, Any]:
    """What the UI shows of one Delta table export: the table (a link), the version
    committed, rows inserted / updated / deleted, the table's schema, upkeep, timings."""
    table, change = outcome.table, outcome.change
    assert table is not None
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(table.rows_written),
        "table_uri": dg.MetadataValue.text(table.uri),
        "table_url": dg.MetadataValue.url(table.url),
        "delta_version": table.version if table.version is not None else "no table yet",
        "committed": table.committed,
        "already_applied": table.already_applied,
        "operation": table.operation,
        "rows_inserted": table.rows_inserted,
        "rows_updated": table.rows_updated,
        "rows_deleted": table.rows_deleted,
        "logical_time": dg.MetadataValue.timestamp(logical_time),
        "delta_id": change.delta_id,
        "full_export": change.full,
        "added": change.added,
        "updated": change.updated,
        "removed": change.removed,
        "baseline_advanced": outcome.baseline_advanced,
        "duration_seconds": round(outcome.total_seconds, 3),
        "write_seconds": round(outcome.write_seconds, 3),
    }
    if table.schema:
        metadata["dagster/column_schema"] = table_schema(table.schema)
    if table.maintenance:
        metadata["table_upkeep"] = dg.MetadataValue.json(table.maintenance)
    if table.maintenance_error:
        metadata["table_upkeep_error"] = table.maintenance_error
    return metadata


def sync_log_metadata(outcome: ExportOutcome, log_asset: dg.AssetKey | None) -> dict[str, Any]:
    """On the export: the run's slice of the sync log (the table, rows per operation, the SQL
    that reads the slice, its first rows) and a link to the sync log's own asset."""
    logged = outcome.sync_log
    if logged is None:
        return {}
    metadata = {
        "sync_log_table": dg.MetadataValue.text(logged.table),
        "sync_log_rows": dg.MetadataValue.int(logged.rows),
        "sync_log_operations": dg.MetadataValue.json(logged.operations),
        "sync_log_query": dg.MetadataValue.md(f"```sql\n{logged.query}\n```"),
        "sync_log_preview": dg.MetadataValue.md(markdown_table(logged.columns, logged.sample)),
    }
    if log_asset is not None:
        metadata["sync_log_asset"] = dg.MetadataValue.asset(log_asset)
    return metadata


def sync_log_asset_metadata(logged: SyncLogSlice, retention_days: int) -> dict[str, Any]:
    """On the sync log's asset: rows this run wrote, rows kept in all, the retention, the SQL
    that reads this run's slice, its first rows."""
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(logged.total_rows),
        "dagster/table_name": dg.MetadataValue.text(logged.table.replace('"', "")),
        "rows_this_run": dg.MetadataValue.int(logged.rows),
        "operations_this_run": dg.MetadataValue.json(logged.operations),
        "rows_kept": dg.MetadataValue.int(logged.total_rows),
        "runs_kept": dg.MetadataValue.int(logged.runs_kept),
        "retention_days": dg.MetadataValue.int(retention_days),
        "query_this_run": dg.MetadataValue.md(f"```sql\n{logged.query}\n```"),
        "preview_this_run": dg.MetadataValue.md(markdown_table(logged.columns, logged.sample)),
    }
    if logged.oldest_commit is not None:
        oldest = logged.oldest_commit.replace(tzinfo=timezone.utc)
        metadata["oldest_run_kept"] = dg.MetadataValue.timestamp(oldest)
    return metadata


def export_metadata(
    outcome: ExportOutcome,
    logical_time: datetime,
    sync_mode: str,
    log_asset: dg.AssetKey | None = None,
) -> dict[str, Any]:
    """What the UI shows of one export: counts, one table of files, a link per blob, timings,
    and the run's slice of the sync log (with a link to `log_asset`)."""
    return _export_metadata(outcome, logical_time, sync_mode) | sync_log_metadata(
        outcome, log_asset
    )


def _export_metadata(
    outcome: ExportOutcome, logical_time: datetime, sync_mode: str
) -> dict[str, Any]:
    if outcome.table is not None:
        return table_metadata(outcome, logical_time)
    report, change = outcome.report, outcome.change
    records = [
        dg.TableRecord(
            {
                "blob": f.blob.name,
                "kind": f.suffix.strip("_") or "rows",
                "part": f.part or 1,
                "rows": f.rows,
                "bytes": f.blob.bytes,
                "md5": f.blob.md5_hex,
            }
        )
        for f in report.files
    ]
    metadata: dict[str, Any] = {
        "dagster/row_count": dg.MetadataValue.int(report.rows),
        "delta_id": change.delta_id,  # the change set written (the run that computed it)
        "bytes": report.bytes,
        "file_count": len(report.files),
        "files": dg.MetadataValue.table(records, schema=FILE_TABLE_SCHEMA),
        "logical_time": dg.MetadataValue.timestamp(logical_time),
        "sync_mode": sync_mode,
        "full_export": change.full,
    }
    if change.snapshot:
        metadata |= {"snapshot_rows": change.current_rows}
    else:
        metadata |= {
            "added": change.added,
            "updated": change.updated,
            "removed": change.removed,
            "baseline_advanced": outcome.baseline_advanced,
        }
    metadata |= {
        "duration_seconds": round(outcome.total_seconds, 3),
        "write_seconds": round(outcome.write_seconds, 3),
        "upload_after_write_seconds": round(outcome.upload_seconds, 3),
    }
    # Blob URLs never carry a query string (no SAS): they open for whoever may read the blob.
    for f in report.files[:MAX_BLOB_LINKS]:
        metadata[f"blob: {f.blob.name}"] = dg.MetadataValue.url(f.blob.url)
    if report.skipped:
        metadata["skipped_empty"] = dg.MetadataValue.json(report.skipped)
    if report.manifest:
        metadata["manifest"] = report.manifest.name
        metadata["manifest_bytes"] = report.manifest.bytes
        metadata["manifest_url"] = dg.MetadataValue.url(report.manifest.url)
    if report.stale_removed:
        metadata["stale_parts_removed"] = dg.MetadataValue.json(report.stale_removed)
    if report.stale_left:
        metadata["stale_parts_left"] = dg.MetadataValue.json(report.stale_left)
    if report.stale_unchecked:
        metadata["stale_parts_unchecked"] = "the credential may not list the container"
    if report.xml_element_names:
        metadata["xml_element_names"] = dg.MetadataValue.json(report.xml_element_names)
    return metadata
