"""A run needs no shared disk: only a writable temp folder.

One activation (a model over a `parquet:` source in Azurite, exported as CSV to another
Azurite container) runs as a real `dagster job execute` process, as a run pod would: the
project folder, the working directory, `$HOME` and `$DAGSTER_HOME` are read-only to the run
(as root, the run is started as the unprivileged user 65534 on files it does not own, or
without any capability where 65534 cannot reach the checkout; as any other user, on folders
made read-only), `$TMPDIR` is an empty folder the run may write, Dagster's storage is
Postgres, the warehouse is a DuckLake on Postgres with its data in Azurite (`az://`), and the
source exists only in Azurite. The run succeeds, the file holds
exactly the source's rows, and no file outside `$TMPDIR` was written or changed.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from azure.storage.blob import BlobServiceClient

from azexport_assets.demo.azurite import container_sas
from azexport_assets_tests.lake_kit import PASSWORD, USER, PostgresServer, postgres  # noqa: F401

pytestmark = pytest.mark.lake

REPO = Path(__file__).resolve().parents[1]
RUN_UID = 65534  # `nobody`: owns none of the files it reads

DEFS = """\
type: azexport_assets.components.AzureExport
attributes:
  sources:
    visits_raw:
      parquet: az://{source}/visits/*.parquet
      account_url: {{env: AZEXPORT_TEST_SOURCE_URL}}
      sas_token: {{env: AZEXPORT_TEST_SOURCE_SAS}}
  destinations:
    out:
      account_url: {{env: AZEXPORT_TEST_ACCOUNT_URL}}
      container: {destination}
      sas_token: {{env: AZEXPORT_TEST_SAS}}
  models:
    visits:
      sql: SELECT id, page, amount FROM visits_raw
      primary_key: id
  activations:
    visits_out:
      source: visits
      destination: out
      file_name: out/visits
"""

ENTRY = """\
from pathlib import Path

from azexport_assets.components.build import project_definitions

ROOT = Path(__file__).parent
defs = project_definitions(ROOT / "defs", ROOT)
"""

# Pages a CSV writer or reader could get wrong, cycled over the rows.
PAGES = [
    "plain",
    "say \"hi\", then 'bye'",
    "a,b;c|d",
    "line1\nline2",
    "line1\r\nline2",
    "tab\there",
    "emoji 😀👍🏽 🇫🇷",
    "RTL שלום مرحبا",
    "  spaced  ",
    "\\",
]
ROWS = 3000
EXPECTED = [(i, f"{PAGES[i % len(PAGES)]} #{i}", i * 7 - 5000) for i in range(ROWS)]


@functools.cache
def _run_uid() -> int | None:
    """The user the run is started as: 65534 when the suite runs as root and that user can
    import the project from this checkout; None to run as the suite's own user (as root:
    without any capability, so that root too is refused writes to read-only folders, e.g.
    for a checkout under /root that 65534 cannot enter)."""
    if os.geteuid() != 0:
        return None
    probe = subprocess.run(
        [*_setpriv(RUN_UID), sys.executable, "-c", "import azexport_assets.components.build"],
        cwd="/",
        capture_output=True,
        timeout=120,
    )
    return RUN_UID if probe.returncode == 0 else None


def _setpriv(uid: int | None) -> list[str]:
    ids = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else []
    caps = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"]
    return ["setpriv", *ids, *caps, "--"]


def _as_run_user(command: list[str]) -> list[str]:
    return [*_setpriv(_run_uid()), *command] if os.geteuid() == 0 else command


def _writable_by_run(folder: Path) -> Path:
    folder.mkdir(mode=0o700)
    uid = _run_uid()
    if uid is not None:
        os.chown(folder, uid, uid)
    return folder


def _read_only(folder: Path) -> None:
    """Every file and folder under `folder` readable and not writable by anyone but root."""
    for path in [folder, *folder.rglob("*")]:
        mode = 0o555 if path.is_dir() else 0o444
        path.chmod(mode)


def _listing(folder: Path, skip: str = "") -> dict[str, tuple[int, int, int]]:
    """Every path under `folder` with its mode, and a file's size and modification time (but
    those with a part named `skip`). A folder's own time is left out: it changes when an entry
    is added, such as a skipped `__pycache__` that Python creates on first import."""
    found = {}
    for path in sorted([folder, *folder.rglob("*")]):
        if skip and skip in path.relative_to(folder).parts:
            continue
        info = path.lstat()
        regular = stat.S_ISREG(info.st_mode)
        found[str(path.relative_to(folder))] = (
            info.st_mode,
            info.st_size if regular else 0,
            info.st_mtime_ns if regular else 0,
        )
    return found


@pytest.fixture
def area() -> Iterator[Path]:
    """A folder the run's user can reach (pytest's own tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="azexport-nodisk-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)


def _parquet_part(first: int, last: int, scratch: Path) -> bytes:
    path = scratch / f"part-{first}.parquet"
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE visits (id BIGINT, page VARCHAR, amount INTEGER)")
        con.executemany("INSERT INTO visits VALUES (?, ?, ?)", EXPECTED[first:last])
        con.execute(f"COPY visits TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    data = path.read_bytes()
    path.unlink()
    return data


def test_a_run_needs_no_shared_disk(azurite, postgres: PostgresServer, area: Path):  # noqa: F811
    _run_one_activation(azurite, postgres, area, _writable_by_run(area / "tmp"))


def test_a_run_shares_the_temp_folder_with_other_users(
    azurite,
    postgres: PostgresServer,  # noqa: F811
    area: Path,
):
    """$TMPDIR is a shared /tmp (mode 1777) where the deployment's administrator (root, when
    the suite runs as root) ran `warehouse init` first: its extension folders there do not
    stand in the way of the run's user, who installs into a folder of its own."""
    temp = area / "tmp"
    temp.mkdir()
    temp.chmod(0o1777)
    _run_one_activation(azurite, postgres, area, temp, init_first=True)


def _run_one_activation(
    azurite,
    postgres: PostgresServer,  # noqa: F811
    area: Path,
    temp: Path,
    init_first: bool = False,
) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    tag = uuid.uuid4().hex[:16]
    source = service.create_container(f"src-{tag}")
    destination = service.create_container(f"dst-{tag}")
    lake_data = service.create_container(f"lake-{tag}")
    # The source exists only in Azurite: two Parquet parts, written and removed locally.
    scratch = area / "scratch"
    scratch.mkdir()
    source.upload_blob("visits/part-1.parquet", _parquet_part(0, 1000, scratch))
    source.upload_blob("visits/part-2.parquet", _parquet_part(1000, ROWS, scratch))
    scratch.rmdir()

    # The project: defs and the code location file, owned by root (or read-only), no data.
    project = area / "project"
    (project / "defs" / "main").mkdir(parents=True)
    (project / "defs" / "main" / "defs.yaml").write_text(
        DEFS.format(source=source.container_name, destination=destination.container_name)
    )
    (project / "entry.py").write_text(ENTRY)
    # Dagster's instance as deploy/dagster.yaml has it: storage in Postgres, no compute logs
    # kept on disk.
    home = area / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    workdir = area / "workdir"  # the working directory and $HOME: empty
    workdir.mkdir()
    for folder in (project, home, workdir):
        _read_only(folder)
    before = {f: _listing(f) for f in (project, home, workdir)}
    # The installed package too; its bytecode cache may be written by root's `init` (Python's
    # own doing), never by the run, which cannot write there.
    before_repo = _listing(REPO / "azexport_assets", skip="__pycache__")

    env = {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(temp),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USERNAME": USER,
        "DAGSTER_PG_PASSWORD": PASSWORD,
        "DAGSTER_PG_DB": postgres.create_database("dagster"),
        "AZEXPORT_WAREHOUSE": f"ducklake:postgres:{postgres.conninfo(postgres.create_database())}",
        "AZEXPORT_LAKE_DATA_PATH": f"az://{lake_data.container_name}/warehouse/",
        "AZEXPORT_LAKE_AZURE_CONNECTION_STRING": azurite.connection_string,
        "PGPASSWORD": PASSWORD,
        "AZEXPORT_TEST_SOURCE_URL": azurite.account_url,
        "AZEXPORT_TEST_SOURCE_SAS": container_sas(azurite.account_url, source.container_name, "rl"),
        "AZEXPORT_TEST_ACCOUNT_URL": azurite.account_url,
        "AZEXPORT_TEST_SAS": container_sas(azurite.account_url, destination.container_name),
    }
    if init_first:
        init = [sys.executable, "-m", "azexport_assets.warehouse", "init"]
        done = subprocess.run(init, cwd=workdir, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]
        assert done.stdout.splitlines()[-1] == (
            "created schemas: models, segments, azexport_state, azexport_log"
        )
        assert (temp / f"azexport-{os.geteuid()}").is_dir()
    command = [sys.executable, "-m", "dagster", "job", "execute"]
    command += ["-f", str(project / "entry.py"), "-j", "activate_visits_out"]
    done = subprocess.run(
        _as_run_user(command),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "RUN_SUCCESS" in output, output[-4000:]

    # Exactly the source's rows, downloaded from the destination.
    text = destination.download_blob("out/visits.csv").readall().decode()
    rows = [
        (int(r["id"]), r["page"], int(r["amount"]))
        for r in csv.DictReader(io.StringIO(text, newline=""))
    ]
    assert sorted(rows) == EXPECTED
    # The lake's tables are in Azurite, not on a disk.
    assert any(b.name.startswith("warehouse/models/") for b in lake_data.list_blobs())

    # Nothing was written outside $TMPDIR, and no export file was left inside it.
    assert {f: _listing(f) for f in (project, home, workdir)} == before
    assert _listing(REPO / "azexport_assets", skip="__pycache__") == before_repo
    left = [str(p.relative_to(temp)) for p in temp.rglob("*.csv")]
    assert left == []
