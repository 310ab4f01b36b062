"""A full local disk gives `LocalDiskFullError`, naming the folder and `AZEXPORT_TEMP_DIR`.

The disk is really full: each test mounts a small tmpfs (1 MiB) and writes an export larger
than that into it, so the kernel itself answers ENOSPC - no fault is injected. Mounting needs
root (CAP_SYS_ADMIN), which the project's machines and CI have; without it the fixture fails
with a message saying so rather than skipping. After each error the tmpfs is unmounted
*without* lazy detach, which fails with EBUSY if any file on it were still open.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from azexport_assets.formats import (
    TEMP_DIR_VARIABLE,
    FormatSpec,
    LocalDiskFullError,
    write_export,
)

SIZE = 1024 * 1024  # the tmpfs size
# ~6.5 MB of CSV, ~4 MB of uncompressed Parquet: md5 text does not compress much.
BIG = "SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS pad FROM range(80000) t(i)"
# ~0.7 MB of uncompressed Parquet: fits once, but not twice (splitting copies it into parts).
MEDIUM = "SELECT i, md5(i::VARCHAR) || md5((i + 1)::VARCHAR) AS pad FROM range(8000) t(i)"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An empty folder on a 1 MiB tmpfs of its own."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"this test mounts a small tmpfs and needs root: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        unmounted = subprocess.run(["umount", str(mount_point)], capture_output=True, text=True)
        if unmounted.returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)
            pytest.fail(f"a file on the full disk was left open: {unmounted.stderr.strip()}")


def open_files_under(folder: Path) -> list[str]:
    """Paths under `folder` this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def assert_clear_disk_full(
    error: LocalDiskFullError, folder: Path, max_free: int = SIZE // 4
) -> None:
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    message = str(error)
    assert "\n" not in message and not message.startswith("[Errno")
    assert f"the local work folder {folder} ran out of disk space" in message
    assert f"environment variable {TEMP_DIR_VARIABLE}" in message
    assert error.folder == folder
    assert 0 < error.written_bytes <= SIZE  # what was on the disk when it filled up
    assert error.free_bytes is not None and error.free_bytes < max_free
    assert " free on that filesystem" in message
    assert list(folder.iterdir()) == []  # the partial files are removed ...
    assert open_files_under(folder) == []  # ... and closed


@pytest.mark.parametrize(
    "spec",
    [
        FormatSpec(format="csv"),
        FormatSpec(format="json", json_style="lines"),
        FormatSpec(format="xml", compression="zstd"),
    ],
    ids=["csv", "jsonl", "xml.zst"],
)
def test_text_writer_on_a_full_disk(small_disk: Path, spec: FormatSpec) -> None:
    con = duckdb.connect()
    query = BIG if spec.compression == "none" else BIG.replace("80000", "400000")
    with pytest.raises(LocalDiskFullError) as caught:
        write_export(con, query, spec, small_disk)
    assert_clear_disk_full(caught.value, small_disk)
    assert con.execute("SELECT 1").fetchall() == [(1,)]  # the connection is free again


def test_text_parts_on_a_full_disk_remove_the_finished_parts_too(small_disk: Path) -> None:
    with pytest.raises(LocalDiskFullError) as caught:
        write_export(duckdb.connect(), BIG, FormatSpec(format="csv"), small_disk, 300_000)
    assert_clear_disk_full(caught.value, small_disk)


def test_parquet_copy_on_a_full_disk(small_disk: Path) -> None:
    con = duckdb.connect()
    spec = FormatSpec(format="parquet", parquet_compression="none")
    with pytest.raises(LocalDiskFullError) as caught:
        write_export(con, BIG, spec, small_disk)
    error = caught.value
    # DuckDB removes the COPY target it could not finish, so nothing may be left to count.
    assert error.errno == errno.ENOSPC and error.folder == small_disk
    assert TEMP_DIR_VARIABLE in str(error) and str(small_disk) in str(error)
    assert list(small_disk.iterdir()) == [] and open_files_under(small_disk) == []
    assert con.execute("SELECT 1").fetchall() == [(1,)]


def test_parquet_split_on_a_full_disk(small_disk: Path) -> None:
    """The whole file fits; copying it into parts does not."""
    spec = FormatSpec(format="parquet", parquet_compression="none")
    with pytest.raises(LocalDiskFullError) as caught:
        write_export(duckdb.connect(), MEDIUM, spec, small_disk, max_file_size=100_000)
    # DuckDB removed the part it could not finish before the free space was measured.
    assert_clear_disk_full(caught.value, small_disk, max_free=SIZE)
    assert "twice the export's size" in str(caught.value)


def test_the_same_exports_succeed_with_room(tmp_path: Path) -> None:
    """Control: the queries above are valid and only the disk size made them fail."""
    files = write_export(duckdb.connect(), BIG, FormatSpec(format="csv"), tmp_path).files
    assert sum(f.bytes for f in files) > 4 * SIZE
    spec = FormatSpec(format="parquet", parquet_compression="none")
    out = tmp_path / "parquet"
    out.mkdir()
    parts = write_export(duckdb.connect(), MEDIUM, spec, out, max_file_size=100_000).files
    assert SIZE // 2 < sum(f.bytes for f in parts) < SIZE and len(parts) > 1


def test_a_run_on_a_full_disk_fails_in_one_line(small_disk: Path, project, monkeypatch) -> None:
    """Through a real run: the export step fails with the one-line message (it was a
    traceback), retries allowed (other runs' files may be gone by then), nothing uploaded."""
    from datetime import datetime, timezone

    monkeypatch.setenv("AZEXPORT_TEMP_DIR", str(small_disk))
    project.source_sql(
        "CREATE TABLE t AS SELECT range AS id, repeat('x', 100) || range AS name FROM range(50000)"
    )
    project.write_defs(
        """
models:
  m:
    sql: SELECT * FROM src.t
    primary_key: id
activations:
  out:
    source: m
    destination: lake
    file_name: out/all
"""
    )
    result = project.run(
        "out", logical_time=datetime(2025, 4, 14, tzinfo=timezone.utc), raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    user = failure.step_failure_data.user_failure_data
    assert user is not None, failure.step_failure_data
    assert user.description.startswith("activation 'out': the local work folder "), user
    assert f"set the environment variable {TEMP_DIR_VARIABLE}" in user.description
    assert user.description.endswith("a retry or the next run exports the same changes.")
    assert project.blob_names() == []
