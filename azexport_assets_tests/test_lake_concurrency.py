"""Three processes run three activations on one DuckLake at the same time.

Each process owns one activation and its source file; every round it changes its source and
runs the activation's job (model, delta, export, commit) through Dagster. On the file backend
these processes take turns on the file lock; on the lake they write at once, and every commit
must succeed: the activations' state rows and tables are their own, so DuckLake finds no
conflict. Every file is then downloaded and compared with the changes the rounds made.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from azexport_assets.delta import baseline_info
from azexport_assets.warehouse import LakeWarehouse, open_warehouse
from azexport_assets_tests.lake_kit import PostgresServer, postgres, use_lake  # noqa: F401
from azexport_assets_tests.project_kit import ProjectKit

pytestmark = pytest.mark.lake

PROCESSES = 3
ROUNDS = 6  # 18 commits in all
PEOPLE = 40
T0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)


def source_rows() -> dict[int, tuple[str, int]]:
    return {i: (f"n{i}", i * 10) for i in range(PEOPLE)}


def mutate_rows(rows: dict[int, tuple[str, int]], r: int) -> None:
    """Round r's changes, as the child applies them in SQL (see CHILD)."""
    for key, (name, score) in list(rows.items()):
        if key % 4 == r % 4:
            rows[key] = (name, score + r)
    rows.pop(r, None)
    rows[1000 + r] = (f"new{r}", r)


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    import dagster as dg
    import duckdb

    from azexport_assets.components.build import project_definitions
    from azexport_assets.logical_time import LOGICAL_TIME_TAG

    root, k, rounds, go = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    t0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
    job = project_definitions(root / "defs", root).resolve_job_def(f"activate_a{k}")
    instance = dg.DagsterInstance.ephemeral()
    while not go.exists():  # start together
        time.sleep(0.02)
    outcomes = []
    for r in range(rounds):
        if r:
            con = duckdb.connect(str(root / f"s{k}.duckdb"))
            con.execute("UPDATE people SET score = score + ? WHERE id % 4 = ?", [r, r % 4])
            con.execute("DELETE FROM people WHERE id = ?", [r])
            con.execute("INSERT INTO people VALUES (?, ?, ?)", [1000 + r, f"new{r}", r])
            con.close()
        tags = {LOGICAL_TIME_TAG: (t0 + timedelta(hours=r)).isoformat()}
        result = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        errors = [
            str(e.event_specific_data.error.message)[:300]
            for e in result.all_events if e.is_step_failure
        ]
        outcomes.append({"round": r, "success": result.success, "errors": errors})
    print(json.dumps(outcomes))
    """
)


def defs(processes: int) -> tuple[str, str]:
    sources = "".join(f"s{k}: {{duckdb: s{k}.duckdb}}\n" for k in range(processes))
    body = "models:\n"
    for k in range(processes):
        body += f"  m{k}:\n    sql: SELECT * FROM s{k}.people\n    primary_key: id\n"
    body += "activations:\n"
    for k in range(processes):
        body += (
            f"  a{k}:\n    source: m{k}\n    destination: lake\n"
            f"    file_name: a{k}/{{YYYY}}{{MM}}{{DD}}_{{HH}}\n"
            "    run_type: full_then_delta\n    sync_mode: upsert\n"
        )
    return body, sources


def run_children(kit: ProjectKit, processes: int, rounds: int) -> list[list[dict]]:
    script = kit.root / "child.py"
    script.write_text(CHILD)
    go = kit.root / "go"
    children = [
        subprocess.Popen(
            [sys.executable, str(script), str(kit.root), str(k), str(rounds), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


def exported(kit: ProjectKit, name: str) -> dict[int, tuple[str, int]]:
    text = kit.download(name).decode()
    return {
        int(r["id"]): (r["name"], int(r["score"]))
        for r in csv.DictReader(io.StringIO(text, newline=""))
    }


@pytest.fixture
def lake(project: ProjectKit, postgres: PostgresServer, monkeypatch, tmp_path) -> ProjectKit:  # noqa: F811
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    return project


def test_three_processes_run_different_activations_at_once(lake: ProjectKit):
    kit = lake
    body, sources = defs(PROCESSES)
    kit.write_defs(body, extra_sources=sources)
    for k in range(PROCESSES):
        con = duckdb.connect(str(kit.root / f"s{k}.duckdb"))
        con.execute(
            f"CREATE TABLE people AS SELECT i AS id, 'n' || i AS name, i * 10 AS score "
            f"FROM range({PEOPLE}) AS r(i)"
        )
        con.close()
    # The lake is set up once, before the processes start (the deployment's init step).
    assert open_warehouse().init() == ["models", "segments", "azexport_state", "azexport_log"]

    outputs = run_children(kit, PROCESSES, ROUNDS)

    failures = [(k, o) for k, rounds in enumerate(outputs) for o in rounds if not o["success"]]
    assert failures == []
    for k in range(PROCESSES):
        rows = source_rows()
        previous: dict[int, tuple[str, int]] = {}
        for r in range(ROUNDS):
            if r:
                mutate_rows(rows, r)
            stamp = (T0 + timedelta(hours=r)).strftime("%Y%m%d_%H")
            changed = {key: v for key, v in rows.items() if previous.get(key) != v}
            assert exported(kit, f"a{k}/{stamp}.csv") == changed, (k, r)
            previous = dict(rows)
        warehouse = open_warehouse()
        assert isinstance(warehouse, LakeWarehouse)
        with warehouse.connect(holder="test") as con:
            info = baseline_info(con, f"a{k}")
            baseline = con.execute(
                f"SELECT c0, c1, c2 FROM azexport_state.baseline__a{k} ORDER BY c0"
            ).fetchall()
        assert info["rows"] == len(rows)
        assert baseline == sorted((key, *value) for key, value in rows.items())
