"""Encryption: OpenPGP files (`encryption.pgp_public_key`) decrypted with the private key are
complete files holding exactly the unencrypted export's rows, each within `max_file_size`;
`encryption.encryption_scope` reaches Azure as the x-ms-encryption-scope header of every
upload (seen through a FaultProxy: Azurite ignores it). Real Dagster runs into Azurite."""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime, timezone
from urllib.parse import unquote

import pytest

from azexport_assets.config import ConfigError
from azexport_assets_tests.fault_proxy import FaultProxy
from azexport_assets_tests.project_kit import URL_ENV, ProjectKit, export_metadata

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pgpy
    from pgpy.constants import (
        CompressionAlgorithm,
        HashAlgorithm,
        KeyFlags,
        PubKeyAlgorithm,
        SymmetricKeyAlgorithm,
    )

KEY_ENV = "AZEXPORT_TEST_PGP_KEY"
T0 = datetime(2025, 4, 14, 6, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def private_key():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = pgpy.PGPKey.new(PubKeyAlgorithm.RSAEncryptOrSign, 2048)
        key.add_uid(
            pgpy.PGPUID.new("Export reader", email="reader@example.com"),
            usage={KeyFlags.EncryptCommunications, KeyFlags.EncryptStorage},
            hashes=[HashAlgorithm.SHA256],
            ciphers=[SymmetricKeyAlgorithm.AES256],
            compression=[CompressionAlgorithm.Uncompressed],
        )
    return key


def decrypt(private_key, data: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        message = private_key.decrypt(pgpy.PGPMessage.from_blob(data)).message
    return bytes(message) if not isinstance(message, str) else message.encode()


def defs(fmt: str, encryption: str, max_file_size: str = "4096", manifest: bool = True) -> str:
    common = f"""
    source: people
    destination: lake
    format: {fmt}
    max_file_size: {max_file_size}
    manifest: {str(manifest).lower()}"""
    return f"""
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_plain:{common}
    file_name: plain/people
  people_sealed:{common}
    file_name: sealed/people
    encryption: {encryption}
"""


@pytest.fixture
def kit(project: ProjectKit, private_key, monkeypatch) -> ProjectKit:
    project.source_sql(
        "CREATE TABLE people AS SELECT range::INTEGER AS id, 'name ' || range || ', \"q\"' AS "
        "name, (range * 1.25)::DECIMAL(10, 2) AS score, DATE '2025-01-01' + range::INTEGER AS d "
        "FROM range(300)"
    )
    monkeypatch.setenv(KEY_ENV, str(private_key.pubkey))
    return project


@pytest.mark.parametrize(("fmt", "ext"), [("csv", ".csv"), ("parquet", ".parquet")])
def test_decrypted_files_equal_the_unencrypted_export(
    kit: ProjectKit, private_key, fmt: str, ext: str
) -> None:
    kit.write_defs(defs(fmt, f"{{pgp_public_key: {{env: {KEY_ENV}}}}}"))
    kit.run("people_plain", logical_time=T0)
    sealed = kit.run("people_sealed", logical_time=T0)

    plain_names = [n for n in kit.blob_names("plain/") if not n.endswith("_manifest.json")]
    sealed_names = [n for n in kit.blob_names("sealed/") if not n.endswith("_manifest.json")]
    if fmt == "csv":
        assert len(plain_names) > 1  # split into parts: each part is encrypted on its own
    assert all(n.startswith("sealed/people") and n.endswith(f"{ext}.pgp") for n in sealed_names)
    # Parts are written smaller by what encryption adds, so that each stays within the limit
    # encrypted: they split at other rows, and together hold the same rows in the same order.
    decrypted = [decrypt(private_key, kit.download(n)) for n in sealed_names]
    assert _rows(fmt, decrypted) == _rows(fmt, [kit.download(n) for n in plain_names])
    for name in sealed_names:
        assert len(kit.download(name)) <= 4096, name
        props = kit.container.get_blob_client(name).get_blob_properties()
        assert props.content_settings.content_type == "application/pgp-encrypted"

    manifest = json.loads(kit.download("sealed/people_manifest.json"))
    listed = {f["name"]: f for f in manifest["files"]}
    assert list(listed) == sealed_names
    for name, entry in listed.items():
        blob = kit.download(name)
        assert entry["bytes"] == len(blob)
        assert entry["md5"] == hashlib.md5(blob).hexdigest()
    assert sum(f["rows"] for f in manifest["files"]) == 300
    assert manifest["encryption"] == {
        "format": "openpgp",
        "recipient_fingerprint": str(private_key.fingerprint).replace(" ", ""),
    }
    metadata = export_metadata(sealed, "people_sealed")
    assert metadata["dagster/row_count"] == 300


def _rows(fmt: str, parts: list[bytes]) -> list:
    """The rows of complete files, in order: CSV lines after each part's (equal) header, or
    Parquet rows."""
    if fmt == "parquet":
        import io

        import pyarrow.parquet as pq

        return [row for part in parts for row in pq.read_table(io.BytesIO(part)).to_pylist()]
    headers = {part.split(b"\n", 1)[0] for part in parts}
    assert len(headers) == 1, headers
    return [line for part in parts for line in part.split(b"\n")[1:] if line]


def test_the_key_never_reaches_the_run_log(kit: ProjectKit, private_key) -> None:
    kit.write_defs(defs("csv", f"{{pgp_public_key: {{env: {KEY_ENV}}}}}"))
    result = kit.run("people_sealed", logical_time=T0)
    key_lines = [line for line in str(private_key.pubkey).splitlines() if len(line) > 40]
    logged = "\n".join(
        str(event.message or "") + json.dumps(str(event.event_specific_data))
        for event in result.all_events
    )
    assert key_lines and not any(line in logged for line in key_lines)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", f"${KEY_ENV} is empty or not set"),
        ("not a key at all", f"${KEY_ENV} does not hold an ASCII-armored OpenPGP public key"),
        ("PRIVATE", f"${KEY_ENV} holds a private key"),
    ],
)
def test_an_unusable_key_fails_before_anything_is_written(
    kit: ProjectKit, private_key, monkeypatch, value: str, said: str
) -> None:
    secret = str(private_key) if value == "PRIVATE" else value
    monkeypatch.setenv(KEY_ENV, secret)
    kit.write_defs(defs("csv", f"{{pgp_public_key: {{env: {KEY_ENV}}}}}"))
    result = kit.run("people_sealed", logical_time=T0, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert said in message and "encryption.pgp_public_key" in message
    assert kit.blob_names("sealed/") == []
    for line in secret.splitlines():
        if len(line) > 40:
            assert line not in message


def test_the_encryption_scope_is_sent_with_every_upload(
    kit: ProjectKit, azurite, monkeypatch
) -> None:
    kit.write_defs(defs("csv", "{encryption_scope: exports-scope}", max_file_size="64MB"))
    with FaultProxy(target_port=azurite.port) as proxy:
        monkeypatch.setenv(URL_ENV, proxy.account_url)
        kit.run("people_sealed", logical_time=T0)
        writes = [
            (unquote(r.path), r.query, headers)
            for r, headers in zip(proxy.requests, proxy.headers, strict=True)
            if r.method == "PUT" and "/sealed/" in unquote(r.path)
        ]
    names = {path.rsplit("/", 2)[-1] for path, _, _ in writes}
    assert names == {"people.csv", "people_manifest.json"}
    assert all(h.get("x-ms-encryption-scope") == "exports-scope" for _, _, h in writes), writes
    # Azurite ignores the scope: the blob is there and readable.
    assert kit.download("sealed/people.csv").startswith(b"id,name,score,d\n")


def test_a_delta_table_refuses_encryption_at_load(project: ProjectKit) -> None:
    project.source_sql("CREATE TABLE people AS SELECT 1 AS id")
    project.write_defs(
        """
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_table:
    source: people
    destination: lake
    file_name: tables/people
    format: delta
    encryption: {encryption_scope: exports-scope}
"""
    )
    with pytest.raises(ConfigError) as caught:
        project.definitions()
    message = str(caught.value)
    assert "defs.yaml:" in message and "activation 'people_table'" in message
    assert "'encryption' applies to files" in message


@pytest.mark.parametrize(
    ("encryption", "extra", "said"),
    [
        (f"{{pgp_public_key: {{env: {KEY_ENV}}}}}", "", "set 'max_file_size' to at most 64MB"),
        (
            f"{{pgp_public_key: {{env: {KEY_ENV}}}}}",
            "    max_file_size: 1GB\n",
            "set 'max_file_size' to at most 64MB",
        ),
        ("{encryption_scope: a}", "", "is not an encryption scope name"),
        ("{}", "", "give 'pgp_public_key: {env: VAR}', 'encryption_scope: <name>' or both"),
        ("{pgp_public_key: {env: AZEXPORT_SQL_KEY}}", "", "a name SQL templates may read"),
    ],
)
def test_encryption_options_are_checked_at_load(
    project: ProjectKit, encryption: str, extra: str, said: str
) -> None:
    project.source_sql("CREATE TABLE people AS SELECT 1 AS id")
    project.write_defs(
        f"""
models:
  people:
    sql: SELECT * FROM src.people
    primary_key: id
activations:
  people_sealed:
    source: people
    destination: lake
    file_name: sealed/people
    encryption: {encryption}
{extra}"""
    )
    with pytest.raises(ConfigError) as caught:
        project.definitions()
    message = str(caught.value)
    assert "defs.yaml:" in message and "activation 'people_sealed'" in message
    assert said in message
