"""Run a local Dagster (webserver + daemon + code server) and talk to it over GraphQL.

`dg dev` is used when the `dg` command (package dagster-dg-cli) is installed, else
`dagster dev -w workspace.yaml`; both load the code location `azexport`, so runs launched
by one can be re-executed from the other.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from azexport_assets.demo.processes import spawn, stop_trees

LOCATION_QUERY = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
  }
}
"""


def dg_executable() -> str | None:
    """The `dg` next to this Python (the project's venv), else on PATH, else None."""
    beside = Path(sys.executable).parent / "dg"
    return str(beside) if beside.exists() else shutil.which("dg")


def dev_command(
    project_root: Path, host: str, port: int, workspace: Path | None = None
) -> list[str]:
    """The command line that serves the project: `dg dev` for the project itself, else
    `dagster dev` on a workspace file (the default: the project's workspace.yaml)."""
    dg = dg_executable()
    if workspace is None and dg is not None:
        return [dg, "dev", "--host", host, "--port", str(port)]
    workspace = workspace or project_root / "workspace.yaml"
    return [
        *(sys.executable, "-m", "dagster", "dev", "-w", str(workspace)),
        *("--host", host, "--port", str(port)),
    ]


@dataclass
class DagsterServer:
    """A running `dg dev` / `dagster dev` process tree."""

    host: str
    port: int
    process: Any  # subprocess.Popen; Any keeps the dataclass repr short

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST a GraphQL query; returns `data` or raises with the server's errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"Dagster GraphQL error: {answer['errors']}")
        return answer["data"]

    def location_status(self, name: str) -> tuple[str, str | None]:
        """('LOADED' | 'LOADING' | 'MISSING', load error message or None) of a code location."""
        workspace = self.graphql(LOCATION_QUERY)["workspaceOrError"]
        for entry in workspace.get("locationEntries", []):
            if entry["name"] == name:
                error = entry.get("locationOrLoadError") or {}
                return entry["loadStatus"], error.get("message")
        return "MISSING", None

    def wait_until_loaded(self, location: str, timeout: float = 120.0) -> None:
        """Wait until the webserver answers and `location` has loaded without error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Dagster stopped with exit code {self.process.returncode} while starting"
                )
            if self.answers():
                status, error = self.location_status(location)
                if status == "LOADED" and error:
                    raise RuntimeError(f"code location '{location}' failed to load: {error}")
                if status == "LOADED":
                    return
            time.sleep(0.5)
        raise RuntimeError(
            f"Dagster at {self.url} did not load code location '{location}' within {timeout:.0f}s"
        )

    def stop(self) -> None:
        stop_trees([self.process])


def start_dagster(
    project_root: Path,
    port: int,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    log: IO[bytes] | int | None = None,
    workspace: Path | None = None,
) -> DagsterServer:
    """Start Dagster for the project in its own process group (stop it with `.stop()`).
    Its output goes to `log`: a file, `subprocess.PIPE`, or None (this terminal)."""
    env = dict(os.environ if env is None else env)
    # dg compares the active venv with the project's .venv and warns when they differ.
    env.setdefault("VIRTUAL_ENV", sys.prefix)
    command = dev_command(project_root, host, port, workspace)
    return DagsterServer(
        host=host, port=port, process=spawn(command, cwd=project_root, env=env, log=log)
    )
