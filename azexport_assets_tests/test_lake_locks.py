"""The lake's activation lock is a Postgres advisory lock: it holds across processes (and so
across machines that reach the catalog), names its holder, and dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from azexport_assets.warehouse import LakeWarehouse, open_warehouse
from azexport_assets_tests.lake_kit import PostgresServer, postgres, use_lake  # noqa: F401

pytestmark = pytest.mark.lake

TAKE_AND_REPORT = textwrap.dedent(
    """
    import sys, time
    from azexport_assets.warehouse import ActivationBusyError, open_warehouse

    lock = open_warehouse(lock_timeout=float(sys.argv[2])).activation_lock(sys.argv[1], "run child")
    try:
        lock.acquire()
    except ActivationBusyError as error:
        print("busy:", error, flush=True)
        raise SystemExit(3)
    print("acquired", flush=True)
    if len(sys.argv) > 3:
        time.sleep(float(sys.argv[3]))
    lock.release()
    """
)


@pytest.fixture
def lake(postgres: PostgresServer, monkeypatch, tmp_path) -> LakeWarehouse:  # noqa: F811
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    warehouse = open_warehouse(lock_timeout=0.5)
    assert isinstance(warehouse, LakeWarehouse)
    return warehouse


def child(activation: str, timeout: float, hold: float | None = None) -> subprocess.Popen:
    args = [sys.executable, "-c", TAKE_AND_REPORT, activation, str(timeout)]
    return subprocess.Popen(
        args + ([str(hold)] if hold is not None else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_another_process_waits_for_the_same_activation_only(lake: LakeWarehouse):
    lock = lake.activation_lock("crm", holder="run 1234abcd")
    lock.acquire()
    try:
        busy = child("crm", timeout=0.5)
        out, err = busy.communicate(timeout=60)
        assert busy.returncode == 3, err
        assert "another run of this activation (azexport run 1234abcd crm" in out
        other = child("billing", timeout=0.5)  # another activation: not blocked
        out, err = other.communicate(timeout=60)
        assert other.returncode == 0 and "acquired" in out, err
    finally:
        lock.release()
    after = child("crm", timeout=0.5)
    out, err = after.communicate(timeout=60)
    assert after.returncode == 0 and "acquired" in out, err


def test_a_waiting_run_gets_the_lock_when_the_holder_finishes(lake: LakeWarehouse):
    holder = child("crm", timeout=5, hold=1.5)
    assert holder.stdout.readline().strip() == "acquired"
    started = time.monotonic()
    waiter = lake.activation_lock("crm", holder="run waiter")
    waiter.timeout = 30
    waiter.acquire()  # waits until the child releases
    waited = time.monotonic() - started
    waiter.release()
    holder.communicate(timeout=60)
    assert 0.5 < waited < 30


def test_the_lock_dies_with_its_process(lake: LakeWarehouse):
    holder = child("crm", timeout=5, hold=600)
    assert holder.stdout.readline().strip() == "acquired"
    os.kill(holder.pid, signal.SIGKILL)  # no release: Postgres ends the session
    holder.wait(timeout=30)
    lock = lake.activation_lock("crm", holder="run next")
    lock.timeout = 30
    lock.acquire()
    lock.release()


def test_acquire_is_idempotent_for_its_holder(lake: LakeWarehouse):
    first = lake.activation_lock("crm", holder="run a")
    first.acquire()
    lake.activation_lock("crm", holder="run a").acquire()  # the export step of the same run
    first.release()
    again = child("crm", timeout=0.5)
    out, _ = again.communicate(timeout=60)
    assert "acquired" in out
