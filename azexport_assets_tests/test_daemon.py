"""The Dagster daemon on a Postgres-backed instance (deploy/dagster.yaml), with the lake.

Three runs are submitted to the queue: two of activation `a`, one of activation `b`. The
daemon starts the first `a` and the `b` together; the second `a` stays QUEUED until the first
has finished (the per-activation tag limit), then runs. The test keeps the first `a` in
progress by holding the activation's lock, so the order does not depend on timing. Every run
is a real process started by the daemon, writing to a DuckLake and exporting to Azurite.

Every process the test starts is stopped before the Postgres server is: the daemon's code
servers, left alone, outlive it, waiting for heartbeats and for the database, and never end
once it is gone. The test stops the daemon's whole tree (`stop_trees`) and then checks that no
process carrying its DAGSTER_HOME is left.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from azexport_assets.demo.processes import spawn, stop_trees, with_environment
from azexport_assets.warehouse import open_warehouse
from azexport_assets_tests.lake_kit import (  # noqa: F401
    PASSWORD,
    USER,
    PostgresServer,
    postgres,
    use_lake,
)
from azexport_assets_tests.project_kit import ProjectKit

pytestmark = pytest.mark.lake

REPO = Path(__file__).resolve().parents[1]
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  a:
    source: people
    destination: lake
    file_name: a/people
    run_type: full_then_delta
    sync_mode: upsert
  b:
    source: people
    destination: lake
    file_name: b/people
    run_type: full_only
    sync_mode: snapshot
"""

CODE = """
from pathlib import Path

from azexport_assets.components.build import project_definitions

ROOT = Path(__file__).parent
defs = project_definitions(ROOT / "defs", ROOT)
"""

WORKSPACE = """
load_from:
  - python_file:
      relative_path: azexport_location.py
      working_directory: {root}
      location_name: azexport
"""


def bin_of(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@contextlib.contextmanager
def running_daemon(kit: ProjectKit):
    """`dagster-daemon run` on the test's workspace; stopped with everything under it."""
    log = open(kit.root / "daemon.log", "wb")  # noqa: SIM115 (closed below)
    daemon = spawn(
        [bin_of("dagster-daemon"), "run", "-w", str(kit.root / "workspace.yaml")],
        cwd=kit.root,
        env=os.environ.copy(),
        log=log,
    )
    try:
        yield daemon
    finally:
        stop_trees([daemon])
        log.close()


@pytest.fixture
def deployment(
    project: ProjectKit,
    postgres: PostgresServer,  # noqa: F811
    monkeypatch,
    tmp_path,
) -> ProjectKit:
    """The project on a lake, and DAGSTER_HOME holding deploy/dagster.yaml on Postgres."""
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres.port))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", USER)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", PASSWORD)
    monkeypatch.setenv("DAGSTER_PG_DB", postgres.create_database("dagster"))
    project.source_sql(
        "CREATE TABLE people AS SELECT i AS id, 'n' || i AS name FROM range(20) AS r(i)"
    )
    project.write_defs(DEFS)
    (project.root / "azexport_location.py").write_text(CODE)
    (project.root / "workspace.yaml").write_text(WORKSPACE.format(root=project.root))
    return project


def submit(kit: ProjectKit, job: str) -> None:
    """`dagster job launch`: through the instance's run coordinator, i.e. into the queue."""
    done = subprocess.run(
        [bin_of("dagster"), "job", "launch", "-w", str(kit.root / "workspace.yaml"), "-j", job],
        cwd=kit.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_daemon_runs_one_run_per_activation_at_a_time(deployment: ProjectKit):
    kit = deployment
    instance = dg.DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    for job in ("activate_a", "activate_a", "activate_b"):
        submit(kit, job)
    runs = sorted(
        instance.get_runs(), key=lambda r: instance.get_run_record_by_id(r.run_id).create_timestamp
    )
    first_a, second_a, b = (run.run_id for run in runs)
    assert {instance.get_run_by_id(r).status for r in (first_a, second_a, b)} == {
        dg.DagsterRunStatus.QUEUED
    }

    # The test holds activation a's lock, so the first run of `a` stays in progress (its delta
    # step waits) until the test has seen `b` finish alongside it.
    held = open_warehouse().activation_lock("a", holder="test")
    held.acquire()
    while_b_finished = None
    # The daemon, its code servers and any run worker are stopped when the block ends.
    with running_daemon(kit):
        try:
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                statuses = {r: instance.get_run_by_id(r).status for r in (first_a, second_a, b)}
                if while_b_finished is None and statuses[b] in FINISHED:
                    while_b_finished = statuses
                    held.release()
                if all(s in FINISHED for s in statuses.values()):
                    break
                time.sleep(0.2)
        finally:
            held.release()
    left = with_environment("DAGSTER_HOME", os.environ["DAGSTER_HOME"])
    assert not left, f"processes of this test still running: {sorted(left)}"

    # `b` ran and finished while the first `a` was in progress and the second `a` queued.
    assert while_b_finished == {
        first_a: dg.DagsterRunStatus.STARTED,
        second_a: dg.DagsterRunStatus.QUEUED,
        b: dg.DagsterRunStatus.SUCCESS,
    }
    records = {r: instance.get_run_record_by_id(r) for r in (first_a, second_a, b)}
    assert {r: rec.dagster_run.status for r, rec in records.items()} == {
        first_a: dg.DagsterRunStatus.SUCCESS,
        second_a: dg.DagsterRunStatus.SUCCESS,
        b: dg.DagsterRunStatus.SUCCESS,
    }
    # The second run of `a` started only after the first had ended; `b` ended inside the
    # first (which of the two the daemon started first is up to it).
    assert records[second_a].start_time >= records[first_a].end_time
    assert records[first_a].start_time < records[b].end_time < records[first_a].end_time

    expected = [{"id": str(i), "name": f"n{i}"} for i in range(20)]
    for name in ("a/people.csv", "b/people.csv"):
        rows = list(csv.DictReader(io.StringIO(kit.download(name).decode(), newline="")))
        assert sorted(rows, key=lambda r: int(r["id"])) == expected
