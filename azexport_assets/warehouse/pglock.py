"""The activation lock across machines: a Postgres advisory lock in the lake's catalog database.

A session-level `pg_try_advisory_lock(key)` is held by one Postgres connection, so it works
for every process and machine that reaches the catalog, and Postgres releases it when that
connection ends: at `release()`, when the process exits or is killed, and (through TCP
keepalives, about a minute) when its machine disappears. The lock's connection is a plain
libpq one (psycopg2) kept open from the delta step to the export's baseline commit; the
DuckDB postgres extension pools its connections, so a session lock taken through it could
be released or held by the wrong session.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, ClassVar

from azexport_assets.warehouse.base import ActivationBusyError

# The libpq keepalive settings: a dead peer is noticed within about 30 + 3 * 10 seconds.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _psycopg2() -> Any:
    try:
        import psycopg2
    except ImportError:  # pragma: no cover - the lake extra installs it
        raise ImportError(
            "the DuckLake warehouse needs psycopg2 for its activation locks: "
            "pip install 'azexport_assets[lake]'"
        ) from None
    return psycopg2


def lock_key(namespace: str, activation: str) -> int:
    """A stable, non-negative 63-bit key for one activation of one lake."""
    digest = hashlib.sha256(f"azexport activation\0{namespace}\0{activation}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class PostgresActivationLock:
    """One run of an activation at a time, across machines (see the module docstring).

    Same contract as the file backend's `ActivationLock`: `acquire()` is idempotent for the
    holder that already has the lock, and replaces a lock an earlier, unfinished run of this
    process left behind.
    """

    _held: ClassVar[dict[tuple[str, int], tuple[Any, str]]] = {}

    def __init__(
        self, conninfo: str, namespace: str, activation: str, timeout: float, holder: str
    ) -> None:
        self.conninfo = conninfo
        self.key = lock_key(namespace, activation)
        self.activation = activation
        self.timeout = timeout
        self.holder = holder

    @property
    def _id(self) -> tuple[str, int]:
        return (self.conninfo, self.key)

    def acquire(self) -> None:
        held = self._held.get(self._id)
        if held is not None:
            if held[1] == self.holder:
                return
            self._release(self._id)
        psycopg2 = _psycopg2()
        # application_name tells a waiting run (and pg_stat_activity) who holds the lock.
        name = f"azexport {self.holder or 'run'} {self.activation}"[:63]
        connection = psycopg2.connect(self.conninfo, application_name=name, **_KEEPALIVES)
        connection.autocommit = True
        try:
            if not self._wait(connection):
                running = self._current_holder(connection)
                raise ActivationBusyError(
                    f"another run of this activation ({running}) is still exporting; waited "
                    f"{self.timeout:.0f}s. Let it finish (or stop it) and run again; nothing "
                    "was exported by this run"
                )
        except BaseException:
            connection.close()
            raise
        self._held[self._id] = (connection, self.holder)

    def _wait(self, connection: Any) -> bool:
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
                if cursor.fetchone()[0]:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _current_holder(self, connection: Any) -> str:
        # A bigint advisory key shows in pg_locks as classid (high half) and objid (low half).
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT a.application_name, a.client_addr::text FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.objsubid = 1 "
                "AND (l.classid::bigint << 32) + l.objid::bigint = %s",
                [self.key],
            )
            row = cursor.fetchone()
        if row is None:
            return "another process"
        name, address = row
        return f"{name or 'unnamed session'} from {address or 'the catalog host'}"

    def release(self) -> None:
        held = self._held.get(self._id)
        if held is not None and held[1] == self.holder:
            self._release(self._id)

    @classmethod
    def _release(cls, key: tuple[str, int]) -> None:
        connection, _ = cls._held.pop(key)
        try:
            # Closing the session releases every lock it holds; unlock first to be explicit.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock_all()")
        except Exception:  # noqa: BLE001 - a broken connection has released the lock already
            pass
        finally:
            connection.close()
