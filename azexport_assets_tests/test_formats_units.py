"""Unit tests of the format layer's pure parts: the XML element name rule and the part
writer's hard size limit (property-based, over compression kinds)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import zstandard
from defusedxml import ElementTree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azexport_assets.formats.sink import PartWriter
from azexport_assets.formats.xml_names import element_names, is_xml_name

# ----------------------------------------------------------------------------- XML names


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["id", "name"], ["id", "name"]),
        (["first name"], ["first_name"]),
        (["2024 total"], ["_2024_total"]),
        (["-x", ".y"], ["_-x", "_.y"]),
        (["xmlId", "XML", "xml_a"], ["_xmlId", "_XML", "_xml_a"]),
        (["a:b", "a/b", "a(b)"], ["a_b", "a_b_2", "a_b_"]),
        (["a_b", "a b", "a-b"], ["a_b", "a_b_2", "a-b"]),  # valid names keep theirs
        (["a b", "a_b"], ["a_b_2", "a_b"]),  # ...even when they come later
        (["prénom", "Ωmega", "日本"], ["pr_nom", "_mega", "__"]),  # ASCII only
        (["emoji 😀"], ["emoji__"]),
        ([""], ["_"]),
        (["a b", "a  b", "a_b_2"], ["a_b", "a__b", "a_b_2"]),
        (["A b", "a b"], ["A_b", "a_b"]),  # case-sensitive, like XML
    ],
)
def test_element_names(columns: list[str], expected: list[str]) -> None:
    assert element_names(columns) == expected


@pytest.mark.parametrize("name", ["a b", "1x", "x:y", "xmlfoo", "", "a\tb", "a&b"])
def test_invalid_names_are_detected(name: str) -> None:
    assert not is_xml_name(name)


@given(st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=8, unique=True))
def test_element_names_are_unique_valid_and_deterministic(columns: list[str]) -> None:
    names = element_names(columns)
    assert len(set(names)) == len(names)
    assert names == element_names(columns)
    for column, name in zip(columns, names, strict=True):
        if is_xml_name(column):
            assert name == column
        # The XML parser is the judge of validity.
        ElementTree.fromstring(f"<{name}/>")


# ----------------------------------------------------------------------------- part writer


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def _offsets(rows: list[bytes]) -> tuple[memoryview, list[int]]:
    offsets = [0]
    for row in rows:
        offsets.append(offsets[-1] + len(row))
    return memoryview(b"".join(rows)), offsets


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.binary(min_size=1, max_size=3000), min_size=0, max_size=120),
    batch=st.integers(min_value=1, max_value=50),
    limit=st.integers(min_value=200, max_value=20_000),
    compression=st.sampled_from(["none", "gzip", "zstd"]),
    lead=st.sampled_from([0, 1]),
)
def test_part_writer_hard_limit(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[bytes],
    batch: int,
    limit: int,
    compression: str,
    lead: int,
) -> None:
    out = tmp_path_factory.mktemp("parts")
    rows = [b"," + r for r in rows] if lead else rows
    head, tail = b"<head>", b"</tail>\n"
    writer = PartWriter(
        out, ".bin", head, tail, lead=lead, compression=compression, max_bytes=limit
    )
    for start in range(0, len(rows), batch):  # arrives in batches, like Arrow record batches
        data, offsets = _offsets(rows[start : start + batch])
        writer.write_rows(data, offsets, 0, len(offsets) - 1)
    files = writer.finish()
    assert files and sorted(Path(f.path) for f in files) == sorted(out.iterdir())
    position = 0
    for f in files:
        raw = f.path.read_bytes()
        assert (f.bytes, f.md5_hex) == (len(raw), hashlib.md5(raw).hexdigest())
        content = _decompress(raw, compression)
        assert content.startswith(head) and content.endswith(tail)
        mine = rows[position : position + f.rows]
        body = b"".join(mine)[lead if mine else 0 :]
        assert content == head + body + tail
        if f.bytes > limit:  # only a single row too large on its own may exceed the limit
            assert f.rows == 1
        position += f.rows
    assert position == len(rows)
