"""Load-time validation (what DuckDB finds in the SQL and the sources) is computed once per
content and read back by the next process: never stale, never in the way.

- a second process (a real `dagster definitions validate`, a real `dagster job execute`)
  reads the shape back and builds the same definitions and lineage;
- a changed SQL file, source schema, glob match, variable or defs.yaml is a miss;
- a corrupt, foreign, unreadable or unwritable cache is a miss, never an error;
- processes writing and reading the same entry at once never see half of it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azexport_assets import introspect, validation_cache
from azexport_assets.components.azure_export import resolve_templates
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project
from azexport_assets.validation_cache import CACHE_DIR_ENV

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
    visits: {csv: "visits/*.csv"}
  models:
    people:
      sql_file: people.sql
      primary_key: id
    adults_visits:
      sql: >
        SELECT v.id, v.person, p.name FROM visits v JOIN models.people p ON p.id = v.person
        WHERE p.age >= {{ env.AZEXPORT_SQL_MIN_AGE }}
      primary_key: id
  segments:
    old:
      model: people
      filter: age > 60
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
  activations:
    people_csv:
      source: people
      destination: lake
      file_name: people
      mapping: {id: ID, name: Name}
"""


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with a DuckDB source, a CSV glob, a SQL file, a segment and a template."""
    monkeypatch.setenv("AZEXPORT_SQL_MIN_AGE", "18")
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute("CREATE TABLE people AS SELECT 1 AS id, 'ada' AS name, 36 AS age")
    con.close()
    (tmp_path / "visits").mkdir()
    (tmp_path / "visits" / "a.csv").write_text("id,person\n1,1\n")
    (tmp_path / "defs" / "main").mkdir(parents=True)
    (tmp_path / "defs" / "main" / "defs.yaml").write_text(DEFS)
    (tmp_path / "defs" / "main" / "people.sql").write_text("SELECT id, name, age FROM crm.people")
    return tmp_path


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per shape computed with DuckDB (a cache miss)."""
    calls: list[str] = []
    real = introspect._introspect

    def counted(project):
        calls.append(",".join(sorted(project.models)))
        return real(project)

    monkeypatch.setattr(introspect, "_introspect", counted)
    return calls


def shape_of(root: Path):
    return describe_project(load_project(root / "defs", root))


def entries(root: Path) -> list[Path]:
    folder = root / ".azexport" / "cache"
    return sorted(folder.glob("*.json")) if folder.exists() else []


# --------------------------------------------------------------------------- in one process


def test_a_second_load_reads_the_shape_back(root, computed):
    first = shape_of(root)
    assert len(computed) == 1 and len(entries(root)) == 1
    second = shape_of(root)
    assert len(computed) == 1  # read back, not computed
    assert second == first
    assert second.columns["people"] == [("id", "INTEGER"), ("name", "VARCHAR"), ("age", "INTEGER")]
    assert second.deps["adults_visits"].models == ("people",)
    assert list(second.columns) == list(first.columns)


def test_an_edited_sql_file_is_a_miss(root, computed):
    shape_of(root)
    (root / "defs" / "main" / "people.sql").write_text(
        "SELECT id, name, age, age * 12 AS months FROM crm.people"
    )
    assert shape_of(root).columns["people"][-1] == ("months", "INTEGER")
    assert len(computed) == 2


def test_a_changed_source_schema_is_a_miss(root, computed):
    shape_of(root)
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute("ALTER TABLE people ALTER COLUMN name SET DATA TYPE VARCHAR[] USING [name]")
    con.close()
    assert shape_of(root).columns["people"][1] == ("name", "VARCHAR[]")
    assert len(computed) == 2


def test_a_new_file_under_a_glob_is_a_miss(root, computed):
    shape_of(root)
    (root / "visits" / "b.csv").write_text("id,person\n2,1\n")
    shape_of(root)
    assert len(computed) == 2


def test_a_changed_variable_is_a_miss(root, computed, monkeypatch):
    shape_of(root)
    monkeypatch.setenv("AZEXPORT_SQL_MIN_AGE", "21")  # read by a template in the SQL
    shape_of(root)
    assert len(computed) == 2
    monkeypatch.setenv("AZEXPORT_SQL_MIN_AGE", "18")  # back: the first entry again
    shape_of(root)
    assert len(computed) == 2


def test_an_edited_defs_yaml_is_a_miss(root, computed):
    shape_of(root)
    path = root / "defs" / "main" / "defs.yaml"
    path.write_text(path.read_text().replace("filter: age > 60", "filter: age > 65"))
    shape_of(root)
    assert len(computed) == 2
    # An error the edit brings is reported as without a cache (errors are never kept).
    path.write_text(
        path.read_text().replace("primary_key: id\n  segments", "primary_key: nope\n  segments")
    )
    from azexport_assets.config import ConfigError

    with pytest.raises(ConfigError, match="unknown column"):
        shape_of(root)


def test_a_project_with_a_database_source_is_never_kept(root):
    """A Postgres or lake source's tables live in a database: no file says they changed, so
    such a project is validated against the database on every load."""
    path = root / "defs" / "main" / "defs.yaml"
    path.write_text(
        path.read_text().replace(
            "    crm: {duckdb: crm.duckdb}\n",
            "    crm: {duckdb: crm.duckdb}\n    erp: {postgres: {dsn: {env: ERP_DSN}}}\n",
        )
    )
    project = load_project(root / "defs", root)
    assert project.sources["erp"].is_database
    assert introspect.shape_key(project) is None
    del project.sources["erp"]
    assert introspect.shape_key(project) is not None


def test_csv_warnings_are_logged_again_on_a_hit(root, computed, caplog):
    (root / "visits" / "a.csv").write_text("exported by the CRM\nid,person\n1,1\n")
    with caplog.at_level(logging.WARNING, logger="azexport_assets.introspect"):
        shape_of(root)
        shape_of(root)
    assert len(computed) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[0] == messages[1]
    assert "skips the first 1 line(s)" in messages[0]


def test_a_source_that_could_not_be_attached_is_not_kept(root, computed, monkeypatch):
    real = introspect.attach_source

    def locked(con, name, source, base):
        if name == "crm":
            raise duckdb.IOException("Could not set lock on file")
        return real(con, name, source, base)

    monkeypatch.setattr(introspect, "attach_source", locked)
    assert shape_of(root).columns["people"] is None
    assert entries(root) == []
    monkeypatch.setattr(introspect, "attach_source", real)
    assert shape_of(root).columns["people"] is not None
    assert len(computed) == 2


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        b'{"format": 1, "key": "another", "value": {}}',
        b'{"format": 1, "key": "KEY", "value": {"entry": "project-shape/1", "deps": {}}}',
        b'{"format": 1, "key": "KEY", "value": {"entry": "project-shape/1", "deps": '
        b'{"people": 3}, "columns": {}, "warnings": []}}',
        b'{"format": 1, "key": "KEY", "value": {"entry": "project-shape/1", "deps": '
        b'{"someone": {"source_tables": [], "models": []}}, "columns": {}, "warnings": []}}',
        # Models that read each other: no entry of a project that validated.
        b'{"format": 1, "key": "KEY", "value": {"entry": "project-shape/1", "deps": '
        b'{"people": {"source_tables": [], "models": ["adults_visits"]}, "adults_visits": '
        b'{"source_tables": [], "models": ["people"]}}, "columns": {"people": null, '
        b'"adults_visits": null, "old": null}, "warnings": []}}',
        # A source that is not declared.
        b'{"format": 1, "key": "KEY", "value": {"entry": "project-shape/1", "deps": '
        b'{"people": {"source_tables": [["nowhere", "t"]], "models": []}, "adults_visits": '
        b'{"source_tables": [], "models": []}}, "columns": {"people": null, '
        b'"adults_visits": null, "old": null}, "warnings": []}}',
    ],
)
def test_a_damaged_entry_is_a_miss_and_is_rewritten(root, computed, damage):
    first = shape_of(root)
    (entry,) = entries(root)
    entry.write_bytes(damage.replace(b"KEY", entry.stem.encode()))
    assert shape_of(root) == first
    assert len(computed) == 2
    assert json.loads(entry.read_text())["key"] == entry.stem  # written again, whole


def test_an_unwritable_cache_falls_back(root, computed, monkeypatch):
    (root / "not-a-folder").write_text("a file where the cache folder would be")
    monkeypatch.setenv(CACHE_DIR_ENV, str(root / "not-a-folder" / "cache"))
    first = shape_of(root)
    assert shape_of(root) == first
    assert len(computed) == 2  # nothing could be kept: computed each time, no error


def test_a_folder_others_may_write_is_not_used(root, computed):
    shape_of(root)
    (root / ".azexport" / "cache").chmod(0o777)
    shape_of(root)
    shape_of(root)
    assert len(computed) == 3


def test_a_folder_of_another_user_is_not_used(root, computed):
    if os.getuid() != 0:
        pytest.skip("only root can give a folder to another user")
    shape_of(root)
    os.chown(root / ".azexport" / "cache", 65534, 65534)
    shape_of(root)
    assert len(computed) == 2


def test_the_cache_can_be_turned_off(root, computed, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, "off")
    shape_of(root)
    shape_of(root)
    assert len(computed) == 2
    assert not (root / ".azexport").exists()


def test_a_relative_cache_folder_is_under_the_project_root(root, computed, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, "elsewhere/cache")
    shape_of(root)
    shape_of(root)
    assert len(computed) == 1
    assert len(list((root / "elsewhere" / "cache").glob("*.json"))) == 1


def test_the_cache_module_imports_no_dagster():
    # It belongs to the plain layers (see test_import_boundary.py): scripts may use it.
    script = (
        "import sys, azexport_assets.validation_cache\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_old_entries_are_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(validation_cache, "MAX_ENTRIES", 5)
    for number in range(12):
        assert validation_cache.store(tmp_path / "c", f"{number:064x}", {"n": number})
    kept = sorted(p.stem for p in (tmp_path / "c").glob("*.json"))
    assert len(kept) == 5
    assert validation_cache.load(tmp_path / "c", f"{11:064x}") == {"n": 11}


# --------------------------------------------------------------------------- concurrency


def _writer(folder: str, key: str, rounds: int) -> None:
    value = {"rows": [[f"column_{i}", "VARCHAR"] for i in range(2000)]}
    for _ in range(rounds):
        assert validation_cache.store(Path(folder), key, value)


def _reader(folder: str, key: str, wanted: int, queue) -> None:
    """Read until `wanted` whole entries were seen (or 60 s passed)."""
    seen = {"whole": 0, "none": 0, "other": 0}
    deadline = time.monotonic() + 60
    while seen["whole"] < wanted and time.monotonic() < deadline:
        value = validation_cache.load(Path(folder), key)
        if value is None:
            seen["none"] += 1
        elif len(value["rows"]) == 2000:
            seen["whole"] += 1
        else:
            seen["other"] += 1
    queue.put(seen)


def test_concurrent_writers_and_readers_see_whole_entries(tmp_path):
    """Four processes write the same entry (about 60 kB) 150 times each while two read it:
    a reader sees no entry yet or a whole one, never a part; no temporary file is left."""
    context = multiprocessing.get_context("spawn")
    key = "f" * 64
    queue = context.Queue()
    writers = [context.Process(target=_writer, args=(str(tmp_path), key, 150)) for _ in range(4)]
    readers = [
        context.Process(target=_reader, args=(str(tmp_path), key, 500, queue)) for _ in range(2)
    ]
    for process in writers + readers:
        process.start()
    for process in writers + readers:
        process.join(timeout=180)
        assert process.exitcode == 0
    seen = [queue.get(timeout=10) for _ in readers]
    assert all(s["other"] == 0 for s in seen), seen
    assert sum(s["whole"] for s in seen) > 0, seen
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.json"]


# --------------------------------------------------------------------------- real processes

# The code location, instrumented: how many shapes this process computed, and the lineage
# and shapes it built, written when it exits.
REPORTING_ENTRY = """\
import atexit, json, os
from pathlib import Path

from azexport_assets import introspect
from azexport_assets.components import loading
from azexport_assets.components.build import project_definitions

if not hasattr(loading, "_test_report"):
    report = loading._test_report = {"computed": 0, "shapes": []}
    _introspect, _describe = introspect._introspect, loading.describe_project

    def counted(project):
        report["computed"] += 1
        return _introspect(project)

    def described(project):
        shape = _describe(project)
        report["shapes"].append(
            {"deps": {m: [list(d.source_tables), list(d.models)] for m, d in shape.deps.items()},
             "columns": shape.columns}
        )
        return shape

    introspect._introspect, loading.describe_project = counted, described
    atexit.register(
        lambda: Path(os.environ["AZEXPORT_TEST_REPORT"]).write_text(json.dumps(report))
    )

defs = project_definitions(Path(__file__).parent / "defs", Path(__file__).parent)

if "lineage" not in loading._test_report:
    loading._test_report["lineage"] = {
        spec.key.to_user_string(): sorted(d.asset_key.to_user_string() for d in spec.deps)
        for spec in defs.resolve_all_asset_specs()
    }
    loading._test_report["jobs"] = sorted(j.name for j in defs.resolve_all_job_defs())
"""


def dagster(root: Path, tmp_path: Path, *args: str) -> dict:
    """Run `dagster <args> -f entry.py` in a new process; its report."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    env = {**os.environ, "AZEXPORT_TEST_REPORT": str(report), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", *args, "-f", "entry.py"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads(report.read_text())


def test_processes_share_the_shape_and_build_the_same_lineage(project, tmp_path, monkeypatch):
    """`dagster definitions validate` computes the shape; a second validate and a real run of
    an activation (`dagster job execute`) read it back and build the same definitions."""
    kit = project
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(1, 11)"
    )
    kit.write_defs(
        textwrap.dedent("""\
        models:
          people: {sql: "SELECT id, name FROM src.people", primary_key: id}
          named: {sql: "SELECT id, upper(name) AS name FROM models.people", primary_key: id}
        activations:
          named_csv: {source: named, destination: lake, file_name: named}
        """)
    )
    (kit.root / "entry.py").write_text(REPORTING_ENTRY)
    home = tmp_path / "home"
    home.mkdir()

    first = dagster(kit.root, home, "definitions", "validate")
    second = dagster(kit.root, home, "definitions", "validate")
    run = dagster(kit.root, home, "job", "execute", "-j", "activate_named_csv")

    assert first["computed"] == 1
    assert second["computed"] == 0 and run["computed"] == 0
    assert second["shapes"] and run["shapes"]
    assert {json.dumps(s, sort_keys=True) for s in second["shapes"] + run["shapes"]} == {
        json.dumps(first["shapes"][0], sort_keys=True)
    }
    assert second["lineage"] == first["lineage"] == run["lineage"]
    assert first["lineage"]["models/named"] == ["models/people"]
    assert second["jobs"] == first["jobs"]
    rows = kit.download("named.csv").decode().splitlines()
    assert rows[0] == "id,name" and rows[1] == "1,P1" and len(rows) == 11

    # The source changes: the next process computes the shape again, with the new column.
    kit.source_sql("ALTER TABLE people ADD COLUMN age INTEGER")
    (kit.root / "defs" / "main" / "defs.yaml").write_text(
        (kit.root / "defs" / "main" / "defs.yaml")
        .read_text()
        .replace("SELECT id, name FROM src.people", "SELECT * FROM src.people")
    )
    changed = dagster(kit.root, home, "definitions", "validate")
    assert changed["computed"] == 1
    assert changed["shapes"][0]["columns"]["people"][-1] == ["age", "INTEGER"]


# --------------------------------------------------------------------------- templates

PLAIN_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
        st.sampled_from("{}%#-+"),
    ),
    max_size=20,
).filter(lambda text: not any(tag in text for tag in ("{{", "{%", "{#")))
PLAIN_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        PLAIN_TEXT,
        st.sampled_from(
            ["123", "1.5", "True", "None", "[1, 2]", "'q'", " 7", "(1,)", "x y", "{1: 2}", "{'a'}"]
        ),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(PLAIN_TEXT, children, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(PLAIN_VALUES)
def test_plain_values_resolve_as_dagster_resolves_them(value):
    """Strings without template syntax skip Jinja, with the very same result (a literal such
    as '123' or '[1, 2]' becomes a value, as Dagster's native rendering makes it)."""
    context = dg.ResolutionContext.default()
    assert resolve_templates(context, value) == context.resolve_value(value)


def test_templates_are_still_rendered_by_dagster(monkeypatch):
    monkeypatch.setenv("AZEXPORT_TEST_VALUE", "42")
    context = dg.ResolutionContext.default()
    value = {
        "a": "{{ env.AZEXPORT_TEST_VALUE }}",
        "b": ["x-{{ env.AZEXPORT_TEST_VALUE }}", "plain", "7"],
        "c": "line one\nline two\n",
        "d": "100%",
        "e": "#not-a-comment",
        "f": "exports/{YYYY}/{MM}/{activation}_{{ env.AZEXPORT_TEST_VALUE }}",
        "g": "{# a Jinja comment #}kept",
        "h": "{% if true %}yes{% endif %}",
    }
    assert resolve_templates(context, value) == context.resolve_value(value)
    assert resolve_templates(context, value)["a"] == 42
