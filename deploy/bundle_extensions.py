"""Copy the DuckDB extensions the lake needs into one folder of the image, and prove they load.

Run at image build time (deploy/Dockerfile): `python deploy/bundle_extensions.py <folder>`.
The folder is what `$AZEXPORT_DUCKDB_EXTENSIONS` names at run time, so every process installs
the extensions from the image itself, never from a download, and nothing the image needs is
kept under /tmp (an emptyDir or tmpfs there starts empty).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import duckdb

from azexport_assets.warehouse.extensions import WHEELS, extension_file


def bundle(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    with tempfile.TemporaryDirectory() as scratch:
        con = duckdb.connect(config={"extension_directory": scratch})
        try:
            for name in WHEELS:
                found = extension_file(con, name)
                if found is None:
                    raise SystemExit(f"no wheel provides the DuckDB extension '{name}'")
                path = target / f"{name}.duckdb_extension"
                shutil.copyfile(found, path)
                con.execute(f"INSTALL '{path}'")
                con.execute(f"LOAD {name}")  # the file fits this DuckDB version
                copied.append(path)
        finally:
            con.close()
    return copied


if __name__ == "__main__":
    for path in bundle(Path(sys.argv[1])):
        print(path)
