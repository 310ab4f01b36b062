"""A `csv:` source in another encoding than UTF-8 (`encoding: latin-1 | utf-16`) is read as
text and exported as UTF-8; without the option, such a file is named at load with the fix."""

from __future__ import annotations

import csv
import io
import logging

import pytest

from azexport_assets.components.fingerprints import source_fingerprint
from azexport_assets.config import ConfigError
from azexport_assets.project import load_project
from azexport_assets_tests.project_kit import ProjectKit

ROWS = [("1", "Jürgen"), ("2", "Zoë"), ("3", "Straße"), ("4", "Ångström")]

ACTIVATION = """\
models:
  people: {sql: "SELECT id, name FROM people", primary_key: id}
activations:
  people_csv: {source: people, destination: lake, file_name: people}
"""


def write_files(kit: ProjectKit, encoding: str) -> None:
    """Two files, so the encoding applies to every file of the glob, not only the first."""
    folder = kit.root / "data"
    folder.mkdir(exist_ok=True)
    for part, rows in (("a", ROWS[:2]), ("b", ROWS[2:])):
        text = "id,name\n" + "".join(f"{i},{name}\n" for i, name in rows)
        (folder / f"{part}.csv").write_bytes(text.encode(encoding))


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_csv_source_in_its_encoding_is_exported_as_utf8(project: ProjectKit, encoding: str):
    kit = project
    write_files(kit, encoding)
    kit.write_defs(ACTIVATION, extra_sources=f"people: {{csv: data/*.csv, encoding: {encoding}}}")
    assert kit.run("people_csv").success
    text = kit.download("people.csv").decode("utf-8")
    rows = [tuple(r) for r in csv.reader(io.StringIO(text, newline=""))]
    assert rows[0] == ("id", "name")
    assert sorted(rows[1:], key=lambda r: int(r[0])) == ROWS


def test_a_csv_source_not_in_utf8_is_named_with_the_fix(project: ProjectKit, caplog):
    """A file's content, not the configuration alone: loading warns (the other activations
    still load) and the model step fails, not retried, with the same line; nothing is
    exported."""
    kit = project
    write_files(kit, "latin-1")
    # Only a.csv is not UTF-8, so the file named is the same whichever file DuckDB reads first.
    (kit.root / "data" / "b.csv").write_text("id,name\n3,Straße\n", encoding="utf-8")
    kit.write_defs(ACTIVATION, extra_sources="people: {csv: data/*.csv}")
    detail = (
        f"{kit.root / 'data' / 'a.csv'} is not UTF-8 text; give the source its encoding: "
        "'encoding: latin-1' (ISO-8859-1, what many European exports write) or "
        "'encoding: utf-16'"
    )
    with caplog.at_level(logging.WARNING, logger="azexport_assets.introspect"):
        kit.definitions()
    assert f"defs/main/defs.yaml:5:14: source 'people', field 'csv': {detail}" in caplog.messages
    result = kit.run("people_csv", raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "models__people"
    data = failure.step_failure_data.user_failure_data
    assert data.description == f"source 'people' (csv: data/*.csv): {detail}"
    assert kit.blob_names() == []


@pytest.mark.parametrize(
    ("materialized", "sync_mode", "failed_step"),
    [
        ("table", "snapshot", "models__people"),
        ("view", "snapshot", "activations__people_csv__people_csv_export"),
        ("view", "upsert, run_type: full_then_delta", "activations__people_csv__people_csv_delta"),
    ],
)
def test_a_later_file_not_in_the_encoding_is_named_with_the_fix(
    project: ProjectKit, materialized: str, sync_mode: str, failed_step: str
):
    """The view over a glob binds on its first file; a later file that is not in the
    source's encoding fails when its rows are read (the model's build; through a view model,
    the delta's comparison or the export): the same line names the source and that file, not
    DuckDB's advice of reader options a source cannot set; nothing is exported."""
    kit = project
    folder = kit.root / "data"
    folder.mkdir()
    (folder / "a.csv").write_text("id,name\n1,Zoë\n", encoding="utf-8")
    # The Latin-1 row comes after what DuckDB's sniffer samples: the view binds, reading fails.
    rows = "".join(f"{i},name {i}\n" for i in range(2, 30_002))
    (folder / "b.csv").write_bytes(f"id,name\n{rows}30002,Straße\n".encode("latin-1"))
    kit.write_defs(
        ACTIVATION.replace(
            "primary_key: id}", f"primary_key: id, materialized: {materialized}}}"
        ).replace("file_name: people}", f"file_name: people, sync_mode: {sync_mode}}}"),
        extra_sources="people: {csv: data/*.csv}",
    )
    result = kit.run("people_csv", raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == failed_step
    data = failure.step_failure_data.user_failure_data
    assert data is not None, failure.step_failure_data.error
    assert data.description.startswith(
        f"source 'people' (csv: data/*.csv): {kit.root / 'data' / 'b.csv'} is not UTF-8 text; "
        "give the source its encoding: 'encoding: latin-1'"
    )
    assert "ignore_errors" not in data.description
    assert kit.blob_names() == []


def test_the_encoding_is_part_of_what_a_model_is_built_from(project: ProjectKit):
    """Declaring or changing the encoding changes the source's fingerprint, so a kept model
    is rebuilt from the files read the new way."""
    kit = project
    write_files(kit, "latin-1")
    fingerprints = []
    for option in ("", ", encoding: latin-1", ", encoding: utf-16"):
        kit.write_defs(ACTIVATION, extra_sources=f"people: {{csv: data/*.csv{option}}}")
        loaded = load_project(kit.root / "defs", kit.root)  # the SQL is not bound here
        fingerprints.append(source_fingerprint(loaded, "people"))
    assert len(set(fingerprints)) == 3


def test_encoding_is_only_for_csv_sources(project: ProjectKit):
    kit = project
    kit.write_defs(ACTIVATION.replace("FROM people", "FROM src.people"))
    text = (kit.root / "defs" / "main" / "defs.yaml").read_text()
    text = text.replace("src: {duckdb: src.duckdb}", "src: {duckdb: src.duckdb, encoding: latin-1}")
    (kit.root / "defs" / "main" / "defs.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_project(kit.root / "defs", kit.root)
    assert "source 'src'" in str(error.value)
    assert "'encoding' is for csv sources (a duckdb source declares its own); remove it" in str(
        error.value
    )
