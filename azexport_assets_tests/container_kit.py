"""Rootful podman for the container tests: the engine, the images, and one line when it is missing.

The images are built from the files the project ships: deploy/Dockerfile on a base image, then
deploy/project/Dockerfile with a project's own `defs/` (what docs/deploy.md tells users to do).
Where images cannot be pulled, the base image is a Debian root file system made with
`mmdebstrap` and imported into podman (kept between runs: it only depends on the Debian
release), and Python packages come from wheels built on the host (`deploy/wheels/`, kept
while pyproject.toml is unchanged). Podman runs with runc and explicit ulimits (a containers.conf
of its own), and serves Docker's API on a socket in a temporary folder, which the Python
`docker` package (DockerRunLauncher) talks to through DOCKER_HOST.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/azexport-base:bookworm"
IMAGE = "localhost/azexport:test"
PROJECT_IMAGE = "localhost/azexport-project"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def _conf_file() -> Path:
    path = Path(tempfile.gettempdir()) / "azexport-containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(_conf_file())}


def podman(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args], env=engine_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} ...: {done.stderr[-3000:]}")
    return done


def base_image() -> str:
    """The Debian base image (Python 3.11, venv, CA certificates, useradd), built once."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap not found (apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory(prefix="azexport-rootfs-") as folder:
        rootfs = Path(folder) / "rootfs.tar"
        subprocess.run(
            [
                "mmdebstrap", "--quiet", "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates,passwd",
                "bookworm", str(rootfs),
            ],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        podman("import", str(rootfs), BASE_IMAGE)
    return BASE_IMAGE


def unavailable() -> str | None:
    """Why containers cannot run here, in one line; None when they can."""
    if os.geteuid() != 0:
        return "the container tests need root (rootful podman)"
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc mmdebstrap)"
    try:
        image = base_image()
        done = podman("run", "--rm", "--network", "host", image, "true", check=False, timeout=120)
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        return f"podman cannot build a base image: {str(error).splitlines()[0][:200]}"
    if done.returncode != 0:
        return f"podman cannot start a container: {done.stderr.strip().splitlines()[-1][:200]}"
    return None


def wheels() -> Path:
    """Every wheel the image installs, in deploy/wheels/ (rebuilt when pyproject.toml changes)."""
    folder = REPO / "deploy" / "wheels"
    stamp = folder / ".pyproject.sha256"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return folder
    for old in folder.glob("*.whl"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(folder),
         ".[lake,deploy]", "setuptools"],
        cwd=REPO, check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    for own in folder.glob("azexport_assets-*.whl"):
        own.unlink()  # the image installs the project itself from its files
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' leftovers of that wheel
    stamp.write_text(digest)
    return folder


def build_image() -> str:
    """deploy/Dockerfile on the local base image, Python packages from deploy/wheels/."""
    wheels()
    podman(
        "build", "-f", "deploy/Dockerfile", "-t", IMAGE,
        "--build-arg", f"BASE_IMAGE={base_image()}",
        "--build-arg", "PIP_OPTIONS=--no-index --find-links /deploy/wheels",
        str(REPO),
    )  # fmt: skip
    return IMAGE


def build_project_image(context: Path, tag: str) -> str:
    """deploy/project/Dockerfile, as is, on `context` (a folder with defs/ and data/)."""
    shutil.copy(REPO / "deploy" / "project" / "Dockerfile", context / "Dockerfile")
    image = f"{PROJECT_IMAGE}:{tag}"
    podman("build", "-t", image, "--build-arg", f"AZEXPORT_IMAGE={IMAGE}", str(context))
    return image


@dataclass
class DockerApi:
    """`podman system service`: Docker's API on a private socket (DOCKER_HOST)."""

    folder: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def docker_host(self) -> str:
        return f"unix://{self.folder / 'podman.sock'}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_docker_api() -> DockerApi:
    folder = Path(tempfile.mkdtemp(prefix="azexport-podman-"))
    socket = folder / "podman.sock"
    process = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=engine_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("podman system service did not open its socket")
        time.sleep(0.1)
    return DockerApi(folder=folder, process=process)
