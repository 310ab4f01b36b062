"""The storage layer: local files -> committed Azure blobs, safely.

    storage = BlobStorage(account_url, credential_type="sas", secret=token)
    with storage.container("exports") as container:
        preflight(container)
        blob = upload_file(container, "crm/2025-04-14_export.csv", path, content_type="text/csv")

See docs/storage.md for retries, atomicity, preflight and how secrets are kept out of logs.
"""

from azexport_assets.storage.blobs import (
    BlobProperties,
    UploadedBlob,
    delete_blobs,
    list_blob_names,
    list_blob_names_if_permitted,
    upload_bytes,
    upload_file,
)
from azexport_assets.storage.errors import StorageError
from azexport_assets.storage.preflight import preflight
from azexport_assets.storage.resource import (
    BlobStorage,
    CappedExponentialRetry,
    ExportContainerClient,
    TransferSettings,
)
from azexport_assets.storage.secrets import redact, sas_expiry, strip_query

__all__ = [
    "BlobProperties",
    "BlobStorage",
    "CappedExponentialRetry",
    "ExportContainerClient",
    "StorageError",
    "TransferSettings",
    "UploadedBlob",
    "delete_blobs",
    "list_blob_names",
    "list_blob_names_if_permitted",
    "preflight",
    "redact",
    "sas_expiry",
    "strip_query",
    "upload_bytes",
    "upload_file",
]
