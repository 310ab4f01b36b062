"""`make ui` (python -m azexport_assets.demo.ui): Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from azexport_assets.demo.azurite import PROJECT_ROOT, free_port
from azexport_assets.demo.processes import alive, descendants, identities, stop_trees
from azexport_assets.demo.server import DagsterServer


def processes_mentioning(text: str) -> set[int]:
    """Live processes whose command line contains `text` (zombies excluded)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.add(int(entry.name))
    return found


def test_sigint_stops_dagster_azurite_and_receiver_within_10_seconds(tmp_path):
    port = free_port()
    home = tmp_path / "dagster_home"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PORT": str(port),
        "AZEXPORT_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
    }
    for name in ("AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_SAS_TOKEN"):
        env.pop(name, None)
    log = open(tmp_path / "ui.log", "wb")  # noqa: SIM115 (closed below, read on failure)
    ui = subprocess.Popen(
        [sys.executable, "-m", "azexport_assets.demo.ui"],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # our SIGINT goes to the ui process alone, not to pytest
    )
    try:
        server = DagsterServer(host="127.0.0.1", port=port, process=ui)
        server.wait_until_loaded("azexport", timeout=180)
        tree = identities(descendants(ui.pid))
        commands = {
            pid: (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            for pid in tree
        }
        # The tree that used to survive Ctrl-C: dg/dagster dev, webserver, daemon, code server.
        assert any("dagster_webserver" in c for c in commands.values()), commands
        assert any("dagster._daemon" in c for c in commands.values()), commands
        assert any("code-server" in c or "api grpc" in c for c in commands.values()), commands

        sent = time.monotonic()
        ui.send_signal(signal.SIGINT)
        ui.wait(timeout=10)
        while alive(tree) and time.monotonic() - sent < 10:
            time.sleep(0.1)
        elapsed = time.monotonic() - sent
        left = {pid: commands[pid][:160] for pid in alive(tree)}
        assert not left, f"still running {elapsed:.1f}s after SIGINT: {left}"
        assert not processes_mentioning(str(home)), "a process of this DAGSTER_HOME survived"
        assert ui.returncode == 0
        # The webserver no longer answers.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            raise AssertionError("the webserver still answers")
        except OSError:
            pass
    finally:
        if ui.poll() is None:
            stop_trees([ui])
        log.close()
        print((tmp_path / "ui.log").read_text(errors="replace")[-4000:])
