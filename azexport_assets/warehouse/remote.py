"""Parquet/CSV sources in Azure Blob Storage (`az://<container>/<glob>`, `abfss://...`).

A remote source is read by DuckDB's azure extension with a temporary secret scoped to its
container, built from the source's own credential (SAS token, account key or the machine's
identity), read from the environment at run time only: the secret lives in the step's
in-memory DuckDB and is never written anywhere. The files are listed with the Azure SDK
(name, ETag, last modification), so the view reads exactly the blobs that matched when the
step opened the warehouse, the sandbox grants exactly those URLs, and the same listing is
the source's fingerprint for the on-change sensors and for skipping unchanged models.

An `abfss://<container>@<account>.dfs.core.windows.net/<glob>` source (a Data Lake Storage
Gen2 account) is read through the account's *blob* endpoint, as destinations are: a Gen2
account serves the same files as blobs, so the source becomes `az://<container>/<glob>` read
with its `account_url` (a `.dfs.` endpoint there is taken as the `.blob.` one), and follows
the az:// path exactly: same listing, same DuckDB secret, same sandbox grants, same
fingerprints. Only the account the URL names is checked against `account_url`.

The azure extension exists offline only as a wheel for DuckDB 1.5.5 (the `lake` extra);
elsewhere it comes from `$AZEXPORT_DUCKDB_EXTENSIONS` or DuckDB's repository (see
`extensions`), and a missing one fails the step saying so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from azexport_assets.sql_text import quote_ident, quote_literal
from azexport_assets.storage.resource import BlobStorage, account_name_from_url
from azexport_assets.warehouse.base import WarehouseConfigError
from azexport_assets.warehouse.extensions import install_extensions
from azexport_assets.warehouse.settings import without_secrets

if TYPE_CHECKING:
    from azexport_assets.config import SourceConfig

REMOTE_SCHEMES = ("az://", "azure://", "abfss://")


def is_remote(location: str) -> bool:
    return location.startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class RemoteGlob:
    """'az://crm/out/*.parquet': base 'az://crm/', container 'crm', pattern 'out/*.parquet'.
    'abfss://crm@acct.dfs.core.windows.net/out/*.parquet' is the same, with account 'acct'."""

    base: str  # the URL up to and including the container: what DuckDB reads
    container: str
    pattern: str  # the blob-name glob inside the container
    account: str | None = None  # the storage account an abfss:// URL names

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


_ABFSS = re.compile(
    r"abfss://(?P<container>[^@/]+)@(?P<account>[a-z0-9]+)\.dfs\.[^/?#]+/(?P<pattern>[^?#]*)"
)


def parse_remote(location: str) -> RemoteGlob:
    if location.startswith("abfss://"):
        match = _ABFSS.fullmatch(location)
        if match is None or not match["pattern"]:
            raise WarehouseConfigError(
                f"'{location}' names no blobs: write abfss://<container>@<account>.dfs.core."
                "windows.net/<path or glob>"
            )
        # Read through the blob endpoint (module docstring): az://<container>/<glob>.
        return RemoteGlob(
            base=f"az://{match['container']}/",
            container=match["container"],
            pattern=match["pattern"],
            account=match["account"],
        )
    scheme, _, rest = location.partition("://")
    authority, _, pattern = rest.partition("/")
    container = authority
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
    """The blob endpoint the source is read through: its account_url, a Data Lake (`.dfs.`)
    endpoint taken as the account's blob endpoint; for an abfss:// source, of the account
    the URL names."""
    url = source.account_url
    if url is None:
        raise WarehouseConfigError(f"source '{source_name}' in Azure has no account_url")
    url = url if isinstance(url, str) else _env_value(url.env, source_name, "account_url")
    url = re.sub(r"^(https?://[a-z0-9]+)\.dfs\.", r"\1.blob.", url.rstrip("/"))
    glob = parse_remote(source.location)
    named = account_name_from_url(url)
    if glob.account is not None and named is not None and named != glob.account:
        raise WarehouseConfigError(
            f"source '{source_name}': {source.location} is in account '{glob.account}' but "
            f"account_url is of account '{named}'; give account_url "
            f"https://{glob.account}.blob.core.windows.net (abfss:// is read through the blob "
            "endpoint)"
        )
    return url


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
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: SourceConfig,
    create_view: Callable[[duckdb.DuckDBPyConnection, str, SourceConfig, str], None],
) -> list[str]:
    """A temp view `name` over the blobs the source matches now (made by `create_view`, as
    for local files); returns their URLs (the only remote paths the sandbox will let this
    connection read)."""
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
        text = without_secrets(str(error), secrets)
        raise WarehouseConfigError(f"source '{name}': cannot read {glob.base}: {text}") from None
    listed = (
        f"[{', '.join(quote_literal(f) for f in files)}]"
        if files
        else quote_literal(glob.url(glob.pattern))
    )
    create_view(con, name, source, listed)
    return files


def quote_ident_secret(name: str) -> str:
    return quote_ident(f"azexport_source_{name}")
