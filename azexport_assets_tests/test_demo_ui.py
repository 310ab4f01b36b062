"""`make ui` (python -m azexport_assets.demo.ui) in a terminal: Ctrl-C stops it quietly, with
one line and exit code 0, and leaves no process behind.

The ui runs in a real pseudo-terminal: Ctrl-C is the byte the terminal sends, and the
terminal's driver turns it into a SIGINT to the foreground process group, as in a shell.
"""

from __future__ import annotations

import os
import pty
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

from azexport_assets.demo.azurite import PROJECT_ROOT, free_port
from azexport_assets.demo.processes import alive, descendants, identities, with_environment
from azexport_assets.demo.server import DagsterServer
from azexport_assets.demo.ui import LOG_FILE

CTRL_C = b"\x03"
# What the terminal receives after Ctrl-C: its echo "^C", then a progress line that the
# final line replaces (carriage return + erase line).
AFTER_CTRL_C = b"^C\r\nStopping the Dagster UI ...\r\x1b[KStopped the Dagster UI.\r\n"


class Terminal:
    """A command in a new session whose controlling terminal is a pseudo-terminal."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: nothing but exec
            os.chdir(cwd)
            os.execve(command[0], command, env)
        self.pid, self.fd = pid, fd
        self.returncode: int | None = None
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: every process holding the terminal has gone
                return
            if not data:
                return
            self.output += data

    def type(self, data: bytes) -> None:
        os.write(self.fd, data)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self._reader.join(timeout=2)
        return self.returncode

    def close(self) -> None:
        os.close(self.fd)


def test_ctrl_c_stops_everything_quietly_within_10_seconds(tmp_path):
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
    ui = Terminal([sys.executable, "-m", "azexport_assets.demo.ui"], PROJECT_ROOT, env)
    try:
        DagsterServer(host="127.0.0.1", port=port, process=ui).wait_until_loaded(
            "azexport", timeout=180
        )
        tree = identities(descendants(ui.pid))
        commands = {
            pid: (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            for pid in tree
        }
        # The tree that used to survive Ctrl-C: dg/dagster dev, webserver, daemon, code server.
        assert any("dagster_webserver" in c for c in commands.values()), commands
        assert any("dagster._daemon" in c for c in commands.values()), commands
        assert any("code-server" in c or "api grpc" in c for c in commands.values()), commands
        # Every process the ui starts carries its DAGSTER_HOME, wherever it is in the tree.
        assert set(tree) <= with_environment("DAGSTER_HOME", str(home))

        sent = time.monotonic()
        ui.type(CTRL_C)
        ui.wait(timeout=10)
        elapsed = time.monotonic() - sent
        assert ui.returncode == 0, f"exit code {ui.returncode} after {elapsed:.1f}s"
        left = {pid: commands[pid][:160] for pid in alive(tree)}
        assert not left, f"still running {elapsed:.1f}s after Ctrl-C: {left}"
        assert not with_environment("DAGSTER_HOME", str(home)), "a process of the ui survived"
        # The webserver no longer answers.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            raise AssertionError("the webserver still answers")
        except OSError:
            pass
        # Quiet: after the ^C, one line; Dagster's shutdown went to its log file only.
        output = bytes(ui.output)
        assert output[output.rindex(b"^C") :] == AFTER_CTRL_C, output[-3000:]
        assert b"Aborted!" not in output and b"Traceback" not in output, output
        assert "Shutting down Dagster services" in LOG_FILE.read_text(errors="replace")
    finally:
        if ui.poll() is None:  # the test failed: Ctrl-C again, then kill what is left
            os.killpg(ui.pid, signal.SIGINT)
            ui.wait(timeout=15)
        for pid in with_environment("DAGSTER_HOME", str(home)):
            os.kill(pid, signal.SIGKILL)
        ui.poll()
        ui.close()
