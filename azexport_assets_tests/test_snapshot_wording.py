"""A snapshot (full_only + snapshot) speaks of snapshots in its descriptions, metadata and log
lines; a delta activation keeps speaking of change sets, added, updated and removed rows.
Real runs on Azurite and DuckDB; the blob is downloaded and its rows counted."""

from __future__ import annotations

import csv
import io

import dagster as dg

from azexport_assets.asset_keys import delta_key, export_key

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_snapshot:
    source: people
    destination: lake
    file_name: snapshot/people
  people_sync:
    source: people
    destination: lake
    file_name: sync/people_{X}
    format: json
    json: {style: lines}
    run_type: full_then_delta
    sync_mode: upsert
"""


def metadata_of(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise AssertionError(f"no materialization of {key.to_user_string()}")


def log_lines(kit, result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        entry.user_message
        for entry in kit.instance.all_logs(result.run_id)
        if entry.dagster_event is None
    ]


def test_a_snapshot_is_described_and_reported_as_a_snapshot(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(40)")
    kit.write_defs(DEFS)
    graph = kit.definitions().resolve_asset_graph()
    delta_text = graph.get(delta_key("people_snapshot")).description
    export_text = graph.get(export_key("people_snapshot")).description
    assert delta_text.startswith("Snapshot of activation `people_snapshot`: every row of")
    assert "No baseline is kept" in delta_text and "change set" not in delta_text.lower()
    assert "Writes every row of the snapshot taken by `people_snapshot_delta`." in export_text
    assert "change set" not in export_text and "baseline" not in export_text

    for _ in range(2):  # the second run is a snapshot too, never a delta
        result = kit.run("people_snapshot")
        delta = metadata_of(result, delta_key("people_snapshot"))
        assert delta["snapshot_rows"] == 40 and delta["sync_mode"] == "snapshot"
        assert not {"added", "updated", "removed", "baseline_rows"} & delta.keys()
        export = metadata_of(result, export_key("people_snapshot"))
        assert export["snapshot_rows"] == export["dagster/row_count"] == 40
        assert not {"added", "updated", "removed", "baseline_advanced"} & export.keys()
        lines = log_lines(kit, result)
        assert "snapshot of 'people_snapshot': 40 rows (every row, every run)" in lines
        assert not [line for line in lines if "added" in line or "change set" in line]
    rows = list(csv.DictReader(io.StringIO(kit.download("snapshot/people.csv").decode())))
    assert [r["id"] for r in rows] == [str(i) for i in range(40)]

    kit.source_sql("DELETE FROM people")
    result = kit.run("people_snapshot")  # on_empty: write (the default of full exports)
    assert metadata_of(result, export_key("people_snapshot"))["snapshot_rows"] == 0
    assert kit.download("snapshot/people.csv").decode().splitlines() == ["id,name"]


def test_a_delta_activation_keeps_change_set_words(project):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(40)")
    kit.write_defs(DEFS)
    graph = kit.definitions().resolve_asset_graph()
    assert graph.get(delta_key("people_sync")).description.startswith("Change set of activation")
    kit.run("people_sync")
    kit.source_sql(
        "UPDATE people SET name = 'changed' WHERE id < 3", "DELETE FROM people WHERE id = 39"
    )
    result = kit.run("people_sync")
    delta = metadata_of(result, delta_key("people_sync"))
    assert (delta["added"], delta["updated"], delta["removed"]) == (0, 3, 1)
    assert "snapshot_rows" not in delta
    lines = log_lines(kit, result)
    assert "change set of 'people_sync' (delta): 0 added, 3 updated, 1 removed" in lines
    export = metadata_of(result, export_key("people_sync"))
    assert export["baseline_advanced"] is True and export["dagster/row_count"] == 3
