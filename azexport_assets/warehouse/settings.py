"""Which warehouse backend to open, from configuration alone.

`AZEXPORT_WAREHOUSE` (or the `WarehouseResource` field `path`) names either a DuckDB file
(the default, `.azexport/warehouse.duckdb`) or a DuckLake whose catalog is in Postgres:

    AZEXPORT_WAREHOUSE='ducklake:postgres:dbname=azexport host=pg.internal user=azexport'
    AZEXPORT_LAKE_DATA_PATH='az://lake/azexport/'      # or abfss://..., or a shared folder
    PGPASSWORD=...                                     # libpq's own variables, never logged
    AZEXPORT_LAKE_AZURE_CONNECTION_STRING=...          # or AZEXPORT_LAKE_AZURE_ACCOUNT

Secrets come from environment variables only; `redact` removes any that a connection string
carries inline before it reaches a message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from azexport_assets.warehouse.base import WarehouseConfigError

LAKE_PREFIX = "ducklake:"
DATA_PATH_ENV = "AZEXPORT_LAKE_DATA_PATH"
AZURE_CONNECTION_STRING_ENV = "AZEXPORT_LAKE_AZURE_CONNECTION_STRING"
AZURE_ACCOUNT_ENV = "AZEXPORT_LAKE_AZURE_ACCOUNT"

REMOTE_SCHEMES = ("az://", "azure://", "abfss://")

_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"(://[^:/@\s]+:)([^@\s]+)(@)")
# Azure connection strings and SAS tokens: the key and the signature are the secrets.
_AZURE_SECRET = re.compile(r"((?:AccountKey|SharedAccessSignature|sig)=)([^;&\s']+)", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with inline passwords (key=value or URI user:password@) and Azure keys and
    signatures replaced by ***."""
    text = _PASSWORD_KV.sub(r"\1***", text)
    text = _AZURE_SECRET.sub(r"\1***", text)
    return _URI_USERINFO.sub(r"\1***\3", text)


def without_secrets(text: str, secrets: list[str], mask: str = "***") -> str:
    """`text` with each value of `secrets` replaced by `mask` (longest first, so a secret that
    contains another is replaced whole), then `redact`ed."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask)
    return redact(text)


def is_lake(location: str | None) -> bool:
    return bool(location) and str(location).startswith(LAKE_PREFIX)


@dataclass(frozen=True)
class LakeSettings:
    """Where a DuckLake lives: its Postgres catalog and the folder of its data files."""

    conninfo: str  # libpq connection string or URI of the catalog database
    data_path: str  # az://container/prefix/, abfss://..., or an absolute shared folder
    azure_account: str | None = None  # for the credential chain when no connection string

    @property
    def remote(self) -> bool:
        return self.data_path.startswith(REMOTE_SCHEMES)

    @property
    def namespace(self) -> str:
        """The advisory-lock key space: one lake per catalog database, so a constant."""
        return "ducklake"

    def describe(self) -> str:
        return (
            f"DuckLake with its catalog in Postgres ({redact(self.conninfo)}), "
            f"data under {self.data_path}"
        )


def lake_settings(
    location: str,
    data_path: str | None = None,
    where: str = "AZEXPORT_WAREHOUSE",
) -> LakeSettings:
    """Parse 'ducklake:postgres:<conninfo>'; missing parts come from the environment."""
    catalog = location[len(LAKE_PREFIX) :]
    kind, _, conninfo = catalog.partition(":")
    if kind != "postgres" or not conninfo.strip():
        raise WarehouseConfigError(
            f"{where}: a DuckLake warehouse needs its catalog in Postgres, written "
            "'ducklake:postgres:dbname=<db> host=<host> user=<user>' (the password in "
            f"PGPASSWORD); got 'ducklake:{redact(kind)}:...'"
        )
    path = data_path or os.environ.get(DATA_PATH_ENV)
    if not path:
        raise WarehouseConfigError(
            f"{where} names a DuckLake, but its data path is not set: set {DATA_PATH_ENV} to "
            "az://<container>/<prefix>/, abfss://... or a folder every machine shares"
        )
    if not path.startswith(REMOTE_SCHEMES):
        path = os.path.abspath(os.path.expanduser(os.path.expandvars(path)))
    return LakeSettings(
        conninfo=conninfo.strip(),
        data_path=path if path.endswith("/") else path + "/",
        azure_account=os.environ.get(AZURE_ACCOUNT_ENV) or None,
    )
