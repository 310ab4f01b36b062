"""`python -m azexport_assets.demo`: run every demo activation once and list the blobs.

The runs are launched through Dagster itself (`dg dev` / `dagster dev`, GraphQL), not in
this process: they appear on the Jobs and Runs pages of `make ui` and can be re-executed
there. When a Dagster UI for this project already answers on $DAGSTER_PORT, the runs are
launched on it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone

import dagster as dg
from dagster_graphql import DagsterGraphQLClient

from azexport_assets.demo.azurite import PROJECT_ROOT, free_port
from azexport_assets.demo.environment import DEMO_CONTAINER, STATE_DIR, demo_environment
from azexport_assets.demo.runs import (
    WrittenBlob,
    cancel_orphaned_runs,
    launch,
    run_exports,
    runs_since,
    wait_for_run,
    wait_until_finished,
)
from azexport_assets.demo.server import DagsterServer, start_dagster
from azexport_assets.demo.ui import WEBHOOK_ENV, dagster_port
from azexport_assets.demo.webhook import WebhookReceiver

LOCATION = "azexport"
JOBS_QUERY = """
query Jobs {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { location { name } jobs { name } }
    }
  }
}
"""


@contextmanager
def dagster_for_demo() -> Iterator[DagsterServer]:
    """The project's Dagster UI if one runs on $DAGSTER_PORT, else a private one."""
    existing = DagsterServer(host="127.0.0.1", port=dagster_port(), process=None)
    if existing.answers() and existing.location_status(LOCATION)[0] == "LOADED":
        print(f"Launching the runs on the Dagster UI at {existing.url}")
        yield existing
        return
    logs = STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    with open(logs / "dagster-demo.log", "ab") as log:
        server = start_dagster(PROJECT_ROOT, free_port(), log=log)
    try:
        print(f"Starting Dagster (log: {logs / 'dagster-demo.log'}) ...", flush=True)
        server.wait_until_loaded(LOCATION)
        yield server
    finally:
        server.stop()
        with dg.DagsterInstance.get() as instance:
            cancel_orphaned_runs(instance, started)


def activation_jobs(server: DagsterServer) -> list[str]:
    nodes = server.graphql(JOBS_QUERY)["repositoriesOrError"].get("nodes", [])
    return sorted(
        job["name"]
        for node in nodes
        if node["location"]["name"] == LOCATION
        for job in node["jobs"]
        if job["name"].startswith("activate_")
    )


def _blobs_of(instance: dg.DagsterInstance, run_id: str) -> list[WrittenBlob]:
    blobs = [b for written in run_exports(instance, run_id).values() for b in written]
    if not blobs:
        print("  no changes since the last export: nothing written", flush=True)
    return blobs


def run_all_activations(server: DagsterServer, since: datetime) -> list[tuple[str, WrittenBlob]]:
    """Launch each activation's job, one after the other; (job, blob) for every blob written,
    including those of runs that sensors started meanwhile (the on_change sensor reacts to
    the demo's changed data as soon as Dagster starts): every run created since `since`."""
    client = DagsterGraphQLClient(server.host, port_number=server.port)
    instance = dg.DagsterInstance.get()
    written, launched = [], set()
    for job_name in activation_jobs(server):
        print(f"running {job_name} ...", end=" ", flush=True)
        started = time.monotonic()
        run_id = launch(client, job_name)
        launched.add(run_id)
        status = wait_for_run(client, run_id)
        if status != dg.DagsterRunStatus.SUCCESS:
            print(f"{status.value}: see run {run_id} in the Dagster UI (make ui -> Runs)")
            continue
        print(f"ok ({time.monotonic() - started:.0f}s, run {run_id[:8]})", flush=True)
        written += [(job_name, blob) for blob in _blobs_of(instance, run_id)]
    for run in runs_since(instance, since, exclude=launched):
        sensor = run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name")
        print(f"{run.job_name} was also started by {sensor or 'Dagster'}:", end=" ", flush=True)
        finished = wait_until_finished(instance, run.run_id)
        status = finished.status if finished else dg.DagsterRunStatus.FAILURE
        print(f"{status.value.lower()} (run {run.run_id[:8]})", flush=True)
        if status == dg.DagsterRunStatus.SUCCESS:
            written += [(run.job_name, blob) for blob in _blobs_of(instance, run.run_id)]
    return written


def print_blobs(written: list[tuple[str, WrittenBlob]]) -> None:
    width = max([len(b.name) for _, b in written] + [4])
    print(f"\n{'blob':<{width}}  {'bytes':>12}  {'rows':>8}")
    for _, blob in written:
        rows = "-" if blob.rows is None else f"{blob.rows:,}"
        print(f"{blob.name:<{width}}  {blob.bytes:>12,}  {rows:>8}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C even when started with SIGINT ignored (a background job of a script), and
    # SIGTERM, clean up like Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    with ExitStack() as stack:
        env = stack.enter_context(demo_environment(simulate=True))
        print(f"Azure Blob Storage: {env['account_url']} (container {DEMO_CONTAINER})")
        receiver = stack.enter_context(WebhookReceiver(STATE_DIR / "webhook"))
        os.environ[WEBHOOK_ENV] = receiver.url
        since = datetime.now(timezone.utc)
        server = stack.enter_context(dagster_for_demo())
        written = run_all_activations(server, since)
    print_blobs(written)
    print(
        "\nThe runs are in the Dagster UI (Jobs, Runs; re-execute them from there), on the same\n"
        "warehouse, run history and Azurite data (same port, so blob links keep working):\n"
        f"    make ui      # then browse http://127.0.0.1:{dagster_port()} -> Assets -> Lineage\n"
        "Warnings go to the sensor activate_french_customers_upsert_warnings, which posts them\n"
        f"to a local receiver while `make ui` runs: {receiver.received_file}"
    )
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
