"""The throw-away project the whole-run benchmark exports: source data, defs.yaml, Dagster home.

Layout of `workdir` (one per benchmark invocation):

    project/src.duckdb        source table `bench` (N rows) and `tiny` (10 rows)
    project/defs/bench/defs.yaml, project/entry.py   the code location (`-f entry.py`)
    project/warehouse.duckdb  the warehouse ($AZEXPORT_WAREHOUSE)
    dagster_home/             $DAGSTER_HOME (telemetry off, storage migrated once)
    azurite/                  Azurite's on-disk store (`--location`)

Data changes run in a subprocess (`python -m benchmarks.run_project generate|mutate`) so the
benchmark's own process stays small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

from azexport_assets.asset_keys import delta_key, op_name
from benchmarks.formats import ROWS_SQL

URL_ENV = "AZEXPORT_BENCH_ACCOUNT_URL"
SAS_ENV = "AZEXPORT_BENCH_SAS"
CONTAINER = "bench"  # ours and the bound write here
DLT_CONTAINER = "dlt"

COLUMNS = (
    "id", "customer_id", "name", "city", "amount", "score", "active", "signup",
    "updated_at", "seen_at", "email", "note",
)  # fmt: skip

# benchmark format -> (activation name, its YAML format options)
FORMATS = {
    "csv": ("full_csv", "format: csv"),
    "jsonl": ("full_jsonl", "format: json\n    json: {style: lines}"),
    "parquet": ("full_parquet", "format: parquet"),
    "xml": ("full_xml", "format: xml"),
}
EXTENSIONS = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "xml": ".xml"}
TINY_ACTIVATION = "tiny_csv"
DELTA_ACTIVATION = "delta_csv"

DEFS_HEADER = f"""\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    src: {{duckdb: src.duckdb}}
  destinations:
    lake:
      account_url: {{env: {URL_ENV}}}
      container: {CONTAINER}
      sas_token: {{env: {SAS_ENV}}}
  models:
    bench: {{sql: "SELECT * FROM src.bench", primary_key: id, materialized: {{materialized}}}}
    tiny: {{sql: "SELECT * FROM src.tiny", primary_key: id}}
  activations:
"""
ACTIVATION = """\
    {name}:
      source: {source}
      destination: lake
      file_name: ours/{name}
      {options}
      run_type: {run_type}
      sync_mode: {sync_mode}
"""
ENTRY = """\
from pathlib import Path

from azexport_assets.components.build import project_definitions

defs = project_definitions(Path(__file__).parent / "defs", Path(__file__).parent)
"""


def write_project(root: Path, materialized: str = "table") -> None:
    """defs.yaml (one full snapshot per format, the 10-row and the delta activation)
    and entry.py, the code location `dagster job execute -f entry.py` loads."""
    body = DEFS_HEADER.replace("{materialized}", materialized)
    for name, options in FORMATS.values():
        body += ACTIVATION.format(
            name=name,
            source="bench",
            options=options.replace("\n    ", "\n      "),
            run_type="full_only",
            sync_mode="snapshot",
        )
    body += ACTIVATION.format(
        name=TINY_ACTIVATION,
        source="tiny",
        options="format: csv",
        run_type="full_only",
        sync_mode="snapshot",
    )
    body += ACTIVATION.format(
        name=DELTA_ACTIVATION,
        source="bench",
        options="format: csv",
        run_type="full_then_delta",
        sync_mode="upsert",
    )
    defs = root / "defs" / "bench" / "defs.yaml"
    defs.parent.mkdir(parents=True, exist_ok=True)
    defs.write_text(body)
    (root / "entry.py").write_text(ENTRY)
    resync = {"ops": {op_name(delta_key(DELTA_ACTIVATION)): {"config": {"full_resync": True}}}}
    (root / "resync.json").write_text(json.dumps(resync))


def write_dagster_home(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")


def run_env(
    project: Path, home: Path, account_url: str, sas: str, memory_limit: str | None
) -> dict[str, str]:
    """The environment every run (and the import timing) gets."""
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "AZEXPORT_WAREHOUSE": str(project / "warehouse.duckdb"),
        URL_ENV: account_url,
        SAS_ENV: sas,
    }
    env.pop("AZEXPORT_DUCKDB_MEMORY_LIMIT", None)
    if memory_limit:
        env["AZEXPORT_DUCKDB_MEMORY_LIMIT"] = memory_limit
    return env


def migrate_instance(env: dict[str, str]) -> None:
    """Create Dagster's storage once, before any timed run (not part of a user's wait)."""
    subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )


def _generate(db: Path, rows: int) -> None:
    con = duckdb.connect(str(db))
    try:
        con.execute("DROP TABLE IF EXISTS bench")
        con.execute(f"CREATE TABLE bench AS {ROWS_SQL.format(start=0, stop=rows)}")
        con.execute("DROP TABLE IF EXISTS tiny")
        con.execute(f"CREATE TABLE tiny AS {ROWS_SQL.format(start=0, stop=10)}")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _mutate(db: Path, rows: int) -> dict[str, int]:
    """1% updates (exported columns), 0.1% deletes, 0.1% inserts; the rows an upsert sends."""
    con = duckdb.connect(str(db))
    try:
        (updated,) = con.execute(
            "UPDATE bench SET city = coalesce(city, '') || ' (moved)', amount = amount + 1 "
            "WHERE id % 100 = 7"
        ).fetchone()
        (removed,) = con.execute("DELETE FROM bench WHERE id % 1000 = 9").fetchone()
        added_sql = ROWS_SQL.format(start=rows, stop=rows + max(rows // 1000, 1))
        (added,) = con.execute(f"INSERT INTO bench {added_sql}").fetchone()
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return {"updated": updated, "removed": removed, "added": added, "exported": updated + added}


def generate(db: Path, rows: int) -> None:
    """(Re)create `bench` with `rows` rows and `tiny` with 10, in a subprocess."""
    _in_subprocess("generate", db, rows)


def mutate(db: Path, rows: int) -> dict[str, int]:
    """Apply the delta benchmark's changes to `bench`, in a subprocess; returns the counts."""
    return _in_subprocess("mutate", db, rows)


def _in_subprocess(command: str, db: Path, rows: int) -> dict:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_project", command, str(db), str(rows)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    command, db, rows = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if command == "generate":
        _generate(db, rows)
        print(json.dumps({"rows": rows}))
    elif command == "mutate":
        print(json.dumps(_mutate(db, rows)))
    else:
        raise SystemExit(textwrap.dedent(f"unknown command {command!r}: generate or mutate"))


if __name__ == "__main__":
    main()
