"""Serve a ProjectKit project with `dagster dev` (a fresh DAGSTER_HOME), for UI-level tests.

with serve_project(kit, tmp_path, monkeypatch, location="x") as server:
    server.graphql(...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from azexport_assets.demo.azurite import free_port
from azexport_assets.demo.instance import prepare_dagster_home
from azexport_assets.demo.processes import with_environment
from azexport_assets.demo.server import DagsterServer, start_dagster

WORKSPACE = """
load_from:
  - python_file:
      relative_path: entry.py
      location_name: {location}
"""


@contextmanager
def serve_project(
    kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, location: str
) -> Iterator[DagsterServer]:
    """Write entry.py + workspace.yaml into the kit's root, prepare a DAGSTER_HOME under
    tmp_path (set in the environment) and run `dagster dev` until the block ends; then
    check that no process carrying that DAGSTER_HOME is left."""
    kit.write_entry()
    (kit.root / "workspace.yaml").write_text(WORKSPACE.format(location=location))
    home = prepare_dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with open(tmp_path / "dagster.log", "wb") as log:
        server = start_dagster(
            kit.root, free_port(), log=log, workspace=kit.root / "workspace.yaml"
        )
        try:
            server.wait_until_loaded(location, timeout=120)
            # Dagster's one-time "Join the community" dialog would cover the UI's buttons.
            server.graphql("mutation SetNuxSeen { setNuxSeen }")
            yield server
        finally:
            server.stop()
    left = with_environment("DAGSTER_HOME", str(home))
    assert not left, f"processes of this Dagster still running: {sorted(left)}"
