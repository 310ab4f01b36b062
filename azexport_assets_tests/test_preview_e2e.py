"""Preview (dry run): `preview_<a>` and the CLI compute what the next run would export, in
real Dagster runs on Azurite, and write nothing: no blob, no baseline, no change set."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import duckdb

from azexport_assets.asset_keys import model_key, segment_key
from azexport_assets.components.preview_job import PREVIEW_JOB, PREVIEW_TAG, preview_run_config
from azexport_assets_tests.project_kit import export_metadata
from azexport_assets_tests.test_encryption_e2e import KEY_ENV, private_key  # noqa: F401

T1 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
T2 = datetime(2025, 4, 15, 6, tzinfo=timezone.utc)

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
segments:
  fr_people:
    model: people
    filter: country = 'FR'
activations:
  diff:
    source: fr_people
    destination: lake
    file_name: "{activation}/{segment}/{YYYY}-{MM}-{DD}"
    run_type: full_then_delta
    sync_mode: difference
    max_file_size: 1024
    manifest: true
    mapping: {id: ID, name: Full name, score: Score}
"""


def preview_metadata(kit, name: str, logical_time: datetime | None = None, **config):
    """Run the preview job for activation `name`; the metadata of its op's output."""
    job = kit.definitions().resolve_job_def(PREVIEW_JOB)
    tags = {"azexport/logical_time": logical_time.isoformat()} if logical_time else None
    run_config = preview_run_config(name, **config)
    result = job.execute_in_process(instance=kit.instance, tags=tags, run_config=run_config)
    assert result.success
    # The run is tagged with the activation it previewed (for the UI's runs list).
    tagged = kit.instance.get_run_by_id(result.run_id).tags
    assert tagged[PREVIEW_TAG] == name
    outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert len(outputs) == 1
    return {k: v.value for k, v in outputs[0].event_specific_data.metadata.items()}, result


def refresh_segment(kit) -> None:
    """Materialize the model and segment, as the next run's first steps would."""
    job = kit.definitions().resolve_job_def("activate_diff")
    result = job.execute_in_process(
        instance=kit.instance, asset_selection=[model_key("people"), segment_key("fr_people")]
    )
    assert result.success


def warehouse_state(kit) -> dict:
    """Every table of the activation state schema with its rows (the baseline, change sets
    and state rows): what a preview must leave exactly as it was."""
    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "'azexport_state' ORDER BY table_name"
        ).fetchall()
        return {
            t: sorted(map(repr, con.execute(f'SELECT * FROM azexport_state."{t}"').fetchall()))
            for (t,) in tables
        }
    finally:
        con.close()


def blobs_with_etags(kit) -> dict[str, str]:
    return {b.name: b.etag for b in kit.container.list_blobs()}


def test_preview_writes_nothing_and_equals_the_next_run(project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'person ' || range AS name, "
        "CASE WHEN range % 3 = 0 THEN 'DE' ELSE 'FR' END AS country, "
        "CAST(range * 1.5 AS DECIMAL(9,2)) AS score FROM range(300)"
    )
    kit.write_defs(DEFS)
    # Before any run: no segment table yet, the preview says what to do.
    job = kit.definitions().resolve_job_def(PREVIEW_JOB)
    failed = job.execute_in_process(
        instance=kit.instance, run_config=preview_run_config("diff"), raise_on_error=False
    )
    assert not failed.success
    assert "materialize segments/fr_people first" in str(failed.get_step_failure_events()[0])
    assert kit.blob_names() == []

    # First run: full. Then a day of changes.
    kit.run("diff", logical_time=T1)
    kit.source_sql(
        "UPDATE people SET name = 'changed ' || id WHERE id IN (1, 2, 4)",
        "DELETE FROM people WHERE id IN (5, 7)",
        "INSERT INTO people VALUES (1000, 'new', 'FR', 1.25), (1001, 'newer', 'DE', 2)",
    )
    # The next run refreshes the segment first: so does this test, through the same job
    # steps, without delta and export.
    refresh_segment(kit)
    state_before = warehouse_state(kit)
    blobs_before = blobs_with_etags(kit)

    metadata, _ = preview_metadata(kit, "diff", T2, sample_rows=2)

    assert warehouse_state(kit) == state_before  # baseline, change set, state row: untouched
    assert blobs_with_etags(kit) == blobs_before  # no blob written or changed
    assert (metadata["added"], metadata["updated"], metadata["removed"]) == (1, 3, 2)
    assert metadata["source rows"] == 200 - 2 + 1
    assert metadata["baseline rows"] == 200
    assert metadata["reason"] == "delta" and metadata["full export"] is False
    columns = [(c.name, c.type) for c in metadata["columns"].columns]
    assert columns == [("ID", "BIGINT"), ("Full name", "VARCHAR"), ("Score", "DECIMAL(9,2)")]
    sample = [r.data for r in metadata["sample"].records]
    assert {"change": "added", "ID": 1000, "Full name": "new", "Score": "1.25"} in sample
    assert [r["ID"] for r in sample if r["change"] == "updated"] == [1, 2]  # 2 per kind
    assert {r["ID"] for r in sample if r["change"] == "removed"} == {5, 7}
    previewed = {
        r.data["name"]: (r.data["kind"], r.data["rows"], r.data["bytes"])
        for r in metadata["files"].records
    }
    assert metadata["manifest"] == "diff/fr_people/2025-04-15_manifest.json"

    # The next real run exports exactly what the preview said.
    result = kit.run("diff", logical_time=T2)
    exported = export_metadata(result, "diff")
    manifest = json.loads(kit.download("diff/fr_people/2025-04-15_manifest.json"))
    written = {f["name"]: (f["kind"], f["rows"], f["bytes"]) for f in manifest["files"]}
    assert written == previewed
    assert manifest["changes"] == {"added": 1, "updated": 3, "removed": 2}
    total = sum(rows for _, rows, _ in written.values())
    assert metadata["rows"] == total == exported["dagster/row_count"]


def test_preview_of_a_large_full_export_lists_every_part(project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, repeat('x', 40) || range AS name, "
        "'FR' AS country, 1.0 AS score FROM range(500)"
    )
    kit.write_defs(DEFS)
    refresh_segment(kit)
    metadata, _ = preview_metadata(kit, "diff", T1)
    assert metadata["reason"] == "first_run" and metadata["added"] == 500
    files = [(r.data["name"], r.data["kind"], r.data["part"]) for r in metadata["files"].records]
    assert len(files) > 3 and files[0] == (
        "diff/fr_people/2025-04-14_added_part-00001.csv",
        "added",
        1,
    )
    assert files[-1][0] == "diff/fr_people/2025-04-14_removed.csv"  # full run: empty, written
    assert kit.blob_names() == [] and warehouse_state(kit) == {}

    result = kit.run("diff", logical_time=T1)
    assert sorted(n for n, _, _ in files) == sorted(
        n for n in kit.blob_names() if not n.endswith("_manifest.json")
    )
    assert export_metadata(result, "diff")["dagster/row_count"] == metadata["rows"] == 500


def test_preview_on_the_command_line(project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name, 'FR' AS country, "
        "2.5 AS score FROM range(3)"
    )
    kit.write_defs(DEFS)
    kit.run("diff", logical_time=T1)
    kit.source_sql("UPDATE people SET name = 'q' WHERE id = 2")
    refresh_segment(kit)
    state_before, blobs_before = warehouse_state(kit), blobs_with_etags(kit)
    command = [
        sys.executable, "-m", "azexport_assets.preview", "diff",
        "--project-root", str(kit.root), "--defs", str(kit.root / "defs"),
        "--logical-time", "2025-04-15T06:00:00Z",
    ]  # fmt: skip
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["changes"] == {"added": 0, "updated": 1, "removed": 0}
    [shown_file] = shown["files"]
    assert shown_file == {
        "name": "diff/fr_people/2025-04-15_updated.csv",
        "kind": "updated",
        "part": None,
        "rows": 1,
        "bytes": shown_file["bytes"],
    }
    assert shown["sample"] == [{"change": "updated", "ID": 2, "Full name": "q", "Score": "2.5"}]
    assert shown["skipped_empty"] == [
        "diff/fr_people/2025-04-15_added.csv",
        "diff/fr_people/2025-04-15_removed.csv",
    ]
    text = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "0 added, 1 updated, 0 removed" in text.stdout
    assert "nothing was written and the baseline is unchanged" in text.stdout
    assert warehouse_state(kit) == state_before and blobs_with_etags(kit) == blobs_before

    kit.run("diff", logical_time=T2)  # the real run writes what the preview listed
    blob = kit.download("diff/fr_people/2025-04-15_updated.csv")
    assert blob == b"ID,Full name,Score\n2,q,2.5\n" and len(blob) == shown_file["bytes"]

    unknown = subprocess.run(
        [*command[:3], "nope", *command[4:]], capture_output=True, text=True, timeout=300
    )
    assert unknown.returncode == 2 and "unknown activation 'nope'; known: diff" in unknown.stderr


def test_preview_job_has_no_asset_and_waits_for_nothing_but_the_computation(project):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT 1 AS id, 'a' AS name, 'FR' AS country, 1 AS score"
    )
    kit.write_defs(DEFS)
    defs = kit.definitions()
    job = defs.resolve_job_def(PREVIEW_JOB)
    assert [node.name for node in job.graph.nodes] == ["preview"]
    kit.run("diff", logical_time=T1)
    _, result = preview_metadata(kit, "diff", T2)
    assert result.get_asset_materialization_events() == []  # a preview materializes nothing
    assert not any(e.event_type_value == "ASSET_OBSERVATION" for e in result.all_events)
    # The activation lock is free again: a run right after the preview goes through.
    assert kit.run("diff", logical_time=T2).success
    # A sample larger than 1000 rows per kind is refused, saying the range.
    refused = job.execute_in_process(
        instance=kit.instance,
        run_config=preview_run_config("diff", sample_rows=1001),
        raise_on_error=False,
    )
    assert not refused.success
    assert "sample_rows is 1001: use 0 to 1000" in str(refused.get_step_failure_events()[0])


def test_preview_of_an_encrypted_activation_names_the_pgp_files(
    project,
    private_key,  # noqa: F811 (the fixture imported above)
    monkeypatch,
):
    """With `encryption`, the preview's names are the run's: each part ends in `.pgp`."""
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, repeat('x', 40) || range AS name, "
        "'FR' AS country, 1.0 AS score FROM range(120)"
    )
    kit.write_defs(
        DEFS
        + f"""
  sealed:
    source: people
    destination: lake
    file_name: "sealed/{{activation}}_{{YYYY}}-{{MM}}-{{DD}}"
    format: csv
    compression: gzip
    max_file_size: 1024
    run_type: full_then_delta
    sync_mode: difference
    manifest: true
    encryption: {{pgp_public_key: {{env: {KEY_ENV}}}}}
"""
    )
    # The preview needs no key: it encrypts nothing.
    monkeypatch.delenv(KEY_ENV, raising=False)
    job = kit.definitions().resolve_job_def("activate_sealed")
    assert job.execute_in_process(
        instance=kit.instance, asset_selection=[model_key("people")]
    ).success
    metadata, _ = preview_metadata(kit, "sealed", T1)
    names = [r.data["name"] for r in metadata["files"].records]
    assert len(names) > 2  # split into parts: each is its own encrypted file
    assert all(n.endswith(".csv.gz.pgp") for n in names)
    assert names[0] == "sealed/sealed_2025-04-14_added_part-00001.csv.gz.pgp"
    assert metadata["manifest"] == "sealed/sealed_2025-04-14_manifest.json"  # not encrypted
    assert "before encryption" in metadata["encrypted"]
    assert kit.blob_names() == []

    # The run writes exactly these names.
    monkeypatch.setenv(KEY_ENV, str(private_key.pubkey))
    kit.run("sealed", logical_time=T1)
    assert sorted(names) == sorted(
        n for n in kit.blob_names("sealed/") if not n.endswith("_manifest.json")
    )
