"""Every format through a real Dagster run into Azurite: parse the blobs back, compare rows;
size-split parts, manifests (MD5 recomputed from downloads), stale parts, empty exports."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
import zstandard
from defusedxml import ElementTree

from azexport_assets.demo.azurite import container_sas
from azexport_assets_tests.project_kit import SAS_ENV, ProjectKit, export_metadata

ROWS = 3000
SOURCE = f"""
CREATE TABLE items AS
SELECT
    range AS id,
    'item ' || range || CASE WHEN range % 7 = 0 THEN ', "quoted" & <tagged>' ELSE '' END AS label,
    CAST(range * 1.25 AS DECIMAL(12, 2)) AS price,
    range % 2 = 0 AS in_stock,
    DATE '2025-01-01' + CAST(range % 365 AS INTEGER) AS available_from,
    CASE WHEN range % 5 = 0 THEN NULL ELSE 'Zoë ' || range END AS note
FROM range(1, {ROWS} + 1)
"""
COLUMNS = ["id", "label", "price", "in_stock", "available_from", "note"]
LOGICAL = datetime(2025, 4, 14, 6, 0, tzinfo=timezone.utc)


def activation_yaml(name: str, options: str, source: str = "items") -> str:
    body = f"""
    models:
      items:
        sql: SELECT * FROM src.items
        primary_key: id
      empty_items:
        sql: SELECT * FROM src.items WHERE false
        primary_key: id
    activations:
      {name}:
        source: {source}
        destination: lake
        file_name: out/{{YYYY}}{{MM}}{{DD}}_items
{options}
    """
    return body


def canonical(value: Any) -> str | None:
    """One text form per value, whatever the format's own types."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def decompress(data: bytes, name: str) -> bytes:
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".zst"):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


def parse(name: str, data: bytes) -> list[dict[str, str | None]]:
    """Rows of one blob, read by an independent reader for its format."""
    data = decompress(data, name)
    base = name.removesuffix(".gz").removesuffix(".zst")
    if base.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
    if base.endswith(".jsonl"):
        lines = data.decode("utf-8").splitlines()
        return [_json_row(json.loads(line, parse_float=Decimal)) for line in lines]
    if base.endswith(".json"):
        return [_json_row(r) for r in json.loads(data, parse_float=Decimal)]
    if base.endswith(".xml"):
        root = ElementTree.fromstring(data)
        nil = "{http://www.w3.org/2001/XMLSchema-instance}nil"
        return [
            {child.tag: (None if child.get(nil) == "true" else child.text or "") for child in row}
            for row in root
        ]
    if base.endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        return [{k: canonical(v) for k, v in row.items()} for row in table.to_pylist()]
    raise AssertionError(name)


def _json_row(row: dict) -> dict[str, str | None]:
    return {k: canonical(v) for k, v in row.items()}


def expected_rows(kit: ProjectKit, where: str = "true") -> list[dict[str, str | None]]:
    rows = kit.query_source(f"SELECT {', '.join(COLUMNS)} FROM items WHERE {where} ORDER BY id")
    return [dict(zip(COLUMNS, (canonical(v) for v in row), strict=True)) for row in rows]


@pytest.fixture
def kit(project: ProjectKit) -> ProjectKit:
    kit = project
    kit.source_sql(SOURCE)
    return kit


@pytest.mark.parametrize(
    ("options", "blob"),
    [
        ("format: csv", "out/20250414_items.csv"),
        ("format: csv\n        compression: gzip", "out/20250414_items.csv.gz"),
        ("format: json", "out/20250414_items.json"),
        (
            "format: json\n        json: {style: lines}\n        compression: zstd",
            "out/20250414_items.jsonl.zst",
        ),
        ("format: xml", "out/20250414_items.xml"),
        (
            "format: xml\n        xml: {root: catalog, row: item}\n        compression: gzip",
            "out/20250414_items.xml.gz",
        ),
        ("format: parquet", "out/20250414_items.parquet"),
        ("format: parquet\n        parquet: {compression: snappy}", "out/20250414_items.parquet"),
    ],
    ids=[
        "csv",
        "csv-gzip",
        "json",
        "jsonl-zstd",
        "xml",
        "xml-custom-gzip",
        "parquet",
        "parquet-snappy",
    ],
)
def test_every_format_round_trips(kit: ProjectKit, options: str, blob: str):
    kit.write_defs(activation_yaml("items_out", "        " + options))
    result = kit.run("items_out", logical_time=LOGICAL)
    assert kit.blob_names() == [blob]
    data = kit.download(blob)
    assert parse(blob, data) == expected_rows(kit)
    metadata = export_metadata(result, "items_out")
    assert metadata["dagster/row_count"] == ROWS and metadata["bytes"] == len(data)
    if "catalog" in options:
        root = ElementTree.fromstring(decompress(data, blob))
        assert root.tag == "catalog" and root[0].tag == "item"


@pytest.mark.parametrize("fmt", ["csv", "json", "xml", "parquet"])
def test_size_limit_splits_into_complete_parts_with_manifest(kit: ProjectKit, fmt: str):
    limit = 7_000 if fmt == "parquet" else 40_000  # Parquet is far smaller for the same rows
    options = f"        format: {fmt}\n        max_file_size: {limit}\n        manifest: true"
    kit.write_defs(activation_yaml("items_parts", options))
    result = kit.run("items_parts", logical_time=LOGICAL)
    names = kit.blob_names()
    extension = {"csv": ".csv", "json": ".json", "xml": ".xml", "parquet": ".parquet"}[fmt]
    parts = [n for n in names if "_part-" in n]
    assert len(parts) >= 3, names
    assert parts == [
        f"out/20250414_items_part-{i:05d}{extension}" for i in range(1, len(parts) + 1)
    ]
    assert set(names) == set(parts) | {"out/20250414_items_manifest.json"}

    rows: list[dict] = []
    downloads = {name: kit.download(name) for name in parts}
    for name, data in downloads.items():
        assert len(data) <= limit, (name, len(data))  # the limit is hard
        rows += parse(name, data)  # every part parses on its own
    assert sorted(rows, key=lambda r: int(r["id"])) == expected_rows(kit)

    manifest = json.loads(kit.download("out/20250414_items_manifest.json"))
    assert [f["name"] for f in manifest["files"]] == parts
    for entry in manifest["files"]:
        data = downloads[entry["name"]]
        assert entry["bytes"] == len(data)
        assert entry["md5"] == hashlib.md5(data).hexdigest()
        assert entry["rows"] == len(parse(entry["name"], data))
    assert sum(f["rows"] for f in manifest["files"]) == ROWS
    assert [c["name"] for c in manifest["columns"]] == COLUMNS
    assert manifest["run_id"] == result.run_id and manifest["sync_mode"] == "snapshot"
    assert manifest["logical_time"].startswith("2025-04-14T06:00:00")
    assert export_metadata(result, "items_parts")["manifest"] == "out/20250414_items_manifest.json"


def test_fewer_parts_later_leave_no_stale_parts(kit: ProjectKit):
    options = "        format: csv\n        max_file_size: 40000"
    kit.write_defs(activation_yaml("items_parts", options))
    kit.run("items_parts", logical_time=LOGICAL)
    first = kit.blob_names()
    assert len(first) >= 3
    kit.source_sql("DELETE FROM items WHERE id > 1200")
    result = kit.run("items_parts", logical_time=LOGICAL)
    second = kit.blob_names()
    assert len(second) < len(first)
    assert second == [f"out/20250414_items_part-{i:05d}.csv" for i in range(1, len(second) + 1)]
    rows = [r for name in second for r in parse(name, kit.download(name))]
    assert len(rows) == 1200
    assert (
        sorted(export_metadata(result, "items_parts")["stale_parts_removed"])
        == first[len(second) :]
    )

    kit.source_sql("DELETE FROM items WHERE id > 10")  # now small enough for one plain file
    kit.run("items_parts", logical_time=LOGICAL)
    assert kit.blob_names() == ["out/20250414_items.csv"]


@pytest.mark.parametrize("split", [True, False], ids=["parts", "one-file"])
def test_a_write_only_sas_exports_and_says_earlier_parts_were_not_looked_for(
    kit: ProjectKit, azurite, monkeypatch, split: bool
):
    """A partner's drop container often grants only 'c' and 'w'. The export succeeds (listing
    the container serves only to remove an earlier run's extra parts); with parts possible the
    run says so, and the metadata records that nothing was looked for."""
    options = "        format: csv" + ("\n        max_file_size: 40000" if split else "")
    kit.write_defs(activation_yaml("items_drop", options))
    name = kit.container.container_name
    monkeypatch.setenv(SAS_ENV, container_sas(azurite.account_url, name, permission="cw"))
    result = kit.run("items_drop", logical_time=LOGICAL)
    assert result.success
    names = kit.blob_names()
    assert len(names) >= 3 if split else names == ["out/20250414_items.csv"]
    rows = [r for blob in names for r in parse(blob, kit.download(blob))]
    assert sorted(rows, key=lambda r: int(r["id"])) == expected_rows(kit)
    metadata = export_metadata(result, "items_drop")
    assert metadata["stale_parts_unchecked"] == "the credential may not list the container"
    warnings = [
        entry.user_message
        for entry in kit.instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and "may not list" in entry.user_message
    ]
    assert len(warnings) == (1 if split else 0), warnings
    if split:
        assert "were not looked for" in warnings[0] and "Grant 'l' and 'd'" in warnings[0]


@pytest.mark.parametrize(
    ("fmt", "on_empty", "expected"),
    [
        ("csv", "write", b"id,label,price,in_stock,available_from,note\n"),
        ("json", "write", None),
        ("xml", "write", None),
        ("parquet", "write", None),
        ("csv", "skip", "no blob"),
    ],
)
def test_empty_exports(kit: ProjectKit, fmt: str, on_empty: str, expected):
    options = f"        format: {fmt}\n        on_empty: {on_empty}"
    kit.write_defs(activation_yaml("empty_out", options, source="empty_items"))
    result = kit.run("empty_out", logical_time=LOGICAL)
    names = kit.blob_names()
    if expected == "no blob":
        assert names == []
        assert export_metadata(result, "empty_out")["file_count"] == 0
        return
    (name,) = names
    data = kit.download(name)
    if isinstance(expected, bytes):
        assert data == expected
    assert parse(name, data) == []
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(data)).column_names == COLUMNS


def test_xml_forbidden_characters_raise_a_warning(kit: ProjectKit):
    kit.source_sql("UPDATE items SET note = 'bell' || chr(7) || 'and' || chr(27) WHERE id = 3")
    kit.write_defs(activation_yaml("items_xml", "        format: xml"))
    result = kit.run("items_xml", logical_time=LOGICAL)
    rows = parse("out/20250414_items.xml", kit.download("out/20250414_items.xml"))
    assert rows[2]["note"] == "belland"
    (check,) = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.check_name == "xml_removed_characters"
    ]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["removed_characters"].value == 2
