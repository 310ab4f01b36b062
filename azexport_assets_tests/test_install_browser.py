"""`make test` installs the browser test's Chromium where it can, and says what to install
where it cannot (`.ci/install-browser`), so the browser test never errors at set-up."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from azexport_assets_tests.test_browser import INSTALL_HINT

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "install-browser"
NOBODY = 65534


def _as_unprivileged_user(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The script, with both programs missing, run by a user who is not root and has no
    sudo (root drops to `nobody`; anyone else gets a PATH holding only `id`)."""
    env = {
        **os.environ,
        "CHROMIUM": str(tmp_path / "no-chromium"),
        "CHROMEDRIVER": str(tmp_path / "no-chromedriver"),
    }
    command = [shutil.which("bash") or "/bin/bash", str(SCRIPT), *args]
    if os.geteuid() == 0:
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] + command
    else:
        # A user with passwordless sudo would really install: keep sudo out of reach.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
        env["PATH"] = str(bin_dir)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_without_privileges_it_says_in_one_line_what_to_install(tmp_path):
    done = _as_unprivileged_user(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    assert str(tmp_path / "no-chromium") in lines[0] and INSTALL_HINT in lines[0]
    assert done.stderr == ""


def test_strict_mode_fails_where_it_cannot_install(tmp_path):
    done = _as_unprivileged_user(tmp_path, "--strict")
    assert done.returncode == 1
    assert INSTALL_HINT in done.stdout


def test_nothing_to_do_when_both_programs_are_there(tmp_path):
    for name in ("chromium", "chromedriver"):
        program = tmp_path / name
        program.write_text("#!/bin/sh\n")
        program.chmod(0o755)
    env = {
        **os.environ,
        "CHROMIUM": str(tmp_path / "chromium"),
        "CHROMEDRIVER": str(tmp_path / "chromedriver"),
    }
    done = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
