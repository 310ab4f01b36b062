"""Every way a destination signs in: a connection string and a container SAS URL against a
real Azurite through Dagster runs; a service principal's configuration and credential (its
real token flow, against a local token service and an OAuth Azurite, is in
`test_sign_in_entra.py`); abfss:// account URLs; one credential per destination; secrets
never in messages or logs."""

from __future__ import annotations

import logging
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest
from azure.identity import CertificateCredential, ClientSecretCredential

from azexport_assets.config import ConfigError, DestinationConfig
from azexport_assets.demo.azurite import DEV_ACCOUNT, DEV_KEY, container_sas
from azexport_assets.project import load_project
from azexport_assets.resources import (
    ConnectionStringCredential,
    ContainerSasUrlCredential,
    ExportBlobStorage,
    ServicePrincipalCredential,
    destination_resource,
)
from azexport_assets.storage import StorageError, preflight, redact, upload_bytes
from azexport_assets_tests.project_kit import ProjectKit

FAST = {"retry_backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "max_retries": 1}
LOGICAL = datetime(2025, 4, 14, 6, 0, tzinfo=timezone.utc)


def sas_connection_string(azurite, token: str) -> str:
    return f"BlobEndpoint={azurite.account_url};SharedAccessSignature={token}"


def sas_url(azurite, container: str, token: str) -> str:
    return f"{azurite.account_url}/{container}?{token}"


def write_project(kit: ProjectKit, destination: str, activation: str = "") -> None:
    """A project whose one destination signs in as `destination` (YAML lines) says."""
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(5)")
    text = f"""\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    src: {{duckdb: src.duckdb}}
  models:
    people:
      sql: SELECT * FROM src.people
      primary_key: id
  destinations:
    lake:
      container: {kit.container.container_name}
      max_retries: 1
      retry_backoff_seconds: 0.05
{textwrap.indent(textwrap.dedent(destination).strip(), " " * 6)}
  activations:
    people_out:
      source: people
      destination: lake
      file_name: out/{{YYYY}}{{MM}}{{DD}}_people
{textwrap.indent(textwrap.dedent(activation).strip(), " " * 6)}
"""
    (kit.root / "defs" / "main" / "defs.yaml").write_text(text)


# --------------------------------------------------------------------------- through Dagster


@pytest.mark.parametrize("form", ["account key", "SAS"])
def test_connection_string_exports(project: ProjectKit, azurite, sas_token, monkeypatch, form):
    value = azurite.connection_string if form == "account key" else None
    value = value or sas_connection_string(azurite, sas_token)
    monkeypatch.setenv("LAKE_CONNECTION", value)
    write_project(project, "connection_string: {env: LAKE_CONNECTION}")
    result = project.run("people_out", logical_time=LOGICAL)
    assert result.success
    data = project.download("out/20250414_people.csv").decode()
    assert data.splitlines() == ["id,name", *(f"{i},p{i}" for i in range(5))]
    _assert_no_secret_in_run(result, [DEV_KEY, sas_token, value])


def test_container_sas_url_exports(project: ProjectKit, azurite, sas_token, monkeypatch):
    url = sas_url(azurite, project.container.container_name, sas_token)
    monkeypatch.setenv("LAKE_SAS_URL", url)
    write_project(project, "sas_url: {env: LAKE_SAS_URL}")
    result = project.run("people_out", logical_time=LOGICAL)
    assert result.success
    assert project.download("out/20250414_people.csv").startswith(b"id,name\n0,p0\n")
    _assert_no_secret_in_run(result, [sas_token, url])


def test_sas_url_expiry_is_watched(project: ProjectKit, azurite, monkeypatch):
    soon = datetime.now(timezone.utc) + timedelta(days=2)
    token = container_sas(azurite.account_url, project.container.container_name, expiry=soon)
    monkeypatch.setenv("LAKE_SAS_URL", sas_url(azurite, project.container.container_name, token))
    write_project(project, "sas_url: {env: LAKE_SAS_URL}", "warnings: {sas_expiry_days: 7}")
    result = project.run("people_out", logical_time=LOGICAL)
    assert result.success
    checks = {
        e.asset_check_key.name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_check_key.name == "sas_expiry"
    }
    assert checks and checks["sas_expiry"].passed is False


def test_read_only_sas_url_fails_before_writing_naming_method_and_permission(
    project: ProjectKit, azurite, monkeypatch
):
    token = container_sas(azurite.account_url, project.container.container_name, "rl")
    monkeypatch.setenv("LAKE_SAS_URL", sas_url(azurite, project.container.container_name, token))
    write_project(project, "sas_url: {env: LAKE_SAS_URL}")
    result = project.run("people_out", logical_time=LOGICAL, raise_on_error=False)
    assert not result.success and project.blob_names() == []
    message = _failure_text(result)
    assert "signed in with a container SAS URL" in message
    assert "permission missing" in message and "'w'" in message
    assert token not in message and "sig=" not in message


def _failure_text(result) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure
    )


def _assert_no_secret_in_run(result, secrets: list[str]) -> None:
    texts = [str(e) for e in result.all_events]
    for event in result.all_events:
        if event.is_step_materialization:
            texts.append(str(event.event_specific_data.materialization.metadata))
    joined = "\n".join(texts)
    for secret in secrets:
        assert secret not in joined


# --------------------------------------------------------------------------- the resource


def storage(credential, account_url: str = "") -> ExportBlobStorage:
    return ExportBlobStorage(account_url=account_url, credential=credential, **FAST)


def test_preflight_names_each_method_and_what_is_missing(azurite, container, caplog):
    caplog.set_level(logging.DEBUG)
    name = container.container_name
    wrong_key = DEV_KEY[:-4] + "AAA="
    read_only = container_sas(azurite.account_url, name, "rl")
    cases = {
        "a connection string": (
            ConnectionStringCredential(
                connection_string=azurite.connection_string.replace(DEV_KEY, wrong_key)
            ),
            "the account key was rejected",
        ),
        "a container SAS URL": (
            ContainerSasUrlCredential(sas_url=sas_url(azurite, name, read_only)),
            "the SAS token needs 'c' and 'w' (it grants 'rl')",
        ),
    }
    for method, (credential, missing) in cases.items():
        with storage(credential).container(name) as client, pytest.raises(StorageError) as error:
            preflight(client)
        message = str(error.value)
        assert f"signed in with {method}" in message, message
        assert missing in message, message
        for secret in (wrong_key, read_only, credential.model_dump().get("sas_url", "x" * 9)):
            assert secret not in message
            assert not any(secret in r.getMessage() for r in caplog.records)


def test_sas_url_for_another_container_is_refused(azurite, container):
    token = container_sas(azurite.account_url, container.container_name)
    credential = ContainerSasUrlCredential(sas_url=sas_url(azurite, "other", token))
    with (
        pytest.raises(StorageError) as error,
        storage(credential).container(container.container_name),
    ):
        pass
    assert "is for container 'other'" in str(error.value) and token not in str(error.value)


def test_connection_string_and_sas_url_write_through_the_resource(azurite, container):
    name = container.container_name
    token = container_sas(azurite.account_url, name)
    for i, credential in enumerate(
        [
            ConnectionStringCredential(connection_string=azurite.connection_string),
            ConnectionStringCredential(connection_string=sas_connection_string(azurite, token)),
            ContainerSasUrlCredential(sas_url=sas_url(azurite, name, token)),
        ]
    ):
        with storage(credential).container(name) as client:
            preflight(client)
            blob = upload_bytes(client, f"b{i}.json", b"[1]", content_type="application/json")
        assert container.download_blob(f"b{i}.json").readall() == b"[1]"
        assert "?" not in blob.url and blob.url.startswith(f"{azurite.account_url}/{name}/")


def test_bad_connection_strings_say_why_without_the_secret(container):
    for text, expected in [
        ("AccountName=acct;AccountKey=", "neither AccountKey nor SharedAccessSignature"),
        ("EndpointSuffix=core.windows.net", "neither BlobEndpoint nor AccountName"),
        ("garbage", "not 'Key=value;...' pairs"),
        ("", "is empty"),
    ]:
        credential = ConnectionStringCredential(connection_string=text)
        with pytest.raises(StorageError) as error, storage(credential).container("c1c"):
            pass
        assert expected in str(error.value)
    key_only = f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={DEV_KEY}"
    client = storage(ConnectionStringCredential(connection_string=key_only)).client()
    assert client.endpoint() == "https://acct.blob.core.windows.net"
    assert redact(f"boom {DEV_KEY}") == "boom <redacted>"


# --------------------------------------------------------------------------- service principal


def test_service_principal_credential_is_built_from_the_environment(monkeypatch):
    monkeypatch.setenv("SP_TENANT", "72f988bf-86f1-41af-91ab-2d7cd011db47")
    monkeypatch.setenv("SP_CLIENT", "0b7ee3b5-2b06-4a3f-8f6e-1c1d5f9f6a10")
    monkeypatch.setenv("SP_SECRET", "s3cr3t-Value~for.the-app")
    destination = DestinationConfig(
        account_url="https://acct.blob.core.windows.net",
        container="exports",
        service_principal={
            "tenant_id": {"env": "SP_TENANT"},
            "client_id": {"env": "SP_CLIENT"},
            "client_secret": {"env": "SP_SECRET"},
        },
    )
    # What a run checks before any work (the delta step) and the UI lists: every variable.
    assert destination.environment_variables == ["SP_TENANT", "SP_CLIENT", "SP_SECRET"]
    resource = destination_resource("lake", destination)
    assert resource.environment_variables == destination.environment_variables
    # Only the variables' names are in the resource's configuration (what the UI shows).
    shown = str(resource.model_dump())
    assert "SP_SECRET" in shown and "s3cr3t" not in shown
    # The values are read when a step opens the destination.
    resolved = resource.client()
    assert "s3cr3t" not in repr(resolved)
    credential = resolved._endpoint_and_credential()[1]
    try:
        assert isinstance(credential, ClientSecretCredential)
        assert redact("token request with s3cr3t-Value~for.the-app") == (
            "token request with <redacted>"
        )
    finally:
        credential.close()


def test_service_principal_with_a_certificate(tmp_path: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azexport-test")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "sp.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    principal = ServicePrincipalCredential(
        tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
        client_id="0b7ee3b5-2b06-4a3f-8f6e-1c1d5f9f6a10",
        certificate_path=str(pem),
    )
    client = storage(principal, "https://acct.blob.core.windows.net").client()
    credential = client._endpoint_and_credential()[1]
    try:
        assert isinstance(credential, CertificateCredential)  # it has read the key pair
    finally:
        credential.close()
    missing = principal.model_copy(update={"certificate_path": str(tmp_path / "nope.pem")})
    with pytest.raises(StorageError, match="does not exist"):
        storage(missing, "https://acct.blob.core.windows.net").client()._sdk_credential()


# --------------------------------------------------------------------------- configuration


def test_abfss_account_urls_become_the_blob_endpoint():
    plain = DestinationConfig(
        account_url="abfss://exports@myacct.dfs.core.windows.net/", sas_token={"env": "S"}
    )
    assert (plain.account_url, plain.container) == (
        "https://myacct.blob.core.windows.net",
        "exports",
    )
    dfs = DestinationConfig(
        account_url="https://myacct.dfs.core.windows.net", container="c1c", account_key={"env": "K"}
    )
    assert dfs.account_url == "https://myacct.blob.core.windows.net"
    china = DestinationConfig(
        account_url="abfss://exports@acct.dfs.core.chinacloudapi.cn",
        container="exports",
        default_azure_credential=True,
    )
    assert china.account_url == "https://acct.blob.core.chinacloudapi.cn"


BASE = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
  models:
    people:
      sql: SELECT id FROM crm.people
      primary_key: id
  destinations:
    lake:
      container: exports
"""


def load_error(tmp_path: Path, destination: str) -> str:
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute("CREATE TABLE IF NOT EXISTS people AS SELECT 1 AS id")
    con.close()
    folder = tmp_path / "defs" / "main"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(BASE + textwrap.indent(destination.strip(), " " * 6) + "\n")
    with pytest.raises(ConfigError) as error:
        load_project(tmp_path / "defs", tmp_path)
    return str(error.value)


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        (
            "account_url: https://a.blob.core.windows.net\nsas_token: {env: S}\n"
            "connection_string: {env: C}",
            "give exactly one credential",
        ),
        ("account_url: https://a.blob.core.windows.net", "(got none)"),
        (
            "account_url: https://a.blob.core.windows.net\nconnection_string: {env: C}",
            "connection_string carries the account's endpoint: leave account_url out",
        ),
        ("sas_url: {env: U}\naccount_url: {env: A}", "sas_url carries the account's endpoint"),
        ("sas_token: {env: S}", "sas_token needs 'account_url'"),
        (
            "account_url: http://127.0.0.1:10000/dev\n"
            "service_principal: {tenant_id: t, client_id: c, client_secret: {env: S}}",
            "service_principal needs an https:// account_url",
        ),
        (
            "account_url: https://a.blob.core.windows.net\n"
            "service_principal: {tenant_id: t, client_id: c}",
            "give exactly one of 'client_secret: {env: VAR}' or 'certificate_path: <file>'",
        ),
        (
            "account_url: https://a.blob.core.windows.net\n"
            "service_principal: {tenant_id: t, client_id: c, client_secret: plain-text}",
            "service_principal.client_secret",
        ),
        (
            "account_url: https://a.blob.core.windows.net\n"
            "service_principal: {tenant_id: t, client_id: c, client_secret: {env: S}, "
            "certificate_password: {env: P}}",
            "certificate_password goes with certificate_path",
        ),
        (
            "account_url: https://a.blob.core.windows.net\n"
            "service_principal: {tenant_id: t, client_id: c, client_secret: {env: S}, "
            "authority_host: 'http://login.example.com'}",
            "service_principal.authority_host",
        ),
        ("connection_string: 'AccountName=a;AccountKey=abc'", "connection_string"),
        (
            "account_url: abfss://other@a.dfs.core.windows.net\nsas_token: {env: S}",
            "account_url names container 'other' but 'container' is 'exports'",
        ),
        (
            "account_url: abfss://exports@a.dfs.core.windows.net/folder\nsas_token: {env: S}",
            "put folders in path_prefix",
        ),
    ],
)
def test_sign_in_errors_at_load_name_file_line_object_field(tmp_path, destination, expected):
    message = load_error(tmp_path, destination)
    assert expected in message, message
    assert "defs/main/defs.yaml:" in message and "destination 'lake'" in message


def test_service_principal_variables_count_as_secrets_in_templates(tmp_path):
    message = load_error(
        tmp_path,
        "account_url: https://a.blob.core.windows.net\n"
        "service_principal: {tenant_id: t, client_id: c, client_secret: {env: SP_SECRET}}\n"
        'description: "{{ env.SP_SECRET }}"',
    )
    assert "SP_SECRET" in message and "secret" in message


def test_service_principal_offline_token_failure_is_one_clear_line(monkeypatch):
    """No Microsoft Entra ID here: the token request fails, and the message says which
    sign-in and what to check, without the secret."""
    principal = ServicePrincipalCredential(
        tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
        client_id="0b7ee3b5-2b06-4a3f-8f6e-1c1d5f9f6a10",
        client_secret="offline-s3cr3t-value",
    )
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9")  # refuses at once
    client = storage(principal, "https://acct.blob.core.windows.net").client()
    with pytest.raises(StorageError) as error:
        client.object_store_options()
    message = str(error.value)
    assert message.startswith("a service principal got no token for the storage account")
    assert "offline-s3cr3t-value" not in message
    assert DEV_ACCOUNT not in message


def test_schema_and_scaffold_show_every_sign_in():
    from azexport_assets.components.scaffold import example_yaml
    from azexport_assets.components.schema import attributes_json_schema

    destination = attributes_json_schema()["properties"]["destinations"]["additionalProperties"]
    fields = destination["properties"]
    assert {"connection_string", "sas_url", "service_principal", "default_azure_credential"} <= set(
        fields
    )
    principal = fields["service_principal"]["anyOf"][0]["properties"]
    assert {
        "tenant_id",
        "client_id",
        "client_secret",
        "certificate_path",
        "authority_host",
        "disable_instance_discovery",
    } <= set(principal)
    # Secrets are {env: VAR} only: no template branch.
    for secret in (fields["connection_string"], fields["sas_url"], principal["client_secret"]):
        assert "pattern" not in str(secret)
    example = example_yaml("azexport_assets.components.AzureExport", "crm")
    for option in ("connection_string:", "sas_url:", "service_principal:", "client_secret:"):
        assert f"#   {option}" in example or f"#     {option}" in example
    assert "# authority_host: https://" in example and "# disable_instance_discovery:" in example
