"""One export, start to finish, without Dagster: `run_export`.

The order is what makes exports safe:
1. `stem_name`: blob names from the template at the run's logical time (checked first), and
   `preflight`: the container exists and the credential may write.
2. Under the warehouse hold: the change set the last delta computed is read, and DuckDB writes
   each of its files to a private temp folder. Each file is uploaded *while* it is written
   (`GrowingFileUpload`), so encoding and uploading overlap; the warehouse is released as soon
   as the last file is written.
3. Every blob becomes visible only when its block list is committed.
4. `remove_stale_parts`: parts of an earlier, longer export of the same name go away.
5. `upload_manifest`: `<name>_manifest.json` is written last, so a consumer that waits for it
   never reads a half-finished export.
6. `commit_baseline`: the delta baseline advances only after all of this succeeded; with
   `sync_log`, the exported keys are logged in the same transaction (`delta.synclog`).

With `encryption.pgp_public_key`, each file is encrypted (`formats.pgp`) to a file beside it
once written, and that file is uploaded as `<name>.pgp`; `encryption.encryption_scope` goes
with every upload request of the export.

A transient fault of the lake (`retry_transient`) while the change set is read runs step 2
again from the start (new files and uploads; a blob already committed is rewritten with the
same bytes); one during the baseline commit runs the commit again, which finds out whether
the lost attempt had committed.

The Dagster asset, the benchmarks and scripts all call `run_export`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
from azure.storage.blob import ContainerClient

from azexport_assets import naming
from azexport_assets.delta import (
    ChangeSet,
    DeltaSpec,
    SyncLogEntry,
    SyncLogSlice,
    change_rows_query,
    change_set_spec,
    clustered_changes_query,
    commit_baseline,
    compute_change_set,
    export_kinds,
    load_change_set,
    partition_counts_query,
    reset_baseline,
    run_slice,
)
from azexport_assets.delta import state as delta_state
from azexport_assets.formats import FormatSpec, WriteResult, WrittenFile, write_export
from azexport_assets.formats.pgp import CONTENT_TYPE as PGP_CONTENT_TYPE
from azexport_assets.formats.pgp import ENCRYPTED_SUFFIX, PgpRecipient, encrypted_part_limit
from azexport_assets.lakehouse import (
    DeltaTarget,
    TableCare,
    TableCommit,
    apply_change_set,
    care_for_table,
)
from azexport_assets.partition_limit import PartitionError, check_partition_count
from azexport_assets.sandbox import process_scratch, sandboxed_cursor
from azexport_assets.sql_text import quote_ident
from azexport_assets.storage import (
    BlobProperties,
    BlobStorage,
    StorageError,
    UploadedBlob,
    delete_blobs,
    list_blob_names_if_permitted,
    preflight,
    strip_query,
    upload_bytes,
)
from azexport_assets.storage.streaming import GrowingFileUpload, UploadPool
from azexport_assets.warehouse import WarehouseBackend, retry_transient

if TYPE_CHECKING:  # the configuration layer may depend on Dagster; exports do not
    from azexport_assets.config import ActivationConfig, SourceConfig

PROGRESS_EVERY_SECONDS = 10.0
FILE_LINES_EVERY_SECONDS = 1.0  # see Progress


@dataclass
class ExportedFile:
    suffix: str
    part: int | None
    rows: int
    blob: UploadedBlob
    partition: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class FileSet:
    """The rows of one file name (split into parts when large): the change kinds of one
    suffix (`_added`, or '' for a single file), within one partition when partitioned."""

    stem: str  # the blob name before suffix, part and extension (partition folders included)
    suffix: str
    kinds: tuple[str, ...]
    rows: int
    partition: tuple[tuple[str, str | None], ...] = ()  # (column, value as text or None)

    @property
    def kind(self) -> str:
        """'rows' for a single file, else the change kind of its suffix."""
        return self.suffix.strip("_") or "rows"


@dataclass
class ExportReport:
    stem: str
    files: list[ExportedFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stale_removed: list[str] = field(default_factory=list)
    stale_left: list[str] = field(default_factory=list)
    # The credential may not list the container: earlier files of this name were not looked for.
    stale_unchecked: bool = False
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


def stem_name(
    activation: ActivationConfig,
    path_prefix: str,
    logical_time: datetime,
    names: Mapping[str, str] | None = None,
) -> str:
    """'prefix/crm/25-04-14_export' — the blob name before suffixes and extension (and
    before partition folders). `names`: values of `{activation}`, `{run_id}`, `{model}`,
    `{segment}`."""
    rendered = naming.render(activation.file_name, logical_time, activation.timezone, names)
    return naming.join_prefix(path_prefix, rendered)


def plan_file_sets(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    activation: ActivationConfig,
    stem: str,
) -> tuple[list[FileSet], list[str]]:
    """The files the change set makes (in write order), and the names skipped as empty.

    Without `partition_by`: one file set per suffix of `export_kinds`. With it: per partition
    that holds rows of the exported kinds (Hive-style folders, see `naming.partitioned_stem`),
    per suffix. `on_empty: skip` leaves out empty file sets.
    """
    fmt = FormatSpec.from_activation(activation)
    on_empty = activation.effective_on_empty(full_export=change.full)
    suffixes = export_kinds(spec, change)
    if activation.partition_by:
        columns = list(activation.partition_by)
        counts: dict[tuple[tuple[str, str | None], ...], dict[str, int]] = {}
        for *values, kind, rows in con.execute(partition_counts_query(spec, columns)).fetchall():
            partition = tuple(zip(columns, values, strict=True))
            counts.setdefault(partition, {})[kind] = int(rows)
        exported = {k for kinds in suffixes.values() for k in kinds}
        groups = [
            (naming.partitioned_stem(stem, partition), partition, by_kind)
            for partition, by_kind in counts.items()
            if any(by_kind.get(k, 0) for k in exported)
        ]
    else:
        by_kind = {"added": change.added, "updated": change.updated, "removed": change.removed}
        groups = [(stem, (), by_kind)]
    sets: list[FileSet] = []
    skipped: list[str] = []
    for file_stem, partition, by_kind in groups:
        for suffix, kinds in suffixes.items():
            rows = sum(by_kind.get(k, 0) for k in kinds)
            if rows == 0 and on_empty == "skip":
                encrypted = activation.pgp_key_env is not None
                skipped.append(f"{file_stem}{suffix}{blob_extension(fmt, encrypted)}")
                continue
            sets.append(FileSet(file_stem, suffix, kinds, rows, partition))
    return sets, skipped


# Above this many partitions an export sorts a copy of its change set by partition once
# (`clustered_changes_query`) rather than reading all of it for every partition. On 1M rows
# the sort costs about as much as ten partitions' reads; a snapshot in 365 partitions took
# 12.5 s with it, 32.8 s without (`benchmarks/partitions.py`).
CLUSTER_ABOVE_PARTITIONS = 8


def file_set_query(
    spec: DeltaSpec, file_set: FileSet, activation: ActivationConfig, clustered: bool = False
) -> str:
    """The SELECT whose rows go into the file set's file(s); `clustered`: from the copy made
    by `clustered_changes_query` on the same connection."""
    return change_rows_query(
        spec,
        file_set.kinds,
        change_column=activation.change_column,
        partition=file_set.partition,
        clustered=clustered,
    )


class Progress:
    """Rows and bytes written and uploaded, in the run log: a line per file written and per
    blob committed, and a summary at least every ~10 s while the export runs.

    The per-file lines of up to a second go into one log message: every message is a write
    to Dagster's run storage (about 7 ms), which an export of hundreds of partitions would
    otherwise pay twice per file. Upload threads only queue their lines; the export's own
    thread writes them (loggers such as Dagster's are not meant to be called from other
    threads)."""

    def __init__(self, log: Callable[[str], None] | None, pool: UploadPool | None = None) -> None:
        self.log = log
        self.pool = pool
        self.started = time.monotonic()
        self.rows_written = 0  # rows of closed files
        self.bytes_written = 0  # bytes of closed files
        self.open_bytes = 0  # bytes of the file being written
        self._last = self.started
        self._flushed = self.started  # when the file lines were last written
        self._summaries = 0  # progress summaries written so far
        self._queued: list[str] = []
        self._lock = threading.Lock()

    def _say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)

    def _rate(self, size: int) -> str:
        seconds = max(time.monotonic() - self.started, 1e-6)
        return f"{size / seconds / 1e6:.1f} MB/s"

    def _queue(self, line: str) -> None:
        with self._lock:
            self._queued.append(line)

    def _flush(self, now: float, force: bool) -> None:
        """The queued file lines as one message, at most about once a second (or `force`)."""
        if not force and now - self._flushed < FILE_LINES_EVERY_SECONDS:
            return
        with self._lock:
            queued, self._queued = self._queued, []
        if queued:
            self._say("\n".join(queued))
            self._flushed = now

    def tick(self, force: bool = False) -> None:
        """Write queued lines, and the summary when ~10 s have passed (or `force`)."""
        now = time.monotonic()
        self._flush(now, force)
        if not force and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        self._summaries += 1
        written = self.bytes_written + self.open_bytes
        uploaded = self.pool.uploaded_bytes if self.pool else 0
        self._say(
            f"progress after {now - self.started:.0f}s: {self.rows_written:,} rows in closed "
            f"files, {written:,} bytes written ({self._rate(written)}), {uploaded:,} bytes "
            f"uploaded ({self._rate(uploaded)})"
        )

    def finish(self) -> None:
        """Queued lines, and a last summary when the export was long enough to have had one
        (a short export's own summary line says everything; every log line is one write to
        Dagster's run storage)."""
        now = time.monotonic()
        self._flush(now, force=True)
        if self._summaries > 0:
            self.tick(force=True)

    def grew(self, size: int) -> None:
        self.open_bytes = size
        self.tick()

    def file_closed(self, written: WrittenFile, partition: str = "") -> None:
        """`partition`: its folder ('country=FR'), named since every partition's local file
        has the same name."""
        self.rows_written += written.rows
        self.bytes_written += written.bytes
        self.open_bytes = 0
        name = f"{written.path.name} of {partition}" if partition else written.path.name
        self._queue(f"wrote {name}: {written.rows:,} rows, {written.bytes:,} bytes")
        self.tick()

    def committed(self, blob: UploadedBlob) -> None:
        """Called from an upload thread."""
        self._queue(f"committed blob {blob.name}: {blob.bytes:,} bytes")


class FileSetUploads:
    """Uploads the files of one suffix while they are written (a `PartObserver`).

    Blob names depend on how many parts there are, known only at the end. Without a size
    limit there is exactly one file, so its upload starts with the file. With a limit, part N
    starts uploading when part N+1 opens (it is then known to be `_part-0000N`); the last part
    (or the only one, under the plain name) starts when writing ends.
    """

    def __init__(
        self,
        pool: UploadPool,
        stem: str,
        suffix: str,
        fmt: FormatSpec,
        split: bool,
        progress: Progress,
        properties: BlobProperties,
        partition: tuple[tuple[str, str | None], ...] = (),
        encrypt: PgpRecipient | None = None,
    ) -> None:
        self.partition = partition
        self.pool = pool
        self.stem = stem
        self.suffix = suffix
        self.fmt = fmt
        self.split = split
        self.progress = progress
        # Encrypted files are uploaded once encrypted, i.e. after they are closed, as
        # OpenPGP messages (their own content type, no content encoding).
        self.encrypt = encrypt
        self.extension = blob_extension(fmt, encrypt is not None)
        if encrypt is not None:
            properties = replace(properties, content_type=PGP_CONTENT_TYPE, content_encoding=None)
        self.properties = properties
        self.uploads: dict[int, GrowingFileUpload] = {}
        self.closed_files: dict[int, WrittenFile] = {}
        self.paths: dict[int, Path] = {}

    def _start(self, index: int, name: str) -> None:
        upload = GrowingFileUpload(
            self.pool,
            name,
            self.paths[index],
            properties=self.properties,
            on_committed=self.progress.committed,
        )
        self.uploads[index] = upload
        written = self.closed_files.get(index)
        if written is not None:
            upload.finish(written.bytes, written.md5_hex, file_metadata(written))

    def _raise_if_failed(self) -> None:
        for upload in self.uploads.values():
            if upload.failed:
                upload.result()  # raises the upload's StorageError

    # -- PartObserver

    def opened(self, index: int, path: Path) -> None:
        self._raise_if_failed()
        self.paths[index] = path
        if not self.split:
            if self.encrypt is None:
                self._start(index, blob_names(self.stem, self.suffix, self.extension, 1)[0])
        elif index >= 2 and index - 1 not in self.uploads:
            part = naming.part_suffix(index - 1)
            name = f"{self.stem}{self.suffix}{part}{self.extension}"
            self._start(index - 1, naming.validate_blob_name(name))

    def grew(self, index: int, size: int) -> None:
        upload = self.uploads.get(index)
        if upload is not None:
            upload.grew(size)
            self._raise_if_failed()
        self.progress.grew(size)

    def closed(self, index: int, written: WrittenFile) -> None:
        self.progress.file_closed(written, naming.partition_folder(self.partition))
        if self.encrypt is not None:
            written = self._encrypted(written)
            self.paths[index] = written.path
        self.closed_files[index] = written
        upload = self.uploads.get(index)
        if upload is not None:
            upload.finish(written.bytes, written.md5_hex, file_metadata(written))
        elif self.encrypt is not None and not self.split:
            self._start(index, blob_names(self.stem, self.suffix, self.extension, 1)[0])

    def _encrypted(self, written: WrittenFile) -> WrittenFile:
        """The file encrypted to a file beside it (the plain one is removed at once)."""
        assert self.encrypt is not None
        target = written.path.with_name(written.path.name + ENCRYPTED_SUFFIX)
        size, md5_hex = self.encrypt.encrypt_file(written.path, target)
        written.path.unlink()
        return WrittenFile(path=target, rows=written.rows, bytes=size, md5_hex=md5_hex)

    # -- after writing

    def complete(self, result: WriteResult) -> list[ExportedFile]:
        """Start what has not started (the last part; Parquet files), wait for every commit."""
        names = blob_names(self.stem, self.suffix, self.extension, len(result.files))
        for index, (name, local) in enumerate(zip(names, result.files, strict=True), start=1):
            if index not in self.uploads:
                self.paths.setdefault(index, local.path)
                if index not in self.closed_files:
                    self.closed(index, local)
                if index not in self.uploads:
                    self._start(index, name)
        exported = []
        for index, local in enumerate(result.files, start=1):
            upload = self.uploads[index]
            while not upload.wait(timeout=1.0):
                self.progress.tick()  # a long upload tail still reports every ~10 s
            blob = upload.result()
            part = index if len(result.files) > 1 else None
            exported.append(ExportedFile(self.suffix, part, local.rows, blob, self.partition))
        return exported

    def abort(self) -> None:
        """Stop every upload of this file set; nothing more is committed."""
        for upload in self.uploads.values():
            upload.abort()
        for upload in self.uploads.values():
            with contextlib.suppress(Exception):  # the caller reports the first error
                upload.result()


def file_metadata(written: WrittenFile) -> dict[str, str]:
    """The metadata known once a file is written: its rows and MD5 (hex)."""
    return {"rows": str(written.rows), "md5": written.md5_hex}


def blob_properties(run: ExportRun, manifest: bool = False) -> BlobProperties:
    """The properties every blob of this export gets when it is committed: the content type
    and encoding of the format (or the activation's), its cache control, access tier, index
    tags, and metadata (activation, run id, logical time, the user's entries; each file adds
    its rows and MD5 when written). A manifest is JSON, and stays readable under Archive (it
    says what to rehydrate): it keeps the account's default tier then."""
    activation = run.activation
    options = activation.blob_properties
    fmt = FormatSpec.from_activation(activation)
    values = {"activation": run.name, "run_id": run.run_id, "sync_mode": activation.sync_mode}
    tags, user_metadata = options.rendered(values)
    metadata = {
        "activation": run.name,
        "run_id": run.run_id,
        "logical_time": run.logical_time.isoformat(),
        **user_metadata,
    }
    if manifest:
        content_type, encoding = "application/json", None
    elif options.content_encoding:
        content_type, encoding = fmt.content_type, options.content_encoding
    else:
        content_type, encoding = fmt.stored_content_type, None
    tier = options.access_tier
    return BlobProperties(
        content_type=(None if manifest else options.content_type) or content_type,
        content_encoding=encoding,
        cache_control=options.cache_control,
        access_tier=None if manifest and tier == "Archive" else tier,
        tags=tags,
        metadata=metadata,
    )


def write_and_upload(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    activation: ActivationConfig,
    workdir: Path,
    pool: UploadPool,
    stem: str,
    progress: Progress,
    properties: BlobProperties,
    encrypt: PgpRecipient | None = None,
) -> tuple[ExportReport, list[tuple[FileSetUploads, WriteResult]]]:
    """Write every file of the change set under workdir (the warehouse is held), each upload
    starting while its file is written. Returns the report so far and the uploads to finish
    once the warehouse is released (`finish_uploads`)."""
    fmt = FormatSpec.from_activation(activation)
    file_sets, skipped = plan_file_sets(con, spec, change, activation, stem)
    partitions = check_file_sets(file_sets, activation, blob_extension(fmt, encrypt is not None))
    report = ExportReport(stem=stem, skipped=skipped)
    pending: list[tuple[FileSetUploads, WriteResult]] = []
    # One cursor for every file set: the stream must not collide with results left open on
    # `con`, and making the source views again per file set would bind (for a CSV glob,
    # sniff) the sources again for every partition.
    cursor = sandboxed_cursor(con) if file_sets else None
    clustered = partitions > CLUSTER_ABOVE_PARTITIONS
    part_limit = activation.max_file_size
    if encrypt is not None:  # the limit holds for the encrypted part
        part_limit = encrypted_part_limit(part_limit, encrypt.size_overhead())
    try:
        if clustered:
            cursor.execute(clustered_changes_query(spec, list(activation.partition_by)))
        for index, file_set in enumerate(file_sets, start=1):
            out_dir = workdir / f"{index:05d}-{file_set.kind}"
            out_dir.mkdir(parents=True)
            split = activation.max_file_size is not None
            uploads = FileSetUploads(
                pool,
                file_set.stem,
                file_set.suffix,
                fmt,
                split=split,
                progress=progress,
                properties=properties,
                partition=file_set.partition,
                encrypt=encrypt,
            )
            try:
                query = file_set_query(spec, file_set, activation, clustered=clustered)
                result = write_export(cursor, query, fmt, out_dir, part_limit, observer=uploads)
            except BaseException:
                uploads.abort()
                raise
            pending.append((uploads, result))
            report.columns = report.columns or list(result.columns)
            report.xml_removed_chars += result.xml_removed_chars
            report.xml_element_names |= result.xml_element_names
    except BaseException:
        for earlier, _ in pending:
            earlier.abort()
        raise
    finally:
        if cursor is not None:
            cursor.close()
    return report, pending


def finish_uploads(report: ExportReport, pending: list[tuple[FileSetUploads, WriteResult]]) -> None:
    """Wait for every file's commit (starting those that could not start while writing)."""
    try:
        for uploads, result in pending:
            report.files += uploads.complete(result)
    except BaseException:
        for uploads, _ in pending:
            uploads.abort()
        raise


class NoChangeSetError(RuntimeError):
    """The export ran before any delta computed a change set for the activation."""


def check_file_sets(
    file_sets: Sequence[FileSet], activation: ActivationConfig, extension: str
) -> int:
    """What the run checks before writing a file (the preview too): at most `max_partitions`
    partitions, every blob name valid. Raises `PartitionError`; returns the partition count."""
    partitions = len({file_set.partition for file_set in file_sets if file_set.partition})
    check_partition_count(partitions, activation.partition_by, activation.max_partitions)
    check_blob_names(file_sets, activation, extension)
    return partitions


def check_blob_names(
    file_sets: Sequence[FileSet], activation: ActivationConfig, extension: str
) -> None:
    """Every blob name the file sets can take is valid for Azure (parts included: with a size
    limit a file may become `_part-NNNNN`). The file name itself is checked at load; a
    partition's values are known only now."""
    part = naming.part_suffix(1) if activation.max_file_size is not None else ""
    for file_set in file_sets:
        if not file_set.partition:
            continue
        name = f"{file_set.stem}{file_set.suffix}{part}{extension}"
        try:
            naming.validate_blob_name(name)
        except ValueError as error:
            longest, value = max(
                ((column, value) for column, value in file_set.partition if value is not None),
                key=lambda item: len(item[1]),
                default=("", ""),
            )
            shown = (
                repr(value)
                if len(value) <= 40
                else f"{value[:40] + '…'!r} ({len(value):,} characters)"
            )
            problem = (
                f"a blob name of {len(name):,} characters (Azure allows 1 to 1,024)"
                if len(name) > 1024
                else f"an invalid blob name ({error})"
            )
            raise PartitionError(
                f"partition {longest}={shown} gives {problem}; shorten the values of "
                f"partition column '{longest}' in the model (e.g. left(...)) or partition by "
                "another column. Nothing was written"
            ) from None


@dataclass(frozen=True)
class ExportRun:
    """What `run_export` needs to know about one export (no Dagster objects)."""

    name: str  # the activation's name
    activation: ActivationConfig
    source_table: str  # 'models.<m>' or 'segments.<s>'
    container: str
    path_prefix: str
    logical_time: datetime
    run_id: str
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)  # see DeltaRun.sources
    names: Mapping[str, str] = field(default_factory=dict)
    """Values of the file name's `{activation}`, `{run_id}`, `{model}`, `{segment}`."""
    reexecuting: frozenset[str] | None = None
    """When this run re-executes an earlier one (a retry) without computing a change set of
    its own: the ids of the runs of its group, whose delta computed the change set it is
    to export. If the last change set came from another run and is already committed, that
    run has exported these changes: this one writes nothing (`ExportOutcome.superseded_by`)."""
    exported_elsewhere: Mapping[str, str] = field(default_factory=dict)
    """With `reexecuting`: {change set id: run id} of change sets that runs outside the group
    exported and committed. One of them found here was sent by that run under its own names:
    this one writes nothing (two failed runs retried one after the other, see docs/delta.md)."""
    pgp_public_key: str | None = field(default=None, repr=False)
    """`encryption.pgp_public_key`: the ASCII-armored key, read from its variable at run time."""


@dataclass
class ExportOutcome:
    report: ExportReport
    change: ChangeSet
    baseline_advanced: bool
    write_seconds: float  # until the last file was written (uploads overlapping)
    upload_seconds: float  # after writing ended: the part of the upload that did not overlap
    total_seconds: float
    table: TableCommit | None = None  # `format: delta`: what the export did to the table
    superseded_by: str | None = None  # see ExportRun.reexecuting
    sync_log: SyncLogSlice | None = None  # `sync_log:` the rows this run's commit logged

    @property
    def rows(self) -> int:
        """Rows exported: written to files, or sent to the table."""
        return self.table.rows_written if self.table is not None else self.report.rows


def run_export(
    run: ExportRun,
    warehouse: WarehouseBackend,
    storage: BlobStorage,
    log: Callable[[str], None] | None = None,
) -> ExportOutcome:
    """Export the change set the last delta computed, then advance the baseline.

    Raises `StorageError` (nothing new visible, baseline untouched) when the container is not
    writable or an upload fails after its retries; `NoChangeSetError` when no delta ran yet.
    A `format: delta` activation goes to `run_table_export` instead.
    """
    if run.activation.is_table:
        return run_table_export(run, warehouse, storage, log)
    started = time.monotonic()
    stem = stem_name(run.activation, run.path_prefix, run.logical_time, run.names)
    fmt = FormatSpec.from_activation(run.activation)
    recipient = pgp_recipient(run)
    with storage.container(run.container) as container:
        if run.activation.encryption_scope:
            scope = run.activation.encryption_scope
            container.transfer = replace(container.transfer, encryption_scope=scope)
        preflight(container, tags=bool(run.activation.blob_properties.tags))
        change, report, written = retry_transient(
            lambda: _write_change_set(run, warehouse, container, stem, log, recipient),
            what=f"export of '{run.name}' (reading its change set from the warehouse)",
        )
        if report is None:  # superseded: another run exported these changes
            now = time.monotonic()
            return ExportOutcome(
                report=ExportReport(stem=stem),
                change=change,
                baseline_advanced=False,
                write_seconds=0.0,
                upload_seconds=0.0,
                total_seconds=now - started,
                superseded_by=superseding_run(run, change),
            )
        uploaded = time.monotonic()
        remove_stale_parts(
            container,
            report,
            blob_extension(fmt, recipient is not None),
            run.activation.partition_by,
        )
        if run.activation.manifest and report.files:
            document = manifest_document(
                report, run.name, run.activation, change, run.run_id, run.logical_time
            )
            if recipient is not None:
                document["encryption"] = {
                    "format": "openpgp",
                    "recipient_fingerprint": recipient.fingerprint,
                }
            upload_manifest(container, report, document, blob_properties(run, manifest=True))

    advanced, logged = retry_transient(
        lambda: commit_run(run, warehouse, change), what=f"baseline commit of '{run.name}'"
    )
    finished = time.monotonic()
    return ExportOutcome(
        report=report,
        change=change,
        baseline_advanced=advanced,
        write_seconds=written - started,
        upload_seconds=uploaded - written,
        total_seconds=finished - started,
        sync_log=logged,
    )


def superseding_run(run: ExportRun, change: ChangeSet) -> str | None:
    """For a re-execution: the run that already exported `change`, when that was not a run
    of this group (then this one writes nothing), else None."""
    if run.reexecuting is None or not change.committed:
        return None
    if change.delta_id not in run.reexecuting:
        return change.delta_id  # a newer run computed it and exported it
    return run.exported_elsewhere.get(change.delta_id)


def pgp_recipient(run: ExportRun) -> PgpRecipient | None:
    """The key files are encrypted to (`encryption.pgp_public_key`), checked before any work;
    raises `EncryptionKeyError` naming the variable (never its value)."""
    env = run.activation.pgp_key_env
    if env is None:
        return None
    return PgpRecipient.from_armored(run.pgp_public_key or "", where=f"${env}")


def blob_extension(fmt: FormatSpec, encrypted: bool) -> str:
    """'.csv', '.csv.gz', ...; with OpenPGP encryption '.csv.pgp', '.csv.gz.pgp', ..."""
    return fmt.extension + (ENCRYPTED_SUFFIX if encrypted else "")


def sync_log_entry(run: ExportRun) -> SyncLogEntry | None:
    """What the commit appends to the sync log, when the activation keeps one."""
    options = run.activation.sync_log_options
    if options is None:
        return None
    return SyncLogEntry(
        run_id=run.run_id, logical_time=run.logical_time, retention_days=options.retention_days
    )


def commit_run(
    run: ExportRun, warehouse: WarehouseBackend, change: ChangeSet
) -> tuple[bool, SyncLogSlice | None]:
    """Advance the baseline (and append to the sync log in the same transaction); returns
    whether it advanced and, with a sync log, the rows this run logged."""
    entry = sync_log_entry(run)
    with warehouse.connect(holder=f"run {run.run_id[:8]} {run.name}/commit") as con:
        advanced = commit_baseline(con, run.name, change.delta_id, entry)
        # Also after a retried commit whose first attempt had committed (advanced is then
        # False): the slice is whatever this run logged.
        logged = run_slice(con, run.name, run.run_id) if entry else None
    return advanced, logged


def _write_change_set(
    run: ExportRun,
    warehouse: WarehouseBackend,
    container: ContainerClient,
    stem: str,
    log: Callable[[str], None] | None,
    encrypt: PgpRecipient | None = None,
) -> tuple[ChangeSet, ExportReport | None, float]:
    """Read the change set, write its files and upload them (all committed on return).
    Returns the change set, the report (None when superseded) and when writing ended."""
    holder = f"run {run.run_id[:8]} {run.name}/export"
    with tempfile.TemporaryDirectory(prefix=f"{run.name}-", dir=process_scratch()) as workdir:
        pool = UploadPool(container)
        progress = Progress(log, pool)
        try:
            with warehouse.connect(
                holder=holder, sources=run.sources, scratch=Path(workdir)
            ) as con:
                spec = change_set_spec(con, run.name, run.source_table)
                change = load_change_set(con, run.name, spec) if spec else None
                if spec is None or change is None:
                    raise NoChangeSetError(
                        f"activation '{run.name}' has no change set yet: run its delta first"
                    )
                if superseding_run(run, change) is not None:
                    return change, None, time.monotonic()
                report, pending = write_and_upload(
                    con,
                    spec,
                    change,
                    run.activation,
                    Path(workdir),
                    pool,
                    stem,
                    progress,
                    blob_properties(run),
                    encrypt,
                )
            written = time.monotonic()
            finish_uploads(report, pending)
            progress.finish()
        finally:
            pool.close()
    return change, report, written


def table_path(
    activation: ActivationConfig, path_prefix: str, names: Mapping[str, str] | None = None
) -> str:
    """The table's folder in the container: the prefix plus the file name (fixed but for
    `{activation}`, `{model}`, `{segment}`)."""
    rendered = naming.render(
        activation.file_name, datetime.now(timezone.utc), activation.timezone, names
    )
    return naming.validate_blob_name(naming.join_prefix(path_prefix, rendered))


def run_table_export(
    run: ExportRun,
    warehouse: WarehouseBackend,
    storage: BlobStorage,
    log: Callable[[str], None] | None = None,
) -> ExportOutcome:
    """`format: delta`: apply the last change set to the activation's Delta table as one
    commit, then advance the baseline, then compact / vacuum as configured.

    The commit carries the change set's number as an application transaction, so a retry or
    a re-executed export finds it there and does not apply it twice (see `lakehouse`).
    Raises `StorageError` (baseline untouched) when the storage refuses, `DeltaTypeError`
    when a column or value has no exact Delta form (nothing committed), `NoChangeSetError`
    when no delta ran yet.
    """
    started = time.monotonic()
    options = run.activation.delta
    care = TableCare(
        partition_by=tuple(run.activation.table_partition_by),
        max_partitions=run.activation.max_partitions,
        change_data_feed=options.change_data_feed,
        optimize_every=options.optimize_every,
        vacuum_retain_hours=options.vacuum_retain_hours,
    )
    path = table_path(run.activation, run.path_prefix, run.names)
    with storage.container(run.container) as container:
        preflight(container)
    target = DeltaTarget.at(
        strip_query(storage.endpoint(run.container)),
        run.container,
        path,
        storage.object_store_options(),
    )
    holder = f"run {run.run_id[:8]} {run.name}/export"
    with warehouse.connect(holder=holder, sources=run.sources) as con:
        spec = change_set_spec(con, run.name, run.source_table)
        change = load_change_set(con, run.name, spec) if spec else None
        if spec is None or change is None:
            raise NoChangeSetError(
                f"activation '{run.name}' has no change set yet: run its delta first"
            )
        on_empty = run.activation.effective_on_empty(full_export=change.full)
        table = apply_change_set(
            con, spec, change, target, care, run.run_id, write_empty=on_empty == "write", log=log
        )
    written = time.monotonic()
    if table.version is None:
        # No table, and none written (an empty first export with on_empty: skip): the
        # baseline stays where it was, so the first rows are written as a whole table.
        advanced, logged = False, None
    else:
        advanced, logged = commit_run(run, warehouse, change)
    try:
        table.maintenance = care_for_table(target, care, log)
    except StorageError as error:
        # The rows are committed and the baseline advanced: upkeep is tried again next run.
        table.maintenance_error = str(error)
        if log:
            log(f"table upkeep failed (tried again next run): {error}")
    finished = time.monotonic()
    report = ExportReport(stem=path, columns=list(table.schema))
    return ExportOutcome(
        report=report,
        change=change,
        baseline_advanced=advanced,
        write_seconds=written - started,
        upload_seconds=0.0,
        total_seconds=finished - started,
        table=table,
        sync_log=logged,
    )


def blob_names(stem: str, suffix: str, extension: str, count: int) -> list[str]:
    """One plain name, or numbered parts when the output was split."""
    if count == 1:
        return [naming.validate_blob_name(f"{stem}{suffix}{extension}")]
    return [
        naming.validate_blob_name(f"{stem}{suffix}{naming.part_suffix(i)}{extension}")
        for i in range(1, count + 1)
    ]


def remove_stale_parts(
    container: ContainerClient,
    report: ExportReport,
    extension: str,
    partition_by: Sequence[str] = (),
) -> None:
    """Delete blobs of this name pattern (`extension`: see `blob_extension`) that this run
    did not write (an earlier run's extra
    parts, or the plain file when this run wrote parts, or the reverse; with `partition_by`,
    also the files of this name in partitions this run did not write). Best effort: what
    cannot be deleted is kept in `stale_left`; a credential that may not list the container
    sets `stale_unchecked` (the export itself stands)."""
    written = {f.blob.name for f in report.files}
    folder, _, base_name = report.stem.rpartition("/")
    folder = f"{folder}/" if folder else ""
    partitions = "".join(f"{re.escape(naming.partition_value(c))}=[^/]*/" for c in partition_by)
    for suffix in {f.suffix for f in report.files}:
        if partition_by:
            listed = f"{folder}{naming.partition_value(partition_by[0])}="
            head = re.escape(folder) + partitions + re.escape(f"{base_name}{suffix}")
        else:
            listed = f"{report.stem}{suffix}"
            head = re.escape(listed)
        pattern = re.compile(head + r"(?:_part-\d{5})?" + re.escape(extension))
        listing = list_blob_names_if_permitted(container, listed)
        if listing is None:
            report.stale_unchecked = True
            return
        stale = [name for name in listing if pattern.fullmatch(name) and name not in written]
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
        **({"partition_by": list(activation.partition_by)} if activation.partition_by else {}),
        "changes": {"added": change.added, "updated": change.updated, "removed": change.removed},
        "files": [
            {
                "name": f.blob.name,
                "kind": f.suffix.strip("_") or "rows",
                "part": f.part,
                "rows": f.rows,
                "bytes": f.blob.bytes,
                "md5": f.blob.md5_hex,
                **({"partition": dict(f.partition)} if f.partition else {}),
            }
            for f in report.files
        ],
        "skipped_empty": report.skipped,
    }


def upload_manifest(
    container: ContainerClient,
    report: ExportReport,
    document: dict,
    properties: BlobProperties | None = None,
) -> None:
    name = naming.validate_blob_name(f"{report.stem}_manifest.json")
    data = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
    properties = (properties or BlobProperties()).with_metadata(
        {"rows": str(report.rows), "md5": hashlib.md5(data).hexdigest()}
    )
    report.manifest = upload_bytes(
        container, name, data, content_type="application/json", properties=properties
    )


class MissingSourceTableError(RuntimeError):
    """The activation's model or segment was never materialized."""


@dataclass(frozen=True)
class DeltaRun:
    """What `compute_changes` needs to know about one delta (no Dagster objects)."""

    name: str  # the activation's name
    source_table: str  # 'models.<m>' or 'segments.<s>'
    primary_key: tuple[str, ...]
    run_type: str
    sync_mode: str
    exported: Callable[[list[tuple[str, str]]], list[tuple[str, str]]]
    """(source column, destination name) in export order, given the source's columns; raises
    ConfigError when the mapping names a column the source does not have."""
    sources: Mapping[str, SourceConfig] = field(default_factory=dict)
    """Sources to attach: those of the view models the activation reads through."""
    destination: str = ""
    """`format: delta`: the table the changes are merged into (`DeltaSpec.destination`)."""
    reexecuting: frozenset[str] | None = None
    """When this run re-executes an earlier one: the ids of the runs of its group."""
    on_empty: str | None = None
    """The activation's `on_empty` (None: the default, see `writes_files`)."""

    def writes_files(self, change: ChangeSet) -> bool:
        """Whether exporting `change` writes files: it has rows, or `on_empty` is `write`
        (by default, for a full export)."""
        if change.added or change.updated or change.removed:
            return True
        return self.on_empty == "write" or (self.on_empty is None and change.full)


class AlreadyExportedError(RuntimeError):
    """A re-execution's delta would write new changes under the names of files its group
    already delivered (see `_delivered_by_group`)."""


def compute_changes(
    run: DeltaRun,
    warehouse: WarehouseBackend,
    delta_id: str,
    full_resync: bool = False,
    log: Callable[[str], None] | None = None,
) -> ChangeSet:
    """The delta step: compare the source's rows with the activation's baseline and store the
    change set the export will write (see `compute_change_set`)."""
    holder = f"run {delta_id[:8]} {run.name}/delta"

    def compute() -> ChangeSet:
        with warehouse.connect(holder=holder, sources=run.sources) as con:
            return _compute_on(con, run, delta_id, full_resync, log)

    # One transaction after the reads: a transient fault of the lake runs it all again.
    return retry_transient(compute, what=f"change set of '{run.name}'")


def delta_spec(con: duckdb.DuckDBPyConnection, run: DeltaRun) -> DeltaSpec:
    """What the delta of `run` compares, as its source table is now (the delta step and the
    preview build the same one: it is part of the baseline's fingerprint)."""
    schema, _, table = run.source_table.partition(".")
    try:
        described = con.execute(f"DESCRIBE {schema}.{quote_ident(table)}").fetchall()
    except duckdb.CatalogException:
        raise MissingSourceTableError(
            f"activation '{run.name}': table {run.source_table} does not exist yet; "
            f"materialize {schema}/{table} first (the job activate_{run.name} does)"
        ) from None
    return DeltaSpec(
        activation=run.name,
        source_table=run.source_table,
        primary_key=run.primary_key,
        columns=tuple(run.exported([(r[0], r[1]) for r in described])),
        run_type=run.run_type,  # type: ignore[arg-type]
        sync_mode=run.sync_mode,  # type: ignore[arg-type]
        destination=run.destination,
    )


def _delivered_by_group(con: duckdb.DuckDBPyConnection, run: DeltaRun) -> str | None:
    """The run of this re-execution's group whose export advanced the baseline, if any.

    A re-execution writes the blob names of the run it re-executes (its logical time and
    id). When a run of its group already exported and committed, a new delta holds only the
    changes made since; writing them under those names would replace the files that
    delivered the earlier changes, which would then be in no blob. Snapshots (every run
    sends every row) and Delta tables (no file names) are not concerned."""
    if not run.reexecuting or run.sync_mode == "snapshot" or run.destination:
        return None
    row = delta_state.read(con, run.name)
    if not row or not row.get("committed") or row.get("baseline_delta_id") not in run.reexecuting:
        return None
    return row["baseline_delta_id"]


def _compute_on(
    con: duckdb.DuckDBPyConnection,
    run: DeltaRun,
    delta_id: str,
    full_resync: bool,
    log: Callable[[str], None] | None,
) -> ChangeSet:
    spec = delta_spec(con, run)
    delivered_by = _delivered_by_group(con, run)
    if full_resync:
        reset_baseline(con, run.name)
        if log:
            log(f"full resync: baseline of '{run.name}' reset")

    def accept(change: ChangeSet) -> None:
        if delivered_by and run.writes_files(change):
            raise AlreadyExportedError(
                f"activation '{run.name}': run {delivered_by}, which this run re-executes, "
                "already exported its changes and advanced the baseline; this run's delta "
                "holds the changes made since and would write them under the same blob "
                "names, replacing the files that run delivered. Launch a new run "
                f"of activate_{run.name} to export them, or re-execute only the export step "
                "to write the delivered files again. Nothing was exported and the baseline is "
                "unchanged"
            )

    # Checks the key itself (cheaply, while it reads the rows) in delta modes.
    return compute_change_set(con, spec, delta_id=delta_id, log=log, accept=accept)
