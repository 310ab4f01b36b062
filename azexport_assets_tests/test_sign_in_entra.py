"""A service principal signs in through a real OAuth token flow: azure-identity's
ClientSecretCredential discovers the tenant and asks a local HTTPS token service
(`entra_kit`, speaking Microsoft Entra ID's protocol) for a storage token, and the SDK sends it
as a bearer token to an Azurite that serves HTTPS and checks OAuth tokens (`--oauth basic`:
issuer, audience and lifetime; not the signature). Real Dagster runs export, the blobs are
downloaded and compared; a wrong secret fails before anything is written, naming the sign-in
and never the secret."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from azexport_assets.demo.azurite import Azurite, HttpsSettings, start_azurite
from azexport_assets_tests.entra_kit import EntraTokenService, SelfSignedTls
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit
from azexport_assets_tests.test_sign_in import _failure_text, write_project

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0b7ee3b5-2b06-4a3f-8f6e-1c1d5f9f6a10"
SECRET = "sp-Secret~value.for_the.app-42"
LOGICAL = datetime(2025, 4, 14, 6, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> SelfSignedTls:
    return SelfSignedTls.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def azurite_oauth(tls: SelfSignedTls) -> Iterator[Azurite]:
    """Azurite over HTTPS that accepts Microsoft Entra bearer tokens."""
    server = start_azurite(https=HttpsSettings(cert=tls.cert, key=tls.key, oauth=True))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def entra(tls: SelfSignedTls, monkeypatch) -> Iterator[EntraTokenService]:
    # The self-signed certificate is trusted the way a private CA is: azure-core's requests
    # transport reads REQUESTS_CA_BUNDLE for the token service and for the storage account.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.cert))
    with EntraTokenService(tls, TENANT, CLIENT, SECRET) as service:
        yield service


@pytest.fixture
def kit(tmp_path: Path, azurite_oauth: Azurite, entra, monkeypatch) -> Iterator[ProjectKit]:
    """A project on the HTTPS Azurite whose destination signs in as the service principal."""
    owner = BlobServiceClient.from_connection_string(azurite_oauth.connection_string)
    container = owner.create_container(f"sp-{uuid.uuid4().hex[:20]}")
    kit = ProjectKit.create(tmp_path, azurite_oauth, container, "", monkeypatch)
    monkeypatch.setenv("SP_TENANT", TENANT)
    monkeypatch.setenv("SP_CLIENT", CLIENT)
    monkeypatch.setenv("SP_SECRET", SECRET)
    write_project(
        kit,
        f"""
        account_url: {{env: {URL_ENV}}}
        service_principal:
          tenant_id: {{env: SP_TENANT}}
          client_id: {{env: SP_CLIENT}}
          client_secret: {{env: SP_SECRET}}
          authority_host: {entra.authority}
          disable_instance_discovery: true
        """,
        "run_type: full_then_delta\nsync_mode: upsert",
    )
    yield kit
    kit.close()


def _run_text(result) -> str:
    """Every event of the run, with the materializations' metadata."""
    texts = [str(e) for e in result.all_events]
    texts += [
        str(e.event_specific_data.materialization.metadata)
        for e in result.all_events
        if e.is_step_materialization
    ]
    return "\n".join(texts)


def test_a_service_principal_exports_with_a_token_from_its_tenant(
    kit: ProjectKit, entra: EntraTokenService
) -> None:
    result = kit.run("people_out", logical_time=LOGICAL)
    assert result.success
    data = kit.download("out/20250414_people.csv").decode()
    assert data.splitlines() == ["id,name", *(f"{i},p{i}" for i in range(5))]
    # The credential found the tenant's OpenID configuration and used the client
    # credentials grant for Azure Storage; the secret went only to the token service.
    assert entra.discovery_requests == [f"/{TENANT}/v2.0/.well-known/openid-configuration"]
    assert entra.token_requests and all(
        r["grant_type"] == "client_credentials"
        and r["client_id"] == CLIENT
        and r["scope"] == "https://storage.azure.com/.default"
        for r in entra.token_requests
    )
    assert SECRET not in _run_text(result)

    # A second run (a delta) signs in again and writes only the change.
    kit.source_sql("UPDATE people SET name = 'changed' WHERE id = 3")
    later = kit.run("people_out", logical_time=LOGICAL.replace(day=15))
    assert later.success
    assert kit.download("out/20250415_people.csv").decode().splitlines() == [
        "id,name",
        "3,changed",
    ]


def test_a_wrong_secret_fails_before_writing_naming_the_sign_in(
    kit: ProjectKit, entra: EntraTokenService, monkeypatch
) -> None:
    wrong = "not-the-Secret~value.42"
    monkeypatch.setenv("SP_SECRET", wrong)
    result = kit.run("people_out", logical_time=LOGICAL, raise_on_error=False)
    assert not result.success
    assert kit.blob_names() == []
    message = _failure_text(result)
    first = message.splitlines()[0]
    assert "preflight" in first and "signed in with a service principal" in first, first
    assert "could not get an Azure identity token" in first and "AADSTS7000215" in first
    assert "check the service principal's tenant_id, client_id and client_secret" in first
    assert "The baseline was not advanced" in first
    joined = _run_text(result)
    assert wrong not in joined and SECRET not in joined
    assert entra.token_requests  # the token service did refuse it


def test_a_token_for_another_audience_is_refused_by_the_account(
    kit: ProjectKit, entra: EntraTokenService
) -> None:
    """The account (Azurite) really checks the token: one for another resource fails the
    pre-flight with the service's own reason."""
    entra.audience = "https://vault.azure.net"
    result = kit.run("people_out", logical_time=LOGICAL, raise_on_error=False)
    assert not result.success and kit.blob_names() == []
    first = _failure_text(result).splitlines()[0]
    assert "signed in with a service principal" in first and "authentication failed" in first
    assert SECRET not in _run_text(result)
