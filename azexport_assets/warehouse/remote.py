"""Parquet/CSV sources in Azure Blob Storage (`az://<container>/<glob>`, `abfss://...`).

A remote source is read by DuckDB's azure extension with a temporary secret scoped to its
container, built from the source's own credential (SAS token, account key or the machine's
identity), read from the environment at run time only: the secret lives in the step's
in-memory DuckDB and is never written anywhere. The files are listed with the Azure SDK
(name, ETag, last modification), so the view reads exactly the blobs that matched when the
step opened the warehouse, the sandbox grants exactly those URLs, and the same listing is
the source's fingerprint for the on-change sensors and for skipping unchanged models.

The azure extension exists offline only as a wheel for DuckDB 1.5.5 (the `lake` extra);
elsewhere it comes from `$AZEXPORT_DUCKDB_EXTENSIONS` or DuckDB's repository (see
`extensions`), and a missing one fails the step saying so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from azexport_assets.sql_text import quote_ident, quote_literal
from azexport_assets.storage.resource import BlobStorage, account_name_from_url
from azexport_assets.warehouse.base import WarehouseConfigError
from azexport_assets.warehouse.extensions import install_extensions
from azexport_assets.warehouse.settings import redact

if TYPE_CHECKING:
    from azexport_assets.config import SourceConfig

REMOTE_SCHEMES = ("az://", "azure://", "abfss://")


def is_remote(location: str) -> bool:
    return location.startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class RemoteGlob:
    """'az://crm/out/*.parquet': base 'az://crm/', container 'crm', pattern 'out/*.parquet'."""

    base: str  # the URL up to and including the container (and account, for abfss)
    container: str
    pattern: str  # the blob-name glob inside the container

    @property
    def fixed_prefix(self) -> str:
        """The folders before the first wildcard: where to list."""
        match = re.search(r"[*?\[]", self.pattern)
        head = self.pattern if match is None else self.pattern[: match.start()]
        return head if match is None else head[: head.rfind("/") + 1]

    def matches(self, name: str) -> bool:
        return re.fullmatch(_glob_regex(self.pattern), name) is not None

    def url(self, name: str) -> str:
        return self.base + name


def parse_remote(location: str) -> RemoteGlob:
    scheme, _, rest = location.partition("://")
    authority, _, pattern = rest.partition("/")
    container = authority.split("@", 1)[0]  # abfss://<container>@<account>.dfs.../path
    if not container or not pattern:
        raise WarehouseConfigError(
            f"'{location}' names no blobs: write {scheme}://<container>/<path or glob>"
        )
    return RemoteGlob(base=f"{scheme}://{authority}/", container=container, pattern=pattern)


def _glob_regex(pattern: str) -> str:
    """DuckDB's glob rules on blob names: `*` and `?` stay inside one folder, `**` crosses."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def _env_value(name: str, source_name: str, field: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise WarehouseConfigError(
            f"source '{source_name}', field '{field}': environment variable {name} is not set"
        )
    return value


def account_url_of(source: SourceConfig, source_name: str) -> str:
    url = source.account_url
    if url is None:
        raise WarehouseConfigError(f"source '{source_name}' in Azure has no account_url")
    return url if isinstance(url, str) else _env_value(url.env, source_name, "account_url")


def source_storage(source: SourceConfig, source_name: str) -> BlobStorage:
    """The SDK client settings for a remote source (secrets read from the environment now)."""
    url = account_url_of(source, source_name)
    if source.sas_token is not None:
        return BlobStorage(url, "sas", _env_value(source.sas_token.env, source_name, "sas_token"))
    if source.account_key is not None:
        key = _env_value(source.account_key.env, source_name, "account_key")
        return BlobStorage(url, "key", key)
    return BlobStorage(url, "default")


@dataclass(frozen=True)
class RemoteFile:
    url: str
    etag: str
    modified: str
    size: int


def list_remote(source: SourceConfig, source_name: str) -> list[RemoteFile]:
    """The blobs the source's glob matches now, sorted by name."""
    glob = parse_remote(source.location)
    storage = source_storage(source, source_name)
    with storage.container(glob.container) as container:
        found = [
            RemoteFile(
                url=glob.url(blob.name),
                etag=str(blob.etag),
                modified=blob.last_modified.isoformat() if blob.last_modified else "",
                size=int(blob.size or 0),
            )
            for blob in container.list_blobs(name_starts_with=glob.fixed_prefix or None)
            if glob.matches(blob.name)
        ]
    return sorted(found, key=lambda f: f.url)


def _duckdb_secret_options(source: SourceConfig, source_name: str) -> tuple[str, list[str]]:
    """The options of the DuckDB secret, and the secret values in them (for redaction)."""
    url = account_url_of(source, source_name).rstrip("/")
    if source.sas_token is not None:
        token = _env_value(source.sas_token.env, source_name, "sas_token").lstrip("?")
        text = f"BlobEndpoint={url};SharedAccessSignature={token}"
        return f"CONNECTION_STRING {quote_literal(text)}", [token]
    account = account_name_from_url(url) or ""
    if source.account_key is not None:
        key = _env_value(source.account_key.env, source_name, "account_key")
        protocol = "https" if url.startswith("https://") else "http"
        text = (
            f"DefaultEndpointsProtocol={protocol};AccountName={account};AccountKey={key};"
            f"BlobEndpoint={url}"
        )
        return f"CONNECTION_STRING {quote_literal(text)}", [key]
    return f"PROVIDER credential_chain, ACCOUNT_NAME {quote_literal(account)}", []


def attach_remote(
    con: duckdb.DuckDBPyConnection, name: str, source: SourceConfig, reader: str
) -> list[str]:
    """A temp view `name` over the blobs the source matches now; returns their URLs (the
    only remote paths the sandbox will let this connection read)."""
    glob = parse_remote(source.location)
    files = [f.url for f in list_remote(source, name)]
    options, secrets = _duckdb_secret_options(source, name)
    folder = install_extensions(["azure"])
    try:
        con.execute(f"SET extension_directory = {quote_literal(str(folder))}")
        con.execute("LOAD azure")
        con.execute(
            f"CREATE OR REPLACE TEMPORARY SECRET {quote_ident_secret(name)} "
            f"(TYPE azure, {options}, SCOPE {quote_literal(glob.base)})"
        )
    except duckdb.Error as error:
        text = redact(str(error))
        for secret in secrets:
            text = text.replace(secret, "***")
        raise WarehouseConfigError(f"source '{name}': cannot read {glob.base}: {text}") from None
    listed = (
        f"[{', '.join(quote_literal(f) for f in files)}]"
        if files
        else quote_literal(source.location)
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {quote_ident(name)} AS SELECT * FROM {reader}({listed})"
    )
    return files


def quote_ident_secret(name: str) -> str:
    return quote_ident(f"azexport_source_{name}")
