"""A long export tells the run log what it is doing: per file and blob, and every ~10 s."""

from __future__ import annotations

from azexport_assets import export as exporting

DEFS = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  parts:
    source: people
    destination: lake
    file_name: parts
    max_file_size: 64KB
"""


def test_run_log_reports_files_blobs_and_throughput(project, monkeypatch):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT range AS id, repeat('x', 50) || range AS note "
        "FROM range(20000)"
    )
    kit.write_defs(DEFS)
    monkeypatch.setattr(exporting, "PROGRESS_EVERY_SECONDS", 0.0)  # every batch, for the test
    # The per-file lines of a second share one message; here of the whole export.
    monkeypatch.setattr(exporting, "FILE_LINES_EVERY_SECONDS", 3600.0)
    result = kit.run("parts")
    messages = [e.user_message for e in kit.instance.all_logs(result.run_id)]
    parts = kit.blob_names("parts_part-")
    assert len(parts) > 3
    lines = [line for m in messages for line in m.split("\n")]
    written = [m for m in lines if m.startswith("wrote export_part-")]
    committed = [m for m in lines if m.startswith("committed blob parts_part-")]
    assert len(written) == len(parts) and len(committed) == len(parts)
    # One write to the run storage for all of them, not one per file and blob.
    assert len([m for m in messages if m.startswith(("wrote ", "committed blob "))]) == 1
    assert all(" rows, " in m and " bytes" in m for m in written)
    summaries = [m for m in messages if m.startswith("progress after ")]
    assert summaries and all("MB/s" in m and "bytes uploaded" in m for m in summaries)
    # The last summary accounts for every row.
    assert f"{20000:,} rows in closed files" in summaries[-1]
