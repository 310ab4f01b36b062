"""A `parquet:` glob whose files' schemas differ (a column added over time) is read by column
name: every column of every file, NULL where a file lacks it, whatever the files' order."""

from __future__ import annotations

import csv
import io

import duckdb
import pytest

from azexport_assets_tests.project_kit import ProjectKit

ACTIVATION = """\
models:
  events: {sql: "SELECT * FROM events", primary_key: id}
activations:
  events_csv: {source: events, destination: lake, file_name: events}
"""


def write_parquet(path, select: str) -> None:
    con = duckdb.connect()
    con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
    con.close()


@pytest.mark.parametrize("added_in", ["later", "earlier"])
def test_files_with_another_column_are_read_by_name(project: ProjectKit, added_in: str):
    """The file that has `channel` sorts after the others, or before them: before, DuckDB took
    the first file's schema (the column vanished) or failed the read (schema mismatch)."""
    kit = project
    folder = kit.root / "data"
    folder.mkdir()
    old, new = ("a", "b") if added_in == "later" else ("b", "a")
    write_parquet(folder / f"{old}.parquet", "SELECT 1 AS id, 'signup' AS kind")
    write_parquet(
        folder / f"{new}.parquet",
        "SELECT * FROM (VALUES (2, 'login', 'web'), (3, 'login', NULL)) t(id, kind, channel)",
    )
    kit.write_defs(ACTIVATION, extra_sources="events: {parquet: data/*.parquet}")
    assert kit.run("events_csv").success
    text = kit.download("events.csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["id", "kind", "channel"]
    assert sorted(rows[1:]) == [["1", "signup", ""], ["2", "login", "web"], ["3", "login", ""]]
