"""Keep SAS tokens and account keys out of messages and logs.

Two layers, because neither alone is enough:

* `redact()` removes anything that *looks* like a secret: URL query strings (SAS tokens ride
  in them), `sig=` values, connection-string keys, base64 account keys, `Authorization` values.
* Secrets the resource actually uses are registered with `remember_secret()` and replaced
  literally (also in URL-encoded form), so even an unusual rendering of them is caught.

`secure_sdk_logging()` attaches a redacting filter to the third-party loggers that write request
URLs. urllib3 logs every request line *with the full query string* (the SAS signature in clear)
at DEBUG; azure-core's HTTP logging policy redacts query values but logs every request at INFO,
so we raise that logger to WARNING unless the user configured it explicitly.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, unquote

REDACTED = "<redacted>"

# Query-string fields of Azure SAS tokens (service, account and user-delegation SAS).
SAS_FIELDS = frozenset(
    {
        *("sig", "se", "st", "sp", "sv", "sr", "spr", "sip", "si", "ss", "srt", "ses", "sdd"),
        *("skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid"),
        *("rscc", "rscd", "rsce", "rscl", "rsct"),
    }
)

_known: set[str] = set()
_known_lock = threading.Lock()

# A query string: '?' followed by key=value pairs, up to whitespace or a quote/bracket.
_QUERY = re.compile(r"\?(?=[A-Za-z0-9_.%-]+=)[^\s'\"<>#)]*")
# A bare SAS token (no '?'): any run of non-space characters that contains 'sig='.
_BARE_SAS = re.compile(r"[^\s'\"<>(]*\bsig=[^\s'\"<>)]*")
_CONN_STRING_SECRETS = re.compile(r"(?i)\b(AccountKey|SharedAccessSignature)=[^;\s'\"]+")
_AUTH_HEADER = re.compile(r"(?i)\b(SharedKey(?:Lite)?|Bearer)\s+[^\s'\",]+")
# A 512-bit storage account key is 88 base64 characters ending in '=='.
_ACCOUNT_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==")


def remember_secret(secret: str | None) -> None:
    """Register a secret value so `redact()` removes it literally wherever it appears."""
    if not secret or len(secret) < 8:  # too short to be a real secret; would redact noise
        return
    forms = {secret, secret.lstrip("?"), quote(secret, safe=""), unquote(secret)}
    sig = sas_fields(secret).get("sig")
    if sig:
        forms |= {sig, quote(sig, safe=""), quote(sig, safe="/")}
    with _known_lock:
        _known.update(f for f in forms if len(f) >= 8)


def redact(text: str) -> str:
    """Remove query strings, SAS fields, account keys and registered secrets from `text`."""
    if not text:
        return text
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)  # longest first: a token before its sig
    for secret in known:
        text = text.replace(secret, REDACTED)
    text = _QUERY.sub("", text)
    text = _BARE_SAS.sub(REDACTED, text)
    text = _CONN_STRING_SECRETS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _ACCOUNT_KEY.sub(REDACTED, text)


def strip_query(url: str) -> str:
    """A URL without its query string or fragment (what may be shown and stored)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def sas_fields(token: str | None) -> dict[str, str]:
    """The SAS fields of a token or of a URL carrying one: {'se': ..., 'sp': ..., ...}."""
    if not token:
        return {}
    query = token.split("?", 1)[1] if "?" in token else token
    parsed = parse_qs(query, keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items() if k in SAS_FIELDS and v}


def parse_sas_time(value: str | None) -> datetime | None:
    """An ISO 8601 SAS time ('2025-04-14', '2025-04-14T06:00:00Z', with fractions) in UTC."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    # Azure allows 7 fractional digits; Python's parser wants at most 6.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:  # SAS times are UTC by definition
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def sas_expiry(token: str) -> datetime | None:
    """The `se` (signed expiry) of a SAS token as an aware UTC datetime; None if absent/invalid."""
    return parse_sas_time(sas_fields(token).get("se"))


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message (and formatted traceback) through `redact()`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is not ours to fix; leave it alone
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


# Loggers known to write request URLs (with query strings) or exception texts carrying them.
URL_LOGGERS = (
    "urllib3.connectionpool",
    "azure.core.pipeline.policies.http_logging_policy",
    "azure.core.pipeline.transport._requests_basic",
    "azure.storage.blob._shared.policies",
    "azexport_assets.storage",
)
HTTP_LOGGING_POLICY_LOGGER = "azure.core.pipeline.policies.http_logging_policy"

_installed = False


def secure_sdk_logging() -> None:
    """Idempotently attach `RedactingFilter` to `URL_LOGGERS`; quiet the per-request logger."""
    global _installed
    if _installed:
        return
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())
    http_logger = logging.getLogger(HTTP_LOGGING_POLICY_LOGGER)
    if http_logger.level == logging.NOTSET:
        http_logger.setLevel(logging.WARNING)
    _installed = True
