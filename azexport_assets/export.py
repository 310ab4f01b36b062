"""One export, start to finish, without Dagster: change set -> local files -> blobs -> manifest.

The order is what makes exports safe:
1. `plan_names`: blob names from the template at the run's logical time (checked first).
2. `write_local_files` (warehouse lock held): DuckDB writes each file of the change set to a
   private temp folder; the lock is released before any network I/O.
3. `upload_files`: every file becomes a blob only when its block list is committed.
4. `remove_stale_parts`: parts of an earlier, longer export of the same name go away.
5. `upload_manifest`: `<name>_manifest.json` is written last, so a consumer that waits for it
   never reads a half-finished export.
The caller advances the delta baseline only after all of this succeeded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
from azure.storage.blob import ContainerClient

from azexport_assets import naming
from azexport_assets.config import ActivationConfig
from azexport_assets.delta import ChangeSet, DeltaSpec, change_rows_query, export_kinds
from azexport_assets.formats import FormatSpec, WriteResult, write_export
from azexport_assets.storage import (
    UploadedBlob,
    delete_blobs,
    list_blob_names,
    upload_bytes,
    upload_file,
)


@dataclass(frozen=True)
class FileSet:
    """The local files for one suffix ('' or '_added' / '_updated' / '_removed')."""

    suffix: str
    kinds: tuple[str, ...]
    result: WriteResult | None  # None: skipped because empty and on_empty=skip


@dataclass
class ExportedFile:
    suffix: str
    part: int | None
    rows: int
    blob: UploadedBlob


@dataclass
class ExportReport:
    stem: str
    files: list[ExportedFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale_removed: list[str] = field(default_factory=list)
    stale_left: list[str] = field(default_factory=list)
    manifest: UploadedBlob | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    xml_removed_chars: int = 0
    xml_element_names: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.blob.bytes for f in self.files)


def stem_name(activation: ActivationConfig, path_prefix: str, logical_time: datetime) -> str:
    """'prefix/crm/25-04-14_export' — the blob name before suffixes and extension."""
    rendered = naming.render(activation.file_name, logical_time, activation.timezone)
    return naming.join_prefix(path_prefix, rendered)


def rows_of(change: ChangeSet, kinds: tuple[str, ...]) -> int:
    return sum(getattr(change, kind) for kind in kinds)


def write_local_files(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    activation: ActivationConfig,
    workdir: Path,
) -> list[FileSet]:
    """Write every file of the change set under workdir (the warehouse lock is held)."""
    fmt = FormatSpec.from_activation(activation)
    on_empty = activation.effective_on_empty(full_export=change.full)
    sets = []
    for suffix, kinds in export_kinds(spec, change).items():
        if rows_of(change, kinds) == 0 and on_empty == "skip":
            sets.append(FileSet(suffix, kinds, None))
            continue
        out_dir = workdir / (suffix.strip("_") or "rows")
        out_dir.mkdir(parents=True)
        # A fresh cursor: the stream must not collide with results left open on `con`.
        cursor = con.cursor()
        try:
            query = change_rows_query(spec, kinds)
            result = write_export(cursor, query, fmt, out_dir, activation.max_file_size)
        finally:
            cursor.close()
        sets.append(FileSet(suffix, kinds, result))
    return sets


def blob_names(stem: str, suffix: str, extension: str, count: int) -> list[str]:
    """One plain name, or numbered parts when the output was split."""
    if count == 1:
        return [naming.validate_blob_name(f"{stem}{suffix}{extension}")]
    return [
        naming.validate_blob_name(f"{stem}{suffix}{naming.part_suffix(i)}{extension}")
        for i in range(1, count + 1)
    ]


def upload_files(
    container: ContainerClient, stem: str, file_sets: list[FileSet], fmt: FormatSpec
) -> ExportReport:
    report = ExportReport(stem=stem)
    for file_set in file_sets:
        if file_set.result is None:
            report.skipped.append(f"{stem}{file_set.suffix}{fmt.extension}")
            continue
        files = file_set.result.files
        names = blob_names(stem, file_set.suffix, fmt.extension, len(files))
        for index, (name, local) in enumerate(zip(names, files, strict=True), start=1):
            blob = upload_file(
                container, name, local.path, content_type=fmt.content_type, md5_hex=local.md5_hex
            )
            part = index if len(files) > 1 else None
            report.files.append(ExportedFile(file_set.suffix, part, local.rows, blob))
        report.columns = report.columns or list(file_set.result.columns)
        report.xml_removed_chars += file_set.result.xml_removed_chars
        report.xml_element_names |= file_set.result.xml_element_names
    return report


def remove_stale_parts(container: ContainerClient, report: ExportReport, fmt: FormatSpec) -> None:
    """Delete blobs of this name pattern that this run did not write (an earlier run's extra
    parts, or the plain file when this run wrote parts, or the reverse)."""
    written = {f.blob.name for f in report.files}
    for suffix in {f.suffix for f in report.files}:
        base = f"{report.stem}{suffix}"
        pattern = re.compile(re.escape(base) + r"(?:_part-\d{5})?" + re.escape(fmt.extension) + "$")
        stale = [
            name
            for name in list_blob_names(container, base)
            if pattern.fullmatch(name) and name not in written
        ]
        if stale:
            report.stale_left += delete_blobs(container, stale)
            report.stale_removed += [n for n in stale if n not in report.stale_left]


def manifest_document(
    report: ExportReport,
    activation_name: str,
    activation: ActivationConfig,
    change: ChangeSet,
    run_id: str,
    logical_time: datetime,
) -> dict:
    fmt = FormatSpec.from_activation(activation)
    return {
        "activation": activation_name,
        "run_id": run_id,
        "logical_time": logical_time.isoformat(),
        "created_at": datetime.now(timezone.utc).isoformat(),
        "run_type": activation.run_type,
        "sync_mode": activation.sync_mode,
        "full_export": change.full,
        "format": activation.format,
        "format_options": {
            k: v for k, v in fmt.__dict__.items() if k == "format" or k.startswith(fmt.format)
        }
        | {"compression": fmt.compression},
        "columns": [{"name": n, "type": t} for n, t in report.columns],
        "changes": {"added": change.added, "updated": change.updated, "removed": change.removed},
        "files": [
            {
                "name": f.blob.name,
                "kind": f.suffix.strip("_") or "rows",
                "part": f.part,
                "rows": f.rows,
                "bytes": f.blob.bytes,
                "md5": f.blob.md5_hex,
            }
            for f in report.files
        ],
        "skipped_empty": report.skipped,
    }


def upload_manifest(container: ContainerClient, report: ExportReport, document: dict) -> None:
    name = naming.validate_blob_name(f"{report.stem}_manifest.json")
    data = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
    report.manifest = upload_bytes(container, name, data, content_type="application/json")
