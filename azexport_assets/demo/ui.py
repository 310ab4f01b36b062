"""`python -m azexport_assets.demo.ui`: the Dagster UI on the demo's setup.

Starts Azurite (on its remembered port), the warnings-webhook receiver and `dg dev` (or
`dagster dev -w workspace.yaml` without dg) on $DAGSTER_PORT (default 3000). Ctrl-C (or
SIGTERM) stops all of it within 10 seconds, including the webserver, the daemon, the code
server and any run still going.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone

import dagster as dg

from azexport_assets.demo.azurite import PROJECT_ROOT
from azexport_assets.demo.environment import STATE_DIR, demo_environment
from azexport_assets.demo.runs import cancel_orphaned_runs
from azexport_assets.demo.server import start_dagster
from azexport_assets.demo.webhook import WebhookReceiver

WEBHOOK_ENV = "AZEXPORT_DEMO_WEBHOOK_URL"
DEFAULT_PORT = 3000


def dagster_port() -> int:
    value = os.environ.get("DAGSTER_PORT", str(DEFAULT_PORT))
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"DAGSTER_PORT must be a port number, not {value!r}") from None


def _cancel_orphaned_runs(since: datetime) -> None:
    with dg.DagsterInstance.get() as instance:
        for run_id in cancel_orphaned_runs(instance, since):
            print(f"Run {run_id} was still going: marked canceled", flush=True)


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
    code = 0
    try:
        env = stack.enter_context(demo_environment())
        receiver = stack.enter_context(WebhookReceiver(STATE_DIR / "webhook"))
        os.environ[WEBHOOK_ENV] = receiver.url
        started = datetime.now(timezone.utc)
        # Runs the stopped Dagster leaves "in progress" are marked canceled (after the stop:
        # callbacks run last-registered first).
        stack.callback(_cancel_orphaned_runs, started)
        server = start_dagster(PROJECT_ROOT, port)
        stack.callback(server.stop)
        print(
            f"Azure Blob Storage: {env['account_url']}\n"
            f"Warnings webhook:   {receiver.url} -> {receiver.received_file}\n"
            f"Dagster UI:         {server.url}   (Ctrl-C stops everything)",
            flush=True,
        )
        while server.process.poll() is None:
            time.sleep(0.5)
        print(f"Dagster stopped (exit code {server.process.returncode})", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\nStopping Dagster, the webhook receiver and Azurite ...", flush=True)
    finally:
        # A second Ctrl-C (or a SIGTERM) must not cut the clean-up short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
