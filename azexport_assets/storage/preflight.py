"""Check, before writing anything, that the container exists and the credential may write."""

from __future__ import annotations

import base64

from azure.core.exceptions import AzureError
from azure.storage.blob import ContainerClient

from azexport_assets.storage.errors import StorageError, container_label, storage_error
from azexport_assets.storage.secrets import sas_fields

# Staging an *uncommitted* block is a real write (it needs the 'w' permission) that nobody can
# see: uncommitted blocks are not listed, not readable, and the service discards them. A fixed
# name and block id mean repeated preflights overwrite the same invisible block.
PROBE_BLOB = ".azexport-preflight"
PROBE_BLOCK_ID = "azexport-preflight"


def preflight(container: ContainerClient, tags: bool = False) -> None:
    """Raise `StorageError` unless `container` exists and the credential can create/write blobs
    (and, with `tags`, set blob index tags: a SAS must grant 't').

    One request: Put Block of one byte on `PROBE_BLOB`, never committed, so nothing appears in
    the container. The one-line error says which problem it is: container not found,
    authentication failed (SAS expired / not yet valid / rejected), permission missing (which
    SAS permissions are needed) or account unreachable (URL / network).
    """
    failure: StorageError | None = None
    try:
        container.get_blob_client(PROBE_BLOB).stage_block(
            PROBE_BLOCK_ID,
            b"\0",
            length=1,
            # A wrong host or port should fail fast, not after the full retry schedule.
            retry_connect=1,
        )
    except AzureError as error:
        failure = storage_error(container, error, _action(container))
    if failure is None:
        failure = _overwrite_permission_problem(container)
    if failure is None and tags:
        failure = _tag_permission_problem(container)
    if failure is not None:
        failure.__context__ = failure.__cause__ = None  # the SDK's text may carry request URLs
        raise failure


def _action(container: ContainerClient) -> str:
    """'preflight (checking write access, signed in with a connection string)'."""
    sign_in = getattr(container, "sign_in", "")
    return f"preflight (checking write access{', signed in with ' + sign_in if sign_in else ''})"


def _overwrite_permission_problem(container: ContainerClient) -> StorageError | None:
    """Azure lets a SAS with 'c' but no 'w' stage blocks of a *new* blob, but an export also
    overwrites blobs (reruns, fixed names), which needs 'w': say so now, not mid-export."""
    granted = sas_fields(container.url).get("sp")
    if granted is None or "w" in granted:
        return None  # no SAS, or a stored access policy ('si') decides: the probe was the test
    return StorageError(
        f"{_action(container)} failed: permission missing: the SAS token needs 'w' "
        f"(it grants '{granted}') to overwrite blobs in {container_label(container)}; generate "
        "a new SAS token with at least 'c' and 'w' permissions and update the secret"
    )


def _tag_permission_problem(container: ContainerClient) -> StorageError | None:
    """Blob index tags set on upload need the SAS permission 't' (Azure answers 403 at the
    first commit otherwise; the storage emulator does not check it)."""
    granted = sas_fields(container.url).get("sp")
    if granted is None or "t" in granted:
        return None
    return StorageError(
        f"{_action(container)} failed: permission missing: the SAS token needs 't' "
        f"(it grants '{granted}') to set blob index tags (blob_properties.tags) in "
        f"{container_label(container)}; generate a new SAS token with 'c', 'w' and 't' "
        "permissions and update the secret, or remove the tags"
    )


def probe_block_id_b64() -> str:
    """The probe's block id as the service lists it (base64), for tests and diagnostics."""
    return base64.b64encode(PROBE_BLOCK_ID.encode()).decode()
