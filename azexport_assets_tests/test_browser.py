"""The Dagster UI in a real browser (Debian's Chromium, driven by Selenium + chromedriver).

A small demo-like project (a model, a segment, two activations) is served by `dagster dev`
with a fresh DAGSTER_HOME and the session's real Azurite. The test reads the pages a user
reads: the lineage, an export asset's page with its checks and blob link, and it launches a
run from the UI and waits for its success. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from azexport_assets.asset_keys import export_key
from azexport_assets.demo.runs import export_blobs
from azexport_assets.demo.server import DagsterServer
from azexport_assets_tests.project_kit import ProjectKit
from azexport_assets_tests.served_kit import serve_project

# Debian's paths; `.ci/install-browser` (run by `make test`) reads the same variables.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = "sudo apt-get install -y chromium chromium-driver"
# Without the networking flags Chromium waits on connections this machine cannot make.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]
LOCATION = "browser_test"
ACTIVATIONS = ("people_snapshot", "adults_upsert")

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
segments:
  adults:
    model: people
    filter: age >= 18
activations:
  people_snapshot:
    source: people
    destination: lake
    file_name: people
    warnings: {min_rows: 10}
  adults_upsert:
    source: adults
    destination: lake
    file_name: adults_{X}
    format: json
    run_type: full_then_delta
    sync_mode: upsert
    warnings: {min_rows: 1, max_change_ratio: 0.5}
"""


@pytest.fixture
def served(project, tmp_path, monkeypatch) -> Iterator[tuple[ProjectKit, DagsterServer]]:
    """(project kit, running Dagster) for the small project."""
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, "
        "CAST(range % 90 AS INTEGER) AS age FROM range(1, 2001)"
    )
    kit.write_defs(DEFS)
    with serve_project(kit, tmp_path, monkeypatch, LOCATION) as server:
        yield kit, server


def missing_browser() -> str | None:
    """One line saying what to install, or None when Chromium and its driver are there."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return None
    return f"{' and '.join(missing)} missing; install them with: {INSTALL_HINT}"


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    # `make test` installs them where it can (root or passwordless sudo); elsewhere this
    # test is skipped, saying what to install, rather than failing at set-up.
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    # An explicit driver: Selenium must not try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser plus the helpers the steps share: open, wait for text, screenshot."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, shots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def wait_for(self, *needles: str, timeout: float = 30) -> str:
        """Wait until every needle is visible text on the page; returns the page text."""
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(
                lambda _: all(n in self.text() for n in needles)
            )
        except TimeoutException:
            self.shot("timeout")
            missing = [n for n in needles if n not in self.text()]
            raise AssertionError(
                f"not visible on {self.driver.current_url}: {missing}\n{self.text()[:3000]}"
            ) from None
        return self.text()

    def click_button(self, label: str) -> None:
        xpath = f"//button[starts-with(normalize-space(), '{label}')]"
        WebDriverWait(self.driver, 30).until(lambda d: d.find_elements(By.XPATH, xpath))
        self.driver.find_elements(By.XPATH, xpath)[0].click()

    def shot(self, name: str) -> Path:
        self.count += 1
        path = self.shots / f"{self.count:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def latest_export_metadata(instance: dg.DagsterInstance, activation: str) -> dict:
    key = export_key(activation)
    records = instance.fetch_materializations(key, limit=1).records
    assert records, f"no materialization of {key.to_user_string()}"
    return dict(records[0].asset_materialization.metadata)


def wait_for_run(instance: dg.DagsterInstance, job_name: str, timeout: float = 90) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name), limit=1)
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(0.5)
    raise AssertionError(f"no finished run of {job_name} within {timeout:.0f}s")


def asset_path(key: dg.AssetKey, view: str = "") -> str:
    return "/assets/" + "/".join(key.path) + (f"?view={view}" if view else "")


def test_lineage_asset_page_and_launch_from_the_ui(browser, served, azurite, tmp_path):
    kit, server = served
    page = Page(browser, server.url, tmp_path / "screenshots")
    instance = dg.DagsterInstance.get()

    # Lineage: the groups, then every activation by name, from its model or segment on.
    page.open("/asset-groups")
    page.wait_for("Global asset lineage", "sources", "models", "segments", "activations")
    page.shot("global-lineage")
    page.open(f"/locations/{LOCATION}/asset-groups/activations/lineage")
    page.wait_for("people", "adults", *(f"{a}_delta" for a in ACTIVATIONS))
    page.wait_for(*(f"{a}_export" for a in ACTIVATIONS))
    page.shot("activations-lineage")

    # Launch from the UI: the job's "Materialize all", then the run page shows success.
    job = "activate_adults_upsert"
    page.open(f"/locations/{LOCATION}/jobs/{job}")
    page.wait_for(job, "Materialize all")
    page.click_button("Materialize all")
    page.wait_for("Launched run")
    page.shot("launched")
    run = wait_for_run(instance, job)
    assert run.status == dg.DagsterRunStatus.SUCCESS, f"run {run.run_id}: {run.status}"
    page.open(f"/runs/{run.run_id}")
    page.wait_for("Success", timeout=30)
    page.shot("run-success")

    # What the run wrote, read back from Azurite.
    metadata = latest_export_metadata(instance, "adults_upsert")
    (blob,) = export_blobs(metadata)
    expected_rows = kit.query_source("SELECT count(*) FROM people WHERE age >= 18")[0][0]
    assert blob.rows == expected_rows == metadata["dagster/row_count"].value
    exported = json.loads(kit.download(blob.name))
    assert len(exported) == expected_rows and all(row["age"] >= 18 for row in exported)
    assert blob.url and blob.url.startswith(azurite.account_url + "/"), blob.url

    # The export asset's page: its row count and a link to the blob.
    page.open(asset_path(export_key("adults_upsert")))
    page.wait_for("Row count", f"{expected_rows:,}", blob.name)  # dagster/row_count
    links = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    assert blob.url in links, f"no link to {blob.url} among {links}"
    page.shot("export-asset")

    # Its checks, evaluated by the run.
    page.open(asset_path(export_key("adults_upsert"), view="checks"))
    page.wait_for("min_rows", "max_change_ratio", "Passed")
    page.shot("export-checks")
