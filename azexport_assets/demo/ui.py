"""`python -m azexport_assets.demo.ui`: the Dagster UI on the demo's setup.

Starts Azurite (on its remembered port), the warnings-webhook receiver and `dg dev` (or
`dagster dev -w workspace.yaml` without dg) on $DAGSTER_PORT (default 3000). Ctrl-C (or
SIGTERM, or SIGHUP) stops all of it within 10 seconds, including the webserver, the daemon,
the code server and any run still going, prints one line ("Stopped the Dagster UI.") and
exits with code 0: a stop that was asked for is a success (and `make ui` then adds no
"Error 130" line). Dagster's output is shown until the stop begins and always written to
`.azexport/logs/dagster-ui.log`; what it prints while stopping (its shutdown messages,
click's "Aborted!") goes to that file only.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import dagster as dg

from azexport_assets.demo.azurite import PROJECT_ROOT
from azexport_assets.demo.environment import STATE_DIR, demo_environment
from azexport_assets.demo.runs import cancel_orphaned_runs
from azexport_assets.demo.server import start_dagster
from azexport_assets.demo.webhook import WebhookReceiver

WEBHOOK_ENV = "AZEXPORT_DEMO_WEBHOOK_URL"
DEFAULT_PORT = 3000
LOG_FILE = STATE_DIR / "logs" / "dagster-ui.log"
STOPPED = "Stopped the Dagster UI."


def dagster_port() -> int:
    value = os.environ.get("DAGSTER_PORT", str(DEFAULT_PORT))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"DAGSTER_PORT must be a port number, not {value!r}") from None


class OutputRelay:
    """Copies Dagster's output, line by line, to the log file and, until `quiet()`, to ours."""

    def __init__(self, stream: IO[bytes], log_file: Path) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._quiet = threading.Event()
        self._thread = threading.Thread(
            target=self._copy, args=(stream, log_file), name="dagster-output", daemon=True
        )
        self._thread.start()

    def _copy(self, stream: IO[bytes], log_file: Path) -> None:
        with stream, open(log_file, "wb") as log:
            for line in iter(stream.readline, b""):
                log.write(line)
                log.flush()
                if not self._quiet.is_set():
                    try:
                        sys.stdout.buffer.write(line)
                        sys.stdout.buffer.flush()
                    except (OSError, ValueError):  # our output is gone (terminal closed)
                        self._quiet.set()

    def quiet(self) -> None:
        self._quiet.set()

    def wait(self, timeout: float) -> None:
        """Until the output ends (every process holding it has stopped), at most `timeout`."""
        self._thread.join(timeout)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    port = dagster_port()
    # Ctrl-C even when started with SIGINT ignored (a background job of a script), and
    # SIGTERM (and in the UI SIGHUP: terminal closed), clean up like Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    stack = ExitStack()
    relay = None
    canceled: list[str] = []
    stopped = False
    code = 0
    try:
        env = stack.enter_context(demo_environment())
        receiver = stack.enter_context(WebhookReceiver(STATE_DIR / "webhook"))
        os.environ[WEBHOOK_ENV] = receiver.url
        started = datetime.now(timezone.utc)
        # Runs the stopped Dagster leaves "in progress" are marked canceled (after the stop:
        # callbacks run last-registered first).
        stack.callback(_cancel_orphaned_runs, started, canceled)
        # Unbuffered: Dagster's Python processes write into a pipe, and line by line.
        dagster_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = start_dagster(PROJECT_ROOT, port, env=dagster_env, log=subprocess.PIPE)
        stack.callback(server.stop)
        print(
            f"Azure Blob Storage: {env['account_url']}\n"
            f"Warnings webhook:   {receiver.url} -> {receiver.received_file}\n"
            f"Dagster UI:         {server.url}   (Ctrl-C stops everything)",
            flush=True,
        )
        relay = OutputRelay(server.process.stdout, LOG_FILE)
        while server.process.poll() is None:
            time.sleep(0.5)
        relay.wait(5.0)  # its last words (why it stopped) before ours
        print(f"Dagster stopped (exit code {server.process.returncode})", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        stopped = True
        if relay is not None:
            relay.quiet()
        _stopping()
    finally:
        # A second Ctrl-C (or a SIGTERM) must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.close()
    if stopped:
        _stopped()
    for line in canceled:
        print(line, flush=True)
    # Everything is stopped: leave the objects of Dagster's modules out of the interpreter's
    # last garbage collection, which otherwise takes 1.5-2.5 s after the last line.
    gc.freeze()
    return code


def _cancel_orphaned_runs(since: datetime, canceled: list[str]) -> None:
    with dg.DagsterInstance.get() as instance:
        for run_id in cancel_orphaned_runs(instance, since):
            canceled.append(f"Run {run_id} was still going: marked canceled")


def _stopping() -> None:
    """On a terminal, "Stopping the Dagster UI ..." on the line after the echoed ^C."""
    if sys.stdout.isatty():
        print("\nStopping the Dagster UI ...", end="", flush=True)


def _stopped() -> None:
    """The one line a stop leaves: on a terminal it replaces "Stopping ..."."""
    prefix = "\r\033[K" if sys.stdout.isatty() else ""
    print(f"{prefix}{STOPPED}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
