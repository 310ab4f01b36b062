"""The demo's local setup: source data, a local Azurite, a container and a SAS token.

Everything lives under `.azexport/` in the project root. When AZURE_STORAGE_ACCOUNT_URL is
already set, no Azurite is started and AZURE_STORAGE_SAS_TOKEN must be set too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from azexport_assets.demo.azurite import PROJECT_ROOT, container_sas, start_azurite
from azexport_assets.demo.data import generate, simulate_changes

STATE_DIR = PROJECT_ROOT / ".azexport"
DEMO_CONTAINER = "azexport-demo"


@contextmanager
def demo_environment(simulate: bool = False) -> Iterator[dict[str, str]]:
    """Set the environment the demo's defs.yaml expects; yields what was set (no secrets).
    With `simulate`, existing demo data first gets a round of changes (for the deltas)."""
    if not (STATE_DIR / "demo" / "crm.duckdb").exists():
        generate(STATE_DIR / "demo")
    elif simulate:
        rounds = STATE_DIR / "demo" / "rounds"
        number = int(rounds.read_text()) + 1 if rounds.exists() else 1
        rounds.write_text(str(number))
        changes = simulate_changes(STATE_DIR / "demo", number)
        print(f"demo data changed since the last run: {changes}")
    os.environ.setdefault("AZEXPORT_WAREHOUSE", str(STATE_DIR / "warehouse.duckdb"))
    os.environ.setdefault("DAGSTER_HOME", str(STATE_DIR / "dagster_home"))
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        # The demo must not phone home (and the machine may have no internet).
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    if os.environ.get("AZURE_STORAGE_ACCOUNT_URL"):
        if not os.environ.get("AZURE_STORAGE_SAS_TOKEN"):
            raise SystemExit(
                "AZURE_STORAGE_ACCOUNT_URL is set, so the demo uses that account: "
                "set AZURE_STORAGE_SAS_TOKEN to a SAS token for container 'azexport-demo' too"
            )
        yield {"account_url": os.environ["AZURE_STORAGE_ACCOUNT_URL"], "azurite": "no"}
        return
    location = STATE_DIR / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    server = start_azurite(location=location)
    try:
        service = BlobServiceClient.from_connection_string(server.connection_string)
        with contextlib.suppress(ResourceExistsError):  # kept from an earlier demo run
            service.create_container(DEMO_CONTAINER)
        os.environ["AZURE_STORAGE_ACCOUNT_URL"] = server.account_url
        os.environ["AZURE_STORAGE_SAS_TOKEN"] = container_sas(server.account_url, DEMO_CONTAINER)
        yield {"account_url": server.account_url, "azurite": str(location)}
    finally:
        server.stop()
        for name in ("AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_SAS_TOKEN"):
            os.environ.pop(name, None)
