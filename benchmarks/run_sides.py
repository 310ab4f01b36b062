"""One measurement of each side of the whole-run benchmark, each a fresh process (tree).

Every function returns a dict with at least `seconds` (wall time the user waits),
`peak_rss_mb` (largest RSS sum of the process tree, see benchmarks/proctree.py) and `rows`
(what the side says it exported, checked against the expected count by the caller).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from benchmarks.proctree import TreeMonitor, tree_pids
from benchmarks.run_project import CONTAINER, DLT_CONTAINER

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")
# Below this many rows every side's blobs are downloaded and their rows counted; above it
# ours is checked by the export's own metadata (rows, bytes) against the blob's properties.
DOWNLOAD_CHECK_MAX_ROWS = 200_000


class SideFailed(RuntimeError):
    pass


@dataclass
class Context:
    """What every measurement needs: paths, environment, storage clients, the instance."""

    workdir: Path
    project: Path
    env: dict[str, str]
    account_url: str
    sas: str
    connection_string: str
    dlt_python: Path | None
    service: object  # azure.storage.blob.BlobServiceClient (owner's view)
    instance: object  # dagster.DagsterInstance on the benchmark's DAGSTER_HOME
    logs: Path = field(init=False)
    _count: int = 0

    def __post_init__(self) -> None:
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path:
        self._count += 1
        return self.logs / f"{self._count:04d}-{self.project.name}-{name}.log"

    def elsewhere(self, project: Path) -> Context:
        """The same storage and instance for another project folder (its own warehouse)."""
        env = self.env | {"AZEXPORT_WAREHOUSE": str(project / "warehouse.duckdb")}
        return replace(self, project=project, env=env)

    def clear_containers(self) -> None:
        """Every side starts on empty containers (and Azurite's disk use stays bounded)."""
        for name in (CONTAINER, DLT_CONTAINER):
            container = self.service.get_container_client(name)
            for blob in list(container.list_blobs()):
                container.delete_blob(blob.name)


def timed_process(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run cmd to completion; wall seconds, peak tree RSS, CPU seconds of the reaped tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        with TreeMonitor(process.pid) as monitor:
            returncode = process.wait()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SideFailed(f"{' '.join(cmd[:6])} exited with {returncode}; log {log}:\n{tail}")
    return {
        "seconds": seconds,
        "peak_rss_mb": monitor.peak_mb,
        "processes_at_peak": monitor.peak_processes,
        "cpu_s": cpu,
    }


def _last_json(log: Path) -> dict:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SideFailed(f"no result line in {log}")


def export_metadata(
    ctx: Context, activation: str, since: float, run_id: str | None = None
) -> tuple[str, dict]:
    """(run id, metadata) of the newest materialization of activations/<a>/export after
    `since`."""
    from azexport_assets.asset_keys import export_key

    key = export_key(activation)
    entry = ctx.instance.get_latest_materialization_event(key)
    if entry is None or entry.timestamp < since or (run_id and entry.run_id != run_id):
        raise SideFailed(f"no new materialization of {key.to_user_string()}")
    metadata = {k: v.value for k, v in entry.asset_materialization.metadata.items()}
    return entry.run_id, metadata


def run_breakdown(ctx: Context, run_id: str, began: float, ended: float) -> dict:
    """Where a run's wall time went, from its event log (wall-clock epoch seconds):
    before RUN_START (loading the code location, creating the run), each step's process
    start-up (STEP_WORKER_STARTING -> STEP_START) and work (STEP_START -> STEP_SUCCESS),
    and after RUN_SUCCESS until the process (or the polling) saw the end."""
    import dagster as dg

    kinds = dg.DagsterEventType
    times: dict[tuple[str, str], float] = {}
    for entry in ctx.instance.all_logs(run_id):
        if entry.dagster_event is not None:
            key = (entry.dagster_event.event_type_value, entry.step_key or "")
            times.setdefault(key, entry.timestamp)
    steps = {}
    for (kind, step), started in times.items():
        if kind == kinds.STEP_START.value:
            finished = times.get((kinds.STEP_SUCCESS.value, step))
            spawned = times.get((kinds.STEP_WORKER_STARTING.value, step), started)
            steps[step] = {
                "startup_s": started - spawned,
                "work_s": (finished - started) if finished else None,
            }
    run_start = times.get((kinds.RUN_START.value, ""))
    run_end = times.get((kinds.RUN_SUCCESS.value, ""))
    return {
        "before_run_start_s": (run_start - began) if run_start else None,
        "step_startup_s": sum(s["startup_s"] for s in steps.values()),
        "step_work_s": sum(s["work_s"] or 0 for s in steps.values()),
        "after_run_end_s": (ended - run_end) if run_end else None,
        "steps": steps,
    }


def count_rows(data: bytes, fmt: str) -> int:
    """Rows in one downloaded file (CSV parsed: values may hold line breaks)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(io.BytesIO(data)).num_rows
    if fmt == "xml":
        return data.count(b"<row>") + data.count(b"<row ")
    if fmt == "csv":
        return max(sum(1 for _ in csv.reader(io.StringIO(data.decode()))) - 1, 0)
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


def check_our_blobs(ctx: Context, metadata: dict, fmt: str, expected_rows: int) -> dict:
    """The blobs the export reported exist with the reported sizes (and, for small tables,
    hold the expected rows)."""
    container = ctx.service.get_container_client(CONTAINER)
    files = [record.data for record in metadata["files"].records]
    total = 0
    for item in files:
        size = container.get_blob_client(item["blob"]).get_blob_properties().size
        if size != item["bytes"]:
            raise SideFailed(f"blob {item['blob']}: {size} bytes, export said {item['bytes']}")
        total += size
    rows = metadata["dagster/row_count"]
    if expected_rows <= DOWNLOAD_CHECK_MAX_ROWS:
        rows = sum(
            count_rows(container.download_blob(item["blob"]).readall(), fmt) for item in files
        )
    if rows != expected_rows:
        raise SideFailed(f"ours ({fmt}) exported {rows} rows, expected {expected_rows}")
    checked = "downloaded" if expected_rows <= DOWNLOAD_CHECK_MAX_ROWS else "metadata+size"
    return {"rows": rows, "bytes": total, "files": len(files), "checked": checked}


def ours_cli(
    ctx: Context,
    activation: str,
    fmt: str,
    expected_rows: int,
    config: Path | None = None,
    tags: dict[str, str] | None = None,
) -> dict:
    """`dagster job execute -f entry.py -j activate_<a>`: the whole process, as a user runs it."""
    cmd = [DAGSTER, "job", "execute", "-f", "entry.py", "-j", f"activate_{activation}"]
    if config:
        cmd += ["-c", str(config)]
    if tags:
        cmd += ["--tags", json.dumps(tags)]
    since = time.time()
    log = ctx.log_path(f"ours-{activation}")
    result = timed_process(cmd, ctx.project, ctx.env, log)
    if "RUN_SUCCESS" not in log.read_text(errors="replace"):
        raise SideFailed(f"no RUN_SUCCESS in {log}")
    run_id, metadata = export_metadata(ctx, activation, since)
    breakdown = run_breakdown(ctx, run_id, since, since + result["seconds"])
    return (
        result
        | {"run_id": run_id, "breakdown": breakdown}
        | check_our_blobs(ctx, metadata, fmt, expected_rows)
    )


def bound_copy(ctx: Context, db: Path, fmt: str, expected_rows: int) -> dict:
    """DuckDB COPY to a local file + one upload_blob(max_concurrency=4), fresh process."""
    blob = f"bound/bench.{fmt}"
    tmp = ctx.workdir / "tmp-bound"
    tmp.mkdir(exist_ok=True)
    log = ctx.log_path(f"bound-{fmt}")
    cmd = [sys.executable, "-m", "benchmarks.run_bound", "copy", str(db), fmt, str(tmp)]
    result = timed_process([*cmd, ctx.account_url, ctx.sas, blob], REPO, ctx.env, log)
    inner = _last_json(log)
    for path in tmp.iterdir():
        path.unlink()
    container = ctx.service.get_container_client(CONTAINER)
    size = container.get_blob_client(blob).get_blob_properties().size
    if size != inner["bytes"]:
        raise SideFailed(f"bound blob {blob}: {size} bytes, file had {inner['bytes']}")
    rows = expected_rows
    if expected_rows <= DOWNLOAD_CHECK_MAX_ROWS:
        rows = count_rows(container.download_blob(blob).readall(), fmt)
        if rows != expected_rows:
            raise SideFailed(f"bound ({fmt}) wrote {rows} rows, expected {expected_rows}")
    return result | {"rows": rows, "bytes": size, "files": 1, "inner": inner}


def bound_delta(ctx: Context, db: Path, baseline: Path, expected_rows: int) -> dict:
    """FULL OUTER JOIN on key + hash, COPY the changed rows to CSV, one upload: fresh process."""
    blob = "bound/delta.csv"
    tmp = ctx.workdir / "tmp-bound"
    tmp.mkdir(exist_ok=True)
    log = ctx.log_path("bound-delta")
    cmd = [sys.executable, "-m", "benchmarks.run_bound", "delta", str(db), str(baseline)]
    result = timed_process([*cmd, str(tmp), ctx.account_url, ctx.sas, blob], REPO, ctx.env, log)
    inner = _last_json(log)
    for path in tmp.iterdir():
        path.unlink()
    if inner["rows"] != expected_rows:
        raise SideFailed(f"bound delta found {inner['rows']} rows, expected {expected_rows}")
    ctx.service.get_container_client(CONTAINER).get_blob_client(blob).get_blob_properties()
    return result | {"rows": inner["rows"], "bytes": inner["bytes"], "inner": inner}


def dlt_env(ctx: Context) -> dict[str, str]:
    from azexport_assets.demo.azurite import DEV_ACCOUNT, DEV_KEY

    return {
        **ctx.env,
        "DESTINATION__FILESYSTEM__KWARGS": json.dumps({"connection_string": ctx.connection_string}),
        "DESTINATION__FILESYSTEM__CREDENTIALS__AZURE_STORAGE_ACCOUNT_NAME": DEV_ACCOUNT,
        "DESTINATION__FILESYSTEM__CREDENTIALS__AZURE_STORAGE_ACCOUNT_KEY": DEV_KEY,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DATA_WRITER__DISABLE_COMPRESSION": "true",
        "DATA_WRITER__COMPRESSION": "zstd",
    }


def dlt_load(ctx: Context, db: Path, fmt: str, expected_rows: int) -> dict:
    """dlt's pipeline into its filesystem destination at az://dlt, fresh process and state;
    then the data files it landed are listed (and, for small tables, their rows counted)."""
    assert ctx.dlt_python is not None
    dataset = f"bench_{fmt}"
    pipelines = ctx.workdir / "dlt-pipelines"
    log = ctx.log_path(f"dlt-{fmt}")
    cmd = [str(ctx.dlt_python), str(REPO / "benchmarks" / "run_dlt.py"), str(db), fmt]
    cmd += [f"az://{DLT_CONTAINER}", dataset, str(pipelines)]
    result = timed_process(cmd, REPO, dlt_env(ctx), log)
    inner = _last_json(log)
    subprocess.run(["rm", "-rf", str(pipelines)], check=True)  # fresh state next time
    container = ctx.service.get_container_client(DLT_CONTAINER)
    blobs = [b for b in container.list_blobs(name_starts_with=f"{dataset}/bench/")]
    data = [b for b in blobs if b.name.endswith(f".{fmt}")]
    if not data:
        names = [b.name for b in blobs]
        raise SideFailed(f"dlt landed no .{fmt} file under {dataset}/bench/: {names}")
    rows = expected_rows
    checked = "listed"
    if expected_rows <= DOWNLOAD_CHECK_MAX_ROWS:
        rows = sum(count_rows(container.download_blob(b.name).readall(), fmt) for b in data)
        checked = "downloaded"
        if rows != expected_rows:
            raise SideFailed(f"dlt ({fmt}) landed {rows} rows, expected {expected_rows}")
    return result | {
        "rows": rows,
        "bytes": sum(b.size for b in data),
        "files": len(data),
        "checked": checked,
        "inner": inner,
    }


def validate_definitions(ctx: Context) -> dict:
    """`dagster definitions validate -f entry.py`: what a deploy check or CI step waits for."""
    cmd = [DAGSTER, "definitions", "validate", "-f", "entry.py"]
    log = ctx.log_path("validate")
    result = timed_process(cmd, ctx.project, ctx.env, log)
    if "Validation successful" not in log.read_text(errors="replace"):
        raise SideFailed(f"no 'Validation successful' in {log}")
    return result


def python_import(ctx: Context, code: str, label: str) -> dict:
    """A fresh interpreter running `code` (loading the code location) with the runs' env."""
    log = ctx.log_path(f"import-{label}")
    return timed_process([sys.executable, "-c", code], ctx.project, ctx.env, log)


class DevServer:
    """`dagster dev` (webserver + daemon + code server) on the benchmark project: runs are
    submitted through GraphQL and launched by the daemon (QueuedRunCoordinator, then
    DefaultRunLauncher: a new run-worker process), exactly as a scheduled run is."""

    def __init__(self, ctx: Context, port: int):
        self.ctx = ctx
        self.port = port
        self.process: subprocess.Popen | None = None
        self.location = ""
        self.log = ctx.log_path("dagster-dev")

    def _graphql(self, query: str) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["data"]

    def start(self, timeout: float = 300) -> None:
        cmd = [DAGSTER, "dev", "-f", "entry.py", "-h", "127.0.0.1", "-p", str(self.port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                cmd,
                cwd=self.ctx.project,
                env=self.ctx.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, stopped as one below
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SideFailed(f"dagster dev exited; see {self.log}")
            try:
                if self._ready():
                    return
            except OSError:
                pass
            time.sleep(1)
        raise SideFailed(f"dagster dev not ready after {timeout:.0f}s; see {self.log}")

    def _ready(self) -> bool:
        data = self._graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename } } } } "
            "instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
        )
        entries = data["workspaceOrError"].get("locationEntries") or []
        loaded = [
            e
            for e in entries
            if e["loadStatus"] == "LOADED"
            and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
        ]
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        queue_ok = any(
            d["daemonType"] == "QUEUED_RUN_COORDINATOR" and d["healthy"] for d in daemons
        )
        if loaded:
            self.location = loaded[0]["name"]
        return bool(loaded) and queue_ok

    def run(self, activation: str, fmt: str, expected_rows: int, timeout: float = 3600) -> dict:
        """Submit activate_<a>; time from the submit call to the run's end (RUN_SUCCESS)."""
        from dagster_graphql import DagsterGraphQLClient

        assert self.process is not None
        client = DagsterGraphQLClient("127.0.0.1", port_number=self.port)
        server_pids = tree_pids(self.process.pid)  # only processes started for the run count
        with TreeMonitor(self.process.pid, ignore=server_pids) as monitor:
            submitted = time.time()
            started = time.perf_counter()
            run_id = client.submit_job_execution(
                f"activate_{activation}",
                repository_location_name=self.location,
                repository_name="__repository__",
            )
            while True:
                status = client.get_run_status(run_id).value
                if status in ("SUCCESS", "FAILURE", "CANCELED"):
                    break
                if time.perf_counter() - started > timeout:
                    raise SideFailed(f"run {run_id} still {status} after {timeout:.0f}s")
                time.sleep(0.1)
            observed = time.perf_counter() - started
        if status != "SUCCESS":
            raise SideFailed(f"launched run {run_id} ended {status}; see the Dagster UI/logs")
        record = self.ctx.instance.get_run_record_by_id(run_id)
        end, start = record.end_time, record.start_time
        _, metadata = export_metadata(self.ctx, activation, submitted, run_id=run_id)
        seconds = (end - submitted) if end else observed  # the run's own end: no polling lag
        return {
            "seconds": seconds,
            # Queue (the daemon dequeues every few seconds), launch, run worker start-up.
            "to_run_start_s": (start - submitted) if start else None,
            "peak_rss_mb": monitor.peak_mb,
            "processes_at_peak": monitor.peak_processes,
            "run_id": run_id,
            "breakdown": run_breakdown(self.ctx, run_id, submitted, submitted + seconds),
        } | check_our_blobs(self.ctx, metadata, fmt, expected_rows)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # dagster dev shuts its children down
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # Whatever of the group this object started is still there (a code server, a run).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
