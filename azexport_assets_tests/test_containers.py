"""The deploy image on a Docker host: every run in a container of its own (`make test-containers`).

The set-up builds the images from the shipped files (deploy/Dockerfile, then a project's own
`defs/` on top with deploy/project/Dockerfile, as docs/deploy.md says), once: the project image
holds no source file. The source is Parquet files in Azurite (`parquet: az://...` with its own
account URL and read-only SAS from the environment, forwarded to the runs by
deploy/dagster-docker.yaml like the destination's). The set-up runs what a Docker host runs:
Postgres (Dagster's storage and the DuckLake catalog) and Azurite (the source, the lake's data
and the destination) on the host, the code server in a container of the project image, and
the Dagster daemon with deploy/dagster-docker.yaml as is (values from the environment): the
run queue and DockerRunLauncher. Three activations (one delta) are launched at once; each run
executes in a new read-only container of the project image with nothing of the host mounted.
Every exported file is compared with the source; after the source changes (Parquet files
uploaded again, the same image), a second round exports everything again for the full
activations and only the changed rows for the delta one. Then one run's container is killed
while the run is in progress: run monitoring marks the run failed, run retries start it
again, and the retry exports the changes exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml
from azure.storage.blob import BlobServiceClient, ContainerClient

from azexport_assets.demo.azurite import Azurite, container_sas, free_port
from azexport_assets.warehouse import open_warehouse
from azexport_assets_tests import container_kit
from azexport_assets_tests.lake_kit import (  # noqa: F401
    PASSWORD,
    USER,
    PostgresServer,
    postgres,
)

pytestmark = [pytest.mark.containers, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[1]
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
ACTIVATIONS = ("everyone_csv", "high_scores_json", "changes_csv")

# The source's rows live in Azurite only, in Parquet parts by id range (the last one open).
PARTS = (("part-1", 1, 150), ("part-2", 151, 300), ("part-3", 301, None))

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm_customers:
      parquet: az://{source_container}/customers/*.parquet
      account_url: {{env: AZEXPORT_SOURCE_ACCOUNT_URL}}
      sas_token: {{env: AZEXPORT_SOURCE_SAS_TOKEN}}
  models:
    customers:
      sql: SELECT id, name, email, score FROM crm_customers
      primary_key: id
  segments:
    high_scores:
      model: customers
      filter: score >= 50
  destinations:
    out:
      account_url: {{env: AZURE_STORAGE_ACCOUNT_URL}}
      container: {container}
      sas_token: {{env: AZURE_STORAGE_SAS_TOKEN}}
  activations:
    everyone_csv:
      source: customers
      destination: out
      file_name: everyone/customers_{{X}}
      format: csv
    high_scores_json:
      source: high_scores
      destination: out
      file_name: high/customers_{{X}}
      format: json
      json: {{style: lines}}
    changes_csv:
      source: customers
      destination: out
      file_name: changes/customers_{{X}}
      format: csv
      run_type: full_then_delta
      sync_mode: upsert
"""

WORKSPACE = """\
load_from:
  - grpc_server:
      host: 127.0.0.1
      port: {port}
      location_name: azexport
"""

# What the run containers get (deploy/dagster-docker.yaml's env_vars), and the code server too.
FORWARDED = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
    "AZEXPORT_WAREHOUSE",
    "AZEXPORT_LAKE_DATA_PATH",
    "AZEXPORT_LAKE_AZURE_CONNECTION_STRING",
    "AZEXPORT_DUCKDB_MEMORY_LIMIT",
    "PGPASSWORD",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZEXPORT_SOURCE_ACCOUNT_URL",
    "AZEXPORT_SOURCE_SAS_TOKEN",
)


def bin_of(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="module")
def image() -> str:
    """The azexport image, built from deploy/Dockerfile."""
    return container_kit.build_image()


@dataclass
class Stack:
    env: dict[str, str]
    home: Path
    context: Path  # the project image's build context: defs/ and an empty data/
    exports: ContainerClient
    sources: ContainerClient  # the source's Parquet files
    staging: Path  # a DuckDB file on the host where the test edits the rows it uploads
    instance: dg.DagsterInstance
    code_server: str | None = None
    daemon: subprocess.Popen | None = None
    published: dict[str, list[tuple]] | None = None  # rows of each uploaded part

    def change_source(self, *statements: str) -> list[str]:
        """Apply `statements` to the rows, then upload every part whose rows changed as a new
        Parquet file (deleting parts left empty). Returns the blobs written."""
        con = duckdb.connect(str(self.staging))
        try:
            for statement in statements:
                con.execute(statement)
            published = self.published if self.published is not None else {}
            written = []
            for part, low, high in PARTS:
                where = f"id >= {low}" + (f" AND id <= {high}" if high is not None else "")
                select = f"SELECT id, name, email, score FROM customers WHERE {where} ORDER BY id"
                rows = con.execute(select).fetchall()
                if rows == published.get(part, []):
                    continue
                blob = f"customers/{part}.parquet"
                if rows:
                    local = self.staging.with_name(f"{part}.parquet")
                    con.execute(f"COPY ({select}) TO '{local}' (FORMAT parquet)")
                    self.sources.upload_blob(blob, local.read_bytes(), overwrite=True)
                    local.unlink()
                    written.append(blob)
                else:
                    self.sources.delete_blob(blob)
                published[part] = rows
            self.published = published
            return written
        finally:
            con.close()

    def customers(self) -> list[tuple[int, str, str, int]]:
        """The source's rows, as uploaded: read back from the Parquet files."""
        con = duckdb.connect()
        try:
            rows = []
            for blob in sorted(b.name for b in self.sources.list_blobs()):
                local = self.staging.with_name("read.parquet")
                local.write_bytes(self.sources.download_blob(blob).readall())
                rows += con.execute(
                    f"SELECT id, name, email, score FROM read_parquet('{local}')"
                ).fetchall()
                local.unlink()
            return sorted(rows)
        finally:
            con.close()

    def container_env(self) -> list[str]:
        return [arg for name in FORWARDED for arg in ("-e", f"{name}={self.env[name]}")]

    def serve(self, image: str) -> None:
        """(Re)start the code server: a container of the project image, as on a Docker host."""
        self.stop_code_server()
        port = int(self.env["AZEXPORT_TEST_CODE_PORT"])
        self.code_server = container_kit.podman(
            "run", "-d", "--read-only", "--network", "host",
            "--label", "azexport/role=code-server",
            "-e", f"DAGSTER_CURRENT_IMAGE={image}", *self.container_env(),
            image,
            "dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
            "-m", "azexport_assets.definitions", "--location-name", "azexport",
        ).stdout.strip()  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            check = subprocess.run(
                [bin_of("dagster"), "api", "grpc-health-check", "-p", str(port)],
                capture_output=True,
                env=self.env,
            )
            if check.returncode == 0:
                return
            state = container_kit.podman(
                "inspect", "-f", "{{.State.Status}}", self.code_server
            ).stdout.strip()
            if state != "running":
                logs = container_kit.podman("logs", self.code_server, check=False)
                raise AssertionError(f"the code server exited: {logs.stderr[-3000:]}")
            time.sleep(1)
        raise AssertionError("the code server did not answer within 300 s")

    def stop_code_server(self) -> None:
        if self.code_server:
            container_kit.podman("rm", "-f", self.code_server, check=False)
            self.code_server = None

    def submit(self, job: str) -> None:
        """`dagster job launch`: through the instance's run coordinator, into the queue."""
        done = subprocess.run(
            [bin_of("dagster"), "job", "launch", "-w", str(self.home / "workspace.yaml"),
             "-j", job],
            capture_output=True, text=True, timeout=300, env=self.env, cwd=self.home,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [bin_of("dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")],
            cwd=self.home,
            env=self.env,
            stdout=open(self.home / "daemon.log", "ab"),  # noqa: SIM115 (the child's handle)
            stderr=subprocess.STDOUT,
        )

    def stop_daemon(self) -> None:
        if self.daemon and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None

    def blobs(self) -> set[str]:
        return {b.name for b in self.exports.list_blobs()}

    def download(self, name: str) -> bytes:
        return self.exports.download_blob(name).readall()


@pytest.fixture(scope="module")
def project_image(stack: Stack) -> str:
    """The project image (deploy/project/Dockerfile), built once: defs only, no source file."""
    image = container_kit.build_project_image(stack.context, "sources-in-azure")
    found = container_kit.podman(
        "run", "--rm", "--network", "none", image,
        "find", "/opt/azexport", "-path", "/opt/azexport/data/*",
        "-o", "-name", "*.parquet", "-o", "-name", "*.duckdb",
    ).stdout  # fmt: skip
    assert found == "", found
    return image


@pytest.fixture(scope="module")
def stack(
    image: str,
    azurite: Azurite,
    postgres: PostgresServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("docker-host")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    exports = service.create_container(f"exports-{uuid.uuid4().hex[:12]}")
    sources = service.create_container(f"crm-{uuid.uuid4().hex[:12]}")
    lake_data = service.create_container(f"lake-{uuid.uuid4().hex[:12]}")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-docker.yaml", home / "dagster.yaml")
    code_port = free_port()
    (home / "workspace.yaml").write_text(WORKSPACE.format(port=code_port))
    api = container_kit.start_docker_api()
    lake_db = postgres.create_database("lake")
    env = {
        **os.environ,
        "DOCKER_HOST": api.docker_host,
        "DAGSTER_HOME": str(home),
        "AZEXPORT_DOCKER_NETWORK": "host",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USERNAME": USER,
        "DAGSTER_PG_PASSWORD": PASSWORD,
        "DAGSTER_PG_DB": postgres.create_database("dagster"),
        "AZEXPORT_WAREHOUSE": f"ducklake:postgres:{postgres.conninfo(lake_db)}",
        "AZEXPORT_LAKE_DATA_PATH": f"az://{lake_data.container_name}/warehouse/",
        "AZEXPORT_LAKE_AZURE_CONNECTION_STRING": azurite.connection_string,
        "AZEXPORT_DUCKDB_MEMORY_LIMIT": "1GB",
        "PGPASSWORD": PASSWORD,
        "AZURE_STORAGE_ACCOUNT_URL": azurite.account_url,
        "AZURE_STORAGE_SAS_TOKEN": container_sas(azurite.account_url, exports.container_name),
        # The source's own account and credential: read and list only.
        "AZEXPORT_SOURCE_ACCOUNT_URL": azurite.account_url,
        "AZEXPORT_SOURCE_SAS_TOKEN": container_sas(
            azurite.account_url, sources.container_name, "rl"
        ),
        "AZEXPORT_TEST_CODE_PORT": str(code_port),
    }
    context = root / "project"
    (context / "defs" / "crm").mkdir(parents=True)
    (context / "data").mkdir()  # empty: every source is in Azure
    defs = DEFS.format(container=exports.container_name, source_container=sources.container_name)
    (context / "defs" / "crm" / "defs.yaml").write_text(defs)
    staging = root / "staging" / "crm.duckdb"
    staging.parent.mkdir()
    previous_home = os.environ.get("DAGSTER_HOME")
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", *FORWARDED)})
    stack = Stack(
        env=env,
        home=home,
        context=context,
        exports=exports,
        sources=sources,
        staging=staging,
        instance=dg.DagsterInstance.get(),
    )
    try:
        # Deployment steps, each a one-off container of the image: Dagster's schema, the lake.
        run_in_image(stack, image, "dagster", "instance", "migrate")
        assert "created schemas" in run_in_image(
            stack, image, "python", "-m", "azexport_assets.warehouse", "init"
        )
        yield stack
    finally:
        stack.stop_daemon()
        stack.stop_code_server()
        for role in ("run", "code-server", "job"):
            ids = container_kit.podman(
                "ps", "-a", "-q", "--filter", f"label=azexport/role={role}", check=False
            ).stdout.split()
            if ids:
                container_kit.podman("rm", "-f", *ids, check=False)
        api.stop()
        stack.instance.dispose()
        if previous_home is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous_home


def run_in_image(stack: Stack, image: str, *command: str) -> str:
    """A one-off container of the image with the deployment's environment (a Kubernetes Job)."""
    done = container_kit.podman(
        "run", "--rm", "--read-only", "--network", "host", "--label", "azexport/role=job",
        *stack.container_env(), image, *command,
    )  # fmt: skip
    return done.stdout


def wait_for(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def run_round(stack: Stack, image: str) -> dict[str, dg.DagsterRun]:
    """Serve `image`, queue one run per activation, let the daemon start them all at once."""
    stack.serve(image)
    before = {r.run_id for r in stack.instance.get_runs()}
    for name in ACTIVATIONS:
        stack.submit(f"activate_{name}")
    runs = [r for r in stack.instance.get_runs() if r.run_id not in before]
    assert sorted(r.job_name for r in runs) == sorted(f"activate_{n}" for n in ACTIVATIONS)
    stack.start_daemon()
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = [stack.instance.get_run_by_id(r.run_id) for r in runs]
            if all(r.status in FINISHED for r in runs):
                break
            time.sleep(1)
    finally:
        stack.stop_daemon()
    by_activation = {r.job_name.removeprefix("activate_"): r for r in runs}
    failed = {
        n: r.status for n, r in by_activation.items() if r.status != dg.DagsterRunStatus.SUCCESS
    }
    assert not failed, f"{failed}; daemon log: {(stack.home / 'daemon.log').read_text()[-3000:]}"
    return by_activation


def assert_in_own_containers(stack: Stack, runs: dict[str, dg.DagsterRun], image: str) -> None:
    """Each run ran in a new container of `image`: read-only, nothing of the host mounted."""
    ids = {name: run.tags["docker/container_id"] for name, run in runs.items()}
    assert len(set(ids.values())) == len(runs)
    records = {name: stack.instance.get_run_record_by_id(r.run_id) for name, r in runs.items()}
    # Launched at once: every run started before any of them ended.
    assert max(r.start_time for r in records.values()) < min(r.end_time for r in records.values())
    for container in ids.values():
        inspected = json.loads(container_kit.podman("inspect", container).stdout)[0]
        assert inspected["ImageName"] == image
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert [m for m in inspected["Mounts"] if m.get("Type") != "tmpfs"] == []
        assert inspected["State"]["ExitCode"] == 0
        assert inspected["Config"]["Labels"]["azexport/role"] == "run"


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode(), newline="")))


def as_csv(rows) -> list[dict[str, str]]:
    return [{"id": str(i), "name": n, "email": e, "score": str(s)} for i, n, e, s in rows]


def as_json(rows) -> list[dict]:
    return [{"id": i, "name": n, "email": e, "score": s} for i, n, e, s in rows]


def new_files(stack: Stack, before: set[str]) -> dict[str, bytes]:
    """The blobs written since `before`, by folder: exactly one file per activation."""
    added = sorted(stack.blobs() - before)
    folders = [name.split("/")[0] for name in added]
    assert sorted(folders) == ["changes", "everyone", "high"], added
    return {name.split("/")[0]: stack.download(name) for name in added}


def check_full_exports(files: dict[str, bytes], rows) -> None:
    by_id = lambda r: int(r["id"])  # noqa: E731
    assert sorted(csv_rows(files["everyone"]), key=by_id) == as_csv(rows)
    high = [json.loads(line) for line in files["high"].decode().splitlines()]
    assert sorted(high, key=by_id) == as_json(r for r in rows if r[3] >= 50)


SEED = (
    "CREATE TABLE customers AS SELECT i AS id, 'name ' || i AS name, "
    "'c' || i || '@example.com' AS email, (i * 37) % 100 AS score FROM range(1, 301) AS r(i)"
)


def test_the_run_containers_get_every_variable_the_defs_read():
    """Every `{env: VAR}` of the test's defs, the source's included, is one that
    deploy/dagster-docker.yaml passes to the run containers (and the code server gets here)."""
    read = set(re.findall(r"\{\{env: (\w+)\}\}", DEFS))
    assert read == {
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_SAS_TOKEN",
        "AZEXPORT_SOURCE_ACCOUNT_URL",
        "AZEXPORT_SOURCE_SAS_TOKEN",
    }
    config = yaml.safe_load((REPO / "deploy" / "dagster-docker.yaml").read_text())
    assert read <= set(config["run_launcher"]["config"]["env_vars"])
    assert read <= set(FORWARDED)


# Run inside the image: every module of the project has bytecode that Python will use (the
# magic number of the image's Python, the source's mtime and size), so no process compiles it.
BYTECODE_CHECK = """
import importlib.util, pathlib, struct
root = pathlib.Path("/opt/azexport/azexport_assets")
sources = sorted(root.rglob("*.py"))
missing = []
for source in sources:
    cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
    head = cached.read_bytes()[:16] if cached.exists() else b""
    stat = source.stat()
    expected = (0, int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
    if head[:4] != importlib.util.MAGIC_NUMBER or struct.unpack("<III", head[4:]) != expected:
        missing.append(str(source))
print(len(sources), missing)
"""


def test_the_image_holds_the_project_compiled(project_image: str):
    """A run worker's start does not compile the project's modules: the image is read-only
    and sets PYTHONDONTWRITEBYTECODE, so bytecode it lacks would be compiled in every process."""
    out = container_kit.podman(
        "run", "--rm", "--read-only", "--network", "none", project_image,
        "python", "-c", BYTECODE_CHECK,
    ).stdout  # fmt: skip
    count, missing = out.strip().split(" ", 1)
    assert int(count) > 50 and missing == "[]", out


def test_three_activations_each_in_its_own_container(stack: Stack, project_image: str):
    written = stack.change_source(SEED)
    assert written == ["customers/part-1.parquet", "customers/part-2.parquet"]

    before = stack.blobs()
    runs = run_round(stack, project_image)
    assert_in_own_containers(stack, runs, project_image)
    rows = stack.customers()
    assert len(rows) == 300
    files = new_files(stack, before)
    check_full_exports(files, rows)
    assert sorted(csv_rows(files["changes"]), key=lambda r: int(r["id"])) == as_csv(rows)

    # The source changes in Azure alone: new Parquet files, the same image.
    written = stack.change_source(
        "UPDATE customers SET email = 'new' || id || '@example.com' WHERE id IN (3, 150, 299)",
        "UPDATE customers SET score = 99 WHERE id = 10",
        "DELETE FROM customers WHERE id = 42",
        "INSERT INTO customers VALUES (301, 'name 301', 'c301@example.com', 77), "
        "(302, 'name 302', 'c302@example.com', 5)",
    )
    assert written == [f"customers/{part}.parquet" for part in ("part-1", "part-2", "part-3")]
    before = stack.blobs()
    runs = run_round(stack, project_image)
    assert_in_own_containers(stack, runs, project_image)
    rows = stack.customers()
    assert len(rows) == 301 and 42 not in {r[0] for r in rows}
    assert next(r for r in rows if r[0] == 150)[2] == "new150@example.com"
    files = new_files(stack, before)
    check_full_exports(files, rows)
    changed = [r for r in rows if r[0] in (3, 10, 150, 299, 301, 302)]
    assert sorted(csv_rows(files["changes"]), key=lambda r: int(r["id"])) == as_csv(changed)


def test_a_killed_run_container_is_marked_failed_and_retried(stack: Stack, project_image: str):
    earlier_exports = any(name.startswith("changes/") for name in stack.blobs())
    if stack.published is None:  # run on its own: a first source
        stack.change_source(SEED)
    before = stack.customers()
    written = stack.change_source(
        "UPDATE customers SET name = 'renamed ' || id WHERE id IN (5, 6)",
        "INSERT INTO customers VALUES (1001, 'name 1001', 'c1001@example.com', 1)",
    )
    assert written == ["customers/part-1.parquet", "customers/part-3.parquet"]
    after = stack.customers()
    changed = sorted(set(after) - set(before)) if earlier_exports else after
    assert len(changed) == (3 if earlier_exports else len(after))
    stack.serve(project_image)
    exported_before = stack.blobs()

    # The test holds the activation's lock, so the run waits in its delta step (the lock is
    # taken there) until its container has been killed: nothing is exported by the first run.
    held = open_warehouse().activation_lock("changes_csv", holder="test")
    held.acquire()
    try:
        known = {r.run_id for r in stack.instance.get_runs()}
        stack.submit("activate_changes_csv")
        (first,) = [r for r in stack.instance.get_runs() if r.run_id not in known]
        stack.start_daemon()

        def delta_step_started():
            records = stack.instance.get_records_for_run(
                first.run_id, of_type=dg.DagsterEventType.STEP_START
            ).records
            return any(r.event_log_entry.step_key.endswith("_delta") for r in records)

        wait_for("the first run's delta step", delta_step_started, 300)
        container = stack.instance.get_run_by_id(first.run_id).tags["docker/container_id"]
        container_kit.podman("kill", container)
        killed_at = time.monotonic()
    finally:
        held.release()
    try:
        failed = wait_for(
            "run monitoring marks the killed run failed",
            lambda: (
                stack.instance.get_run_by_id(first.run_id).status == dg.DagsterRunStatus.FAILURE
            ),
            180,
        )
        detected_after = time.monotonic() - killed_at

        def retry_finished():
            retries = stack.instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/parent_run_id": first.run_id})
            )
            return retries if retries and retries[0].status in FINISHED else None

        (retry,) = wait_for("the retry of the killed run", retry_finished, 600)
    finally:
        stack.stop_daemon()
    assert failed and detected_after < 120
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    assert retry.tags["azexport/activation"] == "changes_csv"
    assert retry.tags["docker/container_id"] != container

    (exported,) = sorted(stack.blobs() - exported_before)
    assert exported.startswith("changes/")
    rows = sorted(csv_rows(stack.download(exported)), key=lambda r: int(r["id"]))
    assert rows == as_csv(changed)
