"""A freshly initialised DAGSTER_HOME takes several CLI runs started at the same moment."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import dagster as dg

from azexport_assets.demo.instance import event_log_dir, prepare_dagster_home

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
  everyone_csv:
    source: people
    destination: lake
    file_name: everyone
  everyone_json:
    source: people
    destination: lake
    file_name: everyone
    format: json
  adults_csv:
    source: adults
    destination: lake
    file_name: adults
  adults_upsert:
    source: adults
    destination: lake
    file_name: adults_{X}
    format: json
    run_type: full_then_delta
    sync_mode: upsert
"""


JOBS = ("everyone_csv", "everyone_json", "adults_csv", "adults_upsert")


def test_prepare_is_idempotent_and_keeps_an_existing_dagster_yaml(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nretention: {}\n")
    prepare_dagster_home(home)
    prepare_dagster_home(home)
    assert "retention" in (home / "dagster.yaml").read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []


def test_four_cli_runs_at_once_on_a_fresh_home_all_succeed(tmp_path, project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, "
        "CAST(range % 90 AS INTEGER) AS age FROM range(1, 5001)"
    )
    kit.write_defs(DEFS)
    kit.write_entry()
    home = prepare_dagster_home(tmp_path / "dagster_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    command = [sys.executable, "-m", "dagster", "job", "execute", "-f", "entry.py"]
    processes = [
        subprocess.Popen(
            [*command, "-j", f"activate_{name}"],
            cwd=kit.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in JOBS
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for name, process, output in zip(JOBS, processes, outputs, strict=True):
        assert process.returncode == 0, f"{name}:\n{output[-3000:]}"
        assert "RUN_SUCCESS" in output, name

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == sorted(f"activate_{n}" for n in JOBS)
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        # The steps' messages are in the event log ...
        (run,) = [r for r in runs if r.job_name == "activate_everyone_csv"]
        messages = [e.user_message for e in instance.all_logs(run.run_id)]
        assert any(m.startswith("activation 'everyone_csv': 5,000 rows") for m in messages)
    # ... and no raw stdout/stderr was captured (no helper processes, no files).
    captured = [p.name for p in home.rglob("*") if p.suffix in {".out", ".err", ".complete"}]
    assert captured == []
    # Every run's events are in the one event database: no database was created per run
    # (Dagster's default creates and stamps one on each run's first event).
    databases = sorted(str(p.relative_to(home)) for p in home.rglob("*.db"))
    event_db = event_log_dir(home) / "event_log.db"
    assert databases == sorted(
        ["history/runs.db", "schedules/schedules.db", str(event_db.relative_to(home))]
    )

    adults = kit.query_source("SELECT count(*) FROM people WHERE age >= 18")[0][0]
    everyone = list(csv.DictReader(io.StringIO(kit.download("everyone.csv").decode())))
    assert len(everyone) == 5000 and everyone[0] == {"id": "1", "name": "p1", "age": "1"}
    assert len(json.loads(kit.download("everyone.json"))) == 5000
    assert len(list(csv.DictReader(io.StringIO(kit.download("adults.csv").decode())))) == adults
    (upsert,) = [n for n in kit.blob_names() if n.startswith("adults_") and n.endswith(".json")]
    assert len(json.loads(kit.download(upsert))) == adults


def test_the_shipped_instances_set_no_pool_limit(tmp_path):
    """Dagster 1.13 can strand a step waiting for a pool slot for good (docs/operating.md,
    "Pools"): seen here as a run of two started together that never ended, a core at 100%.
    No instance the project ships limits a pool; one run per activation stays a tag limit."""
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    home = prepare_dagster_home(tmp_path / "home")
    shipped = (
        home / "dagster.yaml",
        repo / "deploy/dagster.yaml",
        repo / "deploy/dagster-docker.yaml",
    )
    for path in shipped:
        config = yaml.safe_load(path.read_text())
        concurrency = config.get("concurrency", {})
        assert "pools" not in concurrency, path
        limits = concurrency["runs"]["tag_concurrency_limits"]
        assert limits == [
            {"key": "azexport/activation", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ], path
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.event_log_storage.get_pool_limits() == []
