"""The demo's local setup: source data, a local Azurite, a container and a SAS token.

Everything lives under `.azexport/` in the project root. When AZURE_STORAGE_ACCOUNT_URL is
already set, no Azurite is started and AZURE_STORAGE_SAS_TOKEN must be set too.

Azurite keeps its port across runs (10000 or the next free one, remembered in
`.azexport/azurite.port`): the blob URLs in the metadata of earlier runs stay valid. When an
Azurite already listens on that port (a `make ui` in another terminal), that one is used.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from azexport_assets.demo.azurite import (
    DEV_ACCOUNT,
    PROJECT_ROOT,
    account_url_for,
    connection_string_for,
    container_sas,
    free_port,
    start_azurite,
)
from azexport_assets.demo.data import describe_changes, generate, simulate_changes
from azexport_assets.demo.instance import prepare_dagster_home

STATE_DIR = PROJECT_ROOT / ".azexport"
# Read by the Dagster that `make demo` / `make ui` start (and by `dg launch`): its values win
# over the environment those processes inherit.
DOTENV = PROJECT_ROOT / ".env"
URL_ENV = "AZURE_STORAGE_ACCOUNT_URL"
SAS_ENV = "AZURE_STORAGE_SAS_TOKEN"
PORT_FILE = STATE_DIR / "azurite.port"
FIRST_PORT = 10000
DEMO_CONTAINER = "azexport-demo"
# What the demo's SAS token grants: 't' because the partner activation sets blob index tags.
DEMO_SAS_PERMISSION = "racwdlt"


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:port now."""
    with socket.socket() as sock:
        # As servers do (Node's included): connections of a stopped server that linger in
        # TIME_WAIT must not make its port look taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def azurite_listens_on(port: int) -> bool:
    """True when an Azurite blob service answers on 127.0.0.1:port."""
    url = f"http://127.0.0.1:{port}/{DEV_ACCOUNT}?comp=list"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            server = response.headers.get("Server", "")
    except urllib.error.HTTPError as error:  # 403 without credentials: still an answer
        server = error.headers.get("Server", "")
    except (urllib.error.URLError, OSError):
        return False
    return "azurite" in server.lower()


def remembered_port() -> int | None:
    try:
        return int(PORT_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def choose_port(remembered: int | None) -> int:
    """The remembered port when free, else the first free one from 10000 (Azurite's usual
    port). Ports below Linux's ephemeral range (32768-60999) are not handed out to outgoing
    connections, so the choice stays free from one run to the next."""
    if remembered and port_is_free(remembered):
        return remembered
    if remembered:
        print(
            f"Port {remembered} (Azurite's port in earlier runs) is taken by another program: "
            "blob links of earlier runs will not open until it is free again"
        )
    for port in range(FIRST_PORT, FIRST_PORT + 100):
        if port_is_free(port):
            return port
    return free_port()


@contextmanager
def demo_azurite() -> Iterator[tuple[str, str]]:
    """(account URL, connection string) of the demo's Azurite, on its remembered port.

    Reuses an Azurite already listening there; otherwise starts one (stopped on exit)."""
    location = STATE_DIR / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    remembered = remembered_port()
    if remembered and azurite_listens_on(remembered):
        print(f"Using the Azurite already running on port {remembered}")
        yield account_url_for(remembered), connection_string_for(remembered)
        return
    server = start_azurite(port=choose_port(remembered), location=location)
    PORT_FILE.write_text(f"{server.port}\n")
    try:
        yield server.account_url, server.connection_string
    finally:
        server.stop()


def project_dotenv() -> dict[str, str]:
    """The variables of the project's .env, as Dagster reads them (python-dotenv)."""
    if not DOTENV.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(DOTENV).items() if v is not None}


def adopt_dotenv_account() -> None:
    """When .env names a storage account other than the demo's Azurite, Dagster will use it
    (.env wins over the environment it inherits): the demo uses it too, and says so."""
    dotenv = project_dotenv()
    url = dotenv.get(URL_ENV)
    port = remembered_port()
    if not url or (port is not None and url == account_url_for(port)):
        return  # nothing set, or the demo's own Azurite (python -m azexport_assets.demo.dotenv)
    print(
        f"{DOTENV.name} sets {URL_ENV}: Dagster reads it, so the demo exports to {url} "
        "instead of a local Azurite (move .env aside to use Azurite)"
    )
    for name in (URL_ENV, SAS_ENV):
        if name in dotenv:
            os.environ[name] = dotenv[name]


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
        print(f"demo data changed since the last run: {describe_changes(changes)}")
    os.environ.setdefault("AZEXPORT_WAREHOUSE", str(STATE_DIR / "warehouse.duckdb"))
    os.environ.setdefault("DAGSTER_HOME", str(STATE_DIR / "dagster_home"))
    # Once, before any Dagster process opens it (they would race on creating the tables).
    # Dagster wants an absolute path.
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(Path(os.environ["DAGSTER_HOME"])))
    adopt_dotenv_account()
    if os.environ.get(URL_ENV):
        if not os.environ.get(SAS_ENV):
            raise SystemExit(
                "AZURE_STORAGE_ACCOUNT_URL is set, so the demo uses that account: "
                "set AZURE_STORAGE_SAS_TOKEN to a SAS token for container 'azexport-demo' "
                f"(permissions '{DEMO_SAS_PERMISSION}') too"
            )
        yield {"account_url": os.environ[URL_ENV], "azurite": "no"}
        return
    with demo_azurite() as (account_url, connection_string):
        service = BlobServiceClient.from_connection_string(connection_string)
        with contextlib.suppress(ResourceExistsError):  # kept from an earlier demo run
            service.create_container(DEMO_CONTAINER)
        os.environ[URL_ENV] = account_url
        os.environ[SAS_ENV] = container_sas(account_url, DEMO_CONTAINER, DEMO_SAS_PERMISSION)
        try:
            yield {"account_url": account_url, "azurite": str(STATE_DIR / "azurite")}
        finally:
            for name in (URL_ENV, SAS_ENV):
                os.environ.pop(name, None)
