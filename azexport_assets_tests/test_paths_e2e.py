"""Richer paths: {activation} / {run_id} / {model} / {segment} in file names, and
`partition_by` (Hive-style folders, one complete file set per partition), in real runs on
Azurite; bad path configuration is named at load with file:line."""

from __future__ import annotations

import io
import json
import textwrap
from datetime import datetime, timezone
from urllib.parse import unquote

import duckdb
import pyarrow.parquet as pq
import pytest

from azexport_assets import export as exporting
from azexport_assets.config import ConfigError
from azexport_assets.introspect import describe_project
from azexport_assets.project import load_project

T1 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
T2 = datetime(2025, 4, 15, 6, tzinfo=timezone.utc)

# Partition values that are not safe as they are: a folder separator, a parent folder, an
# empty string, NULL, Unicode, '%' and a value spelled like Hive's NULL folder.
PEOPLE = """
CREATE TABLE people AS SELECT * FROM (VALUES
  (1, 'ann', 'FR'), (2, 'bob', 'FR'), (3, 'cid', 'a/b'), (4, 'dan', '..'), (5, 'eve', ''),
  (6, 'fay', NULL), (7, 'gus', 'Zürich'), (8, 'hal', '50%'),
  (9, 'ivy', '__HIVE_DEFAULT_PARTITION__')
) AS t(id, name, country)
"""

FOLDERS = {
    "FR": "country=FR",
    "a/b": "country=a%2Fb",
    "..": "country=%2E%2E",
    "": "country=",
    None: "country=__HIVE_DEFAULT_PARTITION__",
    "Zürich": "country=Zürich",
    "50%": "country=50%25",
    "__HIVE_DEFAULT_PARTITION__": "country=%5F_HIVE_DEFAULT_PARTITION__",
}


def hive_value(folder: str) -> str | None:
    """How Hive and Spark read a folder back."""
    value = folder.split("=", 1)[1]
    return None if value == "__HIVE_DEFAULT_PARTITION__" else unquote(value)


def defs(fmt: str, extra: str = "") -> str:
    return f"""
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  parts:
    source: people
    destination: lake
    file_name: "out/{{model}}/{{YYYY}}-{{MM}}-{{DD}}"
    format: {fmt}
    partition_by: [country]
    manifest: true
{textwrap.indent(textwrap.dedent(extra), "    ")}"""


def rows_of(fmt: str, data: bytes) -> list[tuple]:
    if fmt == "csv":
        lines = data.decode().splitlines()[1:]
        return [tuple(line.split(",")) for line in lines]
    if fmt == "json":
        return [(str(r["id"]), r["name"], r["country"]) for r in json.loads(data)]
    if fmt == "xml":
        import xml.etree.ElementTree as ET

        return [
            (r.findtext("id"), r.findtext("name"), r.findtext("country"))
            for r in ET.fromstring(data)
        ]
    table = pq.read_table(io.BytesIO(data))
    return [(str(r["id"]), r["name"], r["country"]) for r in table.to_pylist()]


@pytest.fixture(params=["read per partition", "sorted copy"])
def partition_reads(request, monkeypatch) -> str:
    """Both ways an export reads its partitions: the change set once per partition (a few
    partitions), or a copy sorted by partition (many: forced here for every export)."""
    above = 0 if request.param == "sorted copy" else 1_000_000
    monkeypatch.setattr(exporting, "CLUSTER_ABOVE_PARTITIONS", above)
    return request.param


@pytest.mark.parametrize("fmt", ["csv", "json", "xml", "parquet"])
def test_every_format_writes_one_complete_file_per_partition(project, fmt, partition_reads):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(defs(fmt))
    kit.run("parts", logical_time=T1)
    ext = {"csv": "csv", "json": "json", "xml": "xml", "parquet": "parquet"}[fmt]
    expected = sorted(f"out/people/{folder}/2025-04-14.{ext}" for folder in FOLDERS.values())
    assert kit.blob_names("out/people/country") == expected
    manifest = json.loads(kit.download("out/people/2025-04-14_manifest.json"))
    assert manifest["partition_by"] == ["country"]
    by_value = {f["partition"]["country"]: f for f in manifest["files"]}
    assert set(by_value) == set(FOLDERS)
    people = kit.query_source("SELECT id, name, country FROM people")
    for value, folder in FOLDERS.items():
        listed = by_value[value]
        assert listed["name"] == f"out/people/{folder}/2025-04-14.{ext}"
        assert hive_value(folder) == value  # the folder reads back as the value
        content = rows_of(fmt, kit.download(listed["name"]))
        want = [p for p in people if p[2] == value]
        assert listed["rows"] == len(content) == len(want)
        # The partition column stays in the file: NULL and '' stay apart.
        if fmt in ("json", "parquet"):
            assert content == [(str(i), n, c) for i, n, c in want]


def test_difference_deltas_write_each_kind_per_partition_with_parts(project, partition_reads):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, repeat('n', 30) || range AS name, "
        "CASE WHEN range % 2 = 0 THEN 'FR' ELSE 'DE' END AS country FROM range(200)"
    )
    kit.write_defs(
        defs("csv", "run_type: full_then_delta\nsync_mode: difference\nmax_file_size: 1024\n")
    )
    kit.run("parts", logical_time=T1)
    first = kit.blob_names("out/people/country=FR/")
    assert "out/people/country=FR/2025-04-14_added_part-00001.csv" in first
    assert "out/people/country=FR/2025-04-14_removed.csv" in first  # full run: empty, written
    kit.source_sql(
        "UPDATE people SET name = 'changed' WHERE id IN (2, 3)",
        "DELETE FROM people WHERE id = 4",
        "INSERT INTO people VALUES (1000, 'new', 'ES')",
    )
    kit.run("parts", logical_time=T2)
    second = [n for n in kit.blob_names("out/people/") if "2025-04-15" in n]
    assert second == [
        "out/people/2025-04-15_manifest.json",
        "out/people/country=DE/2025-04-15_updated.csv",
        "out/people/country=ES/2025-04-15_added.csv",
        "out/people/country=FR/2025-04-15_removed.csv",
        "out/people/country=FR/2025-04-15_updated.csv",
    ]
    assert kit.download("out/people/country=FR/2025-04-15_removed.csv").decode().splitlines() == [
        "id,name,country",
        f"4,{'n' * 30}4,FR",
    ]
    manifest = json.loads(kit.download("out/people/2025-04-15_manifest.json"))
    assert {(f["kind"], f["partition"]["country"], f["rows"]) for f in manifest["files"]} == {
        ("updated", "DE", 1),
        ("added", "ES", 1),
        ("removed", "FR", 1),
        ("updated", "FR", 1),
    }


@pytest.mark.parametrize("sync", ["snapshot", "upsert"])
def test_many_partitions_keep_the_model_order_or_the_key_order(project, sync):
    """Past CLUSTER_ABOVE_PARTITIONS an export reads a copy sorted by partition; each file
    still holds its partition's rows in the model's order (a snapshot) or by key (a delta),
    and the run log names the partition of every file written."""
    kit = project
    days = exporting.CLUSTER_ABOVE_PARTITIONS + 4
    kit.source_sql(
        f"CREATE TABLE people AS SELECT (range * 7919) % 1000 AS id, 'n' || range AS name, "
        f"'d' || lpad(CAST(range % {days} AS VARCHAR), 2, '0') AS country FROM range(600)"
    )
    extra = "run_type: full_then_delta\nsync_mode: upsert\n" if sync == "upsert" else ""
    body = defs("json", extra).replace(
        "sql: SELECT * FROM src.people", "sql: SELECT * FROM src.people ORDER BY name DESC"
    )
    kit.write_defs(body)
    if sync == "upsert":
        kit.run("parts", logical_time=T1)
        kit.source_sql("UPDATE people SET name = name || '!' WHERE id % 3 = 0")
    result = kit.run("parts", logical_time=T2)
    model = kit.query_source("SELECT id, name, country FROM people ORDER BY name DESC")
    if sync == "upsert":
        model = sorted((r for r in model if r[0] % 3 == 0), key=lambda r: r[0])
    blobs = [n for n in kit.blob_names("out/people/country=") if "2025-04-15" in n]
    assert len(blobs) == days
    for name in blobs:
        country = name.split("country=")[1].split("/")[0]
        content = [(r["id"], r["name"], r["country"]) for r in json.loads(kit.download(name))]
        assert content == [r for r in model if r[2] == country]
    lines = [
        line
        for event in kit.instance.all_logs(result.run_id)
        for line in (event.user_message or "").split("\n")
    ]
    written = [line for line in lines if line.startswith("wrote ")]
    assert sorted(line.split(" of ")[1].split(":")[0] for line in written) == sorted(
        name.split("/")[2] for name in blobs
    )


@pytest.mark.parametrize("max_file_size", ["", "max_file_size: 1MB\n"])
def test_a_partition_value_too_long_for_a_blob_name_fails_before_any_file(project, max_file_size):
    """Partition values are known only at run time: one that makes a blob name longer than
    Azure allows fails the export before anything is written (no other partition's file
    either), in one line naming the column, and the next run exports the same rows."""
    kit = project
    # 'out/people/country=<value>/2025-04-14.csv' is 34 characters and the value. With a size
    # limit a file may become `_part-00001` (11 more), so 985 are too many even though this
    # small file would not be split; without one, 995.
    long_value = "x" * (985 if max_file_size else 995)
    kit.source_sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES (1, 'ann', 'FR'), (2, 'bob', 'DE'), "
        f"(3, 'cid', '{long_value}')) AS t(id, name, country)"
    )
    kit.write_defs(defs("csv", "run_type: full_then_delta\nsync_mode: upsert\n" + max_file_size))
    result = kit.run("parts", logical_time=T1, raise_on_error=False)
    assert not result.success
    failure = next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ).step_failure_data
    message = failure.user_failure_data.description
    assert message.startswith(f"activation 'parts': partition country='{'x' * 40}…' (")
    assert "characters (Azure allows 1 to 1,024); shorten the values of partition column" in message
    assert "Nothing was written and the baseline was not advanced." in message
    assert failure.user_failure_data and not failure.error.cause  # one line, not a traceback
    assert kit.blob_names() == []
    kit.source_sql("UPDATE people SET country = 'ES' WHERE id = 3")
    kit.run("parts", logical_time=T2)
    exported = sorted(
        row
        for name in kit.blob_names("out/people/country=")
        for row in rows_of("csv", kit.download(name))
    )
    assert exported == [("1", "ann", "FR"), ("2", "bob", "DE"), ("3", "cid", "ES")]


def test_more_partitions_than_max_partitions_fail_before_any_file(project):
    """`max_partitions` (default 10,000) stops a partition column with a value per row before
    it makes a folder per row; raising it exports them."""
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'n' || range AS name, "
        "'c' || range AS country FROM range(30)"
    )
    kit.write_defs(defs("csv", "max_partitions: 20\n"))
    result = kit.run("parts", logical_time=T1, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_failure_data.user_failure_data.description == (
        "activation 'parts': partition_by [country] gives 30 partitions in this run, more than "
        "max_partitions (20); partition by a coarser column (e.g. a month instead of a day) or "
        "raise max_partitions. Nothing was written and the baseline was not advanced."
    )
    assert kit.blob_names() == []
    kit.write_defs(defs("csv", "max_partitions: 30\n"))
    kit.run("parts", logical_time=T1)
    assert len(kit.blob_names("out/people/country=")) == 30


def test_a_snapshot_under_a_fixed_name_drops_partitions_that_emptied(project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a', 'FR'), (2, 'b', 'DE')) "
        "t(id, name, country)"
    )
    body = defs("csv").replace('"out/{model}/{YYYY}-{MM}-{DD}"', '"fixed/{activation}"')
    kit.write_defs(body)
    kit.run("parts", logical_time=T1)
    assert kit.blob_names("fixed/") == [
        "fixed/country=DE/parts.csv",
        "fixed/country=FR/parts.csv",
        "fixed/parts_manifest.json",
    ]
    kit.source_sql("DELETE FROM people WHERE country = 'DE'")
    kit.run("parts", logical_time=T2)
    assert kit.blob_names("fixed/") == ["fixed/country=FR/parts.csv", "fixed/parts_manifest.json"]


def test_run_id_and_names_in_the_file_name(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT 1 AS id, 'a' AS name, 'FR' AS country")
    kit.write_defs(
        """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
segments:
  french:
    model: people
    filter: country = 'FR'
activations:
  named:
    source: french
    destination: lake
    file_name: "{activation}/{model}/{segment}/{run_id}"
"""
    )
    result = kit.run("named", logical_time=T1)
    assert kit.blob_names() == [f"named/people/french/{result.run_id}.csv"]


BASE = """
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
  models:
    people:
      sql: SELECT id, name, country FROM crm.people
      primary_key: id
  destinations:
    lake:
      account_url: https://acct.blob.core.windows.net
      container: exports
      sas_token: {env: LAKE_SAS}
  activations:
    people_csv:
      source: people
      destination: lake
      file_name: people/{YYYY}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "      partition_by: [nation]\n",
            ["defs/main/defs.yaml:20:7:", "activation 'people_csv', field 'partition_by'",
             "unknown column(s) 'nation'", "id, name, country"],
        ),
        (
            "      mapping: {id: ID, country: Country}\n      partition_by: [country]\n",
            ["field 'partition_by'", "unknown column(s) 'country'", "ID, Country"],
        ),
        (
            "      partition_by: [country, Country]\n",
            ["defs/main/defs.yaml:", "field 'partition_by'", "names a column twice"],
        ),
        (
            "      format: delta\n      partition_by: [country]\n"
            "      delta: {partition_by: [country]}\n",
            ["activation 'people_csv'", "give the table's partition columns once"],
        ),
        (
            "      change_column: country\n      partition_by: [country]\n",
            ["change_column 'country' cannot be a partition column"],
        ),
    ],
    ids=["unknown", "unmapped", "twice", "delta-both", "change-column"],
)  # fmt: skip
def test_bad_partition_configuration_is_named(tmp_path, extra, expected):
    message = load_error(tmp_path, BASE + extra)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_segment_variable_needs_a_segment_and_tables_take_fixed_names(tmp_path):
    message = load_error(tmp_path, BASE.replace("people/{YYYY}", "'{segment}/x'"))
    assert (
        "defs/main/defs.yaml:" in message and "{segment} names the activation's segment" in message
    )
    message = load_error(
        tmp_path, BASE.replace("people/{YYYY}", "'t/{run_id}'") + "      format: delta\n"
    )
    assert "cannot hold time variables or {run_id} ({run_id})" in message
    # A table path may name the activation and the model (fixed), and partition_by maps to
    # the table's partition columns.
    project = load(tmp_path, BASE.replace("people/{YYYY}", "'t/{activation}_{model}'")
                   + "      format: delta\n      partition_by: [country]\n")  # fmt: skip
    assert project.activations["people_csv"].table_partition_by == ["country"]


def load(root, text):
    con = duckdb.connect(str(root / "crm.duckdb"))
    con.execute("CREATE OR REPLACE TABLE people AS SELECT 1 AS id, 'a' AS name, 'FR' AS country")
    con.close()
    (root / "defs" / "main").mkdir(parents=True, exist_ok=True)
    (root / "defs" / "main" / "defs.yaml").write_text(text)
    project = load_project(root / "defs", root)
    describe_project(project)
    return project


def load_error(root, text) -> str:
    with pytest.raises(ConfigError) as error:
        load(root, text)
    return str(error.value)


def test_the_scaffold_writes_the_new_options_commented_and_the_schema_has_them(tmp_path):
    from azexport_assets.components.scaffold import example_yaml
    from azexport_assets.components.schema import attributes_json_schema

    text = example_yaml("azexport_assets.components.AzureExport", "crm")
    assert "      # partition_by: [country]\n" in text and "      # warnings: {" in text
    assert "config activation: crm_customers_csv" in text and "{run_id}" in text
    uncommented = text.replace("      # partition_by:", "      partition_by:").replace(
        "      # warnings:", "      warnings:"
    )
    (tmp_path / "defs" / "main").mkdir(parents=True)
    (tmp_path / "defs" / "main" / "defs.yaml").write_text(uncommented)
    project = load_project(tmp_path / "defs", tmp_path)
    describe_project(project)
    activation = project.activations["crm_customers_csv"]
    assert activation.partition_by == ["country"] and activation.warnings.min_rows == 1

    properties = attributes_json_schema()["properties"]["activations"]["additionalProperties"]
    partition_by = properties["properties"]["partition_by"]
    assert partition_by["type"] == "array" and "Hive-style" in partition_by["description"]
