"""Shared fixtures: one real Azurite per test session, fresh containers per test."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Iterator

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from azexport_assets.demo.azurite import Azurite, container_sas, start_azurite

# The readers' tests import Spark, Polars and pandas: they run in the readers environment
# (`make test-readers`) and are not even collected where those are not installed.
collect_ignore = [] if importlib.util.find_spec("pyspark") else ["test_readers.py"]


@pytest.hookimpl(trylast=True)  # after `-m` has deselected what was not asked for
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where podman cannot start containers, the `containers` suite is one skipped test with
    one line saying why (the rest of it is deselected), and nothing is started for it."""
    suite = [item for item in items if item.get_closest_marker("containers")]
    if not suite:
        return
    from azexport_assets_tests.container_kit import unavailable

    reason = unavailable()
    if reason is None:
        return
    suite[0].add_marker(pytest.mark.skip(reason=reason))
    config.hook.pytest_deselected(items=suite[1:])
    items[:] = [item for item in items if item not in suite[1:]]


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def blob_service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(blob_service: BlobServiceClient) -> Iterator[ContainerClient]:
    """A new empty container, as the account owner sees it (to download and inspect blobs)."""
    client = blob_service.create_container(f"t-{uuid.uuid4().hex[:20]}")
    yield client


@pytest.fixture
def sas_token(azurite: Azurite, container: ContainerClient) -> str:
    return container_sas(azurite.account_url, container.container_name)


@pytest.fixture
def project(tmp_path, azurite, container, sas_token, monkeypatch):
    """An empty throw-away azexport project wired to this test's container (see project_kit)."""
    from azexport_assets_tests.project_kit import ProjectKit

    kit = ProjectKit.create(tmp_path, azurite, container, sas_token, monkeypatch)
    yield kit
    kit.close()
