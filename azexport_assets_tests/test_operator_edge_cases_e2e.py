"""Three features as an operator uses them, in real Dagster runs on a real Azurite and DuckDB:
the preview (writes nothing, equals the next run, fails as the run would), blob properties
(on every blob a run writes) and sign-in (clear failures naming what to fix, nothing
half-written, no secret anywhere)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from azexport_assets.asset_keys import model_key
from azexport_assets.components.preview_job import PREVIEW_JOB, preview_run_config
from azexport_assets.demo.azurite import DEV_KEY, container_sas
from azexport_assets_tests.project_kit import SAS_ENV, ProjectKit, export_metadata
from azexport_assets_tests.test_blob_properties import read_back
from azexport_assets_tests.test_encryption_e2e import KEY_ENV, private_key  # noqa: F401
from azexport_assets_tests.test_preview_e2e import warehouse_state

T1 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)
T2 = datetime(2025, 4, 15, 6, tzinfo=timezone.utc)

PEOPLE = (
    "CREATE TABLE people AS SELECT range AS id, 'person ' || range AS name, "
    "CASE WHEN range % 3 = 0 THEN 'DE' WHEN range % 3 = 1 THEN 'FR' ELSE 'IT' END AS country "
    "FROM range(60)"
)

MODEL = """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
"""
# One upsert activation of `people` (tests add its last options).
UPSERT = (
    MODEL
    + """
activations:
  ups:
    source: people
    destination: lake
    file_name: "u/{YYYY}{MM}{DD}"
    run_type: full_then_delta
    sync_mode: upsert
"""
)


# --------------------------------------------------------------------------- helpers


def preview(kit: ProjectKit, name: str, logical_time: datetime | None = None, **config):
    """Run `preview_activation` for `name`: (metadata of its output, the result)."""
    job = kit.definitions().resolve_job_def(PREVIEW_JOB)
    tags = {"azexport/logical_time": logical_time.isoformat()} if logical_time else None
    result = job.execute_in_process(
        instance=kit.instance,
        tags=tags,
        run_config=preview_run_config(name, **config),
        raise_on_error=False,
    )
    outputs = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = (
        {k: v.value for k, v in outputs[0].event_specific_data.metadata.items()} if outputs else {}
    )
    return metadata, result


def build_model(kit: ProjectKit, activation: str) -> None:
    job = kit.definitions().resolve_job_def(f"activate_{activation}")
    assert job.execute_in_process(
        instance=kit.instance, asset_selection=[model_key("people")]
    ).success


def blobs_with_etags(kit: ProjectKit) -> dict[str, str]:
    return {b.name: b.etag for b in kit.container.list_blobs()}


def failure_text(result) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure
    )


def failure_message(result) -> str:
    """The message of the (first) step failure, as the UI headlines it."""
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "no step failed"
    return failures[0].step_failure_data.error.message.strip()


def stored_events(result) -> str:
    return "\n".join(dg.serialize_value(event) for event in result.all_events)


# --------------------------------------------------------------------------- preview


def test_preview_of_a_delta_table_after_its_first_run_equals_the_run(
    project: ProjectKit, azurite, monkeypatch
):
    """`format: delta`, upsert: after the first run, one row changes. The preview must say what
    the run then does: a delta of 1 updated row, not a full export of every row."""
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", f"http://127.0.0.1:{azurite.port}")
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(
        MODEL
        + """
activations:
  people_table:
    source: people
    destination: lake
    file_name: tables/people
    format: delta
    run_type: full_then_delta
    sync_mode: upsert
"""
    )
    assert kit.run("people_table", logical_time=T1).success
    kit.source_sql("UPDATE people SET name = 'changed' WHERE id = 7")
    build_model(kit, "people_table")
    before = warehouse_state(kit)
    metadata, result = preview(kit, "people_table", T2)
    assert result.success
    assert warehouse_state(kit) == before
    run = kit.run("people_table", logical_time=T2)
    exported = export_metadata(run, "people_table")
    # What the run did: a delta with one updated row.
    assert exported.get("full_export", exported.get("full export")) in (False, None)
    assert (metadata["reason"], metadata["full export"]) == ("delta", False), metadata["reason"]
    assert (metadata["added"], metadata["updated"], metadata["removed"]) == (0, 1, 0)
    assert metadata["rows"] == 1


def _partitioned(extra: str = "") -> str:
    return (
        MODEL
        + f"""
activations:
  by_id:
    source: people
    destination: lake
    file_name: parts/{{YYYY}}{{MM}}{{DD}}_people
    partition_by: [id]
    max_partitions: 20
    manifest: true
{extra}"""
    )


def test_preview_says_the_run_would_fail_on_too_many_partitions(project: ProjectKit):
    """60 partitions with `max_partitions: 20`: the run fails before writing anything. A
    preview that lists 60 files (and succeeds) disagrees with what the next run writes (none)."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(_partitioned())
    build_model(kit, "by_id")
    metadata, result = preview(kit, "by_id", T1)
    run = kit.run("by_id", logical_time=T1, raise_on_error=False)
    assert not run.success and kit.blob_names() == []
    assert "max_partitions" in failure_message(run)
    written = kit.blob_names()
    previewed = [r.data["name"] for r in metadata["files"].records] if "files" in metadata else []
    # Either the preview fails naming the limit, as the run does, or it lists what is written.
    if result.success:
        assert previewed == written, (
            f"preview listed {len(previewed)} files and succeeded; the run wrote {len(written)} "
            "and failed on max_partitions"
        )
    else:
        assert "max_partitions" in failure_message(result)


def test_preview_equals_the_next_run_for_partitions_parts_and_on_empty(project: ProjectKit):
    """difference + partitions + parts + `on_empty: write` + gzip: every name, kind, part,
    row count and byte count the preview lists is what the run writes, and the preview writes
    no blob and moves no state."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(
        MODEL
        + """
activations:
  diff:
    source: people
    destination: lake
    file_name: "d/{activation}_{YYYY}{MM}{DD}"
    format: json
    json: {style: lines}
    compression: gzip
    run_type: full_then_delta
    sync_mode: difference
    partition_by: [country]
    max_file_size: 1100
    on_empty: write
    manifest: true
"""
    )
    assert kit.run("diff", logical_time=T1).success
    kit.source_sql(
        "UPDATE people SET name = repeat('n', 50) || id WHERE id < 30",
        "DELETE FROM people WHERE id IN (58, 59)",
        "INSERT INTO people VALUES (100, 'new', 'ES')",
    )
    build_model(kit, "diff")
    before_state, before_blobs = warehouse_state(kit), blobs_with_etags(kit)
    metadata, result = preview(kit, "diff", T2)
    assert result.success
    assert warehouse_state(kit) == before_state and blobs_with_etags(kit) == before_blobs
    previewed = {
        r.data["name"]: (r.data["kind"], r.data["part"] or None, r.data["rows"], r.data["bytes"])
        for r in metadata["files"].records
    }
    assert kit.run("diff", logical_time=T2).success
    manifest = json.loads(kit.download("d/diff_20250415_manifest.json"))
    written = {f["name"]: (f["kind"], f["part"], f["rows"], f["bytes"]) for f in manifest["files"]}
    assert previewed == written
    assert metadata["manifest"] == "d/diff_20250415_manifest.json"
    assert sorted(metadata.get("skipped (empty)", [])) == sorted(manifest["skipped_empty"])


def test_preview_of_a_delta_without_changes_and_on_empty_skip_lists_nothing(project: ProjectKit):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(UPSERT + "    manifest: true\n")
    assert kit.run("ups", logical_time=T1).success
    build_model(kit, "ups")
    metadata, result = preview(kit, "ups", T2)
    assert result.success
    assert metadata["rows"] == 0 and metadata["files"].records == []
    assert "manifest" not in metadata
    assert metadata["skipped (empty)"] == ["u/20250415.csv"]
    assert kit.run("ups", logical_time=T2).success
    assert kit.blob_names("u/20250415") == []


# --------------------------------------------------------------------------- blob properties


@pytest.fixture
def tag_kit(project: ProjectKit, azurite, monkeypatch) -> ProjectKit:
    token = container_sas(azurite.account_url, project.container.container_name, "racwdlt")
    monkeypatch.setenv(SAS_ENV, token)
    project.source_sql(PEOPLE)
    return project


PROPERTIES = """
    blob_properties:
      content_type: "application/x-ndjson; profile=crm"
      cache_control: "private, max-age=0, no-transform"
      access_tier: Cool
      tags:
        team: "CRM data+ops"
        path: "a/b:c=d_e.f-g"
        activation: "{activation}"
        run: "{run_id}"
        mode: "{sync_mode}"
        empty: ""
      metadata:
        owner: "team crm <crm@example.com>; ~!@#$%^&*()[]"
        Origin: "{activation}/{run_id}"
"""


def test_every_blob_of_a_partitioned_difference_export_carries_its_properties(tag_kit):
    """Partition files, their parts, every change kind and the manifest: all carry the
    configured properties, with special characters read back exactly."""
    kit = tag_kit
    kit.write_defs(
        MODEL
        + """
activations:
  props:
    source: people
    destination: lake
    file_name: "p/{activation}_{YYYY}{MM}{DD}"
    format: json
    json: {style: lines}
    run_type: full_then_delta
    sync_mode: difference
    partition_by: [country]
    max_file_size: 1024
    on_empty: write
    manifest: true
"""
        + PROPERTIES
    )
    assert kit.run("props", logical_time=T1).success
    kit.source_sql(
        "UPDATE people SET name = repeat('x', 80) || id WHERE id < 40",
        "DELETE FROM people WHERE id = 41",
    )
    result = kit.run("props", logical_time=T2)
    assert result.success
    names = kit.blob_names("p/")
    day2 = [n for n in names if "20250415" in n]
    manifest_name = "p/props_20250415_manifest.json"
    assert manifest_name in day2
    manifest = json.loads(kit.download(manifest_name))
    files = [f["name"] for f in manifest["files"]]
    assert sorted(files + [manifest_name]) == sorted(day2)
    assert any("_part-" in n for n in files) and any("country=" in n for n in files)
    expected_tags = {
        "team": "CRM data+ops",
        "path": "a/b:c=d_e.f-g",
        "activation": "props",
        "run": result.run_id,
        "mode": "difference",
        "empty": "",
    }
    for name in day2:
        got = read_back(kit.container, name)
        data = kit.download(name)
        assert got["tags"] == expected_tags, name
        assert got["cache_control"] == "private, max-age=0, no-transform", name
        assert got["metadata"]["owner"] == "team crm <crm@example.com>; ~!@#$%^&*()[]", name
        assert got["metadata"]["Origin"] == f"props/{result.run_id}", name
        assert got["metadata"]["run_id"] == result.run_id, name
        assert got["metadata"]["md5"] == hashlib.md5(data).hexdigest() == got["md5"], name
        if name == manifest_name:
            assert got["content_type"] == "application/json"
            assert got["tier"] == "Cool"
        else:
            assert got["content_type"] == "application/x-ndjson; profile=crm", name
            assert got["tier"] == "Cool", name
            assert int(got["metadata"]["rows"]) == len(data.decode().splitlines()), name


def test_encrypted_parts_keep_the_other_properties(
    tag_kit,
    monkeypatch,
    private_key,  # noqa: F811 (the fixture imported above)
):
    monkeypatch.setenv(KEY_ENV, str(private_key.pubkey))
    kit = tag_kit
    kit.write_defs(
        MODEL
        + f"""
activations:
  sealed:
    source: people
    destination: lake
    file_name: "s/{{YYYY}}{{MM}}{{DD}}"
    max_file_size: 3000
    manifest: true
    encryption: {{pgp_public_key: {{env: {KEY_ENV}}}}}
    blob_properties:
      cache_control: no-store
      access_tier: Cold
      tags: {{team: crm}}
      metadata: {{owner: crm}}
"""
    )
    kit.source_sql("INSERT INTO people SELECT range, repeat('z', 60), 'FR' FROM range(1000, 1100)")
    assert kit.run("sealed", logical_time=T1).success
    names = kit.blob_names("s/")
    sealed = [n for n in names if n.endswith(".pgp")]
    assert len(sealed) > 1
    for name in names:
        got = read_back(kit.container, name)
        assert got["cache_control"] == "no-store", name
        assert got["tags"] == {"team": "crm"}, name
        assert got["metadata"]["owner"] == "crm", name
        assert got["tier"] == "Cold", name
        expected = (
            "application/json" if name.endswith("_manifest.json") else "application/pgp-encrypted"
        )
        assert got["content_type"] == expected, name


# --------------------------------------------------------------------------- sign-in


def write_signed_in(kit: ProjectKit, credential: str, extra_destination: str = "") -> None:
    """One destination that signs in as `credential` (one YAML line), one upsert activation."""
    text = f"""\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    src: {{duckdb: src.duckdb}}
  models:
    people:
      sql: SELECT * FROM src.people
      primary_key: id
  destinations:
    lake:
      container: {kit.container.container_name}
      max_retries: 1
      retry_backoff_seconds: 0.05
      {credential}
{extra_destination}  activations:
    ups:
      source: people
      destination: lake
      file_name: "u/{{YYYY}}{{MM}}{{DD}}"
      run_type: full_then_delta
      sync_mode: upsert
      manifest: true
      max_file_size: 1024
"""
    (kit.root / "defs" / "main" / "defs.yaml").write_text(text)


def baseline(kit: ProjectKit, activation: str):
    from azexport_assets.delta import baseline_info

    con = duckdb.connect(str(kit.warehouse_path), read_only=True)
    try:
        return baseline_info(con, activation)
    finally:
        con.close()


def persistent_instance(kit: ProjectKit, tmp_path: Path) -> Path:
    """Give the kit an on-disk Dagster instance (run and event storage in SQLite files), so the
    test can scan what Dagster stored, as the UI reads it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    kit.instance.dispose()
    kit.instance = dg.DagsterInstance.local_temp(str(home))
    return home


def scan_for(secrets: list[str], *folders: Path) -> list[str]:
    """Files under `folders` whose bytes hold any of `secrets`."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {s[:6]}..." for s in secrets if s.encode() in data]
    return found


def secret_forms(token: str) -> list[str]:
    from urllib.parse import parse_qs, unquote

    sig = parse_qs(token.lstrip("?"))["sig"][0]
    return [token, sig, unquote(sig), token.split("sig=")[1]]


def _other_account_key() -> str:
    import base64

    return base64.b64encode(hashlib.sha512(b"not the key").digest()).decode()


BAD_SIGN_INS = {
    # name: (credential YAML, value of the variable, words the message must hold)
    "expired SAS": (
        "sas_token: {env: BAD_SECRET}",
        lambda a, c: container_sas(
            a.account_url, c, expiry=datetime.now(timezone.utc) - timedelta(hours=1)
        ),
        ["expired", "generate a new SAS token"],
    ),
    "SAS without w": (
        "sas_token: {env: BAD_SECRET}",
        lambda a, c: container_sas(a.account_url, c, "rl"),
        ["permission missing", "'w'"],
    ),
    "SAS of another container": (
        "sas_token: {env: BAD_SECRET}",
        lambda a, c: container_sas(a.account_url, "some-other-container"),
        ["SAS token was rejected"],
    ),
    "wrong account key": (
        "account_key: {env: BAD_SECRET}",
        lambda a, c: _other_account_key(),
        ["account key was rejected"],
    ),
    "account key cut short": (
        "account_key: {env: BAD_SECRET}",
        lambda a, c: DEV_KEY[:-3],  # one character lost when copying, not base64 any more
        ["account key"],
    ),
    "SAS URL pasted as the SAS token": (
        "sas_token: {env: BAD_SECRET}",
        lambda a, c: f"{a.account_url}/{c}?" + container_sas(a.account_url, c),
        # What to do: the variable holds a URL, not a token (or use `sas_url:`). Advice about
        # identities / service principals is for another sign-in.
        ["SAS token"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_SIGN_INS))
def test_a_bad_sign_in_fails_in_one_line_writes_nothing_and_keeps_the_baseline(
    project: ProjectKit, azurite, monkeypatch, tmp_path, capfd, case
):
    kit = project
    home = persistent_instance(kit, tmp_path)
    credential, make_secret, words = BAD_SIGN_INS[case]
    kit.source_sql(PEOPLE)
    # A good first run, with the SAS of the kit.
    write_signed_in(kit, "sas_token: {env: " + SAS_ENV + "}", "")
    url_line = "      account_url: {env: AZEXPORT_TEST_ACCOUNT_URL}\n"
    text = (kit.root / "defs" / "main" / "defs.yaml").read_text()
    (kit.root / "defs" / "main" / "defs.yaml").write_text(
        text.replace("      max_retries: 1\n", url_line + "      max_retries: 1\n")
    )
    assert kit.run("ups", logical_time=T1).success
    before_blobs, before_baseline = blobs_with_etags(kit), baseline(kit, "ups")
    kit.source_sql("UPDATE people SET name = 'changed' WHERE id < 5")

    secret = make_secret(azurite, kit.container.container_name)
    monkeypatch.setenv("BAD_SECRET", secret)
    defs = (kit.root / "defs" / "main" / "defs.yaml").read_text()
    (kit.root / "defs" / "main" / "defs.yaml").write_text(
        defs.replace("sas_token: {env: " + SAS_ENV + "}", credential)
    )
    result = kit.run("ups", logical_time=T2, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    headline = message.split(": ", 1)[-1]
    assert "\n" not in headline, message  # one line
    assert blobs_with_etags(kit) == before_blobs  # nothing new, nothing replaced
    assert baseline(kit, "ups") == before_baseline
    forms = secret_forms(secret) if "sig=" in secret else [secret]
    stored = stored_events(result)
    assert not [f for f in forms if f in stored], "a secret is in the event log"
    out, err = capfd.readouterr()
    assert not [f for f in forms if f in out + err], "a secret is in the output"
    assert scan_for(forms, home, kit.root) == []

    # The good SAS again: the next run exports the changes the failed run did not.
    defs = (kit.root / "defs" / "main" / "defs.yaml").read_text()
    (kit.root / "defs" / "main" / "defs.yaml").write_text(
        defs.replace(credential, "sas_token: {env: " + SAS_ENV + "}")
    )
    assert kit.run("ups", logical_time=T2).success
    manifest = json.loads(kit.download("u/20250415_manifest.json"))
    assert manifest["changes"] == {"added": 0, "updated": 5, "removed": 0}
    # Last: the message says what is wrong with this sign-in, and only this one.
    for word in words:
        assert word in message, message
    for other_sign_in in ("identity token", "service principal", "az login"):
        assert other_sign_in not in message, message


def test_an_unset_secret_variable_fails_before_the_change_set_in_one_line(
    project: ProjectKit, monkeypatch
):
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(UPSERT)
    assert kit.run("ups", logical_time=T1).success
    before = warehouse_state(kit)
    kit.source_sql("UPDATE people SET name = 'changed' WHERE id < 5")
    monkeypatch.setenv(SAS_ENV, "")  # set but empty, as an empty line in .env gives
    result = kit.run("ups", logical_time=T2, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert f"environment variable {SAS_ENV} is not set" in message, message
    assert "destination 'lake'" in message and "\n" not in message.strip()
    failed_steps = [e.step_key for e in result.all_events if e.is_step_failure]
    assert failed_steps == ["activations__ups__ups_delta"]
    assert warehouse_state(kit) == before  # no change set computed
    assert kit.blob_names("u/20250415") == []


def test_a_sas_without_delete_leaves_stale_parts_and_says_so(
    project: ProjectKit, azurite, monkeypatch
):
    """`racwl` (no d): a later, shorter export under a fixed name cannot delete the earlier
    run's extra parts; the run succeeds and names what it left."""
    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(
        MODEL
        + """
activations:
  fixed:
    source: people
    destination: lake
    file_name: fixed/people
    max_file_size: 1024
"""
    )
    kit.source_sql("UPDATE people SET name = repeat('y', 50) || id")
    assert kit.run("fixed", logical_time=T1).success
    first = kit.blob_names("fixed/")
    assert len(first) > 2
    kit.source_sql("DELETE FROM people WHERE id >= 10")
    token = container_sas(azurite.account_url, kit.container.container_name, "racwl")
    monkeypatch.setenv(SAS_ENV, token)
    result = kit.run("fixed", logical_time=T2)
    assert result.success
    metadata = export_metadata(result, "fixed")
    left = [k for k in metadata if "stale" in k]
    assert left, metadata.keys()
    assert "fixed/people.csv" in kit.blob_names("fixed/")
    assert token not in stored_events(result)


def test_a_credential_revoked_mid_export_fails_cleanly(project: ProjectKit, azurite, monkeypatch):
    """The SAS is revoked after preflight (Azure answers 403 on the manifest): the run fails in
    one line saying what to do, no manifest appears, the baseline stays, and the retry with a
    working credential exports the same changes."""
    from azexport_assets_tests.fault_proxy import FaultProxy
    from azexport_assets_tests.project_kit import URL_ENV

    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(UPSERT + "    manifest: true\n")
    assert kit.run("ups", logical_time=T1).success
    before = baseline(kit, "ups")
    kit.source_sql("UPDATE people SET name = 'changed' WHERE id < 5")
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        proxy.fail(
            path_contains="_manifest.json",
            status=403,
            error_code="AuthenticationFailed",
            times=None,
        )
        result = kit.run("ups", logical_time=T2, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "\n" not in message.split(": ", 1)[-1], message
    assert "authentication failed" in message.lower() or "permission" in message.lower(), message
    assert "u/20250415_manifest.json" not in kit.blob_names("u/")
    assert baseline(kit, "ups") == before
    monkeypatch.setenv(URL_ENV, azurite.account_url)
    assert kit.run("ups", logical_time=T2).success
    manifest = json.loads(kit.download("u/20250415_manifest.json"))
    assert manifest["changes"] == {"added": 0, "updated": 5, "removed": 0}


def test_a_preview_needs_no_credential_and_touches_no_storage(
    project: ProjectKit, azurite, monkeypatch
):
    from azexport_assets_tests.fault_proxy import FaultProxy
    from azexport_assets_tests.project_kit import URL_ENV

    kit = project
    kit.source_sql(PEOPLE)
    kit.write_defs(UPSERT + "    blob_properties: {tags: {team: crm}}\n")
    build_model(kit, "ups")
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        monkeypatch.delenv(SAS_ENV)
        metadata, result = preview(kit, "ups", T1)
        assert result.success, failure_text(result)
        assert proxy.requests == []  # not one request to the storage account
    assert metadata["rows"] == 60 and kit.blob_names() == []


def test_no_secret_reaches_the_dagster_instance_with_debug_logging(
    project: ProjectKit, azurite, monkeypatch, tmp_path, capfd
):
    """Successful and failing runs with an account key and a connection string, every SDK
    logger at DEBUG: no form of a secret in the instance's files, the output or the events."""
    import logging

    for name in ("", "azure", "urllib3", "azexport_assets"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    kit = project
    home = persistent_instance(kit, tmp_path)
    kit.source_sql(PEOPLE)
    monkeypatch.setenv("LAKE_KEY", DEV_KEY)
    monkeypatch.setenv("LAKE_CONNECTION", azurite.connection_string)
    write_signed_in(kit, "account_key: {env: LAKE_KEY}")
    text = (kit.root / "defs" / "main" / "defs.yaml").read_text()
    (kit.root / "defs" / "main" / "defs.yaml").write_text(
        text.replace(
            "      max_retries: 1\n",
            "      account_url: {env: AZEXPORT_TEST_ACCOUNT_URL}\n      max_retries: 1\n",
        )
    )
    results = [kit.run("ups", logical_time=T1)]
    write_signed_in(kit, "connection_string: {env: LAKE_CONNECTION}")
    kit.source_sql("UPDATE people SET name = 'c' WHERE id < 3")
    results.append(kit.run("ups", logical_time=T2))
    assert all(r.success for r in results)
    # A wrong container: a failure with the same sign-in.
    text = (kit.root / "defs" / "main" / "defs.yaml").read_text()
    (kit.root / "defs" / "main" / "defs.yaml").write_text(
        text.replace(kit.container.container_name, "no-such-container")
    )
    results.append(kit.run("ups", logical_time=T2, raise_on_error=False))
    assert not results[-1].success
    assert "does not exist" in failure_message(results[-1])
    secrets = [DEV_KEY, DEV_KEY[:40], azurite.connection_string]
    out, err = capfd.readouterr()
    assert not [s for s in secrets if s in out + err]
    for result in results:
        assert not [s for s in secrets if s in stored_events(result)]
    assert scan_for(secrets, home, kit.root) == []
