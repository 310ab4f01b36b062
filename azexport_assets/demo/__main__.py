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

from azexport_assets.components.preview_job import PREVIEW_JOB
from azexport_assets.components.sensors import MINIMUM_INTERVAL_SECONDS
from azexport_assets.demo.azurite import PROJECT_ROOT, free_port
from azexport_assets.demo.environment import DEMO_CONTAINER, STATE_DIR, demo_environment
from azexport_assets.demo.runs import (
    WrittenBlob,
    cancel_orphaned_runs,
    export_summaries,
    launch,
    run_exports,
    runs_since,
    sync_log_summaries,
    wait_for_run,
    wait_until_finished,
)
from azexport_assets.demo.server import DagsterServer, start_dagster
from azexport_assets.demo.ui import WEBHOOK_ENV, dagster_port
from azexport_assets.demo.webhook import WebhookReceiver

LOCATION = "azexport"
# The activation the preview hint names (the demo's incremental one: its next run's changes).
PREVIEW_ACTIVATION = "french_customers_upsert"
PREVIEW_HINT = (
    f"What the next run would export, writing nothing: the job {PREVIEW_JOB} "
    f"(activation: {PREVIEW_ACTIVATION}) in the UI's Launchpad, or "
    f".venv/bin/python -m azexport_assets.preview {PREVIEW_ACTIVATION}"
)
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


SENSOR_TICKS_QUERY = """
query SensorTicks($selector: SensorSelector!, $after: Float) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState { status ticks(afterTimestamp: $after, limit: 20) { status timestamp runIds } }
    }
  }
}
"""
# How long the demo waits for an on_change sensor's first evaluation after the data changed:
# two of its intervals (Dagster evaluates it at most once per interval).
SENSOR_WAIT_SECONDS = 2 * MINIMUM_INTERVAL_SECONDS + 30


def _sensor_state(server: DagsterServer, sensor: str, after: float) -> dict | None:
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": "__repository__",
        "sensorName": sensor,
    }
    answer = server.graphql(SENSOR_TICKS_QUERY, {"selector": selector, "after": after})
    found = answer["sensorOrError"]
    return found["sensorState"] if found["__typename"] == "Sensor" else None


def watching_sensor(server: DagsterServer, job_name: str) -> str | None:
    """The running `trigger: on_change` sensor of the job's activation, if any."""
    sensor = f"{job_name}_on_change"
    state = _sensor_state(server, sensor, after=0.0)
    return sensor if state is not None and state["status"] == "RUNNING" else None


def sensor_runs_after(server: DagsterServer, sensor: str, after: float) -> list[str] | None:
    """The runs the sensor started at its first evaluation that began after `after` (the data
    change): [] when that evaluation started none (its very first one only records the state),
    None when no evaluation finished within SENSOR_WAIT_SECONDS."""
    deadline = time.monotonic() + SENSOR_WAIT_SECONDS
    while time.monotonic() < deadline:
        state = _sensor_state(server, sensor, after) or {"ticks": []}
        ticks = sorted(state["ticks"], key=lambda t: t["timestamp"])
        if ticks and ticks[0]["status"] != "STARTED":
            return list(ticks[0]["runIds"])
        time.sleep(1.0)
    return None


def _report(client: DagsterGraphQLClient, instance: dg.DagsterInstance, run_id: str) -> bool:
    """Wait for the run, print how it ended and what each export wrote; True on success."""
    status = wait_for_run(client, run_id)
    if status != dg.DagsterRunStatus.SUCCESS:
        print(f"{status.value}: see run {run_id} in the Dagster UI (make ui -> Runs)")
        return False
    stats = instance.get_run_stats(run_id)
    took = (stats.end_time or 0.0) - (stats.start_time or 0.0)
    print(f"ok ({took:.0f}s, run {run_id[:8]})", flush=True)
    print_summaries(instance, run_id)
    return True


def print_summaries(instance: dg.DagsterInstance, run_id: str) -> None:
    """What each export of the run wrote, and what its sync log kept."""
    logs = sync_log_summaries(instance, run_id)
    for activation, summary in export_summaries(instance, run_id).items():
        print(f"  {activation}: {summary}", flush=True)
        if activation in logs:
            print(f"  {activation}: {logs[activation]}", flush=True)


def run_all_activations(
    server: DagsterServer, since: datetime, data_changed_at: float
) -> list[tuple[str, WrittenBlob]]:
    """Run each activation's job once, one after the other; (job, blob) for every blob written.

    An activation with a running `trigger: on_change` sensor is not launched by the demo when
    that sensor starts it for the demo's changed data: the demo waits for the sensor's first
    evaluation after the change and reports the run it started, so the two never race for
    the same change (the one that came second would export nothing). These activations go
    last, while the sensor gets its evaluation. Runs that sensors or schedules started for
    anything else are reported at the end."""
    client = DagsterGraphQLClient(server.host, port_number=server.port)
    instance = dg.DagsterInstance.get()
    written, launched = [], set()
    jobs = activation_jobs(server)
    watched = {job: sensor for job in jobs if (sensor := watching_sensor(server, job))}
    for job_name in [j for j in jobs if j not in watched] + [j for j in jobs if j in watched]:
        run_ids: list[str] | None = []
        if job_name in watched:
            sensor = watched[job_name]
            print(f"waiting for the sensor {sensor} to see the demo's data ...", flush=True)
            run_ids = sensor_runs_after(server, sensor, data_changed_at)
            if run_ids:
                print(
                    f"{job_name}: started by {sensor} for the changed data ...", end=" ", flush=True
                )
            elif run_ids is None:
                print(f"  {sensor} did not evaluate within {SENSOR_WAIT_SECONDS}s")
            else:
                print(
                    f"  {sensor} started no run for it (a first evaluation only records the data)"
                )
        if not run_ids:
            print(f"running {job_name} ...", end=" ", flush=True)
            run_ids = [launch(client, job_name)]
        for run_id in run_ids:
            launched.add(run_id)
            if _report(client, instance, run_id):
                written += [
                    (job_name, b) for bs in run_exports(instance, run_id).values() for b in bs
                ]
    for run in runs_since(instance, since, exclude=launched):
        sensor = run.tags.get("dagster/sensor_name") or run.tags.get("dagster/schedule_name")
        print(f"{run.job_name} was also started by {sensor or 'Dagster'}:", end=" ", flush=True)
        finished = wait_until_finished(instance, run.run_id)
        status = finished.status if finished else dg.DagsterRunStatus.FAILURE
        print(f"{status.value.lower()} (run {run.run_id[:8]})", flush=True)
        if status == dg.DagsterRunStatus.SUCCESS:
            print_summaries(instance, run.run_id)
            written += [
                (run.job_name, b) for bs in run_exports(instance, run.run_id).values() for b in bs
            ]
    return written


def print_blobs(written: list[tuple[str, WrittenBlob]]) -> None:
    width = max([len(b.name) for _, b in written] + [4])
    print(f"\n{'blob':<{width}}  {'bytes':>12}  {'rows':>8}")
    for _, blob in written:
        rows = "-" if blob.rows is None else f"{blob.rows:,}"
        size = "-" if blob.bytes is None else f"{blob.bytes:,}"
        print(f"{blob.name:<{width}}  {size:>12}  {rows:>8}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C even when started with SIGINT ignored (a background job of a script), and
    # SIGTERM, clean up like Ctrl-C does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    with ExitStack() as stack:
        data_changed_at = time.time()  # the demo's data are generated or changed right now
        env = stack.enter_context(demo_environment(simulate=True))
        print(f"Azure Blob Storage: {env['account_url']} (container {DEMO_CONTAINER})")
        receiver = stack.enter_context(WebhookReceiver(STATE_DIR / "webhook"))
        os.environ[WEBHOOK_ENV] = receiver.url
        since = datetime.now(timezone.utc)
        server = stack.enter_context(dagster_for_demo())
        written = run_all_activations(server, since, data_changed_at)
    print_blobs(written)
    print(
        "\nThe runs are in the Dagster UI (Jobs, Runs; re-execute them from there), on the same\n"
        "warehouse, run history and Azurite data (same port, so blob links keep working):\n"
        f"    make ui      # then browse http://127.0.0.1:{dagster_port()} -> Assets -> Lineage\n"
        "Warnings go to the sensor activate_french_customers_upsert_warnings, which posts them\n"
        f"to a local receiver while `make ui` runs: {receiver.received_file}\n" + PREVIEW_HINT
    )
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
