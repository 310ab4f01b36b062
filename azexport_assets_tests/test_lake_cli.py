"""`python -m azexport_assets.warehouse init | describe | maintain` against a real lake."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from azexport_assets_tests.lake_kit import PostgresServer, postgres, use_lake  # noqa: F401

pytestmark = pytest.mark.lake


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "azexport_assets.warehouse", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )


def test_init_describe_maintain(postgres: PostgresServer, monkeypatch, tmp_path):  # noqa: F811
    database = postgres.create_database()
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), database)
    first = cli("init")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"DuckLake with its catalog in Postgres ({postgres.conninfo(database)}), "
        f"data under {tmp_path / 'lake-data'}/",
        "created schemas: models, segments, azexport_state, azexport_log",
    ]
    again = cli("init")
    assert again.stdout.splitlines()[-1] == "already set up"
    done = cli("maintain", "--older-than-days", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("merged_files: ")


def test_a_wrong_data_path_is_refused(postgres: PostgresServer, monkeypatch, tmp_path):  # noqa: F811
    database = postgres.create_database()
    use_lake(monkeypatch, postgres, str(tmp_path / "first"), database)
    assert cli("init").returncode == 0
    monkeypatch.setenv("AZEXPORT_LAKE_DATA_PATH", str(tmp_path / "elsewhere"))
    moved = cli("init")
    assert moved.returncode != 0
    assert moved.stderr.startswith("error: cannot open the lake")
    assert "does not match existing data path" in moved.stderr
    assert "lake-test-password" not in moved.stderr + moved.stdout
