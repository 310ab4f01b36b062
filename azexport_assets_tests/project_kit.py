"""A throw-away azexport project for integration tests: real DuckDB, real Azurite, real runs.

kit = ProjectKit.create(tmp_path, azurite, container, sas_token, monkeypatch)
kit.source_sql("CREATE TABLE people AS ...")      # the source DuckDB file `src`
kit.write_defs(ACTIVATIONS_YAML)                     # sources/destinations are prepended
result = kit.run("my_activation")                    # the job activate_<name>, in process
kit.download("prefix/name.csv")
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from azure.storage.blob import ContainerClient
from dagster._core.definitions.reconstruct import ReconstructableJob

from azexport_assets.asset_keys import export_key
from azexport_assets.components.build import project_definitions
from azexport_assets.demo.azurite import Azurite
from azexport_assets.logical_time import LOGICAL_TIME_TAG

# The code location file CLI runs and servers load (`write_entry`).
CODE_LOCATION = """\
from pathlib import Path

from azexport_assets.components.build import project_definitions

defs = project_definitions(Path(__file__).parent / "defs", Path(__file__).parent)
"""

# A job loaded from a file in every step process, as a code location's is
# (`reconstructable_job`): what Dagster's re-execution API needs.
JOB_ENTRY = """\
from pathlib import Path

from azexport_assets.components.build import project_definitions

ROOT = Path(__file__).parent


def activation_job():
    return project_definitions(ROOT / "defs", ROOT).resolve_job_def("activate_{activation}")
"""

URL_ENV = "AZEXPORT_TEST_ACCOUNT_URL"
SAS_ENV = "AZEXPORT_TEST_SAS"

HEADER = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    src: {{duckdb: src.duckdb}}
{extra_sources}  destinations:
    lake:
      account_url: {{env: {url_env}}}
      container: {container}
      sas_token: {{env: {sas_env}}}
      max_retries: 2
      retry_backoff_seconds: 0.05
"""


@dataclass
class ProjectKit:
    root: Path
    container: ContainerClient  # the account owner's view, for downloads and listings
    instance: dg.DagsterInstance

    @classmethod
    def create(
        cls,
        tmp_path: Path,
        azurite: Azurite,
        container: ContainerClient,
        sas_token: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> ProjectKit:
        root = tmp_path / "project"
        (root / "defs" / "main").mkdir(parents=True)
        monkeypatch.setenv(URL_ENV, azurite.account_url)
        monkeypatch.setenv(SAS_ENV, sas_token)
        monkeypatch.setenv("AZEXPORT_WAREHOUSE", str(root / "warehouse.duckdb"))
        return cls(root=root, container=container, instance=dg.DagsterInstance.ephemeral())

    def close(self) -> None:
        """Dispose of the instance: its in-memory SQLite connections close here, not whenever
        the garbage collector gets to them."""
        self.instance.dispose()

    @property
    def source_path(self) -> Path:
        return self.root / "src.duckdb"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    def source_sql(self, *statements: str) -> None:
        con = duckdb.connect(str(self.source_path))
        try:
            for statement in statements:
                con.execute(statement)
        finally:
            con.close()

    def query_source(self, sql: str) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.source_path), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def write_defs(self, body: str, folder: str = "main", extra_sources: str = "") -> Path:
        """Write defs/<folder>/defs.yaml: the shared header plus `body` (models, activations);
        `extra_sources` are YAML lines like 'visits: {parquet: visits/*.parquet}'."""
        header = HEADER.format(
            url_env=URL_ENV,
            sas_env=SAS_ENV,
            container=self.container.container_name,
            extra_sources="".join(f"    {line}\n" for line in extra_sources.splitlines() if line),
        )
        path = self.root / "defs" / folder / "defs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + textwrap.indent(textwrap.dedent(body), "  "))
        return path

    def write_entry(self, name: str = "entry.py") -> Path:
        """The project's code location as a Python file, for `dagster ... -f <name>`."""
        path = self.root / name
        path.write_text(CODE_LOCATION)
        return path

    def definitions(self) -> dg.Definitions:
        return project_definitions(self.root / "defs", self.root)

    def reconstructable_job(self, activation: str) -> ReconstructableJob:
        """The activation's job, loaded from a file of the project (for `dg.execute_job` and
        its re-execution options)."""
        path = self.root / "job_entry.py"
        path.write_text(JOB_ENTRY.format(activation=activation))
        return ReconstructableJob.for_file(str(path), "activation_job")

    def run(
        self,
        activation: str,
        logical_time: datetime | None = None,
        tags: dict[str, str] | None = None,
        run_config: dict | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        all_tags = dict(tags or {})
        if logical_time:
            all_tags[LOGICAL_TIME_TAG] = logical_time.astimezone(timezone.utc).isoformat()
        job = self.definitions().resolve_job_def(f"activate_{activation}")
        return job.execute_in_process(
            instance=self.instance,
            tags=all_tags,
            run_config=run_config,
            raise_on_error=raise_on_error,
        )

    def blob_names(self, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self.container.list_blobs(name_starts_with=prefix or None))

    def download(self, name: str) -> bytes:
        return self.container.download_blob(name).readall()


def export_metadata(result: dg.ExecuteInProcessResult, activation: str) -> dict[str, Any]:
    """The metadata values of the run's `activations/<a>/export` materialization."""
    key = export_key(activation)
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {key.to_user_string()}")


def blob_urls(metadata: dict[str, Any]) -> list[str]:
    """The clickable blob links of an export's metadata, in file order."""
    return [value for key, value in metadata.items() if key.startswith("blob: ")]
