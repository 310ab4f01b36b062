"""`python -m azexport_assets.demo.dotenv > .env`: the variables of the demo's destination for
the demo's local Azurite (its remembered port, a container SAS signed with Azurite's public
development key, valid 30 days), so that `dg launch --job activate_<name>` runs against it.

Azurite itself must be running when the job runs: `make ui` in another terminal keeps it up.
"""

from __future__ import annotations

import sys

from azexport_assets.demo.azurite import account_url_for, container_sas
from azexport_assets.demo.environment import (
    DEMO_CONTAINER,
    DEMO_SAS_PERMISSION,
    STATE_DIR,
    azurite_listens_on,
    remembered_port,
)


def dotenv_lines(port: int) -> list[str]:
    url = account_url_for(port)
    return [
        f"# The demo's Azurite on port {port}, container {DEMO_CONTAINER}",
        f"AZURE_STORAGE_ACCOUNT_URL={url}",
        f"AZURE_STORAGE_SAS_TOKEN={container_sas(url, DEMO_CONTAINER, DEMO_SAS_PERMISSION)}",
        f"AZEXPORT_WAREHOUSE={STATE_DIR / 'warehouse.duckdb'}",
        f"DAGSTER_HOME={STATE_DIR / 'dagster_home'}",
    ]


def main() -> int:
    port = remembered_port()
    if port is None:
        print("No demo Azurite yet: run `make demo` or `make ui` first", file=sys.stderr)
        return 1
    if not azurite_listens_on(port):
        print(
            f"Azurite is not running on port {port} now: keep `make ui` running in another "
            "terminal while the job runs",
            file=sys.stderr,
        )
    print("\n".join(dotenv_lines(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
