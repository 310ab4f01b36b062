"""The whole project's configuration: every AzureExport `defs.yaml`, checked together.

Names are global (a model in one folder can be exported by an activation in another), so a
name used twice anywhere is an error, and every reference must resolve. Each object keeps the
file it came from (and where in it), so every message can name the file, the line, the object
and the field. The files themselves are read by Dagster's component loader (see
`components/loading.py`): this module only merges what the components hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from azexport_assets import naming
from azexport_assets.config import (
    ActivationConfig,
    ConfigError,
    DestinationConfig,
    ExportFileConfig,
    Locate,
    ModelConfig,
    SecretRef,
    SegmentConfig,
    SourceConfig,
    file_position,
)
from azexport_assets.delta.synclog import LOG_SCHEMA, RESERVED_NAMES
from azexport_assets.sandbox import ascii_lower
from azexport_assets.warehouse.confinement import CONFINE_ENV, confine_sources

# The longest suffix a part file can get after its rendered name: '_removed_part-00001'
# plus the longest extension ('.parquet' / '.jsonl.zst'), and '_manifest.json'.
# What a Delta table adds under its folder: '/_delta_log/<20 digits>.checkpoint.parquet' and
# data files 'part-00001-<uuid>-c000.zstd.parquet' (partition folders come from values).
_TABLE_SUFFIX = len("/part-00001-00000000-0000-0000-0000-000000000000-c000.snappy.parquet")


@dataclass
class Project:
    """Every object by name, plus the file that declared it."""

    project_root: Path
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    segments: dict[str, SegmentConfig] = field(default_factory=dict)
    destinations: dict[str, DestinationConfig] = field(default_factory=dict)
    activations: dict[str, ActivationConfig] = field(default_factory=dict)
    origin: dict[tuple[str, str], Path] = field(default_factory=dict)
    model_sql: dict[str, str] = field(default_factory=dict)
    # Where each object's keys sit in its file (absent for objects built in Python).
    locate: dict[tuple[str, str], Locate] = field(default_factory=dict)

    def file_of(self, kind: str, name: str) -> Path:
        return self.origin[(kind, name)]

    def shown(self, kind: str, name: str) -> Path:
        """The declaring file, relative to the project root when possible (for messages)."""
        return _display(self.file_of(kind, name), self.project_root)

    def position(self, kind: str, name: str, field_name: str | None = None) -> str:
        """'path/defs.yaml:12:7' — the object's (or its field's) place, for messages."""
        loc: tuple[str, ...] = (kind, name, *(field_name.split(".") if field_name else ()))
        return file_position(self.shown(kind, name), self.locate.get((kind, name)), loc)

    def where(self, kind: str, name: str, field_name: str) -> str:
        """'path/defs.yaml:12:7: activation 'crm', field 'mapping'' — every message's prefix."""
        return (
            f"{self.position(kind, name, field_name)}: {kind[:-1]} '{name}', field '{field_name}'"
        )

    def model_of(self, source: str) -> str:
        """The model behind a model or segment name."""
        return self.segments[source].model if source in self.segments else source

    def table_of(self, source: str) -> str:
        """The warehouse table of a model or segment, as 'schema.name' (names are identifiers)."""
        schema = "segments" if source in self.segments else "models"
        return f"{schema}.{source}"

    def asset_path_of(self, source: str) -> list[str]:
        return ["segments" if source in self.segments else "models", source]


@dataclass(frozen=True)
class DeclaredFile:
    """One AzureExport component's validated objects and the defs.yaml that declared them."""

    path: Path
    config: ExportFileConfig
    locate: Locate | None = None


def build_project(files: list[DeclaredFile], project_root: Path) -> Project:
    """Merge per-file configs, rejecting duplicate names and dangling references."""
    project = Project(project_root=project_root)
    for declared in files:
        declared_path = declared.path.resolve()  # compared with other paths later
        for kind in ("sources", "models", "segments", "destinations", "activations"):
            target: dict[str, Any] = getattr(project, kind)
            for name, obj in getattr(declared.config, kind).items():
                if (kind, name) in project.origin:
                    here = file_position(
                        _display(declared.path, project_root), declared.locate, (kind, name)
                    )
                    raise ConfigError(
                        f"{here}: {kind[:-1]} '{name}' is already defined in "
                        f"{project.position(kind, name)}; names must be unique across all "
                        "defs.yaml files"
                    )
                target[name] = obj
                project.origin[(kind, name)] = declared_path
                if declared.locate:
                    project.locate[(kind, name)] = declared.locate
    _check_name_clashes(project)
    _read_model_sql(project)
    _check_references(project)
    _check_path_variables(project)
    _check_blob_names(project)
    _check_shared_blobs(project)
    _check_tables(project)
    return project


def _check_name_clashes(project: Project) -> None:
    # DuckDB matches names with ASCII letters in any case: 'People' and 'people' would be one
    # table (models, segments) or one catalog (sources), and a query could not tell them apart.
    for kind in ("sources", "models", "segments"):
        seen: dict[str, str] = {}
        for name in getattr(project, kind):
            other = seen.setdefault(ascii_lower(name), name)
            if other != name:
                raise ConfigError(
                    f"{project.position(kind, name)}: {kind[:-1]} '{name}' differs from "
                    f"{kind[:-1]} '{other}' ({project.position(kind, other)}) only in letter "
                    "case; DuckDB matches names in any case, so rename one of them"
                )
    # Models and segments share the activation 'source' namespace.
    for name in project.segments:
        if name in project.models:
            raise ConfigError(
                f"{project.shown('segments', name)}: segment '{name}' has the same name as "
                f"model '{name}' ({project.shown('models', name)}); an activation's 'source' "
                "must name exactly one of them"
            )


def _read_model_sql(project: Project) -> None:
    for name, model in project.models.items():
        if model.sql:
            project.model_sql[name] = model.sql
            continue
        path = project.file_of("models", name).parent / str(model.sql_file)
        _check_sql_file_confined(project, name, path)
        try:
            project.model_sql[name] = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"{project.where('models', name, 'sql_file')}: cannot read {path}: {error.strerror}"
            ) from None
        except UnicodeDecodeError as error:
            before = error.object[: error.start]
            line, column = before.count(b"\n") + 1, error.start - before.rfind(b"\n")
            raise ConfigError(
                f"{project.where('models', name, 'sql_file')}: {path} is not UTF-8 text (byte "
                f"0x{error.object[error.start : error.start + 1].hex()} at line {line}, column "
                f"{column}): save it as UTF-8"
            ) from None


def _check_sql_file_confined(project: Project, name: str, path: Path) -> None:
    """With sources confined to the project root, a model's SQL file is too: a file elsewhere
    (`sql_file: ../../../etc/passwd`) would be read, and its first words quoted back by the
    parse error, in the UI and the logs."""
    if not confine_sources():
        return
    root = os.path.realpath(project.project_root)
    resolved = os.path.realpath(path)
    if not Path(resolved).is_relative_to(root):
        raise ConfigError(
            f"{project.where('models', name, 'sql_file')}: '{project.models[name].sql_file}' "
            f"resolves to {resolved} (with '..' and symlinks resolved), outside the project "
            f"root {root}; with {CONFINE_ENV}=1 every SQL file must live under the project root"
        )


def _check_references(project: Project) -> None:
    for name, segment in project.segments.items():
        if segment.model not in project.models:
            raise ConfigError(
                f"{project.where('segments', name, 'model')}: unknown model '{segment.model}'; "
                f"known models: {', '.join(sorted(project.models)) or 'none'}"
            )
    for name, model in project.models.items():
        if not model.primary_key:
            continue
        if len(set(model.primary_key)) != len(model.primary_key):
            raise ConfigError(f"{project.where('models', name, 'primary_key')}: repeats a column")
    for name, activation in project.activations.items():
        if activation.source not in project.models and activation.source not in project.segments:
            known = sorted(project.models) + sorted(project.segments)
            raise ConfigError(
                f"{project.where('activations', name, 'source')}: unknown model or segment "
                f"'{activation.source}'; known: {', '.join(known) or 'none'}"
            )
        if activation.destination not in project.destinations:
            known = ", ".join(sorted(project.destinations)) or "none"
            raise ConfigError(
                f"{project.where('activations', name, 'destination')}: unknown destination "
                f"'{activation.destination}'; known: {known}"
            )
        model = project.models[project.model_of(activation.source)]
        if activation.is_delta and not model.primary_key:
            raise ConfigError(
                f"{project.where('activations', name, 'sync_mode')}: sync_mode "
                f"'{activation.sync_mode}' needs a primary key, but model "
                f"'{project.model_of(activation.source)}' has no 'primary_key'"
            )
        clash = [k for k in model.primary_key if k.lower() in RESERVED_NAMES]
        if activation.sync_log_options is not None and clash:
            raise ConfigError(
                f"{project.where('activations', name, 'sync_log')}: the sync log "
                f"{LOG_SCHEMA}.{name} has columns {', '.join(sorted(RESERVED_NAMES))} besides "
                f"the key, but the key of model '{project.model_of(activation.source)}' has a "
                f"column named '{clash[0]}'; rename it in the model's SQL"
            )


def partition_field(activation: ActivationConfig) -> str:
    """The field that names the partition columns, for messages."""
    return "delta.partition_by" if activation.delta.partition_by else "partition_by"


def path_names(project: Project, name: str, run_id: str) -> dict[str, str]:
    """The values of a file name's `{activation}`, `{run_id}`, `{model}` and `{segment}`."""
    source = project.activations[name].source
    names = {"activation": name, "run_id": run_id, "model": project.model_of(source)}
    if source in project.segments:
        names["segment"] = source
    return names


def _check_path_variables(project: Project) -> None:
    """`{segment}` needs a segment source (a model has no segment to name)."""
    for name, activation in project.activations.items():
        if "{segment}" in activation.file_name and activation.source not in project.segments:
            raise ConfigError(
                f"{project.where('activations', name, 'file_name')}: {{segment}} names the "
                f"activation's segment, but its source '{activation.source}' is a model; use "
                "{model}"
            )


def _check_blob_names(project: Project) -> None:
    """The destination's prefix plus the longest name an activation can write fits Azure's
    1024 characters (each part is checked on its own when the config is parsed)."""
    sample_time = datetime(2025, 4, 14, 12, 0, 0, tzinfo=ZoneInfo("UTC"))
    for name, activation in project.activations.items():
        prefix = project.destinations[activation.destination].path_prefix
        rendered = naming.render(
            activation.file_name,
            sample_time,
            activation.timezone,
            {"segment": "segment"} | path_names(project, name, naming.SAMPLE_NAMES["run_id"]),
        )
        longest = len(naming.join_prefix(prefix, rendered)) + _longest_suffix(activation)
        if longest > 1024:
            raise ConfigError(
                f"{project.where('activations', name, 'file_name')}: with the path_prefix of "
                f"destination '{activation.destination}' the blob names reach {longest} "
                "characters; Azure allows 1024: shorten the file name or the prefix"
            )


def _longest_suffix(activation: ActivationConfig) -> int:
    """The most an export adds to its rendered file name: the longest change kind, a part
    number, the extension with its compression and encryption (or the manifest's name); for
    a Delta table, the longest name of a file in its folder."""
    if activation.is_table:
        return _TABLE_SUFFIX
    extension = naming.extension(
        activation.format, activation.json_options.style, activation.compression
    ) + (".pgp" if activation.pgp_key_env is not None else "")
    part = len(naming.part_suffix(1)) if activation.max_file_size is not None else 0
    files = len("_removed") + part + len(extension)
    return max(files, len("_manifest.json")) if activation.manifest else files


def _destination_place(destination: DestinationConfig, name: str) -> tuple[str, str]:
    """(account, container) as far as the configuration tells: a literal account URL, or the
    variable an endpoint is read from (the same variable is the same account). Two
    destinations whose accounts cannot be compared are taken as different."""
    ref = destination.account_url or destination.connection_string or destination.sas_url
    if isinstance(ref, SecretRef):
        account = f"env:{ref.env}"
    elif isinstance(ref, str):
        account = ref.rstrip("/").lower()
    else:
        account = f"destination:{name}"
    return account, destination.container


def _blob_sets(project: Project, name: str) -> list[tuple[tuple, str]]:
    """What decides the names of the blobs an activation writes, with the time variables left
    as they are (equal templates give equal names at the same logical time), each with the
    name to show: its files (or Delta table) and its manifest; none when each run writes
    names of its own (`{run_id}`)."""
    activation = project.activations[name]
    if "{run_id}" in activation.file_name:
        return []
    stem = activation.file_name
    for variable, value in path_names(project, name, "").items():
        stem = stem.replace("{" + variable + "}", value)
    destination = project.destinations[activation.destination]
    place = _destination_place(destination, activation.destination)
    full_stem = naming.join_prefix(destination.path_prefix, stem)
    if activation.is_table:
        return [((*place, full_stem, "Delta table"), full_stem)]
    extension = naming.extension(
        activation.format, activation.json_options.style, activation.compression
    )
    # `difference` writes <name>_added / _updated / _removed, the other modes <name>.
    suffixes = [""]
    if activation.sync_mode == "difference":
        suffixes = [f"_{kind}" for kind in naming.CHANGE_KINDS]
    encrypted, folders = bool(activation.encryption), tuple(activation.partition_by)
    found = [
        (
            (*place, full_stem + suffix, extension, encrypted, folders),
            full_stem + suffix + extension,
        )
        for suffix in suffixes
    ]
    if activation.manifest:  # one manifest name, whatever the format
        found.append(((*place, full_stem, "manifest"), f"{full_stem}_manifest.json"))
    return found


def _check_shared_blobs(project: Project) -> None:
    """Two activations never write the same blobs (or merge into the same Delta table): each
    run would replace the other's files, and each keeps its own delta baseline and its own
    run lock, so consumers would get a mix of both."""
    first: dict[tuple, str] = {}
    for name in project.activations:
        for key, shown in _blob_sets(project, name):
            other = first.setdefault(key, name)
            if other == name:
                continue
            what = "Delta table" if key[-1] == "Delta table" else "blobs"
            raise ConfigError(
                f"{project.where('activations', name, 'file_name')}: writes the same {what} "
                f"as activation '{other}' "
                f"({project.position('activations', other, 'file_name')}): '{shown}' in "
                f"container '{key[1]}'; each run would replace the other's files. Give one of "
                "them another file_name (or put {activation} in it)"
            )


def _check_tables(project: Project) -> None:
    """`format: delta`: one table per activation, kept up to date, so file options that make
    several files (time variables, parts, a manifest, text compression) are refused, and the
    key must be exported (the table is merged on it)."""
    for name, activation in project.activations.items():
        if not activation.is_table:
            continue
        used = naming.time_variables(activation.file_name)
        if "{run_id}" in activation.file_name:
            used.append("{run_id}")
        if used:
            raise ConfigError(
                f"{project.where('activations', name, 'file_name')}: a Delta table is one "
                f"table kept up to date, so its path cannot hold time variables or {{run_id}} "
                f"({', '.join(used)}); use a fixed path such as 'lake/customers'"
            )
        refused = [
            ("manifest", activation.manifest, "has no meaning for a Delta table: the Delta "
             "log is the manifest (each commit lists its files, rows and schema)"),
            ("compression", activation.compression != "none", "applies to csv/json/xml "
             "files; a Delta table's Parquet files are compressed inside"),
            ("max_file_size", activation.max_file_size is not None, "splits files; a Delta "
             "table sizes its own data files (compact them with delta.optimize_every)"),
            ("change_column", activation.change_column is not None, "marks rows in files; a "
             "Delta table applies the changes (read them with delta.change_data_feed)"),
        ]  # fmt: skip
        for field_name, given, why in refused:
            if given:
                raise ConfigError(
                    f"{project.where('activations', name, field_name)}: {why}; remove "
                    f"'{field_name}'"
                )
        mapping = activation.mapping
        if mapping is None:
            continue
        model = project.model_of(activation.source)
        unmapped = [k for k in project.models[model].primary_key if k not in mapping]
        if activation.is_delta and unmapped:
            raise ConfigError(
                f"{project.where('activations', name, 'mapping')}: a Delta table in sync_mode "
                f"'{activation.sync_mode}' is merged on the primary key, so the mapping must "
                f"export the key column(s) {', '.join(unmapped)} of model '{model}'"
            )
        unknown = [c for c in activation.table_partition_by if c not in mapping.values()]
        if unknown:
            raise ConfigError(
                f"{project.where('activations', name, partition_field(activation))}: unknown "
                f"column(s) {', '.join(repr(c) for c in unknown)}; partition by exported "
                f"(destination) names: {', '.join(mapping.values())}"
            )


def load_project(defs_root: Path, project_root: Path) -> Project:
    """Load every AzureExport defs.yaml under defs_root through Dagster's component loader
    (the same parsing and templating as the code location) and merge them."""
    # Imported here: the loader is part of the Dagster layer above this module.
    from azexport_assets.components.loading import load_project_from_folder

    return load_project_from_folder(defs_root, project_root)


def _display(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return path
