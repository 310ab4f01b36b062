"""A generated project of many defs.yaml folders that reference each other (load-time tests).

Folder f00 declares the destination; every folder declares its source, one model and
`per_folder` activations of it, so every activation outside f00 references the destination of
another folder.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

SHARED = """\
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
"""


def folder_yaml(index: int, per_folder: int) -> str:
    lines = ["type: azexport_assets.components.AzureExport", "attributes:"]
    if index == 0:
        lines.append(SHARED.rstrip("\n"))
    lines += [
        "  sources:",
        f"    crm_{index:02d}: {{duckdb: crm.duckdb}}",
        "  models:",
        f"    people_{index:02d}:",
        f"      sql: SELECT id, name, age FROM crm_{index:02d}.people WHERE id % 10 = {index % 10}",
        "      primary_key: id",
        "  activations:",
    ]
    for number in range(per_folder):
        lines += [
            f"    people_{index:02d}_{number:02d}:",
            f"      source: people_{index:02d}",
            "      destination: lake",
            f"      file_name: f{index:02d}/a{number:02d}_{{YYYY}}{{MM}}{{DD}}",
            "      mapping: {id: ID, name: Name}",
        ]
    return "\n".join(lines) + "\n"


def write_project(root: Path, folders: int = 10, per_folder: int = 5) -> Path:
    """Write root/crm.duckdb and root/defs/fNN/defs.yaml; return the defs folder."""
    con = duckdb.connect(str(root / "crm.duckdb"))
    try:
        con.execute(
            "CREATE TABLE people AS SELECT range AS id, 'n' AS name, 30 AS age FROM range(100)"
        )
    finally:
        con.close()
    for index in range(folders):
        folder = root / "defs" / f"f{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "defs.yaml").write_text(folder_yaml(index, per_folder))
    return root / "defs"
