"""`python -m azexport_assets.demo.ui`: the Dagster UI on the demo's setup (Ctrl-C stops it)."""

from __future__ import annotations

import os
import subprocess
import sys

from azexport_assets.demo.azurite import PROJECT_ROOT
from azexport_assets.demo.environment import demo_environment


def main() -> int:
    port = os.environ.get("DAGSTER_PORT", "3000")
    with demo_environment() as env:
        print(f"Azure Blob Storage: {env['account_url']}; Dagster UI: http://127.0.0.1:{port}")
        dagster = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
        process = subprocess.Popen([*dagster, "-h", "127.0.0.1", "-p", port], cwd=PROJECT_ROOT)
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            return process.wait()


if __name__ == "__main__":
    sys.exit(main())
