"""The demo's machinery: runs launched through Dagster, export metadata read back, the
Azurite port kept across runs, the webhook receiver, and stopping process trees."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from datetime import timezone

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from azexport_assets.asset_keys import export_key, sync_log_key
from azexport_assets.components.preview_job import PREVIEW_JOB, preview_run_config
from azexport_assets.demo import __main__ as demo
from azexport_assets.demo import environment
from azexport_assets.demo.azurite import container_sas
from azexport_assets.demo.processes import alive, descendants, identities, stop_trees
from azexport_assets.demo.runs import (
    WrittenBlob,
    export_blobs,
    launch,
    run_exports,
    sync_log_summaries,
    wait_for_run,
)
from azexport_assets.demo.webhook import WebhookReceiver
from azexport_assets_tests.project_kit import SAS_ENV
from azexport_assets_tests.served_kit import serve_project

LOCATION = "demo_test"
DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_audit:
    source: people
    destination: lake
    file_name: audit/people_{X}
    format: csv
    run_type: full_then_delta
    sync_mode: difference
    manifest: true
"""

JOB_RUNS_QUERY = """
query JobRuns($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { runs { runId status } }
  }
}
"""

REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchPipelineReexecution(
    reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}
  ) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


def test_runs_launched_through_dagster_are_in_the_job_history_and_reexecutable(
    project, tmp_path, monkeypatch
):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(50)")
    kit.write_defs(DEFS)
    with serve_project(kit, tmp_path, monkeypatch, LOCATION) as server:
        client = DagsterGraphQLClient(server.host, port_number=server.port)
        run_id = launch(client, "activate_people_audit")
        assert wait_for_run(client, run_id, timeout=180) == dg.DagsterRunStatus.SUCCESS
        instance = dg.DagsterInstance.get()

        exports = run_exports(instance, run_id)
        blobs = exports["people_audit"]
        names = [b.name for b in blobs]
        assert names[-1].endswith("_manifest.json") and blobs[-1].rows is None
        (added,) = [b for b in blobs if b.name.endswith("_added.csv")]
        assert added.rows == 50
        assert added.bytes == len(kit.download(added.name))
        assert kit.download(added.name).decode().splitlines()[1:3] == ["0,p0", "1,p1"]
        manifest = json.loads(kit.download(names[-1]))
        assert blobs[-1].bytes == len(kit.download(names[-1])) and manifest
        # Every blob, the manifest included, has its link in the metadata.
        assert all(b.url and b.url.endswith("/" + b.name) for b in blobs), blobs

        selector = {
            "pipelineName": "activate_people_audit",
            "repositoryName": "__repository__",
            "repositoryLocationName": LOCATION,
        }
        history = server.graphql(JOB_RUNS_QUERY, {"selector": selector})["pipelineOrError"]
        assert [r["runId"] for r in history["runs"]] == [run_id]

        answer = server.graphql(REEXECUTE, {"parentRunId": run_id})["launchPipelineReexecution"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        child = answer["run"]["runId"]
        assert wait_for_run(client, child, timeout=180) == dg.DagsterRunStatus.SUCCESS
        assert instance.get_run_by_id(child).parent_run_id == run_id
        # Nothing changed in between: the re-execution exports an empty difference.
        assert all(b.rows in (0, None) for b in run_exports(instance, child)["people_audit"])


FEATURES = """
models:
  people:
    sql: SELECT *, CASE WHEN id % 2 = 0 THEN 'eu' ELSE 'us' END AS region FROM src.people
    primary_key: id
activations:
  people_regions:
    source: people
    destination: lake
    file_name: "regions/{model}/{activation}_{YYYY}{MM}{DD}"
    run_type: full_then_delta
    sync_mode: upsert
    partition_by: [region]
    sync_log: {retention_days: 7}
    blob_properties:
      access_tier: Cool
      tags: {partner: acme, run: "{run_id}"}
      metadata: {owner: marketing}
"""


def test_the_demos_new_options_show_in_what_it_prints(project, tmp_path, monkeypatch, azurite):
    """What the demo prints for an activation with partition_by, name variables, blob
    properties and a sync log: the partitioned blobs, and the sync log asset's counts."""
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(10)")
    kit.write_defs(FEATURES)
    # Index tags need a SAS with 't' (pre-flight checks it), as the demo's own token has.
    token = container_sas(
        azurite.account_url, kit.container.container_name, environment.DEMO_SAS_PERMISSION
    )
    monkeypatch.setenv(SAS_ENV, token)
    with serve_project(kit, tmp_path, monkeypatch, LOCATION) as server:
        client = DagsterGraphQLClient(server.host, port_number=server.port)
        first = launch(client, "activate_people_regions")
        assert wait_for_run(client, first, timeout=180) == dg.DagsterRunStatus.SUCCESS
        instance = dg.DagsterInstance.get()

        blobs = run_exports(instance, first)["people_regions"]
        # An ad-hoc run's logical time is its launch time (UTC here).
        launched = instance.get_run_record_by_id(first).create_timestamp
        stem = f"people_regions_{launched.astimezone(timezone.utc):%Y%m%d}"
        assert sorted(b.name for b in blobs) == [
            f"regions/people/region=eu/{stem}.csv",
            f"regions/people/region=us/{stem}.csv",
        ]
        for blob in blobs:
            lines = kit.download(blob.name).decode().splitlines()
            assert len(lines) - 1 == blob.rows == 5
            properties = kit.container.get_blob_client(blob.name).get_blob_properties()
            assert properties.blob_tier == "Cool"
            assert properties.metadata["owner"] == "marketing"
            tags = kit.container.get_blob_client(blob.name).get_blob_tags()
            assert tags == {"partner": "acme", "run": first}

        # The next run (the same day: the same names) sends the two changed people.
        kit.source_sql("UPDATE people SET name = 'changed' WHERE id IN (3, 4)")
        second = launch(client, "activate_people_regions")
        assert wait_for_run(client, second, timeout=180) == dg.DagsterRunStatus.SUCCESS
        assert sync_log_summaries(instance, first) == {
            "people_regions": "sync log azexport_log.people_regions: 10 keys this run "
            "(10 added), 10 kept (7 days)"
        }
        assert sync_log_summaries(instance, second) == {
            "people_regions": "sync log azexport_log.people_regions: 2 keys this run "
            "(2 updated), 12 kept (7 days)"
        }
        changed = run_exports(instance, second)["people_regions"]
        assert {b.name.split("/")[2]: b.rows for b in changed} == {"region=eu": 1, "region=us": 1}
        assert kit.download(f"regions/people/region=eu/{stem}.csv").decode().splitlines() == [
            "id,name,region",
            "4,changed,eu",
        ]


def test_the_preview_hint_names_a_demo_activation_and_its_preview_job():
    from azexport_assets.definitions import defs

    assert f"{PREVIEW_JOB} (activation: {demo.PREVIEW_ACTIVATION})" in demo.PREVIEW_HINT
    assert f"-m azexport_assets.preview {demo.PREVIEW_ACTIVATION}" in demo.PREVIEW_HINT
    definitions = defs()
    # The preview job takes the activation's name, and only a name the project declares.
    job = definitions.resolve_job_def(PREVIEW_JOB)
    dg.validate_run_config(job, preview_run_config(demo.PREVIEW_ACTIVATION))
    with pytest.raises(dg.DagsterInvalidConfigError, match="no_such_activation"):
        dg.validate_run_config(job, preview_run_config("no_such_activation"))
    # The demo shows the new options on its own activations.
    graph = definitions.resolve_asset_graph()
    log = sync_log_key(demo.PREVIEW_ACTIVATION)
    assert graph.get(log).parent_keys == {export_key(demo.PREVIEW_ACTIVATION)}


def _table(rows: list[dict]) -> dg.MetadataValue:
    columns = [("blob", "string"), ("rows", "int"), ("bytes", "int"), ("md5", "string")]
    return dg.MetadataValue.table(
        [dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in columns]),
    )


def test_export_blobs_reads_the_files_table_and_one_url_per_blob():
    base = "http://127.0.0.1:10000/devstoreaccount1/lake"
    metadata = {
        "files": _table(
            [
                {"blob": "p/a b_added.csv", "rows": 3, "bytes": 30, "md5": "x"},
                {"blob": "p/a b_removed.csv", "rows": 1, "bytes": 12, "md5": "y"},
            ]
        ),
        "dagster/row_count": dg.MetadataValue.int(4),
        "blob_1": dg.MetadataValue.url(f"{base}/p/a%20b_added.csv"),
        "blob_2": dg.MetadataValue.url(f"{base}/p/a%20b_removed.csv"),
        "manifest": dg.MetadataValue.text("p/a b_manifest.json"),
        "manifest_bytes": dg.MetadataValue.int(99),
    }
    assert export_blobs(metadata) == [
        WrittenBlob("p/a b_added.csv", 30, 3, f"{base}/p/a%20b_added.csv"),
        WrittenBlob("p/a b_removed.csv", 12, 1, f"{base}/p/a%20b_removed.csv"),
        WrittenBlob("p/a b_manifest.json", 99, None, None),
    ]


def test_export_blobs_falls_back_to_the_blob_files_list():
    metadata = {
        "files": dg.MetadataValue.int(1),  # a count, in metadata written before the table
        "blob_files": dg.MetadataValue.json(
            [{"name": "x.csv", "rows": 5, "bytes": 50, "md5": "m"}]
        ),
        "blob_urls": dg.MetadataValue.json(["http://h:1/acct/c/x.csv"]),
    }
    assert export_blobs(metadata) == [WrittenBlob("x.csv", 50, 5, "http://h:1/acct/c/x.csv")]
    assert export_blobs({"rows": dg.MetadataValue.int(0)}) == []


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(environment, "STATE_DIR", tmp_path)
    monkeypatch.setattr(environment, "PORT_FILE", tmp_path / "azurite.port")
    return tmp_path


def test_azurite_keeps_its_port_and_a_running_one_is_reused(state_dir, capsys):
    with environment.demo_azurite() as (first_url, _):
        port = environment.remembered_port()
        assert port and first_url.startswith(f"http://127.0.0.1:{port}/")
        assert port < 32768  # outside the ephemeral range: stays free between runs
        with environment.demo_azurite() as (reused_url, _):
            assert reused_url == first_url
        assert "already running" in capsys.readouterr().out
        assert environment.azurite_listens_on(port)  # the inner block did not stop it
    assert not environment.azurite_listens_on(port)
    with environment.demo_azurite() as (again_url, _):
        assert again_url == first_url


def test_azurite_moves_when_its_port_is_taken_by_another_program(state_dir, capsys):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        environment.PORT_FILE.write_text(str(taken))
        with environment.demo_azurite() as (url, _):
            assert f":{taken}/" not in url
            assert environment.remembered_port() != taken
    assert f"Port {taken}" in capsys.readouterr().out


def test_webhook_receiver_writes_what_it_receives(tmp_path):
    with WebhookReceiver(tmp_path / "webhook") as receiver:
        body = json.dumps({"check": "sas_expiry", "activation": "a"}).encode()
        request = urllib.request.Request(
            receiver.url, data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 204
        (record,) = receiver.received()
    assert record["payload"] == {"check": "sas_expiry", "activation": "a"}
    assert record["path"] == "/warnings"
    lines = (tmp_path / "webhook" / "received.jsonl").read_text().splitlines()
    assert [json.loads(line)["payload"]["check"] for line in lines] == ["sas_expiry"]


def test_stop_trees_kills_a_tree_that_ignores_interrupts(tmp_path):
    # A parent and children that ignore SIGINT and SIGTERM; one child in its own session.
    script = 'trap "" INT TERM; sleep 300 & sleep 300 & setsid sleep 300 & wait'
    root = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(descendants(root.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = identities(descendants(root.pid) | {root.pid})
    assert len(tree) == 4
    started = time.monotonic()
    stop_trees([root], interrupt_grace=0.5, term_grace=0.5)
    assert time.monotonic() - started < 5
    assert not alive(tree)
    assert root.returncode is not None


def test_an_account_in_dotenv_is_what_the_demo_uses_and_says(state_dir, monkeypatch, capsys):
    # Dagster reads the project's .env and its values win: the demo must not claim Azurite
    # while the runs go to the account named there.
    monkeypatch.setattr(environment, "DOTENV", state_dir / ".env")
    for name in ("AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_SAS_TOKEN", "DAGSTER_HOME"):
        monkeypatch.setenv(name, "placeholder")  # restored (unset) after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(state_dir / "warehouse.duckdb"))
    (state_dir / "demo").mkdir()
    (state_dir / "demo" / "crm.duckdb").touch()  # data exist: nothing to generate
    url = "https://someaccount.blob.core.windows.net"
    (state_dir / ".env").write_text(
        f"AZURE_STORAGE_ACCOUNT_URL={url}\nAZURE_STORAGE_SAS_TOKEN=sv=2024&sig=abc\n"
    )
    with environment.demo_environment() as env:
        assert env == {"account_url": url, "azurite": "no"}
        assert os.environ["AZURE_STORAGE_SAS_TOKEN"] == "sv=2024&sig=abc"
    out = capsys.readouterr().out
    assert (
        f".env sets AZURE_STORAGE_ACCOUNT_URL: Dagster reads it, so the demo exports to {url}"
        in out
    )
    assert "sig=abc" not in out
    assert not (state_dir / "azurite.port").exists()  # no Azurite was started


def test_the_demos_own_dotenv_keeps_its_azurite(state_dir, monkeypatch, capsys):
    monkeypatch.setattr(environment, "DOTENV", state_dir / ".env")
    environment.PORT_FILE.write_text("10123\n")
    lines = [f"AZURE_STORAGE_ACCOUNT_URL={environment.account_url_for(10123)}"]
    (state_dir / ".env").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_URL", "placeholder")
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_URL")
    environment.adopt_dotenv_account()
    assert "AZURE_STORAGE_ACCOUNT_URL" not in os.environ
    assert capsys.readouterr().out == ""
