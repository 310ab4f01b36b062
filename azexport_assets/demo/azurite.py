"""Start and stop a local Azurite (the Azure Storage emulator) for the demo and the tests.

Azurite comes from the project's `node_modules` (pinned in package.json). It listens on a
free loopback port and stores blobs in a temporary folder (no in-memory size cap).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

# Azurite's well-known development account (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def azurite_binary() -> Path:
    binary = PROJECT_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise RuntimeError(
            f"{binary} not found: run 'npm ci' in {PROJECT_ROOT} (the Makefile does it for you)"
        )
    return binary


def account_url_for(port: int, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{port}/{DEV_ACCOUNT}"


def connection_string_for(port: int, scheme: str = "http") -> str:
    return (
        f"DefaultEndpointsProtocol={scheme};AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint={account_url_for(port, scheme)};"
    )


@dataclass(frozen=True)
class HttpsSettings:
    """Azurite over HTTPS with this certificate and key (PEM files); `oauth` also accepts
    Microsoft Entra bearer tokens (Azurite's `--oauth basic`: it checks a token's issuer,
    audience and lifetime, not its signature)."""

    cert: Path
    key: Path
    oauth: bool = False


@dataclass
class Azurite:
    """A running Azurite blob service."""

    port: int
    location: Path
    process: subprocess.Popen = field(repr=False)
    owns_location: bool = True
    scheme: str = "http"

    @property
    def account_url(self) -> str:
        return account_url_for(self.port, self.scheme)

    @property
    def connection_string(self) -> str:
        return connection_string_for(self.port, self.scheme)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.owns_location:
            shutil.rmtree(self.location, ignore_errors=True)


def _spawn(
    port: int, location: Path, log: IO[bytes], https: HttpsSettings | None = None
) -> subprocess.Popen:
    # A certificate makes Azurite serve HTTPS (it has no switch of its own for it).
    secure = [] if https is None else ["--cert", str(https.cert), "--key", str(https.key)]
    if https is not None and https.oauth:
        secure += ["--oauth", "basic"]
    return subprocess.Popen(
        [
            str(azurite_binary()),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(port),
            "--location", str(location),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
            *secure,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def start_azurite(
    port: int | None = None,
    location: Path | None = None,
    timeout: float = 30.0,
    https: HttpsSettings | None = None,
) -> Azurite:
    """Start Azurite on 127.0.0.1 and wait until it accepts connections."""
    port = port or free_port()
    owns = location is None
    location = Path(location or tempfile.mkdtemp(prefix="azurite-"))
    location.mkdir(parents=True, exist_ok=True)
    with open(location / "azurite.log", "ab") as log:  # the child keeps its own handle
        process = _spawn(port, location, log, https)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Azurite exited with code {process.returncode}; see {location / 'azurite.log'}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Azurite(
                    port=port,
                    location=location,
                    process=process,
                    owns_location=owns,
                    scheme="http" if https is None else "https",
                )
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"Azurite did not listen on port {port} within {timeout:.0f}s")


def container_sas(
    account_url: str,
    container: str,
    permission: str = "racwdl",
    expiry: datetime | None = None,
) -> str:
    """A container SAS token signed with the dev key (what a user would paste from the portal)."""
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(
        account_name=DEV_ACCOUNT,
        container_name=container,
        account_key=DEV_KEY,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=expiry or datetime.now(timezone.utc) + timedelta(days=30),
        start=datetime.now(timezone.utc) - timedelta(minutes=5),
    )
