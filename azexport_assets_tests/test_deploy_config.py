"""The deployment files agree with the chart, with each other and with the project's defs.

- deploy/helm/values.yaml validates against the Dagster chart's values schema (the pinned part
  in deploy/helm/dagster-chart-values.schema.json), and a misspelt key is caught;
- every environment variable the shipped defs read (`{env: VAR}`, `webhook_url_env`) and every
  variable the lake needs reaches the code server and the run pods: from the deployment's
  `env`, or as a key of a secret in deploy/helm/secrets.example.yaml that they load; and no
  secret key is left that nothing reads;
- deploy/dagster-docker.yaml passes the same variables to every run container;
- memory: two DuckDB connections per run fit under the run pod's and container's limit.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pydantic
import pytest
import yaml

from azexport_assets.components.loading import load_project_from_folder
from azexport_assets.config import SecretRef

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DEMO_DEFS = REPO / "azexport_assets" / "defs"

# What the lake itself reads (docs/deploy.md): the catalog, the data path, the catalog's
# password (libpq), the memory limit, and one of the two ways to reach az:// data.
LAKE = {
    "AZEXPORT_WAREHOUSE",
    "AZEXPORT_LAKE_DATA_PATH",
    "PGPASSWORD",
    "AZEXPORT_DUCKDB_MEMORY_LIMIT",
}
LAKE_CREDENTIAL = {"AZEXPORT_LAKE_AZURE_CONNECTION_STRING", "AZEXPORT_LAKE_AZURE_ACCOUNT"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def values() -> dict:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


def chart_schema() -> dict:
    """The pinned schema, as the chart applies it to values merged over its own defaults.

    Objects reached through object keys are merged with the chart's values.yaml, so their
    required keys are always there: those `required` lists are dropped. List items (user
    deployments, tag limits) are not merged: theirs stay. Kubernetes object definitions point
    at kubernetesjsonschema.dev; they are not fetched (only their local constraints apply)."""
    schema = json.loads((DEPLOY / "helm" / "dagster-chart-values.schema.json").read_text())
    list_items: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            items = node.get("items")
            if isinstance(items, dict) and "$ref" in items:
                list_items.add(items["$ref"].rsplit("/", 1)[-1])
            if str(node.get("$ref", "")).startswith("http"):
                del node["$ref"]
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    for name, definition in schema["definitions"].items():
        if name not in list_items:
            definition.pop("required", None)
    return schema


def test_helm_values_validate_against_the_chart_schema():
    schema = chart_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values(), schema)

    misspelt = copy.deepcopy(values())
    launcher = misspelt["runLauncher"]["config"]["k8sRunLauncher"]
    launcher["envSecret"] = launcher.pop("envSecrets")
    with pytest.raises(jsonschema.ValidationError, match="envSecret"):
        jsonschema.validate(misspelt, schema)
    deployment = copy.deepcopy(values())
    del deployment["dagster-user-deployments"]["deployments"][0]["port"]
    with pytest.raises(jsonschema.ValidationError, match="port"):
        jsonschema.validate(deployment, schema)


def secret_refs(value) -> set[str]:
    """Every `{env: VAR}` inside a config object (destinations, activations, ...)."""
    if isinstance(value, SecretRef):
        return {value.env}
    if isinstance(value, pydantic.BaseModel):
        return set().union(*(secret_refs(getattr(value, f)) for f in type(value).model_fields))
    if isinstance(value, dict):
        return set().union(*(secret_refs(v) for v in value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(*(secret_refs(v) for v in value))
    return set()


def demo_variables() -> tuple[set[str], set[str]]:
    """(read by runs, read by the code server's sensors only) in the shipped defs."""
    project = load_project_from_folder(DEMO_DEFS, REPO)
    runs = secret_refs(project.sources) | secret_refs(project.destinations)
    runs |= secret_refs(project.activations)
    sensors = {
        a.warnings.webhook_url_env
        for a in project.activations.values()
        if a.warnings.webhook_url_env
    }
    return runs, sensors - runs


def secret_keys() -> dict[str, set[str]]:
    documents = yaml.safe_load_all((DEPLOY / "helm" / "secrets.example.yaml").read_text())
    return {d["metadata"]["name"]: set(d["stringData"]) for d in documents}


def env_names(env) -> set[str]:
    if isinstance(env, dict):
        return set(env)
    return {item["name"] for item in env or []}


def test_every_variable_the_defs_read_reaches_the_code_server_and_the_runs():
    runs_read, sensors_read = demo_variables()
    assert runs_read == {"AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_SAS_TOKEN"}
    assert sensors_read == {"AZEXPORT_DEMO_WEBHOOK_URL"}
    secrets = secret_keys()
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    from_secrets = set().union(*(secrets[s["name"]] for s in deployment["envSecrets"]))
    code_server = env_names(deployment["env"]) | from_secrets

    launcher = values()["runLauncher"]["config"]["k8sRunLauncher"]
    run_pod = set().union(*(secrets[s["name"]] for s in launcher.get("envSecrets", [])))
    run_pod |= set(launcher.get("envVars", []))
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    run_pod |= code_server

    needed = runs_read | LAKE
    assert needed | sensors_read <= code_server, sorted(needed | sensors_read - code_server)
    assert needed <= run_pod, sorted(needed - run_pod)
    assert code_server & LAKE_CREDENTIAL and run_pod & LAKE_CREDENTIAL
    # No secret key that nothing reads (the password of Dagster's storage is the chart's own).
    assert secrets["azexport-secrets"] <= needed | sensors_read
    assert secrets[values()["global"]["postgresqlSecretName"]] == {"postgresql-password"}


def test_the_docker_host_instance_passes_every_variable_to_the_runs():
    runs_read, _ = demo_variables()
    launcher = load_yaml(DEPLOY / "dagster-docker.yaml")["run_launcher"]
    assert launcher["class"] == "DockerRunLauncher"
    forwarded = set(launcher["config"]["env_vars"])
    storage = {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME"}
    storage |= {"DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}
    needed = runs_read | LAKE | storage
    assert needed <= forwarded, sorted(needed - forwarded)
    assert forwarded & LAKE_CREDENTIAL


def size(text: str) -> int:
    """'2GB', '6Gi', '6g' as bytes."""
    text = text.strip()
    if text[-1] in "gG" and text[-2:-1].isdigit():
        text = f"{text[:-1]}GiB"
    elif text.endswith("i"):
        text += "B"
    return int(pydantic.TypeAdapter(pydantic.ByteSize).validate_python(text))


def test_memory_limits_leave_room_for_two_duckdb_connections_per_run():
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    duckdb_limit = size(
        next(e["value"] for e in deployment["env"] if e["name"] == "AZEXPORT_DUCKDB_MEMORY_LIMIT")
    )
    run_config = values()["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    resources = run_config["containerConfig"]["resources"]
    pod_limit = size(resources["limits"]["memory"])
    assert size(resources["requests"]["memory"]) == pod_limit  # no eviction below the limit
    assert 2 * duckdb_limit + size("1GiB") <= pod_limit
    assert "ephemeral-storage" in resources["requests"]

    docker = load_yaml(DEPLOY / "dagster-docker.yaml")["run_launcher"]["config"]
    assert size(docker["container_kwargs"]["mem_limit"]) == pod_limit


def test_the_maintenance_cronjob_opens_the_same_lake_as_the_runs():
    (deployment,) = values()["dagster-user-deployments"]["deployments"]
    job = load_yaml(DEPLOY / "helm" / "maintain-cronjob.yaml")
    pod = job["spec"]["jobTemplate"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    lake = {e["name"]: e["value"] for e in deployment["env"] if e["name"].startswith("AZEXPORT_")}
    assert {e["name"]: e["value"] for e in container["env"]} == lake
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == [
        s["name"] for s in deployment["envSecrets"]
    ]
    image = deployment["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}"
    assert container["command"][:4] == ["python", "-m", "azexport_assets.warehouse", "maintain"]
    assert pod["spec"]["serviceAccountName"] == values()["global"]["serviceAccountName"]
    assert pod["metadata"]["labels"] == deployment["labels"]
