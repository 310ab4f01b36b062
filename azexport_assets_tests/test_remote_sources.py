"""Parquet and CSV sources in Azure Blob Storage (Azurite): read by real runs through DuckDB's
azure extension, with the source's own SAS token from the environment; the sandbox grants
exactly the listed blobs; the on-change sensor watches their ETags; lineage and the model's
rebuild decision follow them. Needs the azure extension, i.e. the lake environment.

Each runs twice: with `az://<container>/<glob>` sources and with `abfss://<container>@<account>
.dfs.core.windows.net/<glob>` ones. Azurite has no Data Lake (dfs) endpoint; an abfss:// source
is read through the account's blob endpoint (its account_url, here Azurite's), as a Data Lake
Storage Gen2 account allows, so both must give the same results.
"""

from __future__ import annotations

import csv
import io
import uuid

import dagster as dg
import duckdb
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from azexport_assets.asset_keys import model_key, source_key
from azexport_assets.config import SourceConfig
from azexport_assets.demo.azurite import DEV_ACCOUNT, container_sas
from azexport_assets.warehouse import Warehouse, resolve_path
from azexport_assets_tests.project_kit import ProjectKit

pytestmark = pytest.mark.lake

SRC_URL = "AZEXPORT_TEST_SOURCE_URL"
SRC_SAS = "AZEXPORT_TEST_SOURCE_SAS"

DEFS = """
models:
  visits:
    sql: SELECT v.id, v.page, o.amount FROM visits_raw v JOIN orders o USING (id)
    primary_key: id
activations:
  visits_out:
    source: visits
    destination: lake
    file_name: out/visits
    trigger: on_change
"""


def _parquet(rows_sql: str) -> bytes:
    con = duckdb.connect()
    try:
        path = f"/tmp/azexport-remote-{uuid.uuid4().hex}.parquet"
        con.execute(f"COPY ({rows_sql}) TO '{path}' (FORMAT parquet)")
        with open(path, "rb") as handle:
            data = handle.read()
        return data
    finally:
        con.close()


@pytest.fixture
def remote(azurite, monkeypatch) -> ContainerClient:
    """A source container in Azurite: two Parquet parts, one CSV, and a private blob."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    source = service.create_container(f"src-{uuid.uuid4().hex[:16]}")
    source.upload_blob(
        "visits/part-1.parquet",
        _parquet("SELECT i AS id, 'page' || i AS page FROM range(0, 50) r(i)"),
    )
    source.upload_blob(
        "visits/part-2.parquet",
        _parquet("SELECT i AS id, 'page' || i AS page FROM range(50, 100) r(i)"),
    )
    source.upload_blob(
        "orders/orders.csv",
        "id,amount\n" + "".join(f"{i},{i * 3}\n" for i in range(100)),
    )
    source.upload_blob("private/salaries.parquet", _parquet("SELECT 1 AS id, 99999 AS salary"))
    monkeypatch.setenv(SRC_URL, azurite.account_url)
    # Read and list only: what a source needs.
    monkeypatch.setenv(SRC_SAS, container_sas(azurite.account_url, source.container_name, "rl"))
    return source


SCHEMES = ["az", "abfss"]


def _url(scheme: str, container: str, glob: str, account: str = DEV_ACCOUNT) -> str:
    """A source location in the container: az://c/<glob> or abfss://c@<account>.dfs.../<glob>."""
    if scheme == "abfss":
        return f"abfss://{container}@{account}.dfs.core.windows.net/{glob}"
    return f"az://{container}/{glob}"


def _extra_sources(container: str, scheme: str = "az") -> str:
    credential = f"account_url: {{env: {SRC_URL}}}, sas_token: {{env: {SRC_SAS}}}"
    visits = _url(scheme, container, "visits/*.parquet")
    orders = _url(scheme, container, "orders/*.csv")
    return (
        f"visits_raw: {{parquet: '{visits}', {credential}}}\n"
        f"orders: {{csv: '{orders}', {credential}}}\n"
    )


def _rows(kit: ProjectKit, name: str) -> list[tuple[int, str, int]]:
    text = kit.download(name).decode()
    return sorted(
        (int(r["id"]), r["page"], int(r["amount"]))
        for r in csv.DictReader(io.StringIO(text, newline=""))
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_run_reads_sources_in_azure(
    project: ProjectKit, remote: ContainerClient, monkeypatch, scheme: str
):
    kit = project
    kit.source_sql("CREATE TABLE unused AS SELECT 1 AS x")
    kit.write_defs(DEFS, extra_sources=_extra_sources(remote.container_name, scheme))

    # Lineage: the model reads both remote sources.
    definitions = kit.definitions()
    graph = definitions.resolve_asset_graph()
    upstream = graph.get(model_key("visits")).parent_keys
    assert {source_key("visits_raw", "visits_raw"), source_key("orders", "orders")} <= set(upstream)
    # Paths in Azure are not mangled into local paths.
    url = _url(scheme, remote.container_name, "visits/*.parquet")
    assert resolve_path(url, kit.root) == url

    result = kit.run("visits_out")
    assert result.success
    assert _rows(kit, "out/visits.csv") == [(i, f"page{i}", i * 3) for i in range(100)]
    # The SAS never reaches the run's log.
    sas = dg.EnvVar(SRC_SAS).get_value()
    logs = "\n".join(
        (e.user_message or "") + (e.dagster_event.message or "" if e.dagster_event else "")
        for e in kit.instance.all_logs(result.run_id)
    )
    assert sas.split("sig=")[1][:20] not in logs

    # An unchanged source (same ETags): the model is not rebuilt.
    again = kit.run("visits_out")
    rebuilt = [
        e.event_specific_data.materialization.metadata["azexport/rebuilt"].value
        for e in again.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == model_key("visits")
    ]
    assert rebuilt == [False]


def test_a_view_model_over_sources_in_azure_is_exported(project: ProjectKit, remote):
    """The export streams from a cursor of its connection, which is given the connection's
    views of the remote sources again; DuckDB's secret for their container is the database's,
    so the cursor reads the blobs with it."""
    kit = project
    kit.source_sql("CREATE TABLE unused AS SELECT 1 AS x")
    kit.write_defs(
        DEFS.replace("primary_key: id\n", "primary_key: id\n    materialized: view\n"),
        extra_sources=_extra_sources(remote.container_name),
    )
    assert kit.run("visits_out").success
    assert _rows(kit, "out/visits.csv") == [(i, f"page{i}", i * 3) for i in range(100)]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_sandbox_grants_exactly_the_listed_blobs(
    project: ProjectKit, remote: ContainerClient, tmp_path, scheme: str
):
    config = SourceConfig.model_validate(
        {
            "parquet": _url(scheme, remote.container_name, "visits/*.parquet"),
            "account_url": {"env": SRC_URL},
            "sas_token": {"env": SRC_SAS},
        }
    )
    warehouse = Warehouse(tmp_path / "w.duckdb", project_root=project.root)
    with warehouse.connect(holder="test", sources={"visits_raw": config}) as con:
        assert con.execute("SELECT count(*) FROM visits_raw").fetchall() == [(100,)]
        listed = f"az://{remote.container_name}/visits/part-1.parquet"
        assert con.execute(f"SELECT count(*) FROM read_parquet('{listed}')").fetchall() == [(50,)]
        # Another blob of the same container, readable with the same SAS: refused by DuckDB.
        private = f"az://{remote.container_name}/private/salaries.parquet"
        with pytest.raises(duckdb.Error, match="[Pp]ermission"):
            con.execute(f"SELECT * FROM read_parquet('{private}')").fetchall()
        with pytest.raises(duckdb.Error, match="[Pp]ermission"):
            con.execute(f"SELECT * FROM glob('az://{remote.container_name}/*')").fetchall()
        # The same blob by its abfss:// name is no way around the grants either.
        private = _url("abfss", remote.container_name, "private/salaries.parquet")
        with pytest.raises(duckdb.Error, match="[Pp]ermission"):
            con.execute(f"SELECT * FROM read_parquet('{private}')").fetchall()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_on_change_sensor_watches_blobs(
    project: ProjectKit, remote: ContainerClient, scheme: str
):
    kit = project
    kit.source_sql("CREATE TABLE unused AS SELECT 1 AS x")
    kit.write_defs(DEFS, extra_sources=_extra_sources(remote.container_name, scheme))
    sensor = kit.definitions().resolve_sensor_def("activate_visits_out_on_change")

    def evaluate(cursor: str | None) -> dg.SensorResult:
        return sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, instance=kit.instance))

    first = evaluate(None)
    assert first.run_requests == []
    assert evaluate(first.cursor).run_requests == []
    # A blob outside the glob is not a change of the source.
    remote.upload_blob("private/other.parquet", b"x", overwrite=True)
    assert evaluate(first.cursor).run_requests == []
    # Rewriting a part (new ETag) is.
    remote.upload_blob(
        "visits/part-2.parquet",
        _parquet("SELECT i AS id, 'new' || i AS page FROM range(50, 100) r(i)"),
        overwrite=True,
    )
    (request,) = evaluate(first.cursor).run_requests
    assert request.tags["azexport/changed_sources"] == "visits_raw"


def test_remote_source_configuration_errors(project: ProjectKit, remote: ContainerClient):
    for body, message in (
        ("{parquet: 'az://c1x/x/*.parquet'}", "needs 'account_url' and exactly one credential"),
        ("{parquet: 'https://example.com/x.parquet'}", "must be in Azure Blob Storage"),
        (
            f"{{parquet: 'data/*.parquet', sas_token: {{env: {SRC_SAS}}}}}",
            "a local path needs none",
        ),
    ):
        kit = project
        kit.write_defs("models: {}\n", extra_sources=f"bad: {body}\n")
        with pytest.raises(Exception, match="bad") as raised:
            kit.definitions()
        text = str(raised.value)
        assert message in text and "defs.yaml" in text, text


def test_an_abfss_source_of_another_account_than_account_url_is_refused(
    project: ProjectKit, remote: ContainerClient
):
    """The blob endpoint read is account_url's: an abfss:// URL that names another account
    would silently read a container of the wrong account; the run fails before reading."""
    kit = project
    kit.source_sql("CREATE TABLE unused AS SELECT 1 AS x")
    credential = f"account_url: {{env: {SRC_URL}}}, sas_token: {{env: {SRC_SAS}}}"
    visits = _url("abfss", remote.container_name, "visits/*.parquet", account="elsewhere")
    orders = _url("abfss", remote.container_name, "orders/*.csv")
    kit.write_defs(
        DEFS,
        extra_sources=(
            f"visits_raw: {{parquet: '{visits}', {credential}}}\n"
            f"orders: {{csv: '{orders}', {credential}}}\n"
        ),
    )
    with pytest.raises(Exception, match="visits_raw") as raised:
        kit.definitions()
        kit.run("visits_out")
    text = str(raised.value)
    assert f"is in account 'elsewhere' but account_url is of account '{DEV_ACCOUNT}'" in text, text
    assert kit.blob_names("out/") == []
