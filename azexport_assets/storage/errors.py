"""Turn Azure SDK exceptions into one-line, secret-free `StorageError`s that say what to do,
and tell permanent failures (retrying cannot help) from transient ones."""

from __future__ import annotations

import re
import socket
from datetime import datetime, timezone

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient

from azexport_assets.storage.secrets import parse_sas_time, redact, sas_fields, strip_query

# The SAS permissions an export needs: create (c) and write (w) blobs and block lists.
NEEDED_PERMISSIONS = "cw"
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# getaddrinfo's definite "this name does not exist" answers (EAI_AGAIN, a DNS hiccup, is not).
_NO_SUCH_HOST = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


class StorageError(RuntimeError):
    """One-line, user-facing: what failed and what to do. Never contains a secret (SAS/key/sig),
    never a URL query string."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(" ".join(message.split())))


# What a secret the SDK cannot sign with means, per way of signing in (storage.resource's
# SIGN_IN_NAMES): one missing character, or a whole URL where a token was expected.
MALFORMED_SECRET_ADVICE = {
    "the account key": (
        "the destination's account key variable must hold key1 or key2 of the storage "
        "account's Access keys, whole (base64, 88 characters)"
    ),
    "a SAS token": (
        "the destination's SAS token variable must hold the token alone (sv=...&sig=...), "
        "not a URL: for a container SAS URL use `sas_url:` instead of `sas_token:`"
    ),
}


def container_label(container: ContainerClient) -> str:
    """ "container 'x' at https://acct.blob.core.windows.net" (no query string)."""
    account = strip_query(container.primary_endpoint).rsplit("/", 1)[0]
    return f"container '{container.container_name}' at {account}"


def credential_kind(container: ContainerClient) -> str:
    """'sas', 'key', 'identity' or 'anonymous', judged from the client itself."""
    if sas_fields(container.url).get("sig"):
        return "sas"
    credential = container.credential
    if hasattr(credential, "account_key") or hasattr(credential, "account_name"):
        return "key"
    if hasattr(credential, "get_token"):
        return "identity"
    if credential is not None and hasattr(credential, "signature"):  # AzureSasCredential
        return "sas"
    return "anonymous"


def short_reason(error: BaseException, limit: int = 200) -> str:
    """The first meaningful line of an exception, redacted, without object reprs."""
    text = redact(str(getattr(error, "message", None) or error))
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(error).__name__)
    line = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>:?\s*", "", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def permanent_status(status: int) -> bool:
    """True for an HTTP status a retry cannot change: every 4xx except 408 (timeout) and 429
    (throttled), and 501/505. Other 5xx are the service's own trouble and worth retrying."""
    return (400 <= status < 500 and status not in (408, 429)) or status in (501, 505)


def _causes(error: BaseException) -> list[BaseException]:
    """`error` and what it wraps: SDK `inner_exception`, `__cause__`/`__context__`, urllib3's
    `reason`, requests' first argument."""
    found: list[BaseException] = []
    todo: list[object] = [error]
    while todo and len(found) < 20:
        item = todo.pop()
        if not isinstance(item, BaseException) or any(item is f for f in found):
            continue
        found.append(item)
        args = getattr(item, "args", ())
        todo.extend(
            [
                getattr(item, "inner_exception", None),
                item.__cause__,
                item.__context__,
                getattr(item, "reason", None),
                args[0] if args else None,
            ]
        )
    return found


def host_not_found(error: BaseException) -> bool:
    """True when a connection failed because DNS says the host name does not exist (a wrong
    account name in account_url), as opposed to a temporary lookup or network failure."""
    return any(
        isinstance(cause, socket.gaierror) and cause.errno in _NO_SUCH_HOST
        for cause in _causes(error)
    )


def permanent_failure(error: BaseException | None = None, status: int | None = None) -> bool:
    """True when retrying the request cannot succeed, so it must fail at once:

    - an HTTP answer with a permanent status (`permanent_status`): expired / read-only /
      rejected SAS, bad account key, missing permission (401/403), unknown container or
      account (404), bad request (400), conflict (409)...;
    - no Azure identity token (`ClientAuthenticationError`, e.g. no managed identity);
    - the account host does not exist (DNS).

    Timeouts, connection resets/refusals, 408, 429 and other 5xx are transient.
    """
    if status is not None and permanent_status(status):
        return True
    if error is None:
        return False
    if isinstance(error, ClientAuthenticationError) and getattr(error, "status_code", None) is None:
        return True  # raised by the credential itself, before any request went out
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        return permanent_status(error.status_code)
    return isinstance(error, ServiceRequestError) and host_not_found(error)


def error_code(error: BaseException) -> str:
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _sas_time_problem(container: ContainerClient) -> str | None:
    fields = sas_fields(container.url)
    now = datetime.now(timezone.utc)
    expiry, start = parse_sas_time(fields.get("se")), parse_sas_time(fields.get("st"))
    if expiry and expiry <= now:
        return f"the SAS token expired at {expiry:%Y-%m-%d %H:%M} UTC"
    if start and start > now:
        return f"the SAS token is not valid before {start:%Y-%m-%d %H:%M} UTC"
    return None


def auth_message(container: ContainerClient, error: HttpResponseError, action: str) -> str:
    """Explain a 401/403: expired SAS, missing permission or rejected credential."""
    where, code, kind = container_label(container), error_code(error), credential_kind(container)
    new_sas = (
        f"generate a new SAS token for container '{container.container_name}' with at least "
        f"'{NEEDED_PERMISSIONS[0]}' and '{NEEDED_PERMISSIONS[1]}' permissions and update the secret"
    )
    if kind == "sas":
        problem = _sas_time_problem(container)
        if problem:
            return f"{action} failed: authentication failed: {problem} ({where}); {new_sas}"
    if code in ("AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch"):
        if kind == "sas":
            granted = sas_fields(container.url).get("sp", "")
            missing = [p for p in NEEDED_PERMISSIONS if p not in granted]
            if granted and missing:
                need = " and ".join(f"'{p}'" for p in missing)
                return (
                    f"{action} failed: permission missing: the SAS token needs {need} "
                    f"(it grants '{granted}') on {where}; {new_sas} (add 'd' so reruns can "
                    "clean up)"
                )
            if code == "AuthorizationResourceTypeMismatch":
                return (
                    f"{action} failed: permission missing: the account SAS must allow resource "
                    f"type 'o' (objects) and 'c'+'w' permissions on {where}; {new_sas}"
                )
            return (
                f"{action} failed: permission missing: the SAS token may not write to {where}; "
                f"{new_sas}"
            )
        if kind == "identity":
            return (
                f"{action} failed: permission missing: the identity has no write access to "
                f"{where}; grant it the 'Storage Blob Data Contributor' role on the container "
                "('Storage Blob Data Owner' when the activation sets blob index tags)"
            )
        return (
            f"{action} failed: permission missing: the credential may not write to {where} ({code})"
        )
    if code == "AuthorizationServiceMismatch":
        return (
            f"{action} failed: the SAS token is not valid for the Blob service ({where}); {new_sas}"
        )
    # AuthenticationFailed (Azure), AuthorizationFailure (Azurite, or an Azure firewall rule), ...
    label = code or f"HTTP {error.status_code}"
    if kind == "sas":
        return (
            f"{action} failed: authentication failed ({label}): the SAS token was rejected "
            f"(signature for another account/container, revoked, or a firewall rule blocks this "
            f"client) at {where}; {new_sas}"
        )
    if kind == "key":
        return (
            f"{action} failed: authentication failed ({label}): the account key was rejected at "
            f"{where}; use the current key1/key2 of this storage account"
        )
    if kind == "identity":
        return (
            f"{action} failed: authentication failed ({label}) for the Azure identity at {where}; "
            "check the identity's role assignment and the account's network rules"
        )
    return (
        f"{action} failed: anonymous access is not allowed ({label}) at {where}; "
        "configure a credential"
    )


def storage_error(container: ContainerClient, error: BaseException, action: str) -> StorageError:
    """Classify `error` (raised while doing `action`, e.g. "uploading blob 'a.csv'")."""
    where = container_label(container)
    if isinstance(error, StorageError):
        return error
    if isinstance(error, HttpResponseError) and error.status_code is not None:
        status, code = error.status_code, error_code(error)
        if status in (401, 403):
            return StorageError(auth_message(container, error, action))
        if code == "ContainerNotFound":
            return StorageError(
                f"{action} failed: {where} does not exist; create it or fix the destination's "
                "'container'"
            )
        if status == 404 and code in ("ResourceNotFound", ""):
            hint = "account or container not found" if code else "no Azure Blob service answered"
            return StorageError(
                f"{action} failed: {hint} (HTTP 404) for {where}; check the destination's "
                "account_url (e.g. https://<account>.blob.core.windows.net) and 'container'"
            )
        if status in TRANSIENT_STATUSES:
            return StorageError(
                f"{action} failed after retries: the storage service kept answering HTTP {status}"
                f"{' ' + code if code else ''} (busy, throttled or unavailable) at {where}; "
                "nothing was committed - rerun later or raise max_retries"
            )
        if code == "Md5Mismatch":
            return StorageError(
                f"{action} failed: the service received corrupted data (Md5Mismatch); "
                "rerun the export"
            )
        return StorageError(
            f"{action} failed: HTTP {status}{' ' + code if code else ''}: {short_reason(error)} "
            f"({where})"
        )
    if isinstance(error, ClientAuthenticationError) or type(error).__name__.endswith(
        "CredentialUnavailableError"
    ):
        sign_in = getattr(container, "sign_in", "")
        if sign_in in MALFORMED_SECRET_ADVICE:
            # The SDK could not even sign a request with the secret (not base64): no token is
            # involved, and the advice is about the value the variable holds.
            return StorageError(
                f"{action} failed: {sign_in} was not accepted ({short_reason(error)}); "
                + MALFORMED_SECRET_ADVICE[sign_in]
            )
        if sign_in == "a service principal":
            advice = (
                "check the service principal's tenant_id, client_id and client_secret (or "
                "certificate), and its authority_host if it has one"
            )
        else:
            advice = (
                "check the managed or workload identity / az login / AZURE_* environment, or "
                "the service principal's tenant, client id and secret or certificate"
            )
        return StorageError(
            f"{action} failed: could not get an Azure identity token ({short_reason(error)}); "
            + advice
        )
    if isinstance(error, ServiceRequestError) and host_not_found(error):
        return StorageError(
            f"{action} failed: account not found: the host of {where} does not exist (DNS); "
            "check the storage account name in the destination's account_url"
        )
    if isinstance(error, ServiceRequestError):
        return StorageError(
            f"{action} failed: account unreachable: cannot connect to {where} "
            f"({short_reason(error)}); check the destination's account_url and the network"
        )
    if isinstance(error, ServiceResponseError):
        return StorageError(
            f"{action} failed after retries: the connection to {where} failed or timed out "
            f"({short_reason(error)}); nothing was committed - rerun later"
        )
    if isinstance(error, AzureError):
        return StorageError(f"{action} failed: {short_reason(error)} ({where})")
    if isinstance(error, OSError):
        return StorageError(f"{action} failed: cannot read the local file: {short_reason(error)}")
    return StorageError(f"{action} failed: {type(error).__name__}: {short_reason(error)}")
