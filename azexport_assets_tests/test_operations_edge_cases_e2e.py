"""Operating at the edges, through real runs on Azurite: shared schedules whose crons or zones
read alike, names at Dagster's and Azure's length limits, manifests, odd file names, the
launch time of ad-hoc runs."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timezone

import pytest

from azexport_assets.config import ConfigError
from azexport_assets_tests.project_kit import ProjectKit, export_metadata

T1 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
T2 = datetime(2025, 4, 15, 6, tzinfo=timezone.utc)

PEOPLE = (
    "CREATE TABLE people AS SELECT * FROM (VALUES (1, 'ann', 'FR'), (2, 'bob', 'DE'), "
    "(3, 'cid', 'FR')) AS t(id, name, country)"
)


def step_failure(result) -> str:
    event = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.to_string()


def activation(name: str, cron: str, tz: str = "UTC") -> str:
    return f"""
  {name}:
    source: people
    destination: lake
    file_name: "{name}/{{YYYY}}{{MM}}{{DD}}"
    schedule: "{cron}"
    timezone: {tz}
"""


MODEL = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
"""


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("cron_a", "tz_a", "cron_b", "tz_b"),
    [
        ("0 6 * * 1-5", "UTC", "0 6 * * 1,5", "UTC"),
        ("0 6 * * *", "Etc/GMT+1", "0 6 * * *", "Etc/GMT-1"),
    ],
    ids=["cron-range-vs-list", "tz-plus-vs-minus"],
)
def test_shared_schedules_of_distinct_groups_keep_their_own_cron_and_zone(
    project: ProjectKit, cron_a, tz_a, cron_b, tz_b
):
    """Two groups of activations with different (cron, timezone) each get a schedule that runs
    its own activations at its own cron and zone."""
    kit = project
    kit.source_sql(PEOPLE)
    body = (
        MODEL
        + "activations:"
        + "".join(
            [
                activation("a1", cron_a, tz_a),
                activation("a2", cron_a, tz_a),
                activation("b1", cron_b, tz_b),
                activation("b2", cron_b, tz_b),
            ]
        )
    )
    kit.write_defs(body)
    # What Dagster loads: the code location's repository (its schedules and jobs by name).
    repo = kit.definitions().get_repository_def()
    found = {
        (s.cron_schedule, s.execution_timezone): sorted(
            repo.get_job(s.job_name).tags.get("azexport/activations", "").split(",")
        )
        for s in repo.schedule_defs
    }
    assert found == {(cron_a, tz_a): ["a1", "a2"], (cron_b, tz_b): ["b1", "b2"]}


# --------------------------------------------------------------------------- long names


def long_folder(length: int) -> str:
    """A path of `length` characters: folders of 99 characters and a last part."""
    parts, left = [], length
    while left > 100:
        parts.append("d" * 99)
        left -= 100
    parts.append("f" * left)
    path = "/".join(parts)
    assert len(path) == length
    return path


def test_a_long_segment_name_in_the_file_name_is_refused_at_load(project: ProjectKit):
    """`{segment}` holds the segment's real name: a name that makes the blob name longer than
    Azure's 1,024 characters must be refused at load, naming the activation and file_name
    (as a long activation name or path_prefix is), not fail the run."""
    kit = project
    kit.source_sql(PEOPLE)
    segment = "s" * 63  # Dagster's tag limit; 16 times with '/': 1,023 characters + '.csv'
    template = "/".join(["{segment}"] * 16)
    kit.write_defs(
        MODEL
        + f"""
segments:
  {segment}:
    model: people
    filter: country = 'FR'
activations:
  seg_out:
    source: {segment}
    destination: lake
    file_name: "{template}"
"""
    )
    try:
        kit.definitions().get_repository_def()
    except ConfigError as error:
        message = str(error)
        assert "seg_out" in message and "file_name" in message
        return
    # It loaded: then the run must not fail on the name.
    result = kit.run("seg_out", logical_time=T1, raise_on_error=False)
    assert result.success, step_failure(result)


def test_a_long_activation_name_in_the_file_name_is_refused_at_load(project: ProjectKit):
    """The same with `{activation}` (60 characters, 17 times)."""
    kit = project
    kit.source_sql(PEOPLE)
    name = "a" * 60
    template = "/".join(["{activation}"] * 17)
    kit.write_defs(
        MODEL
        + f"""
activations:
  {name}:
    source: people
    destination: lake
    file_name: "{template}"
"""
    )
    with pytest.raises(ConfigError) as error:
        kit.definitions()
    message = str(error.value)
    assert "file_name" in message and "1024" in message


def test_the_longest_name_a_delta_can_write_is_checked_at_load(project: ProjectKit):
    """JSON lines + zstd + difference + parts: the longest name is
    `<stem>_updated_part-00001.jsonl.zst` (29 characters after the stem). A file name that
    loads must never make a run fail on an over-long blob name."""
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'name number ' || range AS name FROM range(200)"
    )
    stem = long_folder(997)  # 997 + 27 (the load check's allowance) = 1,024
    kit.write_defs(
        MODEL
        + f"""
activations:
  longest:
    source: people
    destination: lake
    file_name: "{stem}"
    format: json
    json: {{style: lines}}
    compression: zstd
    run_type: full_then_delta
    sync_mode: difference
    max_file_size: 1024
"""
    )
    try:
        kit.definitions()
    except ConfigError:
        return  # refused at load: fine
    first = kit.run("longest", logical_time=T1, raise_on_error=False)
    assert first.success, step_failure(first)
    kit.source_sql("UPDATE people SET name = name || ' changed'")
    second = kit.run("longest", logical_time=T2, raise_on_error=False)
    assert second.success, step_failure(second)


@pytest.mark.parametrize("kind", ["model", "segment", "activation"])
def test_a_64_character_name_is_refused_at_load(project: ProjectKit, kind):
    """A model, segment or activation name is a Dagster tag value (at most 63 characters): a
    longer one is refused at load naming the file and the object (it broke the whole code
    location with Dagster's tag error)."""
    kit = project
    kit.source_sql(PEOPLE)
    model = "m" * 64 if kind == "model" else "people"
    segment = "s" * 64 if kind == "segment" else "french"
    name = "a" * 64 if kind == "activation" else "out"
    kit.write_defs(
        f"""
models:
  {model}:
    sql: SELECT * FROM src.people
    primary_key: id
segments:
  {segment}:
    model: {model}
    filter: country = 'FR'
activations:
  {name}:
    source: {segment}
    destination: lake
    file_name: "x/{{YYYY}}"
"""
    )
    with pytest.raises(ConfigError) as error:
        kit.definitions().get_repository_def()
    long_name = {"model": model, "segment": segment, "activation": name}[kind]
    assert f"{kind} '{long_name}': the name has 64 characters; at most 63" in str(error.value)
    assert str(error.value).startswith("defs/"), str(error.value)


# --------------------------------------------------------------------------- logical time


def test_ad_hoc_names_carry_the_launch_time_to_the_millisecond(project: ProjectKit):
    """README: an ad-hoc run's logical time is its launch time, and `{ms}` is a file name
    variable. The rendered time must not be earlier than the moment the run was launched
    (a launch time truncated to the second is up to 999 ms earlier, and `{ms}` is then
    always 000)."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(
        MODEL
        + """
activations:
  adhoc:
    source: people
    destination: lake
    file_name: "t/{YYYY}{MM}{DD}T{HH}{mm}{ss}.{ms}_{x}"
"""
    )
    kit.definitions()
    names = []
    for _ in range(2):
        before = datetime.now(timezone.utc)
        result = kit.run("adhoc")
        assert result.success
        meta = export_metadata(result, "adhoc")
        name = next(n for n in kit.blob_names("t/") if n not in names)
        names.append(name)
        millis = int(name.rsplit("_", 1)[1].removesuffix(".csv"))
        rendered = datetime.fromtimestamp(millis / 1000, timezone.utc)
        assert rendered >= before.replace(microsecond=before.microsecond // 1000 * 1000), (
            name,
            before.isoformat(),
            meta.get("logical_time"),
        )


# --------------------------------------------------------------------------- manifests


def csv_rows(data: bytes) -> list[list[str]]:
    import csv

    return list(csv.reader(io.StringIO(data.decode())))[1:]


def test_manifest_lists_exactly_the_blobs_of_its_run(project: ProjectKit):
    """A difference delta in partitions with parts: the manifest lists every blob this run
    wrote under its stem, each with its real rows, bytes and MD5, and nothing else; skipped
    empty files are named."""
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'person number ' || range AS name, "
        "CASE WHEN range % 2 = 0 THEN 'FR' ELSE 'DE' END AS country FROM range(120)"
    )
    kit.write_defs(
        MODEL
        + """
activations:
  diff:
    source: people
    destination: lake
    file_name: "d/{YYYY}{MM}{DD}"
    run_type: full_then_delta
    sync_mode: difference
    partition_by: [country]
    max_file_size: 1024
    manifest: true
"""
    )
    assert kit.run("diff", logical_time=T1).success
    kit.source_sql(
        "UPDATE people SET name = name || ' x' WHERE country = 'FR' AND id < 40",
        "DELETE FROM people WHERE id = 1",
        "INSERT INTO people VALUES (500, 'new', 'ES')",
    )
    result = kit.run("diff", logical_time=T2)
    assert result.success
    manifest = json.loads(kit.download("d/20250415_manifest.json"))
    written = [n for n in kit.blob_names("d/") if "20250415" in n and "manifest" not in n]
    assert sorted(f["name"] for f in manifest["files"]) == written
    for entry in manifest["files"]:
        data = kit.download(entry["name"])
        assert entry["bytes"] == len(data)
        assert entry["md5"] == hashlib.md5(data).hexdigest()
        assert entry["rows"] == len(csv_rows(data))
    assert manifest["changes"] == {"added": 1, "updated": 20, "removed": 1}
    assert sum(f["rows"] for f in manifest["files"]) == 22
    kinds = {(f["partition"]["country"], f["kind"]) for f in manifest["files"]}
    assert kinds == {("FR", "updated"), ("DE", "removed"), ("ES", "added")}


@pytest.mark.parametrize("on_empty", ["skip", "write"])
def test_a_run_with_no_changes_writes_a_manifest_only_with_on_empty_write(project, on_empty):
    """As the README says: a run that writes no file writes no manifest; with on_empty: write
    it writes its (empty) files and a manifest listing them."""
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'n' || range AS name FROM range(3)")
    kit.write_defs(
        MODEL.replace("SELECT * FROM src.people", "SELECT id, name FROM src.people")
        + f"""
activations:
  diff:
    source: people
    destination: lake
    file_name: "d/{{YYYY}}{{MM}}{{DD}}"
    run_type: full_then_delta
    sync_mode: upsert
    manifest: true
    on_empty: {on_empty}
"""
    )
    assert kit.run("diff", logical_time=T1).success
    assert kit.run("diff", logical_time=T2).success  # nothing changed
    names = kit.blob_names("d/20250415")
    if on_empty == "skip":
        assert names == []
        return
    manifest = json.loads(kit.download("d/20250415_manifest.json"))
    listed = sorted(f["name"] for f in manifest["files"])
    assert listed == [n for n in names if "manifest" not in n] and listed
    assert all(f["rows"] == 0 for f in manifest["files"])
    for entry in manifest["files"]:
        assert csv_rows(kit.download(entry["name"])) == []


def test_a_file_name_with_spaces_unicode_percent_hash_and_question_mark(project: ProjectKit):
    """The blob is named exactly as rendered, its content is the model's, and the link in the
    run's metadata points at it (percent-encoded, no part of the name lost to '#' or '?')."""
    from urllib.parse import unquote, urlsplit

    from azexport_assets_tests.project_kit import blob_urls

    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(
        MODEL
        + """
activations:
  odd:
    source: people
    destination: lake
    file_name: "sp ace/Zürich 東京/50% #1 ?q=a&b/{YYYY}-{MM}"
    manifest: true
"""
    )
    result = kit.run("odd", logical_time=T1)
    assert result.success
    name = "sp ace/Zürich 東京/50% #1 ?q=a&b/2025-04.csv"
    assert kit.blob_names() == sorted(
        [name, "sp ace/Zürich 東京/50% #1 ?q=a&b/2025-04_manifest.json"]
    )
    assert csv_rows(kit.download(name)) == [
        ["1", "ann", "FR"],
        ["2", "bob", "DE"],
        ["3", "cid", "FR"],
    ]
    manifest = json.loads(kit.download("sp ace/Zürich 東京/50% #1 ?q=a&b/2025-04_manifest.json"))
    assert [f["name"] for f in manifest["files"]] == [name]
    urls = blob_urls(export_metadata(result, "odd"))
    assert urls, "no blob link in the metadata"
    path = urlsplit(urls[0]).path
    assert unquote(path).endswith("/" + name), urls[0]


# --------------------------------------------------------------------------- DST
