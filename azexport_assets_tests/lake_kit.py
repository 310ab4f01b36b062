"""A real PostgreSQL server for the lake and daemon tests, started and stopped by the suite.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user
(Debian's package creates it) and every server command runs through `runuser`. The cluster
lives in a temporary folder: data, socket and log; it listens on a free loopback port and
asks for a password (scram-sha-256), which the tests pass through PGPASSWORD, as a
deployment would.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from azexport_assets.demo.azurite import free_port

USER = "azexport"
PASSWORD = "lake-test-password"


def postgres_bin(name: str) -> str:
    """A server program: from PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(f"{name} not found: install PostgreSQL (apt-get install -y postgresql)")
    return candidates[-1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresServer:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def conninfo(self, dbname: str = "postgres") -> str:
        """libpq connection string without the password (that is in PGPASSWORD)."""
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL (dagster-postgres) without the password."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "lake") -> str:
        import psycopg2

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        connection = psycopg2.connect(self.conninfo(), password=PASSWORD)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return name

    def stop(self) -> None:
        subprocess.run(
            _as_server_user([postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
            capture_output=True,
            check=False,
            cwd=self.root,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb + pg_ctl start in a new temporary folder; returns once it accepts connections."""
    root = Path(tempfile.mkdtemp(prefix="azexport-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    root.chmod(0o700)
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(password_file, "postgres")
    server = PostgresServer(root=root, port=free_port())
    run = [
        postgres_bin("initdb"),
        "-D", str(server.data),
        "-U", USER,
        "--auth=scram-sha-256",
        f"--pwfile={password_file}",
        "--encoding=UTF8",
        "--no-instructions",
    ]  # fmt: skip
    # cwd: the server user may not be allowed into the caller's folder.
    subprocess.run(_as_server_user(run), check=True, capture_output=True, cwd=root)
    options = (
        f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
        "-c fsync=off -c full_page_writes=off"  # a throw-away test cluster
    )
    start = [
        postgres_bin("pg_ctl"),
        "-D", str(server.data),
        "-o", options,
        "-l", str(root / "server.log"),
        "-w", "-t", "60",
        "start",
    ]  # fmt: skip
    result = subprocess.run(_as_server_user(start), capture_output=True, text=True, cwd=root)
    if result.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log}")
    return server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def use_lake(
    monkeypatch: pytest.MonkeyPatch, server: PostgresServer, data_path: str, dbname: str
) -> str:
    """Point AZEXPORT_WAREHOUSE at a DuckLake in `dbname`; returns the variable's value."""
    value = f"ducklake:postgres:{server.conninfo(dbname)}"
    monkeypatch.setenv("AZEXPORT_WAREHOUSE", value)
    monkeypatch.setenv("AZEXPORT_LAKE_DATA_PATH", data_path)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return value
