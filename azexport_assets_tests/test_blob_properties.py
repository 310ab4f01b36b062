"""Blob properties set in the request that commits each blob (content type and encoding,
cache control, access tier, index tags, metadata), read back from a real Azurite; and their
configuration checks at load."""

from __future__ import annotations

import gzip
import hashlib
import os
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from azexport_assets.config import ConfigError
from azexport_assets.demo.azurite import container_sas
from azexport_assets.project import load_project
from azexport_assets.storage import BlobProperties, StorageError, preflight, upload_bytes
from azexport_assets.storage import upload_file as upload
from azexport_assets_tests.project_kit import SAS_ENV, ProjectKit
from azexport_assets_tests.test_storage import BLOCKS_4MIB, MiB, sas_storage

LOGICAL = datetime(2025, 4, 14, 6, 0, tzinfo=timezone.utc)
FULL = BlobProperties(
    content_type="text/csv; charset=utf-8",
    content_encoding="gzip",
    cache_control="max-age=3600",
    access_tier="Cool",
    tags={"team": "crm", "run": "r-1"},
    metadata={"owner": "crm"},
)


def read_back(container: ContainerClient, name: str) -> dict:
    blob = container.get_blob_client(name)
    props = blob.get_blob_properties()
    return {
        "content_type": props.content_settings.content_type,
        "content_encoding": props.content_settings.content_encoding,
        "cache_control": props.content_settings.cache_control,
        "tier": props.blob_tier,
        "tier_inferred": bool(props.blob_tier_inferred),
        "tags": blob.get_blob_tags(),
        "metadata": props.metadata,
        "md5": bytes(props.content_settings.content_md5).hex(),
    }


# --------------------------------------------------------------------------- storage layer


@pytest.mark.parametrize("size", [1000, 9 * MiB], ids=["one Put Blob", "Put Block List"])
def test_upload_sets_every_property_in_the_commit(azurite, container, sas_token, tmp_path, size):
    data = gzip.compress(os.urandom(size), compresslevel=0)
    path = tmp_path / "f.csv.gz"
    path.write_bytes(data)
    with sas_storage(azurite.account_url, sas_token, **BLOCKS_4MIB).container(
        container.container_name
    ) as client:
        blob = upload(client, "x/f.csv.gz", path, properties=FULL, metadata={"rows": "7"})
    got = read_back(container, "x/f.csv.gz")
    assert got == {
        "content_type": "text/csv; charset=utf-8",
        "content_encoding": "gzip",
        "cache_control": "max-age=3600",
        "tier": "Cool",
        "tier_inferred": False,
        "tags": {"team": "crm", "run": "r-1"},
        "metadata": {"owner": "crm", "rows": "7"},
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert blob.md5_hex == got["md5"]
    # Stored as sent; with Content-Encoding declared, the SDK (like a browser) decompresses
    # on download unless told not to.
    assert container.download_blob("x/f.csv.gz", decompress=False).readall() == data
    assert container.download_blob("x/f.csv.gz").readall() == gzip.decompress(data)


@pytest.mark.parametrize("tier", ["Hot", "Cool", "Cold", "Archive"])
def test_every_access_tier_on_the_emulator(azurite, container, sas_token, tier):
    """The storage emulator keeps all four tiers, and refuses to read an archived blob as
    Azure does (BlobArchived) until it is rehydrated."""
    with sas_storage(azurite.account_url, sas_token).container(container.container_name) as c:
        upload_bytes(c, "t.json", b"{}", properties=BlobProperties(access_tier=tier))
    assert read_back(container, "t.json")["tier"] == tier
    if tier == "Archive":
        with pytest.raises(HttpResponseError) as error:
            container.download_blob("t.json").readall()
        assert error.value.error_code == "BlobArchived"
        container.get_blob_client("t.json").set_standard_blob_tier("Hot")  # rehydrate
    else:
        assert container.download_blob("t.json").readall() == b"{}"


def test_plain_upload_keeps_the_defaults(azurite, container, sas_token, tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"a\n1\n")
    with sas_storage(azurite.account_url, sas_token).container(container.container_name) as c:
        upload(c, "p.csv", path, content_type="text/csv")
    got = read_back(container, "p.csv")
    assert (got["content_type"], got["content_encoding"], got["cache_control"]) == (
        "text/csv",
        None,
        None,
    )
    assert (got["tags"], got["metadata"], got["tier_inferred"]) == ({}, {}, True)


def test_preflight_wants_the_tag_permission_only_for_tags(azurite, container):
    without_t = container_sas(azurite.account_url, container.container_name, "racwdl")
    with_t = container_sas(azurite.account_url, container.container_name, "racwdlt")
    with sas_storage(azurite.account_url, without_t).container(container.container_name) as c:
        preflight(c)  # no tags: 'c' and 'w' are enough
        with pytest.raises(StorageError) as error:
            preflight(c, tags=True)
    message = str(error.value)
    assert "permission missing: the SAS token needs 't' (it grants 'racwdl')" in message
    assert "blob index tags" in message and "sig=" not in message
    with sas_storage(azurite.account_url, with_t).container(container.container_name) as c:
        preflight(c, tags=True)


# --------------------------------------------------------------------------- whole exports

SOURCE = "CREATE TABLE people AS SELECT range AS id, 'p' || range AS name FROM range(1, 1001)"


def people_yaml(options: str, name: str = "people_out") -> str:
    return f"""
    models:
      people:
        sql: SELECT * FROM src.people
        primary_key: id
    activations:
      {name}:
        source: people
        destination: lake
        file_name: out/{{YYYY}}{{MM}}{{DD}}_people
{textwrap.indent(textwrap.dedent(options), " " * 8)}
    """


@pytest.fixture
def tag_project(project: ProjectKit, azurite, monkeypatch) -> ProjectKit:
    """The test project, with a SAS that may set tags."""
    token = container_sas(azurite.account_url, project.container.container_name, "racwdlt")
    monkeypatch.setenv(SAS_ENV, token)
    project.source_sql(SOURCE)
    return project


def test_export_defaults_per_format_and_compression(tag_project: ProjectKit):
    kit = tag_project
    kit.write_defs(people_yaml("format: csv\ncompression: gzip\nmanifest: true"))
    result = kit.run("people_out", logical_time=LOGICAL)
    assert result.success
    got = read_back(kit.container, "out/20250414_people.csv.gz")
    # gzip bytes are declared as such; no Content-Encoding, so downloads keep the bytes (and MD5)
    assert (got["content_type"], got["content_encoding"]) == ("application/gzip", None)
    data = kit.download("out/20250414_people.csv.gz")
    assert gzip.decompress(data).decode().splitlines()[:2] == ["id,name", "1,p1"]
    run_id = result.run_id
    assert got["metadata"] == {
        "activation": "people_out",
        "run_id": run_id,
        "logical_time": LOGICAL.isoformat(),
        "rows": "1000",
        "md5": hashlib.md5(data).hexdigest(),
    }
    assert got["md5"] == got["metadata"]["md5"] and got["tags"] == {}
    manifest = read_back(kit.container, "out/20250414_people_manifest.json")
    assert manifest["content_type"] == "application/json"
    assert manifest["metadata"]["rows"] == "1000" and manifest["metadata"]["run_id"] == run_id
    body = kit.download("out/20250414_people_manifest.json")
    assert manifest["metadata"]["md5"] == hashlib.md5(body).hexdigest()


def test_export_sets_configured_properties_on_every_part(tag_project: ProjectKit):
    kit = tag_project
    kit.write_defs(
        people_yaml(
            """
            format: json
            json: {style: lines}
            compression: gzip
            max_file_size: 1500B
            run_type: full_then_delta
            sync_mode: upsert
            manifest: true
            blob_properties:
              content_encoding: gzip
              cache_control: no-cache
              access_tier: Cool
              tags:
                team: crm
                activation: "{activation}"
                run: "{run_id}"
                mode: "sync {sync_mode}"
              metadata: {owner: "team crm", source: "people of {activation}"}
            """
        )
    )
    result = kit.run("people_out", logical_time=LOGICAL)
    assert result.success
    parts = [n for n in kit.blob_names("out/") if "_part-" in n]
    assert len(parts) > 2
    expected_tags = {
        "team": "crm",
        "activation": "people_out",
        "run": result.run_id,
        "mode": "sync upsert",
    }
    rows = 0
    for name in parts:
        got = read_back(kit.container, name)
        data = kit.container.download_blob(name, decompress=False).readall()
        assert got["content_type"] == "application/x-ndjson"  # the content; gzip declared
        assert got["content_encoding"] == "gzip" and got["cache_control"] == "no-cache"
        assert got["tier"] == "Cool" and got["tags"] == expected_tags
        assert got["metadata"]["owner"] == "team crm"
        assert got["metadata"]["source"] == "people of people_out"
        assert got["metadata"]["md5"] == hashlib.md5(data).hexdigest() == got["md5"]
        lines = gzip.decompress(data).decode().splitlines()
        assert kit.container.download_blob(name).readall().decode().splitlines() == lines
        assert int(got["metadata"]["rows"]) == len(lines)
        rows += len(lines)
    assert rows == 1000
    manifest = read_back(kit.container, "out/20250414_people_manifest.json")
    assert manifest["tags"] == expected_tags and manifest["tier"] == "Cool"
    assert (manifest["content_type"], manifest["content_encoding"]) == ("application/json", None)


def test_archive_tier_leaves_the_manifest_readable(tag_project: ProjectKit):
    kit = tag_project
    kit.write_defs(people_yaml("manifest: true\nblob_properties: {access_tier: Archive}"))
    assert kit.run("people_out", logical_time=LOGICAL).success
    assert read_back(kit.container, "out/20250414_people.csv")["tier"] == "Archive"
    manifest = read_back(kit.container, "out/20250414_people_manifest.json")
    assert manifest["tier_inferred"] is True  # the account's default tier: readable
    assert b'"rows": 1000' in kit.download("out/20250414_people_manifest.json")
    with pytest.raises(HttpResponseError):
        kit.download("out/20250414_people.csv")
    # A rerun replaces the archived blob (Put Blob over an archived blob is allowed).
    assert kit.run("people_out", logical_time=LOGICAL).success


def test_export_refuses_tags_without_the_sas_permission(project: ProjectKit):
    project.source_sql(SOURCE)
    project.write_defs(people_yaml("blob_properties: {tags: {team: crm}}"))
    result = project.run("people_out", logical_time=LOGICAL, raise_on_error=False)
    assert not result.success
    assert project.blob_names() == []
    failures = [e for e in result.all_events if e.is_step_failure]
    text = failures[0].step_failure_data.error.message
    assert "the SAS token needs 't'" in text and "sig=" not in text


# --------------------------------------------------------------------------- configuration

BASE = """
type: azexport_assets.components.AzureExport
attributes:
  sources:
    crm: {duckdb: crm.duckdb}
  models:
    people:
      sql: SELECT id FROM crm.people
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


def load_error(tmp_path: Path, extra: str) -> str:
    con = duckdb.connect(str(tmp_path / "crm.duckdb"))
    con.execute("CREATE TABLE IF NOT EXISTS people AS SELECT 1 AS id")
    con.close()
    folder = tmp_path / "defs" / "main"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defs.yaml").write_text(BASE.lstrip() + textwrap.indent(extra.strip(), " " * 6))
    with pytest.raises(ConfigError) as error:
        load_project(tmp_path / "defs", tmp_path)
    return str(error.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "blob_properties: {tags: {a: '1', b: '2', c: '3', d: '4', e: '5', f: '6', g: '7', "
            "h: '8', i: '9', j: '10', k: '11'}}",
            "has 11 tags; Azure allows at most 10 per blob",
        ),
        ("blob_properties: {tags: {'team!': crm}}", "tag key 'team!' is not valid"),
        ("blob_properties: {tags: {team: 'a,b'}}", "tag 'team': value 'a,b' is not valid"),
        ("blob_properties: {tags: {team: '{model}'}}", "tag 'team' uses {model}"),
        (f"blob_properties: {{tags: {{team: '{'x' * 257}'}}}}", "longer than 256 characters"),
        (f"blob_properties: {{tags: {{'{'k' * 129}': x}}}}", "is not valid: 1-128 characters"),
        ("blob_properties: {metadata: {rows: '1'}}", "metadata name 'rows' is set automatically"),
        ("blob_properties: {metadata: {'bad-name': x}}", "metadata name 'bad-name' is not valid"),
        ("blob_properties: {metadata: {note: 'Zoë'}}", "must be printable ASCII"),
        ("blob_properties: {access_tier: Frozen}", "Hot', 'Cool', 'Cold' or 'Archive'"),
        ("blob_properties: {content_type: csv}", "'csv' is not a media type"),
        ("blob_properties: {content_encoding: gzip}", "must name the file's compression"),
        ("format: delta\nblob_properties: {access_tier: Cool}", "apply to files"),
        ("blob_properties: {colour: blue}", "unknown field"),
    ],
)
def test_bad_blob_properties_fail_at_load_with_file_line_object_field(tmp_path, extra, expected):
    message = load_error(tmp_path, extra)
    assert expected in message, message
    assert "defs.yaml:1" in message and "activation 'people_csv'" in message
    assert "blob_properties" in message


def test_tag_length_counts_the_activation_name(tmp_path):
    message = load_error(tmp_path, "blob_properties: {tags: {a: '" + "x" * 250 + "{activation}'}}")
    assert "longer than 256 characters with {activation}" in message
    assert "activation 'people_csv', field 'blob_properties'" in message


def test_schema_and_scaffold_show_blob_properties():
    from azexport_assets.components.scaffold import example_yaml
    from azexport_assets.components.schema import attributes_json_schema

    activation = attributes_json_schema()["properties"]["activations"]["additionalProperties"]
    properties = activation["properties"]["blob_properties"]["properties"]
    assert set(properties) == {
        "content_type",
        "content_encoding",
        "cache_control",
        "access_tier",
        "tags",
        "metadata",
    }
    tier = properties["access_tier"]["anyOf"][0]
    assert tier["anyOf"][0]["enum"] == ["Hot", "Cool", "Cold", "Archive"]
    example = example_yaml("azexport_assets.components.AzureExport", "crm")
    assert "# blob_properties:" in example and "#   access_tier: Cool" in example
