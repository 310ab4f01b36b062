"""The manifest is the commit point: it is uploaded after every data blob, and the baseline
advances only once it is there. Real Dagster runs into Azurite, through a FaultProxy that
records the order of requests and can refuse the manifest."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime, timezone
from urllib.parse import unquote

import duckdb
import pytest

from azexport_assets.delta import baseline_info
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_diff:
    source: people
    destination: lake
    file_name: diff/{YYYY}{MM}{DD}_{HH}
    run_type: full_then_delta
    sync_mode: difference
    manifest: true
"""

T1 = datetime(2025, 4, 14, 7, tzinfo=timezone.utc)
STEM = "diff/20250414_07"


@pytest.fixture
def kit(project: ProjectKit) -> ProjectKit:
    project.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'n' || range AS name FROM range(6)"
    )
    project.write_defs(DEFS)
    project.run("people_diff", logical_time=datetime(2025, 4, 14, 6, tzinfo=timezone.utc))
    project.source_sql(
        "INSERT INTO people VALUES (10, 'new')",
        "UPDATE people SET name = 'changed' WHERE id = 1",
        "DELETE FROM people WHERE id = 0",
    )
    return project


def baseline(kit: ProjectKit) -> str | None:
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        info = baseline_info(con, "people_diff")
    finally:
        con.close()
    return info["delta_id"] if info else None


def ids(kit: ProjectKit, name: str) -> list[int]:
    return sorted(int(r["id"]) for r in csv.DictReader(io.StringIO(kit.download(name).decode())))


def test_the_manifest_is_the_last_blob_written(kit: ProjectKit, azurite, monkeypatch) -> None:
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        result = kit.run("people_diff", logical_time=T1)
        writes = [
            unquote(r.path) for r in proxy.requests if r.method == "PUT" and STEM in unquote(r.path)
        ]
    assert result.success
    assert writes and writes[-1].endswith(f"{STEM}_manifest.json")
    assert sum(w.endswith("_manifest.json") for w in writes) == 1
    data = {f"{STEM}_added.csv", f"{STEM}_updated.csv", f"{STEM}_removed.csv"}
    assert data <= set(kit.blob_names())
    manifest = json.loads(kit.download(f"{STEM}_manifest.json"))
    listed = {f["name"]: f for f in manifest["files"]}
    assert set(listed) == data
    for name, entry in listed.items():  # the manifest describes the committed bytes exactly
        assert entry["md5"] == hashlib.md5(kit.download(name)).hexdigest()
    assert baseline(kit) == result.run_id


def test_a_failed_manifest_keeps_the_baseline_and_the_retry_completes(
    kit: ProjectKit, azurite, monkeypatch
) -> None:
    before = baseline(kit)
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        proxy.fail(method="PUT", path_contains="_manifest", status=500, times=None)
        failed = kit.run("people_diff", logical_time=T1, raise_on_error=False)
        assert not failed.success
        assert baseline(kit) == before  # every data blob is there, but no manifest: no commit
        assert f"{STEM}_manifest.json" not in kit.blob_names()

        proxy.clear()
        retry = kit.run(
            "people_diff",
            tags={"dagster/root_run_id": failed.run_id, "dagster/parent_run_id": failed.run_id},
        )
    monkeypatch.setenv(URL_ENV, azurite.account_url)
    assert retry.success
    assert f"{STEM}_manifest.json" in kit.blob_names()  # same logical time, same names
    assert ids(kit, f"{STEM}_added.csv") == [10]
    assert ids(kit, f"{STEM}_removed.csv") == [0]
    assert baseline(kit) == retry.run_id
