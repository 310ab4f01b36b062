"""File sources through table and view models, segments, the sync log and model chains at
their edges, through real runs on Azurite: every delta compared with what changed."""

from __future__ import annotations

import csv
import io
import os
import time
from datetime import datetime, timedelta, timezone

import duckdb
import pytest

from azexport_assets.warehouse import open_warehouse
from azexport_assets_tests.project_kit import ProjectKit

T = [datetime(2025, 4, 14, 6, tzinfo=timezone.utc) + timedelta(days=i) for i in range(10)]


def stem(i: int) -> str:
    return f"out/{T[i]:%Y%m%d}"


def rows_of(kit: ProjectKit, name: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(kit.download(name).decode("utf-8"), newline="")))


def table(kit: ProjectKit, name: str, key: str = "id") -> list[tuple]:
    return sorted((int(r[key]), *[v for k, v in r.items() if k != key]) for r in rows_of(kit, name))


def names_of(kit: ProjectKit, i: int) -> list[str]:
    return [n for n in kit.blob_names() if n.startswith(stem(i))]


def write_csv(kit: ProjectKit, rel: str, text: str) -> None:
    path = kit.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_parquet(kit: ProjectKit, rel: str, rows: list[tuple]) -> None:
    path = kit.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    values = ", ".join(f"({i}, '{n}')" for i, n in rows)
    con.execute(f"COPY (SELECT * FROM (VALUES {values}) t(id, name)) TO '{path}' (FORMAT parquet)")
    con.close()


def warehouse_sql(kit: ProjectKit, statement: str) -> list[tuple]:
    with open_warehouse(project_root=kit.root).connect(holder="test") as con:
        return con.execute(statement).fetchall()


DIFF = """\
models:
  people: {{sql: "SELECT id, name FROM files", primary_key: id, materialized: {mat}}}
activations:
  out: {{source: people, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: difference}}
"""


def files_then_changes(kit: ProjectKit, kind: str, mat: str) -> None:
    src = f"files: {{{kind}: data/*.{kind}}}"

    def put(rel: str, rows: list[tuple]) -> None:
        if kind == "csv":
            write_csv(kit, f"data/{rel}.csv", "id,name\n" + "".join(f"{i},{n}\n" for i, n in rows))
        else:
            write_parquet(kit, f"data/{rel}.parquet", rows)

    put("a", [(1, "Ada"), (2, "Bob")])
    kit.write_defs(DIFF.format(mat=mat), extra_sources=src)
    assert kit.run("out", logical_time=T[0]).success
    assert table(kit, stem(0) + "_added.csv") == [(1, "Ada"), (2, "Bob")]

    # A file added.
    time.sleep(0.02)
    put("b", [(3, "Cy")])
    assert kit.run("out", logical_time=T[1]).success
    assert table(kit, stem(1) + "_added.csv") == [(3, "Cy")]
    assert stem(1) + "_updated.csv" not in kit.blob_names()
    assert stem(1) + "_removed.csv" not in kit.blob_names()

    # A file changed, same size (Bob -> Bab).
    time.sleep(0.02)
    put("a", [(1, "Ada"), (2, "Bab")])
    assert kit.run("out", logical_time=T[2]).success
    assert names_of(kit, 2) == [stem(2) + "_updated.csv"]
    assert table(kit, stem(2) + "_updated.csv") == [(2, "Bab")]

    # A file removed.
    time.sleep(0.02)
    os.remove(kit.root / f"data/b.{kind}")
    assert kit.run("out", logical_time=T[3]).success
    assert names_of(kit, 3) == [stem(3) + "_removed.csv"]
    assert table(kit, stem(3) + "_removed.csv") == [(3, "Cy")]

    # Nothing changed.
    assert kit.run("out", logical_time=T[4]).success
    assert names_of(kit, 4) == []


@pytest.mark.parametrize("kind", ["csv", "parquet"])
@pytest.mark.parametrize("mat", ["table", "view"])
def test_file_source_changes_give_exact_deltas(project: ProjectKit, kind: str, mat: str):
    files_then_changes(project, kind, mat)


SEG = """\
models:
  people: {sql: "SELECT * FROM src.people", primary_key: id}
segments:
  vip: {model: people, filter: "score > 10"}
activations:
  out: {source: vip, destination: lake, file_name: "out/{YYYY}{MM}{DD}",
        run_type: full_then_delta, sync_mode: difference, sync_log: true}
"""


def test_segment_null_filter_and_rows_moving_in_and_out(project: ProjectKit):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES (1, 5), (2, 20), (3, NULL), (4, 30)) "
        "t(id, score)"
    )
    kit.write_defs(SEG)
    assert kit.run("out", logical_time=T[0]).success
    assert table(kit, stem(0) + "_added.csv") == [(2, "20"), (4, "30")]
    # 1 moves in, 2 moves out (score NULL), 4 updated but stays.
    kit.source_sql(
        "UPDATE people SET score = 11 WHERE id = 1",
        "UPDATE people SET score = NULL WHERE id = 2",
        "UPDATE people SET score = 31 WHERE id = 4",
    )
    assert kit.run("out", logical_time=T[1]).success
    assert table(kit, stem(1) + "_added.csv") == [(1, "11")]
    assert table(kit, stem(1) + "_updated.csv") == [(4, "31")]
    assert table(kit, stem(1) + "_removed.csv") == [(2, "20")]
    log = warehouse_sql(
        kit, "SELECT logical_time, operation, id FROM azexport_log.out ORDER BY 1, 2, 3"
    )
    t0, t1 = (t.replace(tzinfo=None) for t in T[:2])
    assert log == [
        (t0, "added", 2),
        (t0, "added", 4),
        (t1, "added", 1),
        (t1, "removed", 2),
        (t1, "updated", 4),
    ]


TWO_SEG = """\
models:
  people: {sql: "SELECT * FROM src.people", primary_key: id}
segments:
  low: {model: people, filter: "score <= 10"}
  high: {model: people, filter: "score > 10"}
activations:
  out_low: {source: low, destination: lake, file_name: "low/{YYYY}{MM}{DD}",
        run_type: full_then_delta, sync_mode: upsert}
  out_high: {source: high, destination: lake, file_name: "high/{YYYY}{MM}{DD}",
        run_type: full_then_delta, sync_mode: upsert}
"""


def test_two_segments_of_one_model(project: ProjectKit):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 5), (2, 20)) t(id, score)")
    kit.write_defs(TWO_SEG)
    assert kit.run("out_low", logical_time=T[0]).success
    assert kit.run("out_high", logical_time=T[0]).success
    assert table(kit, f"low/{T[0]:%Y%m%d}.csv") == [(1, "5")]
    assert table(kit, f"high/{T[0]:%Y%m%d}.csv") == [(2, "20")]
    kit.source_sql("UPDATE people SET score = 50 WHERE id = 1", "INSERT INTO people VALUES (3, 1)")
    # Run high first: it rebuilds the shared model; low must still see the change.
    assert kit.run("out_high", logical_time=T[1]).success
    assert kit.run("out_low", logical_time=T[1]).success
    assert table(kit, f"high/{T[1]:%Y%m%d}.csv") == [(1, "50")]
    assert table(kit, f"low/{T[1]:%Y%m%d}.csv") == [(3, "1")]


SWITCH = """\
models:
  people: {{sql: "SELECT * FROM src.people", primary_key: id, materialized: {mat}}}
activations:
  out: {{source: people, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: difference}}
"""


def test_table_to_view_and_back_keeps_exact_deltas(project: ProjectKit):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name)")
    kit.write_defs(SWITCH.format(mat="table"))
    assert kit.run("out", logical_time=T[0]).success
    kit.write_defs(SWITCH.format(mat="view"))
    kit.source_sql("INSERT INTO people VALUES (3, 'c')")
    assert kit.run("out", logical_time=T[1]).success
    assert names_of(kit, 1) == [stem(1) + "_added.csv"]
    assert table(kit, stem(1) + "_added.csv") == [(3, "c")]
    kit.write_defs(SWITCH.format(mat="table"))
    kit.source_sql("DELETE FROM people WHERE id = 1")
    assert kit.run("out", logical_time=T[2]).success
    assert names_of(kit, 2) == [stem(2) + "_removed.csv"]
    assert table(kit, stem(2) + "_removed.csv") == [(1, "a")]
    # No change at all, after a switch to view: nothing exported.
    kit.write_defs(SWITCH.format(mat="view"))
    assert kit.run("out", logical_time=T[3]).success
    assert names_of(kit, 3) == []


RENAME = """\
models:
  {name}: {{sql: "SELECT * FROM src.people", primary_key: id}}
activations:
  out: {{source: {name}, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: difference, sync_log: true}}
"""


def test_model_renamed_keeps_deltas_exact(project: ProjectKit):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name)")
    kit.write_defs(RENAME.format(name="people"))
    assert kit.run("out", logical_time=T[0]).success
    kit.write_defs(RENAME.format(name="persons"))
    kit.source_sql("UPDATE people SET name = 'B' WHERE id = 2")
    assert kit.run("out", logical_time=T[1]).success
    assert names_of(kit, 1) == [stem(1) + "_updated.csv"]
    assert table(kit, stem(1) + "_updated.csv") == [(2, "B")]


def test_full_resync_sync_log_matches_files(project: ProjectKit):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name)")
    kit.write_defs(RENAME.format(name="people"))
    assert kit.run("out", logical_time=T[0]).success
    kit.source_sql("DELETE FROM people WHERE id = 1", "INSERT INTO people VALUES (3, 'c')")
    cfg = {"ops": {"activations__out__out_delta": {"config": {"full_resync": True}}}}
    assert kit.run("out", logical_time=T[1], run_config=cfg).success
    assert names_of(kit, 1) == [stem(1) + "_added.csv"] or table(kit, stem(1) + "_added.csv") == [
        (2, "b"),
        (3, "c"),
    ]
    assert table(kit, stem(1) + "_added.csv") == [(2, "b"), (3, "c")]
    t1 = T[1].replace(tzinfo=None)
    log = warehouse_sql(
        kit,
        "SELECT operation, id FROM azexport_log.out WHERE logical_time = ? ORDER BY 1, 2".replace(
            "?", f"TIMESTAMP '{t1}'"
        ),
    )
    assert log == [("added", 2), ("added", 3)]
    # After the resync an ordinary delta again.
    kit.source_sql("UPDATE people SET name = 'C' WHERE id = 3")
    assert kit.run("out", logical_time=T[2]).success
    assert names_of(kit, 2) == [stem(2) + "_updated.csv"]


KEYED = """\
models:
  people: {{sql: "SELECT * FROM src.people", primary_key: {key}}}
activations:
  out: {{source: people, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: upsert, sync_log: true}}
"""


def test_sync_log_after_key_change(project: ProjectKit):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES (1, 'x1', 'a'), (2, 'x2', 'b')) "
        "t(id, code, name)"
    )
    kit.write_defs(KEYED.format(key="id"))
    assert kit.run("out", logical_time=T[0]).success
    kit.write_defs(KEYED.format(key="code"))
    assert kit.run("out", logical_time=T[1]).success
    # full export after a key change
    assert len(rows_of(kit, stem(1) + ".csv")) == 2
    log = warehouse_sql(
        kit, "SELECT logical_time, operation, id, code FROM azexport_log.out ORDER BY 1, 3, 4"
    )
    t0, t1 = (t.replace(tzinfo=None) for t in T[:2])
    assert log == [
        (t0, "added", 1, None),
        (t0, "added", 2, None),
        (t1, "added", None, "x1"),
        (t1, "added", None, "x2"),
    ]


def test_segment_filter_on_a_removed_column_is_named(project: ProjectKit):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 5), (2, 20)) t(id, score)")
    kit.write_defs(SEG)
    assert kit.run("out", logical_time=T[0]).success
    body = SEG.replace("SELECT * FROM src.people", "SELECT id FROM src.people")
    kit.write_defs(body)
    with pytest.raises(Exception) as info:
        kit.run("out", logical_time=T[1])
    text = str(info.value)
    assert "vip" in text and "filter" in text and "score" in text, text


def test_glob_matching_no_file(project: ProjectKit):
    kit = project
    (kit.root / "data").mkdir()
    kit.write_defs(DIFF.format(mat="table"), extra_sources="files: {csv: data/*.csv}")
    result = kit.run("out", logical_time=T[0], raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failures[0].event_specific_data.error
    assert error.message.startswith("dagster._core.definitions.events.Failure: source 'files': ")
    assert "no file matches" in error.message and "data/*.csv" in error.message
    assert "fix the source's path in its defs.yaml" in error.message


def test_export_only_rerun_does_not_double_the_sync_log(project: ProjectKit):
    from azexport_assets.asset_keys import export_key

    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name)")
    kit.write_defs(RENAME.format(name="people"))
    assert kit.run("out", logical_time=T[0]).success
    kit.source_sql("UPDATE people SET name = 'B' WHERE id = 2")
    assert kit.run("out", logical_time=T[1]).success
    job = kit.definitions().resolve_implicit_global_asset_job_def()
    rerun = job.execute_in_process(
        instance=kit.instance,
        asset_selection=[export_key("out")],
        tags={"azexport/logical_time": T[5].isoformat()},
    )
    assert rerun.success
    assert table(kit, stem(5) + "_updated.csv") == [(2, "B")]
    log = warehouse_sql(kit, "SELECT operation, id FROM azexport_log.out ORDER BY all")
    assert log == [("added", 1), ("added", 2), ("updated", 2)]
    # the next run is still an exact delta
    kit.source_sql("DELETE FROM people WHERE id = 1")
    assert kit.run("out", logical_time=T[6]).success
    assert names_of(kit, 6) == [stem(6) + "_removed.csv"]


CHAIN = """\
models:
  a: {{sql: "SELECT * FROM src.people", primary_key: id}}
  b:
    sql: "SELECT id, upper(name) AS name, score FROM models.a"
    primary_key: id
    materialized: view
  c: {{sql: "SELECT id, name || '!' AS name, score FROM models.b", primary_key: id}}
segments:
  hi: {{model: c, filter: "{filter}"}}
activations:
  out: {{source: hi, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: difference}}
"""


def test_chain_table_view_table_segment_deltas(project: ProjectKit):
    kit = project
    kit.source_sql(
        "CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a', 5), (2, 'b', 20), (3, 'c', 30)) "
        "t(id, name, score)"
    )
    kit.write_defs(CHAIN.format(filter="score > 10"))
    assert kit.run("out", logical_time=T[0]).success
    assert table(kit, stem(0) + "_added.csv") == [(2, "B!", "20"), (3, "C!", "30")]
    kit.source_sql("UPDATE people SET name = 'bb' WHERE id = 2")
    assert kit.run("out", logical_time=T[1]).success
    assert names_of(kit, 1) == [stem(1) + "_updated.csv"]
    assert table(kit, stem(1) + "_updated.csv") == [(2, "BB!", "20")]
    # filter change: 3 leaves, 1 enters
    kit.write_defs(CHAIN.format(filter="score < 25"))
    assert kit.run("out", logical_time=T[2]).success
    assert table(kit, stem(2) + "_added.csv") == [(1, "A!", "5")]
    assert table(kit, stem(2) + "_removed.csv") == [(3, "C!", "30")]
    assert stem(2) + "_updated.csv" not in kit.blob_names()
    # no change: nothing
    assert kit.run("out", logical_time=T[3]).success
    assert names_of(kit, 3) == []


def test_view_model_duplicate_key_blocks_export(project: ProjectKit):
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name)")
    kit.write_defs(SWITCH.format(mat="view"))
    assert kit.run("out", logical_time=T[0]).success
    kit.source_sql("INSERT INTO people VALUES (2, 'dup')")
    result = kit.run("out", logical_time=T[1], raise_on_error=False)
    assert not result.success
    assert names_of(kit, 1) == []
    kit.source_sql("DELETE FROM people WHERE name = 'dup'", "INSERT INTO people VALUES (3, 'c')")
    assert kit.run("out", logical_time=T[2]).success
    assert names_of(kit, 2) == [stem(2) + "_added.csv"]
    assert table(kit, stem(2) + "_added.csv") == [(3, "c")]


KEYTYPE = """\
models:
  people: {{sql: "{sql}", primary_key: id}}
activations:
  out: {{source: people, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: upsert, sync_log: true}}
"""


def test_sync_log_after_key_type_change(project: ProjectKit):
    """README: a change in the key or the source column types makes the next run a full
    export and a fresh baseline; docs/delta.md: the log has the key columns 'under their own
    names and types'. A key column that changes type must not wedge the activation."""
    kit = project
    kit.source_sql("CREATE TABLE people AS SELECT * FROM (VALUES (1, 'a'), (2, 'b')) t(id, name)")
    kit.write_defs(KEYTYPE.format(sql="SELECT id, name FROM src.people"))
    assert kit.run("out", logical_time=T[0]).success
    kit.write_defs(KEYTYPE.format(sql="SELECT 'P-' || id AS id, name FROM src.people"))
    result = kit.run("out", logical_time=T[1], raise_on_error=False)
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    if not result.success:
        again = kit.run("out", logical_time=T[2], raise_on_error=False)
        message = failures[0].event_specific_data.error.to_string().splitlines()
        cause = [line for line in message if "Conversion Error" in line]
        raise AssertionError(
            f"run failed: {cause}; blobs written anyway: {kit.blob_names()}; "
            f"next run succeeds: {again.success}"
        )
    assert sorted(r["id"] for r in rows_of(kit, stem(1) + ".csv")) == ["P-1", "P-2"]
    log = warehouse_sql(kit, "SELECT operation, id::VARCHAR FROM azexport_log.out ORDER BY all")
    assert ("added", "P-1") in log and ("added", "P-2") in log


STAR = """\
models:
  people: {{sql: "SELECT * FROM files", primary_key: id, materialized: {mat}}}
activations:
  out: {{source: people, destination: lake, file_name: "out/{{YYYY}}{{MM}}{{DD}}",
        run_type: full_then_delta, sync_mode: upsert}}
"""


@pytest.mark.parametrize("mat", ["table", "view"])
def test_csv_gains_a_column_between_runs(project: ProjectKit, mat: str):
    kit = project
    write_csv(kit, "data/a.csv", "id,name\n1,Ada\n2,Bob\n")
    kit.write_defs(STAR.format(mat=mat), extra_sources="files: {csv: data/*.csv}")
    assert kit.run("out", logical_time=T[0]).success
    time.sleep(0.02)
    write_csv(kit, "data/a.csv", "id,name,city\n1,Ada,Rome\n2,Bob,Oslo\n")
    assert kit.run("out", logical_time=T[1]).success
    rows = rows_of(kit, stem(1) + ".csv")
    assert rows == [
        {"id": "1", "name": "Ada", "city": "Rome"},
        {"id": "2", "name": "Bob", "city": "Oslo"},
    ]
    time.sleep(0.02)
    write_csv(kit, "data/a.csv", "id,name,city\n1,Ada,Rome\n2,Bob,Bergen\n")
    assert kit.run("out", logical_time=T[2]).success
    assert rows_of(kit, stem(2) + ".csv") == [{"id": "2", "name": "Bob", "city": "Bergen"}]
    # column dropped again
    time.sleep(0.02)
    write_csv(kit, "data/a.csv", "id,name\n1,Ada\n2,Bob\n")
    assert kit.run("out", logical_time=T[3]).success
    assert rows_of(kit, stem(3) + ".csv") == [
        {"id": "1", "name": "Ada"},
        {"id": "2", "name": "Bob"},
    ]


@pytest.mark.parametrize(
    ("later", "starts"),
    [
        ("3,Cy\n", "'3,Cy'"),  # no header: its first row would be read as one
        ("id,name,city\n3,Cy,Oslo\n", "'id,name,city'"),  # more columns: they would be dropped
    ],
    ids=["no-header", "more-columns"],
)
@pytest.mark.parametrize("mat", ["table", "view"])
def test_a_csv_file_without_the_globs_header_fails_naming_it(
    project: ProjectKit, later: str, starts: str, mat: str
):
    """DuckDB reads every file of a glob with the first file's layout; a later file that does
    not start with the same header lost its first row or its extra columns silently. Now the
    model step fails naming the file, nothing is exported, and once the file is fixed the next
    run exports every row."""
    kit = project
    write_csv(kit, "data/a.csv", "id,name\n1,Ada\n2,Bob\n")
    write_csv(kit, "data/b.csv", later)
    kit.write_defs(DIFF.format(mat=mat), extra_sources="files: {csv: data/*.csv}")
    result = kit.run("out", logical_time=T[0], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("source 'files' (csv): "), message
    assert f"b.csv starts with {starts}, not the header of " in message, message
    assert "a.csv ('id,name')" in message and "Give every file the same header line" in message
    assert kit.blob_names() == []
    write_csv(kit, "data/b.csv", "id,name\n3,Cy\n")
    assert kit.run("out", logical_time=T[1]).success
    assert table(kit, stem(1) + "_added.csv") == [(1, "Ada"), (2, "Bob"), (3, "Cy")]


@pytest.mark.parametrize("mat", ["table", "view"])
def test_quoted_values_in_a_later_csv_file_are_read_as_values(project: ProjectKit, mat: str):
    """The first file of the glob has no quoted field, so DuckDB's sniffer chose no quote
    character, and a later file's RFC 4180 quoting stayed in the values ('"Smith"'). A glob
    whose first file has no quote is read with '"'."""
    kit = project
    write_csv(kit, "data/a.csv", "id,name\n1,Ada\n2,Bob\n")
    # (A quoted field holding the delimiter would make DuckDB find the quote on its own.)
    write_csv(kit, "data/b.csv", 'id,name\n3,"Smith"\n4,"O""Neil"\n')
    kit.write_defs(DIFF.format(mat=mat), extra_sources="files: {csv: data/*.csv}")
    assert kit.run("out", logical_time=T[0]).success
    assert table(kit, stem(0) + "_added.csv") == [
        (1, "Ada"),
        (2, "Bob"),
        (3, "Smith"),
        (4, 'O"Neil'),
    ]
