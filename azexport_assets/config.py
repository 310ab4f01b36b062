"""The project's configuration: sources, models, segments, destinations and activations.

Every object is described in a `defs.yaml` file (see `components/azure_export.py`). This
module turns the (templated) YAML mappings into validated pydantic models and reports every
problem as a `ConfigError` that names the file, the line, the object and the field, and says
what is valid. Checks that need data (columns of a model) live in `introspect.py`; checks that
follow Dagster's own rules (cron strings) live in the component. This module imports no Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from azexport_assets import naming

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RunType = Literal["full_only", "full_then_delta"]
SyncMode = Literal["snapshot", "upsert", "insert", "difference"]
FileFormat = Literal["csv", "json", "xml", "parquet", "delta"]
TextCompression = Literal["none", "gzip", "zstd"]

VALID_COMBINATIONS: dict[str, tuple[str, ...]] = {
    "full_only": ("snapshot",),
    "full_then_delta": ("upsert", "insert", "difference"),
}


class ConfigError(ValueError):
    """A configuration problem, reported before any data moves."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# Dagster's rule for owners (assets, jobs, schedules): an e-mail address or 'team:<name>'.
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,7}\b")


def check_owner(owner: str) -> str:
    """An e-mail address or a team name prefixed with 'team:'."""
    if not (_EMAIL.fullmatch(owner) or (owner.startswith("team:") and len(owner) > 5)):
        raise ValueError(
            f"{owner!r} is not a valid owner: use an e-mail address "
            "(e.g. 'ana@example.com') or a team name prefixed with 'team:' (e.g. 'team:crm')"
        )
    return owner


Owners = Annotated[
    list[Annotated[str, pydantic.AfterValidator(check_owner)]],
    Field(description="Who to contact: e-mail addresses or 'team:<name>'; shown in the UI."),
]


# --------------------------------------------------------------------------- sources


class SourceConfig(_Strict):
    """Where raw tables come from: a DuckDB file (attached read-only) or a file glob (a view);
    a Parquet/CSV glob may be in Azure Blob Storage (`az://` / `abfss://`), with a credential."""

    duckdb: str | None = Field(None, description="Path of a DuckDB file, attached read-only.")
    parquet: str | None = Field(
        None, description="Glob of Parquet files (a path, or az://<container>/<glob>), a view."
    )
    csv: str | None = Field(
        None, description="Glob of CSV files (a path, or az://<container>/<glob>), a view."
    )
    account_url: str | SecretRef | None = Field(
        None,
        description="For az:// / abfss:// sources: the account's blob endpoint, e.g. "
        "https://myaccount.blob.core.windows.net, or {env: VAR}",
    )
    sas_token: SecretRef | None = Field(None, description="For remote sources: {env: VAR}.")
    account_key: SecretRef | None = Field(None, description="For remote sources: {env: VAR}.")
    default_azure_credential: bool = Field(
        False, description="For remote sources: the machine's Azure identity (https only)."
    )
    description: str | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> SourceConfig:
        given = [k for k in ("duckdb", "parquet", "csv") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'duckdb: <path>', 'parquet: <glob>' or 'csv: <glob>'"
                f" (got {given or 'none'})"
            )
        credentials = [
            k
            for k, v in (
                ("sas_token", self.sas_token),
                ("account_key", self.account_key),
                ("default_azure_credential", self.default_azure_credential),
            )
            if v
        ]
        if "://" in self.location and not self.remote:
            raise ValueError(
                "a source URL must be in Azure Blob Storage: az://<container>/<glob> or "
                "abfss://<container>@<account>.dfs.core.windows.net/<glob>; other schemes "
                "are not read"
            )
        if not self.remote:
            if credentials or self.account_url:
                raise ValueError(
                    "account_url and credentials are for sources in Azure (az://<container>/"
                    "<glob> or abfss://...); a local path needs none"
                )
            return self
        if self.kind == "duckdb":
            raise ValueError(
                "a DuckDB source must be a local file; Parquet and CSV sources may be in Azure"
            )
        if self.account_url is None or len(credentials) != 1:
            raise ValueError(
                "a source in Azure needs 'account_url' and exactly one credential: "
                "'sas_token: {env: VAR}', 'account_key: {env: VAR}' or "
                f"'default_azure_credential: true' (got {credentials or 'none'})"
            )
        if isinstance(self.account_url, str):
            check_account_url(self.account_url)
            if self.default_azure_credential and not self.account_url.startswith("https://"):
                raise ValueError("default_azure_credential needs an https:// account_url")
        return self

    @property
    def kind(self) -> Literal["duckdb", "parquet", "csv"]:
        return "duckdb" if self.duckdb else "parquet" if self.parquet else "csv"

    @property
    def location(self) -> str:
        return self.duckdb or self.parquet or self.csv or ""

    @property
    def remote(self) -> bool:
        """In Azure Blob Storage (az://, azure://, abfss://), not on the local file system."""
        return self.location.startswith(("az://", "azure://", "abfss://"))


# --------------------------------------------------------------------------- models


class ModelConfig(_Strict):
    """A SQL query over sources (or other models) with a primary key."""

    sql: str | None = Field(None, description="The model's SELECT statement.")
    sql_file: str | None = Field(None, description="Path of a .sql file, relative to the YAML.")
    primary_key: Annotated[
        list[str],
        # Written as one column name or a list of them (normalised to a list below).
        WithJsonSchema(
            {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        ),
    ] = Field(default_factory=list, description="One or more key columns.")
    owners: Owners = []
    materialized: Literal["table", "view"] = Field(
        "table",
        description=(
            "'table': the query's result is stored in the warehouse (read many times cheaply); "
            "'view': only the query is stored and every reader runs it (no copy of the data)."
        ),
    )
    description: str | None = None

    @field_validator("primary_key", mode="before")
    @classmethod
    def _key_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one_sql(self) -> ModelConfig:
        if bool(self.sql) == bool(self.sql_file):
            raise ValueError("give exactly one of 'sql' or 'sql_file'")
        return self


class SegmentConfig(_Strict):
    """A model narrowed by a SQL boolean expression."""

    model: str
    filter: str = Field(description="SQL boolean expression over the model's columns.")
    owners: Owners = []
    description: str | None = None


# --------------------------------------------------------------------------- destinations


def check_account_url(value: str) -> str:
    """An http(s) account URL without a query string (SAS tokens never go in URLs)."""
    if not re.match(r"^https?://[^/?#]+", value) or "?" in value:
        raise ValueError(
            "must be an http(s) URL without a query string, e.g. "
            "https://myaccount.blob.core.windows.net (put the SAS token in 'sas_token: {env: VAR}')"
        )
    return value.rstrip("/")


# Variables SQL templates may read (components/sql_templates.py); no secret may be named so.
SQL_VARIABLE_PREFIX = "AZEXPORT_SQL_"


def _not_sql_variable(name: str) -> str:
    if name.startswith(SQL_VARIABLE_PREFIX):
        raise ValueError(
            f"'{name}' holds a secret but is named {SQL_VARIABLE_PREFIX}*, a name SQL templates "
            "may read: give the secret another name"
        )
    return name


class SecretRef(_Strict):
    """A secret named by environment variable; its value is only read at run time."""

    env: str

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"'{value}' is not an environment variable name")
        return _not_sql_variable(value)


class DestinationConfig(_Strict):
    """An Azure Blob Storage container (+ optional path prefix) and how to authenticate."""

    account_url: str | SecretRef = Field(
        description="e.g. https://myaccount.blob.core.windows.net, or {env: VAR} (read at run time)"
    )
    container: str
    path_prefix: str = Field(
        "", description="Folder prepended to every blob name, e.g. 'marketing/crm'."
    )
    sas_token: SecretRef | None = None
    account_key: SecretRef | None = None
    default_azure_credential: bool = False
    max_retries: int = Field(5, ge=0, le=20, description="Retries of a failed storage request.")
    retry_backoff_seconds: float = Field(
        1.0, ge=0, le=60, description="First retry delay; doubles per retry (capped at 30s)."
    )
    max_concurrency: int = Field(4, ge=1, le=10, description="Parallel block uploads per file.")
    description: str | None = None

    @field_validator("account_url")
    @classmethod
    def _url(cls, value: str | SecretRef) -> str | SecretRef:
        return value if isinstance(value, SecretRef) else check_account_url(value)

    @field_validator("container")
    @classmethod
    def _container(cls, value: str) -> str:
        # Azure: 3-63 chars, lowercase letters, digits and single hyphens, starting alphanumeric.
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", value):
            raise ValueError(
                "must be 3-63 characters of lowercase letters, digits and single hyphens, "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # Leading/trailing '/' are separators, not names; everything else follows blob rules.
        prefix = value.strip("/")
        if prefix:
            try:
                naming.validate_blob_name(prefix)
            except ValueError as error:
                raise ValueError(str(error).replace("blob name", "path prefix", 1)) from None
        return prefix

    @model_validator(mode="after")
    def _one_credential(self) -> DestinationConfig:
        kinds = [
            k
            for k, v in (
                ("sas_token", self.sas_token),
                ("account_key", self.account_key),
                ("default_azure_credential", self.default_azure_credential),
            )
            if v
        ]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one credential: 'sas_token: {env: VAR}' (default), "
                "'account_key: {env: VAR}' or 'default_azure_credential: true'"
                f" (got {kinds or 'none'})"
            )
        if (
            self.default_azure_credential
            and isinstance(self.account_url, str)
            and not self.account_url.startswith("https://")
        ):
            raise ValueError("default_azure_credential needs an https:// account_url")
        return self

    @property
    def credential_kind(self) -> Literal["sas_token", "account_key", "default_azure_credential"]:
        if self.sas_token:
            return "sas_token"
        return "account_key" if self.account_key else "default_azure_credential"

    @property
    def secret_env(self) -> str | None:
        ref = self.sas_token or self.account_key
        return ref.env if ref else None


# --------------------------------------------------------------------------- formats


class CsvOptions(_Strict):
    delimiter: str = Field(",", description="Any one character.")
    header: bool = True

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if value == "\\t":
            value = "\t"
        if len(value) != 1 or value in {'"', "\r", "\n"}:
            raise ValueError(
                f"{value!r} is not a valid delimiter: use exactly one character "
                "other than a double quote or a line break (e.g. ',', ';', '|', '\\t')"
            )
        return value


class JsonOptions(_Strict):
    style: Literal["array", "lines"] = "array"


class XmlOptions(_Strict):
    root: str = "rows"
    row: str = "row"

    @field_validator("root", "row")
    @classmethod
    def _xml_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", value) or value.lower().startswith("xml"):
            raise ValueError(
                f"{value!r} is not a valid XML element name: start with a letter or '_', "
                "then letters, digits, '_', '-', '.'; not starting with 'xml'"
            )
        return value


class ParquetOptions(_Strict):
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"


class DeltaOptions(_Strict):
    """A Delta Lake table (`format: delta`): its layout and upkeep."""

    change_data_feed: bool = Field(
        False,
        description="Record the change data feed (delta.enableChangeDataFeed): consumers read "
        "inserted / updated / deleted rows per version.",
    )
    partition_by: list[str] = Field(
        default_factory=list,
        description="Destination columns to partition the table by (applied when the table "
        "is written in full).",
    )
    optimize_every: int | None = Field(
        None, ge=1, description="Compact small files after every N commits of the table."
    )
    vacuum_retain_hours: int | None = Field(
        None,
        ge=0,
        description="After each run, delete files the table stopped using more than this many "
        "hours ago (Delta's default retention is 168).",
    )

    @field_validator("partition_by")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len({v.lower() for v in value}) != len(value):
            raise ValueError("names a column twice")
        return value


# --------------------------------------------------------------------------- activations


class WarningsConfig(_Strict):
    min_rows: int | None = Field(None, ge=0)
    max_removed_ratio: float | None = Field(None, ge=0, le=1)
    max_change_ratio: float | None = Field(None, ge=0, le=1)
    sas_expiry_days: int | None = Field(None, ge=0)
    webhook_url_env: str | None = Field(
        None,
        description="Environment variable holding a webhook URL that receives warnings.",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
    )

    @field_validator("webhook_url_env")
    @classmethod
    def _webhook_env(cls, value: str | None) -> str | None:
        return value if value is None else _not_sql_variable(value)


class SyncLogOptions(_Strict):
    """`sync_log:` keep one row per exported key and run in `azexport_log.<activation>`."""

    retention_days: int = Field(
        30,
        ge=1,
        le=36500,
        description="Delete log rows committed more than this many days ago (at each commit).",
    )


# Azure's rule for encryption scope names: 3-63 letters, digits and hyphens.
_SCOPE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{1,61})[A-Za-z0-9]")

# pgpy encrypts a whole file in memory (about 4x its size at the peak): encrypted files are
# kept under this size by `max_file_size`.
MAX_ENCRYPTED_FILE_SIZE = 64 * 1000**2


class EncryptionConfig(_Strict):
    """`encryption:` OpenPGP encryption of each file before upload, and/or Azure's
    server-side encryption scope."""

    pgp_public_key: SecretRef | None = Field(
        None,
        description="{env: VAR}: the recipient's ASCII-armored OpenPGP public key; each file "
        "is encrypted to it and its blob name ends in '.pgp'.",
    )
    encryption_scope: str | None = Field(
        None,
        description="Azure encryption scope the service encrypts the blobs with "
        "(x-ms-encryption-scope on every upload).",
    )

    @field_validator("encryption_scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is not None and not _SCOPE_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an encryption scope name: use 3-63 letters, digits and "
                "hyphens, starting and ending with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _something(self) -> EncryptionConfig:
        if self.pgp_public_key is None and self.encryption_scope is None:
            raise ValueError(
                "give 'pgp_public_key: {env: VAR}', 'encryption_scope: <name>' or both"
            )
        return self


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
_SIZE_UNITS |= {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def parse_size(value: int | str) -> int:
    """'256MB' -> 256_000_000; '1GiB' -> 1_073_741_824; integers are bytes."""
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).upper() if match else ""
        if not match or unit not in _SIZE_UNITS:
            raise ValueError(f"{value!r} is not a size: use bytes or e.g. '256MB', '1GB', '64MiB'")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size < 1024:
        raise ValueError(f"{value!r} is too small: the minimum is 1024 bytes")
    return size


class ActivationConfig(_Strict):
    """A model or segment exported to a destination as files."""

    source: str = Field(description="A model or segment name.")
    destination: str
    file_name: str = Field(description="Template, e.g. crm/{YYYY}-{MM}-{DD}_export")
    format: FileFormat = "csv"
    csv: CsvOptions = CsvOptions()
    json_options: JsonOptions = Field(JsonOptions(), alias="json")
    xml: XmlOptions = XmlOptions()
    parquet: ParquetOptions = ParquetOptions()
    delta: DeltaOptions = DeltaOptions()
    compression: TextCompression = "none"
    run_type: RunType = "full_only"
    sync_mode: SyncMode = "snapshot"
    mapping: dict[str, str] | None = Field(
        None, description="{source_column: destination_name}; only mapped columns are exported."
    )
    max_file_size: Annotated[
        int | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1024},
                    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[A-Za-z]*\s*$"},
                    {"type": "null"},
                ]
            }
        ),
    ] = Field(None, description="Split files above this size: bytes, or e.g. '256MB', '1GiB'.")
    timezone: str = "UTC"
    schedule: str | None = Field(
        None, description="Cron string, e.g. '0 6 * * *', in the activation's timezone."
    )
    on_empty: Literal["skip", "write"] | None = None
    manifest: bool = False
    change_column: str | None = Field(
        None,
        description="Name of an extra last column holding each row's change kind: "
        "added, updated or removed (e.g. _change).",
    )
    trigger: Literal["on_change"] | None = None
    sync_log: bool | SyncLogOptions = Field(
        False,
        description="true or {retention_days: N}: log every exported key of every run in the "
        "warehouse table azexport_log.<activation> (committed with the baseline).",
    )
    encryption: EncryptionConfig | None = None
    warnings: WarningsConfig = WarningsConfig()
    owners: Owners = []
    description: str | None = None

    @field_validator("max_file_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)

    @field_validator("file_name")
    @classmethod
    def _template(cls, value: str) -> str:
        naming.validate_template(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        naming.zone(value)
        return value

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must map at least one column (or be left out to export all)")
        seen: dict[str, str] = {}
        for src, dest in value.items():
            if not isinstance(dest, str) or not dest.strip():
                raise ValueError(f"column {src!r} maps to an empty destination name")
            if dest.lower() in seen:
                raise ValueError(
                    f"destination name {dest!r} is used twice (for {seen[dest.lower()]!r} and "
                    f"{src!r}); destination names must be unique (case-insensitive)"
                )
            seen[dest.lower()] = src
        return value

    @model_validator(mode="after")
    def _combination(self) -> ActivationConfig:
        valid = VALID_COMBINATIONS[self.run_type]
        if self.sync_mode not in valid:
            other = next(rt for rt, modes in VALID_COMBINATIONS.items() if self.sync_mode in modes)
            raise ValueError(
                f"run_type {self.run_type!r} cannot use sync_mode {self.sync_mode!r}: "
                f"{self.run_type!r} works with {' / '.join(valid)}; "
                f"{self.sync_mode!r} needs run_type {other!r}"
            )
        if self.change_column is not None:
            if not self.change_column.strip():
                raise ValueError("change_column must not be empty")
            taken = {dest.lower(): src for src, dest in (self.mapping or {}).items()}
            if self.change_column.lower() in taken:
                raise ValueError(
                    f"change_column {self.change_column!r} is also the destination name of "
                    f"column {taken[self.change_column.lower()]!r}; pick another name"
                )
        if self.encryption is not None and self.format == "delta":
            raise ValueError(
                "'encryption' applies to files; a Delta table (format: delta) is read in "
                "place by its consumers and cannot be encrypted file by file: remove "
                "'encryption' or use another format"
            )
        if self.encryption is not None and self.encryption.pgp_public_key is not None:
            limit = MAX_ENCRYPTED_FILE_SIZE
            if self.max_file_size is None or self.max_file_size > limit:
                raise ValueError(
                    "'encryption.pgp_public_key' encrypts each file in memory: set "
                    f"'max_file_size' to at most {limit // 1000**2}MB (files are split into "
                    "parts of that size), so that a run's memory stays bounded"
                )
        if self.compression != "none" and self.format == "parquet":
            raise ValueError(
                "'compression' applies to csv/json/xml; Parquet compresses inside the file: "
                "use 'parquet: {compression: zstd|snappy|gzip|none}'"
            )
        return self

    @property
    def is_delta(self) -> bool:
        return self.run_type == "full_then_delta"

    @property
    def sync_log_options(self) -> SyncLogOptions | None:
        """The sync log's options, or None when the activation keeps no sync log."""
        if self.sync_log is True:
            return SyncLogOptions()
        return self.sync_log or None

    @property
    def pgp_key_env(self) -> str | None:
        """The variable holding the OpenPGP public key files are encrypted to, if any."""
        key = self.encryption.pgp_public_key if self.encryption else None
        return key.env if key else None

    @property
    def encryption_scope(self) -> str | None:
        return self.encryption.encryption_scope if self.encryption else None

    @property
    def is_table(self) -> bool:
        """True when the activation keeps a table (`format: delta`) instead of writing files."""
        return self.format == "delta"

    def effective_on_empty(self, full_export: bool) -> Literal["skip", "write"]:
        """Spec default: deltas skip empty output, full exports write an empty file."""
        if self.on_empty:
            return self.on_empty
        return "write" if full_export else "skip"


# --------------------------------------------------------------------------- one file


class ExportFileConfig(_Strict):
    """The `attributes:` of one AzureExport `defs.yaml`."""

    sources: dict[str, SourceConfig] = {}
    models: dict[str, ModelConfig] = {}
    segments: dict[str, SegmentConfig] = {}
    destinations: dict[str, DestinationConfig] = {}
    activations: dict[str, ActivationConfig] = {}


OBJECT_KINDS = ("sources", "models", "segments", "destinations", "activations")

# Where a path of keys (e.g. ('activations', 'crm', 'mapping')) sits in the YAML, as
# (line, column); None when unknown (objects built in Python).
Locate = Callable[[tuple[str | int, ...]], tuple[int, int] | None]


def _object_phrase(loc: tuple[Any, ...]) -> tuple[str, str]:
    """('activations', 'crm', 'mapping', 'x') -> ("activation 'crm'", 'mapping.x')."""
    if len(loc) >= 2 and loc[0] in OBJECT_KINDS:
        kind = str(loc[0])[:-1]
        field = ".".join(str(p) for p in loc[2:]) or "(the object itself)"
        return f"{kind} '{loc[1]}'", field
    return "attributes", ".".join(str(p) for p in loc) or "(top level)"


def file_position(file: Path | str, locate: Locate | None, loc: tuple[Any, ...]) -> str:
    """'defs/a/defs.yaml:12:7' (or just the file when the position is unknown)."""
    position = locate(loc) if locate else None
    return f"{file}:{position[0]}:{position[1]}" if position else str(file)


def format_validation_error(
    file: Path | str, error: pydantic.ValidationError, locate: Locate | None = None
) -> str:
    """One line per problem: 'file:line:col: activation 'crm', field 'format': message'."""
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        obj, field = _object_phrase(loc)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see README 'Configuration reference')"
        what = obj if field == "(the object itself)" else f"{obj}, field '{field}'"
        lines.append(f"{file_position(file, locate, loc)}: {what}: {message}")
    return "\n".join(lines)


def parse_file_config(
    file: Path | str, attributes: dict[str, Any] | None, locate: Locate | None = None
) -> ExportFileConfig:
    """Validate one file's (already templated) attributes; raise ConfigError naming the file,
    the line, the object and the field."""
    try:
        config = ExportFileConfig.model_validate(attributes or {})
    except pydantic.ValidationError as error:
        raise ConfigError(format_validation_error(file, error, locate)) from None
    for kind in OBJECT_KINDS:
        for name in getattr(config, kind):
            if not NAME_PATTERN.match(name):
                raise ConfigError(
                    f"{file_position(file, locate, (kind, name))}: {kind[:-1]} '{name}': the name "
                    "must start with a letter or '_' and hold only letters, digits and '_' "
                    "(it becomes a table and asset name)"
                )
    return config
