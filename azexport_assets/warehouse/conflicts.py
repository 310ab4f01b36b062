"""Commit conflicts between concurrent writers, and a bounded retry around a transaction.

The DuckDB file backend never sees one (one writer at a time holds the file). DuckLake lets
many processes write at once and checks at COMMIT: two writers that touch the same table in
incompatible ways (both replace it, both delete from it, both create one schema) get
"Transaction conflict" for the second commit. The whole transaction is then run again, from
a fresh read of the catalog, a few times with a growing, jittered delay.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

T = TypeVar("T")

CONFLICT_ATTEMPTS = 10
_FIRST_DELAY = 0.05
_MAX_DELAY = 2.0

# Messages of DuckLake's commit conflicts (TransactionException) and of Postgres
# serialization failures that reach us through the catalog connection.
_CONFLICT_MARKERS = (
    "transaction conflict",
    "could not serialize access",
    "deadlock detected",
    "duplicate key value violates unique constraint",
)


def is_conflict(error: BaseException) -> bool:
    """True for an error that another writer's commit caused (retrying may succeed)."""
    if not isinstance(error, duckdb.Error):
        return False
    text = str(error).lower()
    return any(marker in text for marker in _CONFLICT_MARKERS)


def retry_on_conflict(
    action: Callable[[], T],
    attempts: int = CONFLICT_ATTEMPTS,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `action` (a whole transaction), again after a commit conflict, `attempts` times.

    `action` must be safe to repeat: it is rolled back when it fails, so it starts over from
    the current state. Other errors, and the last conflict, are raised unchanged.
    """
    delay = _FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except duckdb.Error as error:
            if attempt == attempts or not is_conflict(error):
                raise
            if on_retry is not None:
                on_retry(attempt, error)
            # Jitter: writers that conflicted once should not meet again at the same moment.
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _MAX_DELAY)
    raise AssertionError("unreachable")
