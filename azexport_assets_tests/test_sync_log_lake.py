"""The sync log on the DuckLake warehouse (catalog in a real Postgres): the file backend's
scenarios, run against a lake. Needs `make test-lake`."""

from __future__ import annotations

import pytest

from azexport_assets_tests import test_sync_log_e2e as scenarios
from azexport_assets_tests.lake_kit import PostgresServer, postgres, use_lake  # noqa: F401
from azexport_assets_tests.project_kit import ProjectKit

pytestmark = pytest.mark.lake


@pytest.fixture
def lake(project: ProjectKit, postgres: PostgresServer, monkeypatch, tmp_path) -> ProjectKit:  # noqa: F811
    """The test project with its warehouse on a new DuckLake (data in a local folder)."""
    use_lake(monkeypatch, postgres, str(tmp_path / "lake-data"), postgres.create_database())
    return project


def test_difference_log_on_the_lake(lake: ProjectKit) -> None:
    scenarios.test_difference_logs_every_exported_key_with_its_operation(lake)
    assert not lake.warehouse_path.exists()  # everything went to the lake


def test_a_failed_run_logs_nothing_on_the_lake(lake: ProjectKit, azurite, monkeypatch) -> None:
    scenarios.test_a_failed_run_logs_nothing_and_its_retry_logs_once(lake, azurite, monkeypatch)


def test_retention_on_the_lake(lake: ProjectKit) -> None:
    scenarios.test_retention_deletes_rows_committed_before_it(lake)


def test_upsert_log_on_the_lake(lake: ProjectKit) -> None:
    scenarios.test_only_exported_rows_are_logged(
        lake, "upsert", {("added", "eu", 10), ("updated", "us", 1)}
    )
