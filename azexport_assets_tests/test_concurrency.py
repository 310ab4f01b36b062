"""Runs that touch the warehouse never fail because another process holds the DuckDB file."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from azexport_assets.asset_keys import delta_key, export_key
from azexport_assets.demo.instance import prepare_dagster_home
from azexport_assets.resources import WarehouseResource
from azexport_assets.warehouse import (
    ActivationBusyError,
    Warehouse,
    WarehouseBusyError,
    WarehouseConfigError,
    open_warehouse,
)

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
segments:
  adults:
    model: people
    filter: age >= 18
activations:
  everyone:
    source: people
    destination: lake
    file_name: everyone
  adults_delta:
    source: adults
    destination: lake
    file_name: adults_{X}
    format: json
    run_type: full_then_delta
    sync_mode: upsert
"""


def launch_cli_runs(kit, tmp_path, jobs: list[str]) -> list[str]:
    """Launch `dagster job execute` for each job at the same moment; return their outputs
    (a failed run's output is asserted right here, with its tail)."""
    if not (kit.root / "entry.py").exists():
        kit.write_entry()
    # The instance's storage is created once, first: CLI processes creating it at the same
    # moment race on "CREATE TABLE runs" (Dagster's, not the warehouse's). It is the demo's
    # instance: one run per activation by tag, no pool limit (the file lock serializes).
    env = {**os.environ, "DAGSTER_HOME": str(prepare_dagster_home(tmp_path / "dagster_home"))}
    dagster = [sys.executable, "-m", "dagster", "job", "execute", "-f", "entry.py", "-j"]
    processes = [
        subprocess.Popen(
            [*dagster, job],
            cwd=kit.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for job in jobs
    ]
    outputs = [p.communicate(timeout=420)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "RUN_SUCCESS" in output, output[-3000:]
    return outputs


def test_two_jobs_launched_at_once_both_succeed(tmp_path, project, azurite, container, monkeypatch):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, "
        "CAST(range % 90 AS INTEGER) AS age FROM range(1, 50001)"
    )
    kit.write_defs(DEFS)
    outputs = launch_cli_runs(kit, tmp_path, ["activate_everyone", "activate_adults_delta"])
    for output in outputs:
        assert "Could not set lock" not in output

    rows = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
    assert len(rows) == 50_000 and rows[0] == {"id": "1", "name": "p1", "age": "1"}
    (adults_blob,) = [n for n in kit.blob_names() if n.startswith("adults_")]
    adults = json.loads(kit.download(adults_blob))
    expected = kit.query_source("SELECT count(*) FROM people WHERE age >= 18")[0][0]
    assert len(adults) == expected and all(r["age"] >= 18 for r in adults)


def test_waiting_step_gets_the_warehouse_when_released(tmp_path):
    warehouse = Warehouse(path=tmp_path / "w.duckdb", project_root=tmp_path, lock_timeout=30)
    order: list[str] = []

    def second() -> None:
        with warehouse.connect(holder="second") as con:
            order.append("second:" + str(con.execute("SELECT count(*) FROM t").fetchall()[0][0]))

    with warehouse.connect(holder="first") as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(timeout=30)
    assert order == ["first done", "second:1"]


def test_lock_timeout_names_the_holder(tmp_path):
    warehouse = Warehouse(path=tmp_path / "w.duckdb", project_root=tmp_path, lock_timeout=0.3)
    impatient = Warehouse(path=tmp_path / "w.duckdb", project_root=tmp_path, lock_timeout=0.3)
    errors: list[str] = []

    def try_connect() -> None:
        try:
            with impatient.connect(holder="second"):
                pass
        except WarehouseBusyError as error:
            errors.append(str(error))

    with warehouse.connect(holder="run abc123 people/export"):
        thread = threading.Thread(target=try_connect)
        thread.start()
        thread.join(timeout=10)
    assert len(errors) == 1
    assert "run abc123 people/export" in errors[0] and "AZEXPORT_LOCK_TIMEOUT_SECONDS" in errors[0]


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch):
    monkeypatch.delenv("AZEXPORT_LOCK_TIMEOUT_SECONDS", raising=False)


def test_path_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("AZEXPORT_WAREHOUSE", raising=False)
    assert Warehouse(project_root=tmp_path).path == Path(".azexport/warehouse.duckdb")
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(tmp_path / "x.duckdb"))
    assert Warehouse(project_root=tmp_path).path == tmp_path / "x.duckdb"


def test_memory_limit_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AZEXPORT_DUCKDB_MEMORY_LIMIT", "512MB")
    warehouse = Warehouse(path=tmp_path / "w.duckdb", project_root=tmp_path)
    with warehouse.connect() as con:
        (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchall()[0]
    assert limit == "488.2 MiB"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "AZEXPORT_DUCKDB_MEMORY_LIMIT",
            "lots",
            "AZEXPORT_DUCKDB_MEMORY_LIMIT='lots' is not a memory size DuckDB takes: use a number "
            "and a unit, e.g. 512MB, 2GB or 50% (of the machine's memory)",
        ),
        (
            "AZEXPORT_DUCKDB_MEMORY_LIMIT",
            "512 megs",
            "AZEXPORT_DUCKDB_MEMORY_LIMIT='512 megs' is not a memory size DuckDB takes: use",
        ),
        (
            "AZEXPORT_DUCKDB_MEMORY_LIMIT",
            "101%",
            "AZEXPORT_DUCKDB_MEMORY_LIMIT='101%' is not a memory size DuckDB takes (Invalid Input "
            "Error: Unable to parse valid percentage (input: 101%)): use a number and a unit",
        ),
        (
            "AZEXPORT_LOCK_TIMEOUT_SECONDS",
            "an hour",
            "AZEXPORT_LOCK_TIMEOUT_SECONDS='an hour' is not a number of seconds: set it to e.g. "
            "600, or unset it for the default (3600)",
        ),
        ("AZEXPORT_LOCK_TIMEOUT_SECONDS", "-5", "AZEXPORT_LOCK_TIMEOUT_SECONDS='-5' is not a"),
    ],
    ids=[
        "memory-not-a-size",
        "memory-unknown-unit",
        "memory-refused-by-duckdb",
        "timeout-not-a-number",
        "timeout-negative",
    ],
)
def test_a_wrong_warehouse_variable_is_named(monkeypatch, tmp_path, variable, value, message):
    """Deployment settings fail with the variable and the fix, not DuckDB's or Python's bare
    parser error (which named neither)."""
    monkeypatch.setenv(variable, value)

    def open_and_connect() -> None:
        with Warehouse(path=tmp_path / "w.duckdb", project_root=tmp_path).connect():
            pass

    with pytest.raises(WarehouseConfigError) as error:
        open_and_connect()
    assert str(error.value).startswith(message), error.value


@pytest.mark.parametrize("where", ["a-folder", "under-a-file"])
def test_a_warehouse_path_that_cannot_be_a_file_is_named(monkeypatch, tmp_path, where):
    (tmp_path / "a-file").write_text("")
    path = tmp_path if where == "a-folder" else tmp_path / "a-file" / "w.duckdb"
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(path))
    problem = (
        f"it is a folder; name a file in it, e.g. {tmp_path / 'warehouse.duckdb'}"
        if where == "a-folder"
        else f"{tmp_path / 'a-file'} is a file, not a folder"
    )
    with pytest.raises(WarehouseConfigError) as error:
        open_warehouse(project_root=tmp_path)
    assert str(error.value) == (
        f"AZEXPORT_WAREHOUSE={str(path)!r}: the warehouse file cannot be opened there "
        f"({problem}): set it to a file in a folder this user may write"
    )
    resource = WarehouseResource(path=str(path))
    with pytest.raises(dg.Failure) as failure:
        resource.open(tmp_path)
    assert failure.value.description.startswith(
        f"the warehouse resource's 'path'={str(path)!r}: the warehouse file cannot be opened"
    )


def write_one_person(project) -> None:
    """One row, one table model, one CSV snapshot activation `people_csv`."""
    project.source_sql("CREATE TABLE people AS SELECT 1 AS id, 'Ann' AS name")
    project.write_defs(
        """\
  models:
    people: {sql: SELECT * FROM src.people, primary_key: id}
  activations:
    people_csv: {source: people, destination: lake, file_name: people}
"""
    )


def test_a_run_with_a_wrong_memory_limit_fails_its_step_naming_the_variable(project, monkeypatch):
    write_one_person(project)
    monkeypatch.setenv("AZEXPORT_DUCKDB_MEMORY_LIMIT", "lots")
    result = project.run("people_csv", raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["models__people"]
    failure = failures[0].step_failure_data
    assert failure.user_failure_data.description == (
        "AZEXPORT_DUCKDB_MEMORY_LIMIT='lots' is not a memory size DuckDB takes: use a number "
        "and a unit, e.g. 512MB, 2GB or 50% (of the machine's memory)"
    )
    assert project.blob_names() == []


@pytest.mark.parametrize("step", ["delta", "export"])
def test_a_memory_limit_duckdb_refuses_fails_the_delta_or_export_naming_the_variable(
    project, monkeypatch, step
):
    """`101%` has the shape of a memory size, and DuckDB refuses it when the step connects:
    the delta or the export materialized alone (the model step says it first in a whole run)
    fails with the same line, not retried."""
    write_one_person(project)
    assert project.run("people_csv").success
    monkeypatch.setenv("AZEXPORT_DUCKDB_MEMORY_LIMIT", "101%")
    job = project.definitions().resolve_job_def("activate_people_csv")
    selection = [export_key("people_csv")]
    if step == "delta":
        selection.append(delta_key("people_csv"))
    result = job.execute_in_process(
        instance=project.instance, asset_selection=selection, raise_on_error=False
    )
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == f"activations__people_csv__people_csv_{step}"
    data = failure.step_failure_data.user_failure_data
    assert data is not None, failure.step_failure_data.error
    assert data.description.startswith(
        "AZEXPORT_DUCKDB_MEMORY_LIMIT='101%' is not a memory size DuckDB takes ("
    )
    assert data.description.endswith(
        "(of the machine's memory)"
        + (". Nothing was written and the baseline was not advanced." if step == "export" else "")
    )


def test_two_runs_of_one_delta_activation_export_each_change_once(
    tmp_path, project, azurite, container
):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, "
        "CAST(range % 90 AS INTEGER) AS age FROM range(1, 20001)"
    )
    kit.write_defs(DEFS.replace("adults_{X}", "adults_{x}"))
    launch_cli_runs(kit, tmp_path, ["activate_adults_delta"])
    full_export = set(kit.blob_names("adults_"))
    kit.source_sql("UPDATE people SET name = name || '!' WHERE id % 100 = 0 AND age >= 18")
    changed = kit.query_source("SELECT count(*) FROM people WHERE id % 100 = 0 AND age >= 18")

    launch_cli_runs(kit, tmp_path, ["activate_adults_delta", "activate_adults_delta"])
    exported: list[dict] = []
    for name in sorted(set(kit.blob_names("adults_")) - full_export):
        exported += json.loads(kit.download(name))
    # One run exported the changes; the other waited, found nothing new and wrote nothing.
    assert len(exported) == changed[0][0]
    assert len({row["id"] for row in exported}) == len(exported)
    assert all(row["name"].endswith("!") for row in exported)


def test_activation_lock_makes_a_second_holder_wait_and_names_the_first(tmp_path):
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from azexport_assets.warehouse import Warehouse
        lock = Warehouse(path=Path({str(tmp_path / "w.duckdb")!r})).activation_lock(
            "crm", holder="run aaaa1111"
        )
        lock.acquire()
        print("held", flush=True)
        time.sleep(3)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    impatient = Warehouse(path=tmp_path / "w.duckdb", lock_timeout=0.5)
    with pytest.raises(ActivationBusyError, match="run aaaa1111"):
        impatient.activation_lock("crm", holder="run bbbb2222").acquire()
    other = impatient.activation_lock("other_activation", holder="run bbbb2222")
    other.acquire()  # different activations never wait for each other
    other.release()
    patient = Warehouse(path=tmp_path / "w.duckdb", lock_timeout=30)
    started = time.monotonic()
    lock = patient.activation_lock("crm", holder="run cccc3333")
    lock.acquire()  # waits until the holder process ends (the kernel drops its flock)
    assert time.monotonic() - started > 1
    lock.release()
    holder.wait(timeout=30)
