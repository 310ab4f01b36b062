"""The code location is built once per process while its files, the environment and the
sources are unchanged, and again as soon as one of them changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
)

from azexport_assets.components import loading
from azexport_assets.components.load_cache import forget_built
from azexport_assets.components.loading import definitions_from_folder
from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
  models:
    people:
      sql: SELECT id, name FROM crm.people
      primary_key: id
      description: "{{ env.AZEXPORT_TEST_DESCRIPTION }}"
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
  activations:
    people_csv: {source: people, destination: lake, file_name: people}
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AZEXPORT_TEST_DESCRIPTION", "first")
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute("CREATE TABLE people AS SELECT 1 AS id, 'ada' AS name")
    con.close()
    (tmp_path / "defs" / "main").mkdir(parents=True)
    (tmp_path / "defs" / "main" / "defs.yaml").write_text(DEFS)
    forget_built()
    return tmp_path


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per validation of a project (what a build pays for)."""
    calls: list[int] = []
    real = loading.validate_components

    def counted(components, project_root):
        calls.append(1)
        return real(components, project_root)

    monkeypatch.setattr(loading, "validate_components", counted)
    from azexport_assets.components import azure_export

    monkeypatch.setattr(azure_export, "validate_components", counted)
    return calls


def people_spec(definitions: dg.Definitions) -> dg.AssetSpec:
    complete = dg.Definitions.merge(
        definitions, dg.Definitions(resources={WAREHOUSE_KEY: WarehouseResource()})
    )
    key = dg.AssetKey(["models", "people"])
    return next(s for s in complete.resolve_all_asset_specs() if s.key == key)


def description(definitions: dg.Definitions) -> str | None:
    return (people_spec(definitions).description or "").split("\n")[0]


def test_repeated_loads_build_once(root: Path, builds: list[int]) -> None:
    first = definitions_from_folder(root / "defs", root)
    for _ in range(4):
        assert definitions_from_folder(root / "defs", root) is first
    assert len(builds) == 1
    assert description(first) == "first"


def test_a_changed_file_is_built_again(root: Path, builds: list[int]) -> None:
    first = definitions_from_folder(root / "defs", root)
    path = root / "defs" / "main" / "defs.yaml"
    path.write_text(DEFS.replace("SELECT id, name", "SELECT id, name, 7 AS score"))
    second = definitions_from_folder(root / "defs", root)
    assert second is not first and len(builds) == 2
    assert "7 AS score" in (people_spec(second).description or "")


def test_a_new_folder_is_built_again(root: Path, builds: list[int]) -> None:
    definitions_from_folder(root / "defs", root)
    (root / "defs" / "other").mkdir()
    (root / "defs" / "other" / "defs.yaml").write_text(
        textwrap.dedent("""\
        type: azexport_assets.components.AzureExport
        attributes:
          activations:
            people_json: {source: people, destination: lake, file_name: p, format: json}
        """)
    )
    second = definitions_from_folder(root / "defs", root)
    assert len(builds) == 2
    jobs = dg.Definitions.merge(
        second, dg.Definitions(resources={WAREHOUSE_KEY: WarehouseResource()})
    )
    assert jobs.resolve_job_def("activate_people_json").name == "activate_people_json"


def test_a_changed_environment_is_built_again(
    root: Path, builds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    definitions_from_folder(root / "defs", root)
    monkeypatch.setenv("AZEXPORT_TEST_DESCRIPTION", "second")
    assert description(definitions_from_folder(root / "defs", root)) == "second"
    assert len(builds) == 2


def test_a_changed_source_is_checked_again(root: Path, builds: list[int]) -> None:
    definitions_from_folder(root / "defs", root)
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute("ALTER TABLE people RENAME COLUMN name TO full_name")
    con.close()
    # The model's SQL no longer binds: the new load says so instead of reusing the old build.
    with pytest.raises(Exception, match="name"):
        definitions_from_folder(root / "defs", root)
    assert len(builds) == 2


CATALOG = "plugin_component_types_json"  # Dagster's metadata key of the component catalog


def load_as(monkeypatch: pytest.MonkeyPatch, load_type: DefinitionsLoadType | None) -> None:
    """Dagster's load context as a code server (INITIALIZATION), a run or step worker
    (RECONSTRUCTION), or `dagster job execute` and scripts (none) set it."""
    context = DefinitionsLoadContext(load_type) if load_type is not None else None
    monkeypatch.setattr(DefinitionsLoadContext, "_instance", context)


def shape(definitions: dg.Definitions) -> tuple:
    complete = dg.Definitions.merge(
        definitions, dg.Definitions(resources={WAREHOUSE_KEY: WarehouseResource()})
    )
    return (
        sorted(s.key.to_user_string() for s in complete.resolve_all_asset_specs()),
        sorted(j.name for j in complete.resolve_all_job_defs()),
        sorted(complete.resources or {}),
    )


def test_only_a_load_that_serves_the_code_location_builds_the_component_catalog(
    root: Path, builds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs, steps and scripts get the same assets, jobs and resources without Dagster's
    catalog of installed component types, which only a code server serves (to the UI); a
    build with it also serves the loads that do not need it."""
    load_as(monkeypatch, DefinitionsLoadType.RECONSTRUCTION)
    for_run = definitions_from_folder(root / "defs", root)
    assert CATALOG not in (for_run.metadata or {})
    load_as(monkeypatch, DefinitionsLoadType.INITIALIZATION)
    served = definitions_from_folder(root / "defs", root)
    assert len(builds) == 2  # the catalog-less build could not serve it
    catalog = json.loads(json.dumps(served.metadata[CATALOG].value))
    types = {t["name"] for namespace in catalog for t in namespace["componentTypes"]}
    assert "azexport_assets.components.AzureExport" in types
    assert shape(served) == shape(for_run)
    for load_type in (DefinitionsLoadType.RECONSTRUCTION, None):
        load_as(monkeypatch, load_type)
        assert definitions_from_folder(root / "defs", root) is served
    assert len(builds) == 2

    forget_built()
    load_as(monkeypatch, None)  # `dagster job execute`'s first load and scripts
    assert CATALOG not in (definitions_from_folder(root / "defs", root).metadata or {})


def count_validations(module: str) -> str:
    """A script that runs `dagster definitions validate -m <module>` and prints
    VALIDATIONS=<how many times the project was validated> on its way out."""
    return textwrap.dedent(f"""\
        import atexit, runpy, sys
        from azexport_assets.components import azure_export, loading
        real = loading.validate_components
        calls = []
        def counted(*args):
            calls.append(1)
            return real(*args)
        loading.validate_components = azure_export.validate_components = counted
        atexit.register(lambda: print(f"VALIDATIONS={{len(calls)}}", file=sys.stderr))
        sys.argv = ["dagster", "definitions", "validate", "-m", "{module}"]
        runpy.run_module("dagster", run_name="__main__", alter_sys=True)
        """)


def test_the_code_location_builds_once_per_dagster_command(tmp_path: Path) -> None:
    """Dagster calls `defs()` several times in one `dagster definitions validate`; the
    project is validated once."""
    probe = tmp_path / "probe.py"
    probe.write_text(count_validations("azexport_assets.definitions"))
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    result = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, env=env, timeout=300
    )
    assert "VALIDATIONS=1" in result.stderr, result.stderr[-3000:]


def test_a_process_that_loaded_the_project_exits_without_a_full_collection():
    # The build is frozen once built (no later collection walks it), and the exit handlers
    # freeze whatever the run created after it, so the interpreter's last collection does
    # not walk Dagster's whole object graph either.
    code = (
        "import atexit, gc\n"
        "from azexport_assets.definitions import defs\n"
        "defs()\n"
        "built = gc.get_freeze_count()\n"
        "created_after = [[] for _ in range(2000)]\n"
        "before = len(gc.get_objects())\n"
        "atexit._run_exitfuncs()\n"
        "print(built, before, len(gc.get_objects()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    built, before, after = map(int, done.stdout.strip().splitlines()[-1].split())
    assert built > 100_000  # frozen when built
    assert before >= 2000 and after < 500  # what came after is frozen at exit


BUILDS_WITHOUT_COLLECTIONS = """import gc, json, sys
from pathlib import Path

from azexport_assets.components import load_cache
from azexport_assets.components.loading import definitions_from_folder
from azexport_assets.config import ConfigError
from azexport_assets_tests.many_folders import folder_yaml, write_project

root = Path(sys.argv[1])
defs_root = write_project(root, folders=6, per_folder=5)
starts = []


def started(phase, info):
    if phase == "start":
        starts.append(info["generation"])


windows = []  # collections while a build ran
real = load_cache._without_collections


def measured(build):
    def inner():
        before = len(starts)
        try:
            return build()
        finally:
            windows.append(len(starts) - before)

    return real(inner)


def state():
    return {"collections": windows[-1], "frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}


gc.callbacks.append(started)
load_cache._without_collections = measured
report = {}

definitions_from_folder(defs_root, root)
report["first"] = state()

# A rebuild (a code server's reload): the first build is unfrozen, so it can be collected.
(defs_root / "f05" / "defs.yaml").write_text(folder_yaml(5, 6))
definitions_from_folder(defs_root, root)
report["second"] = state()

# A failing build leaves the collector as it found it.
broken = folder_yaml(5, 6).replace("FROM crm_05.people", "FROM nowhere")
(defs_root / "f05" / "defs.yaml").write_text(broken)
try:
    definitions_from_folder(defs_root, root)
except ConfigError:
    report["failed"] = {"enabled": gc.isenabled()}
print(json.dumps(report))
"""


def test_a_build_runs_without_collections_and_the_first_is_frozen(tmp_path: Path) -> None:
    """Python's collector neither runs during a build nor walks the first build afterwards;
    a rebuild unfreezes it (so a replaced build can be collected) and is not frozen."""
    script = tmp_path / "probe.py"
    script.write_text(BUILDS_WITHOUT_COLLECTIONS)
    root = tmp_path / "project"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    first = report["first"]
    assert first["collections"] == 0 and first["enabled"] and first["frozen"] > 100_000
    assert report["second"] == {"collections": 0, "frozen": 0, "enabled": True}
    assert report["failed"] == {"enabled": True}


def test_assets_made_by_one_function_share_its_signature(root: Path) -> None:
    """Dagster reads an asset function's signature many times while building the asset; every
    activation's assets are closures of one function, so the signature is worked out once
    and attached (with its annotations evaluated, which Dagster then takes as type hints)."""
    defs = root / "defs" / "main" / "defs.yaml"
    defs.write_text(
        DEFS.replace(
            "    people_csv: {source: people, destination: lake, file_name: people}\n",
            "    people_csv: {source: people, destination: lake, file_name: people}\n"
            "    people_json: {source: people, destination: lake, file_name: p, format: json}\n",
        )
    )
    definitions = definitions_from_folder(root / "defs", root)
    computed = [a for a in definitions.assets or [] if isinstance(a, dg.AssetsDefinition)]
    functions: dict[str, list] = {}
    for assets in computed:
        function = assets.op.compute_fn.decorated_fn
        functions.setdefault(function.__qualname__, []).append(function)
    deltas = functions["delta_asset.<locals>._delta"]
    exports = functions["export_asset.<locals>._export"]
    assert len(deltas) == len(exports) == 2
    assert deltas[0] is not deltas[1] and deltas[0].__signature__ is deltas[1].__signature__
    assert exports[0].__signature__ is exports[1].__signature__
    (model,) = functions["model_asset.<locals>._model"]
    parameters = model.__signature__.parameters
    assert parameters["warehouse"].annotation is WarehouseResource  # a class, not a string
    # What Dagster reads from it is unchanged: the model's typed resource and run config.
    (model_assets,) = [a for a in computed if a.op.compute_fn.decorated_fn is model]
    assert model_assets.op.required_resource_keys == {WAREHOUSE_KEY}
    assert "force_rebuild" in model_assets.op.config_schema.config_type.fields
