"""Retrying warehouse work that failed for a reason that may pass: commit conflicts between
concurrent writers, and transient faults of the lake's services.

- **Commit conflicts.** The DuckDB file backend never sees one (one writer at a time holds
  the file). DuckLake lets many processes write at once and checks at COMMIT: two writers that
  touch the same table in incompatible ways get "Transaction conflict" for the second commit.
  The whole transaction is run again on the same connection, from a fresh read of the catalog
  (`retry_on_conflict`), a few times with a short, growing, jittered delay.
- **Transient faults** (`retry_transient`): the catalog's Postgres connection dropped or
  refused, or an `az://` read or write of the lake's data failed on the network or with a
  5xx/throttling answer after the azure extension's own retries. The connection is then
  unusable, so the whole unit of work is run again from opening a connection, with a longer
  exponential backoff. Every unit retried this way is one transaction or a step's read that
  writes nothing to the lake, so running it again from the current state is safe; a COMMIT
  whose answer was lost is detected by the next attempt (`commit_baseline` finds the change
  set committed and does nothing).

Every retry is reported, with its cause (secrets removed), to the reporter installed with
`reporting_retries` (a run's log), else to the Python logger `azexport.warehouse`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import duckdb

from azexport_assets.warehouse.settings import redact

T = TypeVar("T")

CONFLICT_ATTEMPTS = 10
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0

# Transient faults: 6 attempts, 1 + 2 + 4 + 8 + 16 s apart (about half a minute in all).
TRANSIENT_ATTEMPTS = 6
TRANSIENT_FIRST_DELAY = 1.0
TRANSIENT_MAX_DELAY = 30.0

# Messages of DuckLake's commit conflicts (TransactionException) and of Postgres
# serialization failures that reach us through the catalog connection.
_CONFLICT_MARKERS = (
    "transaction conflict",
    "could not serialize access",
    "deadlock detected",
    "duplicate key value violates unique constraint",
)

# Messages of faults that may pass: the catalog connection (libpq, DuckDB's postgres
# extension) and the lake's data in Azure (the azure extension: curl errors, HTTP statuses).
_TRANSIENT_MARKERS = (
    # Postgres catalog
    "server closed the connection unexpectedly",
    "unable to connect to postgres",
    "connection already closed",
    "connection refused",
    "connection reset",
    "connection timed out",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "could not receive data from server",
    "could not send data to server",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "no connection to the server",
    "failed to commit: failed to execute query",  # the catalog went away during COMMIT
    # Azure data (azure extension)
    "connection was closed by the server",
    "error while reading from network socket",
    "failure when receiving data from the peer",
    "failure when sending data to the peer",
    "couldn't connect to server",
    "timeout was reached",
    "curle code",
    "'serverbusy'",
    "'internalerror'",
    "'operationtimedout'",
    "service unavailable",
    "internal server error",
    "too many requests",
    "gateway timeout",
    "bad gateway",
)

_reporter: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "azexport_retry_reporter", default=None
)
_logger = logging.getLogger("azexport.warehouse")


@contextlib.contextmanager
def reporting_retries(report: Callable[[str], None]) -> Iterator[None]:
    """Send every retry message of this thread (and what it starts) to `report` meanwhile."""
    token = _reporter.set(report)
    try:
        yield
    finally:
        _reporter.reset(token)


def report_retry(message: str) -> None:
    report = _reporter.get()
    if report is not None:
        report(message)
    else:
        _logger.warning(message)


def describe_error(error: BaseException) -> str:
    """The error's first line, without secrets (inline passwords, Azure keys, signatures)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return redact(f"{type(error).__name__}: {first}")[:500]


def is_conflict(error: BaseException) -> bool:
    """True for an error that another writer's commit caused (retrying may succeed)."""
    if not isinstance(error, duckdb.Error):
        return False
    text = str(error).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)


def is_transient(error: BaseException) -> bool:
    """True for a fault of the catalog's connection or of the lake's storage that may pass."""
    if isinstance(error, TransientLakeError):
        return True
    if not isinstance(error, duckdb.Error) or is_conflict(error):
        return False
    text = str(error).lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class TransientLakeError(RuntimeError):
    """A transient fault, wrapped by a layer that rewords the error (e.g. opening the lake)."""


def retry_on_conflict(
    action: Callable[[], T],
    attempts: int = CONFLICT_ATTEMPTS,
    on_retry: Callable[[int, BaseException], None] | None = None,
    what: str = "warehouse transaction",
) -> T:
    """Run `action` (a whole transaction), again after a commit conflict, `attempts` times.

    `action` must be safe to repeat: it is rolled back when it fails, so it starts over from
    the current state. Other errors, and the last conflict, are raised unchanged. Each retry
    is reported (see `reporting_retries`) and passed to `on_retry`.
    """
    delay = _FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except duckdb.Error as error:
            if attempt == attempts or not is_conflict(error):
                raise
            # Jitter: writers that conflicted once should not meet again at the same moment.
            wait = delay * (0.5 + random.random())
            report_retry(
                f"{what}: commit conflict with another writer ({describe_error(error)}); "
                f"running it again from the current state (attempt {attempt + 1} of "
                f"{attempts}) in {wait:.2f}s"
            )
            if on_retry is not None:
                on_retry(attempt, error)
            time.sleep(wait)
            delay = min(delay * 2, _MAX_DELAY)
    raise AssertionError("unreachable")


def retry_transient(
    action: Callable[[], T],
    what: str,
    attempts: int = TRANSIENT_ATTEMPTS,
    first_delay: float = TRANSIENT_FIRST_DELAY,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Run `action` (opening a connection and doing one unit of work), again after a transient
    fault (`is_transient`), up to `attempts` times with exponential backoff.

    `before_retry` runs before each new attempt (e.g. to forget a broken shared connection).
    Other errors, and the last transient one, are raised unchanged.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            report_retry(
                f"{what}: transient fault of the lake ({describe_error(error)}); "
                f"retrying (attempt {attempt + 1} of {attempts}) in {delay:.1f}s"
            )
            time.sleep(delay)
            delay = min(delay * 2, TRANSIENT_MAX_DELAY)
            if before_retry is not None:
                before_retry()
    raise AssertionError("unreachable")
