"""The shipped code location: the demo's lineage, jobs and schedules, as the UI shows them."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

import dagster as dg
import pytest

from azexport_assets.demo.azurite import PROJECT_ROOT, free_port
from azexport_assets.demo.processes import spawn, stop_trees, with_environment

CHAIN = [
    (["sources", "crm", "crm.customers"], ["models", "customers"]),
    (["sources", "orders", "orders"], ["models", "customers"]),
    (["models", "customers"], ["segments", "active_french_customers"]),
    (
        ["segments", "active_french_customers"],
        ["activations", "french_customers_upsert", "french_customers_upsert_delta"],
    ),
    (
        ["activations", "french_customers_upsert", "french_customers_upsert_delta"],
        ["activations", "french_customers_upsert", "french_customers_upsert_export"],
    ),
    (["models", "customers"], ["activations", "customers_snapshot", "customers_snapshot_delta"]),
]


def test_demo_definitions_lineage_jobs_and_schedules():
    from azexport_assets.definitions import defs

    definitions = defs()
    graph = definitions.resolve_asset_graph()
    for upstream, downstream in CHAIN:
        parents = graph.get(dg.AssetKey(downstream)).parent_keys
        assert dg.AssetKey(upstream) in parents, (upstream, downstream)
    groups = {key.path[0]: graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "sources": "sources",
        "models": "models",
        "segments": "segments",
        "activations": "activations",
    }
    jobs = {j.name for j in definitions.resolve_all_job_defs()}
    assert {
        "activate_customers_snapshot",
        "activate_french_customers_upsert",
        "activate_customers_changes",
    } <= jobs
    schedule = definitions.resolve_schedule_def("activate_customers_snapshot_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "Europe/Paris"
    assert schedule.job_name == "activate_customers_snapshot"
    # Secrets are environment variable names in the resource, never values; the resource is
    # fixed by defs.yaml (no run configuration) and the UI shows what it reads.
    resource_def = definitions.resources["azure_marketing_lake"]
    assert "`$AZURE_STORAGE_SAS_TOKEN`" in resource_def.description
    with dg.build_resources({"lake": resource_def}) as resources:
        resource = resources.lake
    assert (resource.account_url_env, resource.secret_env) == (
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_SAS_TOKEN",
    )


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@pytest.mark.timeout(300)
def test_webserver_shows_the_lineage(tmp_path):
    """The real webserver on the real code location: what a user browses in the UI."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 (closed below)
    server = spawn(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        log=log,
    )
    try:
        deadline = time.monotonic() + 240
        nodes = None
        while time.monotonic() < deadline and nodes is None:
            try:
                data = _graphql(
                    port,
                    "{ assetNodes { assetKey { path } groupName "
                    "dependencyKeys { path } description } }",
                )
                nodes = data["assetNodes"] or None
            except OSError:
                time.sleep(1)
        assert nodes, "the webserver did not serve the code location"
        deps = {tuple(n["assetKey"]["path"]): n for n in nodes}
        for upstream, downstream in CHAIN:
            assert upstream in [d["path"] for d in deps[tuple(downstream)]["dependencyKeys"]]
        # Asset descriptions (docstrings) show the SQL in the UI.
        assert "crm.customers" in deps[("models", "customers")]["description"]
        # The code server serves Dagster's catalog of installed component types (runs skip it).
        catalog = _graphql(
            port,
            '{ componentTypesForLocationOrError(locationName: "azexport") '
            "{ ... on ComponentTypes { componentTypes { name } } } }",
        )["componentTypesForLocationOrError"]["componentTypes"]
        assert {"name": "azexport_assets.components.AzureExport"} in catalog
    finally:
        # The webserver and the code server it started.
        stop_trees([server])
        log.close()
    assert not with_environment("DAGSTER_HOME", str(home)), "a process of the test survived"
