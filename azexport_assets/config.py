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
from azexport_assets.sandbox import ascii_lower

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Objects whose names are Dagster tag values (azexport/model, /segment, /activation), which
# Dagster limits to 63 characters.
TAGGED_KINDS = ("models", "segments", "activations")
MAX_TAGGED_NAME = 63

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


_DATABASE_KINDS = ("postgres", "lake")
# The schemas the project itself writes (warehouse.base.WAREHOUSE_SCHEMAS; this module does not
# import the warehouse).
_WAREHOUSE_SCHEMAS = ("models", "segments", "azexport_state", "azexport_log")


def _bare_name(value: str) -> str:
    if not value or value != value.strip() or '"' in value or "." in value:
        raise ValueError(
            f"{value!r} is not a bare name of the database: write it as the database spells "
            "it, without a prefix ('schema.'), quotes or surrounding spaces"
        )
    return value


# A schema or table of a database source, as the database spells it.
BareName = Annotated[str, pydantic.AfterValidator(_bare_name)]


class PostgresSourceConfig(_Strict):
    """A schema of a Postgres database, attached read-only through DuckDB's postgres extension.
    The connection string is a secret as a whole: it is read from the environment at run time."""

    dsn: SecretRef = Field(
        description="{env: VAR} holding a libpq connection string or URI "
        "(postgresql://user:password@host:5432/db?sslmode=require)."
    )
    schema_name: BareName = Field(
        "public", alias="schema", description="The Postgres schema the tables are in."
    )

    @field_validator("dsn", mode="before")
    @classmethod
    def _dsn_from_env(cls, value: Any) -> Any:
        if isinstance(value, str):  # the value itself is never repeated: it may be a password
            raise ValueError(
                "write the connection string's environment variable, {env: VAR}: it holds a "
                "password and is never written in the YAML"
            )
        return value


class SourceConfig(_Strict):
    """Where raw tables come from: a DuckDB file (attached read-only) or a file glob (a view);
    a Parquet/CSV glob may be in Azure Blob Storage (`az://` / `abfss://`), with a credential;
    or tables of a database: a Postgres schema (read-only), or a schema of the warehouse's own
    DuckLake (tables another tool loaded there)."""

    duckdb: str | None = Field(None, description="Path of a DuckDB file, attached read-only.")
    parquet: str | None = Field(
        None, description="Glob of Parquet files (a path, or az://<container>/<glob>), a view."
    )
    csv: str | None = Field(
        None, description="Glob of CSV files (a path, or az://<container>/<glob>), a view."
    )
    encoding: Literal["utf-8", "utf-16", "latin-1"] | None = Field(
        None,
        description="csv sources: the files' text encoding (default utf-8). latin-1 "
        "(ISO-8859-1) is what many European exports and spreadsheets write.",
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
    postgres: PostgresSourceConfig | None = Field(
        None,
        description="{dsn: {env: VAR}, schema: public}: tables of a Postgres schema, read-only.",
    )
    lake: BareName | None = Field(
        None,
        description="A schema of the warehouse's own DuckLake (the DuckLake backend only), "
        "e.g. tables another tool loads there; read under the source's name.",
    )
    tables: list[BareName] | None = Field(
        None,
        description="postgres / lake sources: the tables models may read (default: every "
        "table of the schema).",
    )
    description: str | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> SourceConfig:
        given = [k for k in ("duckdb", "parquet", "csv", *_DATABASE_KINDS) if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'duckdb: <path>', 'parquet: <glob>', 'csv: <glob>', "
                "'postgres: {dsn: {env: VAR}, schema: <schema>}' or 'lake: <schema>'"
                f" (got {given or 'none'})"
            )
        if self.encoding is not None and self.kind != "csv":
            raise ValueError(
                f"'encoding' is for csv sources (a {self.kind} source declares its own); remove it"
            )
        if self.is_database:
            return self._check_database()
        if self.tables is not None:
            raise ValueError(
                "'tables' lists the tables of a postgres or lake source; a file source is one "
                "table (a DuckDB file: read its tables as <source>.<table>)"
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

    def _check_database(self) -> SourceConfig:
        given = [
            k
            for k in ("account_url", "sas_token", "account_key", "default_azure_credential")
            if getattr(self, k)
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)}: only for sources in Azure Blob Storage; a {self.kind} "
                "source needs none"
                + (" (its credentials are in the dsn)" if self.kind == "postgres" else "")
            )
        if self.tables is not None:
            if not self.tables:
                raise ValueError("'tables' is empty: list tables, or leave it out to allow all")
            folded = [ascii_lower(t) for t in self.tables]  # as DuckDB matches names
            twice = sorted({t for t in self.tables if folded.count(ascii_lower(t)) > 1})
            if twice:
                raise ValueError(f"'tables' lists {', '.join(twice)} more than once")
        if self.lake and ascii_lower(self.lake) in _WAREHOUSE_SCHEMAS:
            raise ValueError(
                f"'{self.lake}' is a schema of this project's own warehouse "
                f"({', '.join(_WAREHOUSE_SCHEMAS)}); read models as models.<name> instead"
            )
        return self

    @property
    def kind(self) -> Literal["duckdb", "parquet", "csv", "postgres", "lake"]:
        for kind in ("duckdb", "parquet", "postgres", "lake"):
            if getattr(self, kind):
                return kind  # type: ignore[return-value]
        return "csv"

    @property
    def is_database(self) -> bool:
        """Tables of a database (Postgres, the warehouse's lake), not files."""
        return self.kind in _DATABASE_KINDS

    @property
    def schema_name(self) -> str:
        """The database schema a postgres or lake source reads ('' for files)."""
        if self.postgres is not None:
            return self.postgres.schema_name
        return self.lake or ""

    @property
    def location(self) -> str:
        """The path or glob of a file source; for a database source, what it reads in words
        (never the connection string: that is a secret)."""
        if self.postgres is not None:
            postgres = self.postgres
            return f"schema {postgres.schema_name} of the Postgres database in ${postgres.dsn.env}"
        if self.lake:
            return f"schema {self.lake} of the warehouse's DuckLake"
        return self.duckdb or self.parquet or self.csv or ""

    @property
    def remote(self) -> bool:
        """In Azure Blob Storage (az://, azure://, abfss://), not on the local file system."""
        return not self.is_database and self.location.startswith(("az://", "azure://", "abfss://"))


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


class ServicePrincipalConfig(_Strict):
    """A Microsoft Entra application: tenant and client id, and a client secret or a
    certificate (PEM or PKCS12 file with its private key)."""

    tenant_id: str | SecretRef = Field(description="Directory (tenant) id, or {env: VAR}.")
    client_id: str | SecretRef = Field(description="Application (client) id, or {env: VAR}.")
    client_secret: SecretRef | None = Field(None, description="{env: VAR} holding the secret.")
    certificate_path: str | SecretRef | None = Field(
        None, description="Path of a PEM/PKCS12 certificate with its private key, or {env: VAR}."
    )
    certificate_password: SecretRef | None = Field(
        None, description="{env: VAR} holding the certificate's password, if it has one."
    )
    authority_host: str | None = Field(
        None,
        description="The Microsoft Entra authority, e.g. https://login.microsoftonline.us "
        "(Azure Government); default AZURE_AUTHORITY_HOST, else https://login.microsoftonline.com.",
        pattern=r"^https://[^/?#\s]+/?$",
    )
    disable_instance_discovery: bool = Field(
        False,
        description="Do not ask Microsoft whether the authority is a known one (for a private "
        "authority, e.g. Azure Stack Hub).",
    )

    @model_validator(mode="after")
    def _secret_or_certificate(self) -> ServicePrincipalConfig:
        if (self.client_secret is None) == (self.certificate_path is None):
            raise ValueError(
                "give exactly one of 'client_secret: {env: VAR}' or 'certificate_path: <file>'"
            )
        if self.certificate_password is not None and self.certificate_path is None:
            raise ValueError("certificate_password goes with certificate_path")
        return self


CredentialKind = Literal[
    "sas_token",
    "account_key",
    "connection_string",
    "sas_url",
    "service_principal",
    "default_azure_credential",
]
# The credentials whose secret also says where the account is (no account_url with them).
_ENDPOINT_IN_SECRET = ("connection_string", "sas_url")
_ABFSS = re.compile(
    r"abfss?://(?:(?P<container>[^@/]+)@)?(?P<account>[a-z0-9]+)\.dfs\.(?P<suffix>[^/?#]+)/?"
    r"(?P<rest>[^?#]*)"
)


def blob_endpoint(url: str) -> tuple[str, str | None]:
    """An abfss:// URL or a Data Lake (dfs) endpoint as the account's blob endpoint, and the
    container an abfss:// URL names: 'abfss://c@acct.dfs.core.windows.net/' ->
    ('https://acct.blob.core.windows.net', 'c'). Other URLs are returned as they are."""
    match = _ABFSS.fullmatch(url)
    if match:
        if match["rest"].strip("/"):
            raise ValueError(
                "an abfss:// account_url names the account and container only "
                "(abfss://<container>@<account>.dfs.core.windows.net); put folders in path_prefix"
            )
        return f"https://{match['account']}.blob.{match['suffix']}", match["container"]
    dfs = re.fullmatch(r"https://([a-z0-9]+)\.dfs\.([^/?#]+)/?", url)
    if dfs:
        return f"https://{dfs[1]}.blob.{dfs[2]}", None
    return url, None


class DestinationConfig(_Strict):
    """An Azure Blob Storage container (+ optional path prefix) and how to sign in."""

    account_url: str | SecretRef | None = Field(
        None,
        description="e.g. https://myaccount.blob.core.windows.net (abfss://<container>@<account>"
        ".dfs.core.windows.net is accepted and becomes the blob endpoint), or {env: VAR}; not "
        "with connection_string or sas_url, which carry the endpoint",
    )
    container: str = Field("", description="The container (may come from an abfss:// account_url).")
    path_prefix: str = Field(
        "", description="Folder prepended to every blob name, e.g. 'marketing/crm'."
    )
    sas_token: SecretRef | None = Field(None, description="{env: VAR}: a SAS token.")
    account_key: SecretRef | None = Field(None, description="{env: VAR}: an account key.")
    connection_string: SecretRef | None = Field(
        None, description="{env: VAR}: a storage connection string (AccountKey or SAS)."
    )
    sas_url: SecretRef | None = Field(
        None,
        description="{env: VAR}: a container SAS URL, "
        "https://<account>.blob.core.windows.net/<container>?sv=...&sig=...",
    )
    service_principal: ServicePrincipalConfig | None = Field(
        None, description="A Microsoft Entra application (client secret or certificate)."
    )
    default_azure_credential: bool = Field(
        False,
        description="The machine's identity: managed identity, workload identity (AKS), "
        "environment, Azure CLI (https only).",
    )
    max_retries: int = Field(5, ge=0, le=20, description="Retries of a failed storage request.")
    retry_backoff_seconds: float = Field(
        1.0, ge=0, le=60, description="First retry delay; doubles per retry (capped at 30s)."
    )
    max_concurrency: int = Field(4, ge=1, le=10, description="Parallel block uploads per file.")
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _abfss(cls, data: Any) -> Any:
        url = data.get("account_url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("abfss://", "abfs://", "https://")):
            return data
        endpoint, container = blob_endpoint(url.strip())
        data = {**data, "account_url": endpoint}
        if container:
            given = data.get("container")
            if given and given != container:
                raise ValueError(
                    f"account_url names container '{container}' but 'container' is '{given}'"
                )
            data["container"] = container
        return data

    @field_validator("account_url")
    @classmethod
    def _url(cls, value: str | SecretRef | None) -> str | SecretRef | None:
        return value if value is None or isinstance(value, SecretRef) else check_account_url(value)

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
        kinds = [k for k in CredentialKind.__args__ if getattr(self, k)]  # type: ignore[attr-defined]
        if len(kinds) != 1:
            raise ValueError(
                "give exactly one credential: 'sas_token: {env: VAR}', 'account_key: {env: VAR}', "
                "'connection_string: {env: VAR}', 'sas_url: {env: VAR}', 'service_principal: "
                "{tenant_id, client_id, client_secret | certificate_path}' or "
                f"'default_azure_credential: true' (got {kinds or 'none'})"
            )
        if not self.container:
            raise ValueError("needs 'container' (or an abfss://<container>@... account_url)")
        if kinds[0] in _ENDPOINT_IN_SECRET:
            if self.account_url is not None:
                raise ValueError(
                    f"{kinds[0]} carries the account's endpoint: leave account_url out"
                )
        elif self.account_url is None:
            raise ValueError(f"{kinds[0]} needs 'account_url'")
        if (
            kinds[0] in ("default_azure_credential", "service_principal")
            and isinstance(self.account_url, str)
            and not self.account_url.startswith("https://")
        ):
            raise ValueError(f"{kinds[0]} needs an https:// account_url (tokens go over TLS only)")
        return self

    @property
    def credential_kind(self) -> CredentialKind:
        return next(k for k in CredentialKind.__args__ if getattr(self, k))  # type: ignore[attr-defined]

    @property
    def secret_env(self) -> str | None:
        ref = self.sas_token or self.account_key or self.connection_string or self.sas_url
        return ref.env if ref else None

    @property
    def account_url_env(self) -> str | None:
        return self.account_url.env if isinstance(self.account_url, SecretRef) else None

    @property
    def environment_variables(self) -> list[str]:
        """The variables a run reads for this destination: the account URL's, then the
        secret's, then the service principal's fields' (none for a literal URL with
        DefaultAzureCredential)."""
        names = [v for v in (self.account_url_env, self.secret_env) if v]
        principal = self.service_principal
        if principal is not None:
            fields = (getattr(principal, f) for f in type(principal).model_fields)
            names += [value.env for value in fields if isinstance(value, SecretRef)]
        return names


def unset_variables_message(destination: str, names: list[str]) -> str:
    """One line for a destination whose variables are not set in the run's environment.
    Names only: the message never holds a value."""
    if len(names) == 1:
        what, verb, them = f"environment variable {names[0]}", "is", "it"
    else:
        what = "environment variables " + ", ".join(names[:-1]) + f" and {names[-1]}"
        verb, them = "are", "them"
    return (
        f"destination '{destination}': {what} {verb} not set; set {them} or add {them} to .env "
        "in the project root (the folder you run dg or dagster from)"
    )


# --------------------------------------------------------------------------- formats


class CsvOptions(_Strict):
    delimiter: str = Field(",", description="Any one character.")
    header: bool = True

    @field_validator("delimiter", mode="before")
    @classmethod
    def _given(cls, value: Any) -> Any:
        # Dagster's template resolution turns a value of only line breaks ("\n") into null.
        if value is None:
            raise ValueError(
                "no delimiter given (a line break reads as none): use exactly one character "
                "other than a double quote or a line break (e.g. ',', ';', '|', '\\t')"
            )
        return value

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


# --------------------------------------------------------------------------- blob properties

AccessTier = Literal["Hot", "Cool", "Cold", "Archive"]

# What `{...}` may name in a tag or metadata value, with the longest value each can take
# (a run id is a UUID; `{activation}` is checked with the real name in `check_blob_properties`).
BLOB_PLACEHOLDERS: dict[str, int] = {"activation": 0, "run_id": 36, "sync_mode": 10}
# Metadata every exported blob carries; user metadata may not reuse these names.
AUTOMATIC_METADATA = ("activation", "run_id", "logical_time", "rows", "md5")
MAX_TAGS = 10  # blob index tags per blob (Azure)
MAX_METADATA_BYTES = 8 * 1024  # names and values of all metadata of a blob (Azure)
# Blob index tag keys and values: letters, digits, space and + - . / : = _ (Azure).
_TAG_TEXT = re.compile(r"[A-Za-z0-9 +\-./:=_]*")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# A header value: printable ASCII (Azure sends metadata and properties as HTTP headers).
_HEADER_TEXT = re.compile(r"[\x20-\x7e]*")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;\s*[\x20-\x7e]+)?")


def _placeholders(value: str, what: str) -> str:
    """`value` with each `{name}` checked and replaced by nothing (what is left is fixed text)."""
    for name in _PLACEHOLDER.findall(value):
        if name not in BLOB_PLACEHOLDERS:
            known = ", ".join(f"{{{p}}}" for p in BLOB_PLACEHOLDERS)
            raise ValueError(f"{what} uses {{{name}}}: the placeholders are {known}")
    fixed = _PLACEHOLDER.sub("", value)
    if "{" in fixed or "}" in fixed:
        raise ValueError(f"{what} has an unmatched '{{' or '}}'")
    return fixed


def render_placeholders(value: str, values: dict[str, str]) -> str:
    """'{activation}-{run_id}' with the run's values (names checked at load)."""
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value)


def longest_rendering(value: str, activation: str) -> int:
    """The length of `value` once its placeholders hold their longest values."""
    longest = {**BLOB_PLACEHOLDERS, "activation": len(activation)}
    return len(_PLACEHOLDER.sub("", value)) + sum(
        longest[name] for name in _PLACEHOLDER.findall(value)
    )


class BlobPropertiesConfig(_Strict):
    """Properties every blob of an activation gets in the request that commits it."""

    content_type: str | None = Field(
        None,
        description="Content-Type of every file; default per format: text/csv; charset=utf-8, "
        "application/json, application/x-ndjson, application/xml, application/vnd.apache.parquet; "
        "application/gzip or application/zstd for compressed files.",
    )
    content_encoding: Literal["gzip", "zstd"] | None = Field(
        None,
        description="Declare the file's compression as Content-Encoding (equal to 'compression'); "
        "the Content-Type then names the uncompressed format and HTTP clients that honour the "
        "header (browsers) decompress on download. Default: not declared.",
    )
    cache_control: str | None = Field(
        None, description="Cache-Control of every blob, e.g. 'no-cache' or 'max-age=3600'."
    )
    access_tier: AccessTier | None = Field(
        None,
        description="Hot, Cool, Cold or Archive (an archived blob cannot be read until it is "
        "rehydrated; see docs/storage.md). Default: the account's default tier.",
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Blob index tags (at most 10): fixed text, {activation}, {run_id}, "
        "{sync_mode}. Keys 1-128 and values 0-256 characters of letters, digits, space and "
        "+ - . / : = _. A SAS needs the 't' permission.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="User metadata added to the automatic entries (activation, run_id, "
        "logical_time, rows, md5): names are identifiers, values printable ASCII, with "
        "{activation}, {run_id}, {sync_mode}.",
    )

    @field_validator("tags", "metadata", mode="before")
    @classmethod
    def _values_as_text(cls, value: Any) -> Any:
        # YAML (and Dagster's template rendering) make numbers and booleans of `'1'`, `true`.
        if isinstance(value, dict):
            return {
                k: (str(v).lower() if isinstance(v, bool) else str(v))
                if isinstance(v, int | float)
                else v
                for k, v in value.items()
            }
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str | None) -> str | None:
        if value is not None and not _MEDIA_TYPE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a media type: use type/subtype with optional parameters, "
                "e.g. 'text/csv; charset=utf-8'"
            )
        return value

    @field_validator("cache_control")
    @classmethod
    def _cache_control(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or not _HEADER_TEXT.fullmatch(value)):
            raise ValueError("must be printable ASCII text, e.g. 'no-cache' or 'max-age=3600'")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_TAGS:
            raise ValueError(f"has {len(value)} tags; Azure allows at most {MAX_TAGS} per blob")
        for key, text in value.items():
            if not 1 <= len(key) <= 128 or not _TAG_TEXT.fullmatch(key):
                raise ValueError(
                    f"tag key {key!r} is not valid: 1-128 characters of letters, digits, space "
                    "and + - . / : = _ (no placeholders in keys)"
                )
            fixed = _placeholders(text, f"tag {key!r}")
            if not _TAG_TEXT.fullmatch(fixed):
                raise ValueError(
                    f"tag {key!r}: value {text!r} is not valid: letters, digits, space and "
                    "+ - . / : = _ besides the placeholders"
                )
            if longest_rendering(text, "") > 256:
                raise ValueError(f"tag {key!r}: the value is longer than 256 characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for key, text in value.items():
            if not NAME_PATTERN.fullmatch(key):
                raise ValueError(
                    f"metadata name {key!r} is not valid: start with a letter or '_', then "
                    "letters, digits and '_'"
                )
            if key.lower() in AUTOMATIC_METADATA or key.lower() in seen:
                taken = "is set automatically" if key.lower() in AUTOMATIC_METADATA else "is twice"
                raise ValueError(
                    f"metadata name {key!r} {taken} (names are case-insensitive; automatic: "
                    f"{', '.join(AUTOMATIC_METADATA)})"
                )
            seen.add(key.lower())
            fixed = _placeholders(text, f"metadata {key!r}")
            if not _HEADER_TEXT.fullmatch(fixed) or text != text.strip():
                raise ValueError(
                    f"metadata {key!r}: the value must be printable ASCII without leading or "
                    "trailing spaces"
                )
        return value

    @property
    def is_default(self) -> bool:
        return self == BlobPropertiesConfig()

    def rendered(self, values: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """(tags, metadata) with the placeholders replaced by the run's values."""
        tags = {k: render_placeholders(v, values) for k, v in self.tags.items()}
        return tags, {k: render_placeholders(v, values) for k, v in self.metadata.items()}


def check_blob_properties(name: str, properties: BlobPropertiesConfig) -> str | None:
    """What is wrong with the properties once `{activation}` is this activation's name: a tag
    value over 256 characters, or metadata over Azure's 8 KiB; None when all is well."""
    for key, text in properties.tags.items():
        if longest_rendering(text, name) > 256:
            return f"tag {key!r}: the value is longer than 256 characters with {{activation}}"
    automatic = len(name) + 36 + 32 + 32 + 20 + sum(len(k) for k in AUTOMATIC_METADATA)
    size = automatic + sum(
        len(k) + longest_rendering(v, name) for k, v in properties.metadata.items()
    )
    if size > MAX_METADATA_BYTES:
        return f"metadata takes up to {size} bytes; Azure allows {MAX_METADATA_BYTES} per blob"
    return None


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
    partition_by: list[str] = Field(
        default_factory=list,
        description="Destination columns whose values make Hive-style folders "
        "(<column>=<value>/) between the file name's folder and its file name: one complete "
        "file (with its own parts) per partition. With format delta: the table's partition "
        "columns (same as delta.partition_by).",
    )
    max_partitions: int = Field(
        10_000,
        ge=1,
        description="With partition_by: an export that would write more partitions than this "
        "(files, or a Delta table's commit) fails before writing anything (a column with a "
        "value per row makes a folder per row).",
    )
    change_column: str | None = Field(
        None,
        description="Name of an extra last column holding each row's change kind: "
        "added, updated or removed (e.g. _change).",
    )
    trigger: Literal["on_change"] | None = None
    blob_properties: BlobPropertiesConfig = Field(
        BlobPropertiesConfig(),
        description="Content type and encoding, cache control, access tier, index tags and "
        "metadata of every blob written (not for format: delta).",
    )
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

    @field_validator("partition_by")
    @classmethod
    def _partition_columns(cls, value: list[str]) -> list[str]:
        if any(not isinstance(v, str) or not v.strip() for v in value):
            raise ValueError("names an empty column")
        if len({v.lower() for v in value}) != len(value):
            raise ValueError("names a column twice")
        return value

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
        if self.partition_by and self.delta.partition_by:
            raise ValueError(
                "give the table's partition columns once: 'partition_by' or "
                "'delta.partition_by' (with format delta they mean the same)"
            )
        if self.change_column is not None and self.change_column.lower() in {
            c.lower() for c in self.partition_by
        }:
            raise ValueError(f"change_column {self.change_column!r} cannot be a partition column")
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
        if self.is_table and not self.blob_properties.is_default:
            raise ValueError(
                "blob_properties apply to files (csv/json/xml/parquet); a Delta table's files "
                "are written by the Delta writer, which sets no blob properties"
            )
        encoding = self.blob_properties.content_encoding
        if encoding is not None and encoding != self.compression:
            raise ValueError(
                f"blob_properties.content_encoding {encoding!r} must name the file's "
                f"compression ('compression: {encoding}'; it is {self.compression!r})"
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

    @property
    def table_partition_by(self) -> list[str]:
        """`format: delta`: the table's partition columns (`partition_by` or its twin
        `delta.partition_by`)."""
        return list(self.partition_by or self.delta.partition_by)

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
            if kind in TAGGED_KINDS and len(name) > MAX_TAGGED_NAME:
                raise ConfigError(
                    f"{file_position(file, locate, (kind, name))}: {kind[:-1]} '{name}': the name "
                    f"has {len(name)} characters; at most {MAX_TAGGED_NAME} (Dagster tags its "
                    "runs and assets with it, and a tag value holds at most 63)"
                )
    for name, activation in config.activations.items():
        problem = check_blob_properties(name, activation.blob_properties)
        if problem:
            loc = ("activations", name, "blob_properties")
            raise ConfigError(
                f"{file_position(file, locate, loc)}: activation '{name}', field "
                f"'blob_properties': {problem}"
            )
    return config
