"""What the next run of an activation would export, computed without exporting: `preview`.

The change set is computed exactly as the delta step computes it (`preview_change_set`), in
a warehouse transaction that is always rolled back: the baseline, the last computed change
set and the activation's state stay as they were. Its files are written to a private temp
folder (so parts and sizes are the real ones) and deleted; nothing is uploaded, no blob is
listed or touched, and no storage credential is needed. The activation's lock is held only
while this computes, so the preview waits for a run that is exporting the activation (its
baseline is about to move) and a run waits for at most the preview's computation.

Used by the `preview_activation` job (Dagster) and `python -m azexport_assets.preview` (the CLI).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from azexport_assets.delta import (
    ChangeSet,
    DeltaSpec,
    change_rows_query,
    preview_change_set,
)
from azexport_assets.delta.spec import KINDS
from azexport_assets.export import (
    DeltaRun,
    FileSet,
    MissingSourceTableError,
    blob_extension,
    blob_names,
    check_file_sets,
    delta_spec,
    file_set_query,
    plan_file_sets,
    stem_name,
    table_path,
)
from azexport_assets.formats import FormatSpec, write_export
from azexport_assets.formats.columns import describe
from azexport_assets.formats.pgp import encrypted_part_limit
from azexport_assets.naming import validate_blob_name
from azexport_assets.partition_limit import PartitionError
from azexport_assets.sandbox import process_scratch
from azexport_assets.warehouse import WarehouseBackend, retry_transient

if TYPE_CHECKING:
    from azexport_assets.config import ActivationConfig

DEFAULT_SAMPLE_ROWS = 10
# The column of a sample row that holds its change kind.
SAMPLE_KIND_COLUMN = "change"


@dataclass(frozen=True)
class PreviewFile:
    """One blob the next run would write."""

    name: str
    kind: str  # 'rows' (a single file), 'added', 'updated' or 'removed'
    part: int | None
    rows: int
    bytes: int
    partition: tuple[tuple[str, str | None], ...] = ()


@dataclass
class Preview:
    """What the next run of an activation would export (see `preview`)."""

    activation: str
    source_table: str
    change: ChangeSet  # rows per kind against the current baseline, and why (reason)
    columns: list[tuple[str, str]]  # exported (destination) columns and their types
    sample_columns: list[str]  # SAMPLE_KIND_COLUMN, then the exported columns
    sample: list[tuple[Any, ...]]  # up to `sample_rows` rows of each kind
    files: list[PreviewFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names left out as empty (on_empty)
    manifest: str | None = None  # the manifest's name, when the activation writes one
    table: str | None = None  # format delta: the table's folder in the container
    encrypted: bool = False  # `encryption`: names end in .pgp; sizes are before encryption
    seconds: float = 0.0

    @property
    def source_rows(self) -> int:
        """Rows of the model or segment now (the segment's size)."""
        return self.change.current_rows

    @property
    def rows(self) -> int:
        """Rows the next run would export (for a table: rows it would send)."""
        if self.table is not None:
            kinds = _table_kinds(self.change)
            return sum(getattr(self.change, k) for k in kinds)
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the CLI's `--json`)."""
        change = self.change
        return {
            "activation": self.activation,
            "source_table": self.source_table,
            "source_rows": self.source_rows,
            "baseline_rows": change.baseline_rows,
            "full_export": change.full,
            "reason": change.reason,
            "changes": {k: getattr(change, k) for k in KINDS},
            "unchanged": change.unchanged,
            "rows": self.rows,
            "bytes": self.bytes,
            "columns": [{"name": n, "type": t} for n, t in self.columns],
            "files": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "part": f.part,
                    "rows": f.rows,
                    "bytes": f.bytes,
                    **({"partition": dict(f.partition)} if f.partition else {}),
                }
                for f in self.files
            ],
            "skipped_empty": self.skipped,
            "manifest": self.manifest,
            "table": self.table,
            "encrypted": self.encrypted,
            "sample": [
                dict(zip(self.sample_columns, (plain_value(v) for v in row), strict=True))
                for row in self.sample
            ],
            "seconds": round(self.seconds, 3),
        }


def _table_kinds(change: ChangeSet) -> tuple[str, ...]:
    return ("added",) if change.full else KINDS


def plain_value(value: Any) -> Any:
    """A sample value as JSON and Dagster's table metadata can show it."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (datetime, date, clock_time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return str(value)


@dataclass(frozen=True)
class PreviewRun:
    """What `preview` needs to know about one activation (no Dagster objects)."""

    delta: DeltaRun
    activation: ActivationConfig
    path_prefix: str
    logical_time: datetime
    names: Mapping[str, str]  # values of {activation}, {run_id}, {model}, {segment}
    holder: str = "preview"  # who holds the warehouse and the activation lock, for messages
    sample_rows: int = DEFAULT_SAMPLE_ROWS


def preview(
    run: PreviewRun,
    warehouse: WarehouseBackend,
    log: Callable[[str], None] | None = None,
) -> Preview:
    """What the next run of `run.delta.name` would export; writes and moves nothing.

    Raises `MissingSourceTableError` when the model or segment was never materialized,
    `KeyViolationError` for NULL or duplicated keys in delta modes (as the delta step would),
    `PartitionError` when the run would refuse its partitions (`max_partitions`, blob names),
    and `ActivationBusyError` when a run keeps the activation longer than the lock timeout.
    """
    name = run.delta.name
    lock = warehouse.activation_lock(name, holder=run.holder)
    lock.acquire()  # a run exporting this activation finishes first (its baseline moves)
    try:
        return retry_transient(lambda: _preview(run, warehouse, log), what=f"preview of '{name}'")
    finally:
        lock.release()


def _preview(
    run: PreviewRun, warehouse: WarehouseBackend, log: Callable[[str], None] | None
) -> Preview:
    started = time.monotonic()
    delta = run.delta
    holder = f"{run.holder} {delta.name}/preview"
    scratch = tempfile.TemporaryDirectory(prefix=f"{delta.name}-preview-", dir=process_scratch())
    with (
        scratch as work,
        warehouse.connect(holder, sources=delta.sources, scratch=Path(work)) as con,
    ):
        spec = delta_spec(con, delta)
        change, result = preview_change_set(
            con, spec, lambda change: _inspect(con, spec, change, run, Path(work)), log=log
        )
    result.change = change
    result.seconds = time.monotonic() - started
    return result


def _inspect(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    change: ChangeSet,
    run: PreviewRun,
    workdir: Path,
) -> Preview:
    """Inside the rolled-back transaction: columns, a sample and the files of `change`."""
    activation = run.activation
    kinds_query = change_rows_query(spec, KINDS, kind_column=SAMPLE_KIND_COLUMN)
    columns = describe(con, change_rows_query(spec, KINDS))
    per_kind = max(run.sample_rows, 0)
    sample: list[tuple[Any, ...]] = []
    for kind in KINDS:
        if per_kind and getattr(change, kind):
            query = change_rows_query(spec, (kind,), kind_column=SAMPLE_KIND_COLUMN)
            sample += con.execute(f"SELECT * FROM ({query}) LIMIT {per_kind}").fetchall()
    result = Preview(
        activation=spec.activation,
        source_table=spec.source_table,
        change=change,
        columns=[(c.name, c.type_text) for c in columns],
        sample_columns=[d[0] for d in con.sql(kinds_query).description],
        sample=sample,
    )
    if activation.is_table:
        result.table = table_path(activation, run.path_prefix, run.names)
        return result
    stem = stem_name(activation, run.path_prefix, run.logical_time, run.names)
    file_sets, result.skipped = plan_file_sets(con, spec, change, activation, stem)
    fmt = FormatSpec.from_activation(activation)
    # The names a run writes; the files are not encrypted here (the preview reads no key).
    result.encrypted = activation.pgp_key_env is not None
    extension = blob_extension(fmt, result.encrypted)
    try:
        check_file_sets(file_sets, activation, extension)  # as the run, before any file
    except PartitionError as error:
        raise PartitionError(f"the next run would fail: {error}") from None
    for index, file_set in enumerate(file_sets, start=1):
        result.files += _write_locally(
            con, spec, file_set, activation, fmt, extension, workdir / str(index)
        )
    if activation.manifest and result.files:
        result.manifest = validate_blob_name(f"{stem}_manifest.json")
    if activation.change_column is not None:
        result.columns.append((activation.change_column, "VARCHAR"))
    return result


def _write_locally(
    con: duckdb.DuckDBPyConnection,
    spec: DeltaSpec,
    file_set: FileSet,
    activation: ActivationConfig,
    fmt: FormatSpec,
    extension: str,
    out_dir: Path,
) -> list[PreviewFile]:
    """The file set's files as the export would write them (then deleted): real parts, real
    sizes after compression, names with the run's `extension` (`.pgp` when encrypted)."""
    out_dir.mkdir(parents=True)
    # On `con` itself: the change set exists only in its (rolled-back) transaction.
    query = file_set_query(spec, file_set, activation)
    limit = activation.max_file_size
    if activation.pgp_key_env is not None:  # parts as the run cuts them, to be encrypted
        limit = encrypted_part_limit(limit)
    written = write_export(con, query, fmt, out_dir, limit)
    names = blob_names(file_set.stem, file_set.suffix, extension, len(written.files))
    files = []
    for index, (name, local) in enumerate(zip(names, written.files, strict=True), start=1):
        part = index if len(written.files) > 1 else None
        files.append(
            PreviewFile(name, file_set.kind, part, local.rows, local.bytes, file_set.partition)
        )
        local.path.unlink(missing_ok=True)
    return files


def summary(result: Preview, sample: bool = False) -> str:
    """The preview in a few lines of text (the run log; the CLI adds the sample)."""
    change = result.change
    lines = [
        f"preview of activation '{result.activation}' ({change.reason}): "
        f"{change.added:,} added, {change.updated:,} updated, {change.removed:,} removed, "
        f"{change.unchanged:,} unchanged",
        f"  {result.source_table}: {result.source_rows:,} rows; "
        f"baseline: {change.baseline_rows:,} rows",
        "  columns: " + ", ".join(f"{n} {t}" for n, t in result.columns),
    ]
    if result.table is not None:
        lines.append(f"  Delta table {result.table}: {result.rows:,} rows to send")
    else:
        before = " (before OpenPGP encryption)" if result.encrypted else ""
        lines.append(
            f"  {len(result.files)} file(s), {result.rows:,} rows, {result.bytes:,} bytes{before}:"
        )
        lines += [
            f"    {f.name}  {f.kind}  {f.rows:,} rows  {f.bytes:,} bytes" for f in result.files
        ]
        lines += [f"    (empty, skipped) {name}" for name in result.skipped]
        if result.manifest:
            lines.append(f"    {result.manifest}  (manifest, written last)")
    if sample and result.sample:
        lines.append("  sample:")
        lines.append("    " + " | ".join(result.sample_columns))
        lines += [
            "    " + " | ".join("NULL" if v is None else str(plain_value(v)) for v in row)
            for row in result.sample
        ]
    lines.append("nothing was written and the baseline is unchanged")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m azexport_assets.preview <activation>`: the preview on the command line."""
    import argparse
    import json
    import sys
    from datetime import timezone

    package = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(
        prog="python -m azexport_assets.preview",
        description="What the next run of an activation would export; writes nothing.",
    )
    parser.add_argument("activation")
    parser.add_argument("--project-root", type=Path, default=package.parent)
    parser.add_argument(
        "--defs",
        type=Path,
        default=None,
        help="defs folder (default <project-root>/azexport_assets/defs)",
    )
    parser.add_argument(
        "--logical-time",
        default=None,
        help="render file names at this ISO 8601 time (default: now), e.g. a schedule tick",
    )
    parser.add_argument("--sample-rows", type=int, default=DEFAULT_SAMPLE_ROWS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    # The project is loaded by Dagster's component loader, as the code location loads it.
    from azexport_assets.components.preview_job import preview_run
    from azexport_assets.config import ConfigError
    from azexport_assets.delta import KeyViolationError
    from azexport_assets.introspect import describe_project
    from azexport_assets.project import load_project
    from azexport_assets.warehouse import ActivationBusyError, open_warehouse

    root = args.project_root.resolve()
    try:
        logical = (
            datetime.fromisoformat(args.logical_time.replace("Z", "+00:00"))
            if args.logical_time
            else datetime.now(timezone.utc)
        )
        if logical.tzinfo is None:
            logical = logical.replace(tzinfo=timezone.utc)
        project = load_project(args.defs or root / "azexport_assets" / "defs", root)
        if args.activation not in project.activations:
            known = ", ".join(sorted(project.activations)) or "none"
            raise ConfigError(f"unknown activation '{args.activation}'; known: {known}")
        run = preview_run(
            project,
            describe_project(project),
            args.activation,
            logical,
            holder="preview (command line)",
            sample_rows=args.sample_rows,
        )
        result = preview(run, open_warehouse(project_root=root))
    except (MissingSourceTableError, ActivationBusyError, KeyViolationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, ConfigError) as error:  # configuration, times: said plainly
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print(summary(result, sample=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
