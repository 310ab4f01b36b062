"""`python -m azexport_assets.dg_check [PROJECT]`: check every defs.yaml, then the definitions.

`make check` runs it. Why not plain `dg check yaml`: dg 1.13's whole-project check keeps one
defs.yaml per component type (the last one it finds), so in a project with several
`AzureExport` folders it validates only one of them and reports success for the others.
Checked one folder at a time, every file is validated, with file, line and column.

Then `dg check defs --no-check-yaml` loads the code location (SQL, references, names across
folders). `--no-check-yaml` because the files were checked already, and because its own
whole-project check would print "All component YAML validated successfully." even for a
folder with errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFS_FILES = ("defs.yaml", "defs.yml")


def dg_command() -> str:
    """The `dg` next to this Python (the project's venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "dg"
    found = str(beside) if beside.exists() else shutil.which("dg")
    if not found:
        raise SystemExit("dg is not installed: pip install dagster-dg-cli (in the dev extras)")
    return found


def defs_folder(project: Path) -> Path:
    """The project's defs folder, from `[tool.dg.project]` in its pyproject.toml."""
    settings = tomllib.loads((project / "pyproject.toml").read_text())
    dg_project = settings.get("tool", {}).get("dg", {}).get("project", {})
    root_module = dg_project.get("root_module")
    if not root_module:
        raise SystemExit(f"{project / 'pyproject.toml'}: no [tool.dg.project] root_module")
    defs_module = dg_project.get("defs_module", f"{root_module}.defs")
    return project.joinpath(*defs_module.split("."))


def component_folders(defs: Path) -> list[Path]:
    """Every folder under `defs` with a defs.yaml (or defs.yml), in path order."""
    found = {p.parent for name in DEFS_FILES for p in defs.rglob(name)}
    return sorted(found)


def dg_environment() -> dict[str, str]:
    # dg compares the active venv with the project's and warns when they differ.
    return {**os.environ, "VIRTUAL_ENV": os.environ.get("VIRTUAL_ENV", sys.prefix)}


def check_folder(dg: str, project: Path, folder: Path) -> tuple[bool, str]:
    """(passed, dg's report) of `dg check yaml <folder>`."""
    done = subprocess.run(
        [dg, "check", "yaml", str(folder)],
        cwd=project,
        env=dg_environment(),
        capture_output=True,
        text=True,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    project = Path(args[0] if args else ".").resolve()
    dg = dg_command()
    folders = component_folders(defs_folder(project))
    failed = []
    for folder in folders:
        passed, report = check_folder(dg, project, folder)
        if not passed:
            failed.append(folder)
            print(report, flush=True)
        # A folder with defs.yaml folders inside: dg sees only the innermost file of a type,
        # so this folder's own file is left to `dg check defs` (which loads every file).
        nested = [f for f in folders if folder in f.parents]
        if nested and passed:
            print(f"{folder}: has defs.yaml folders inside; its own file is checked by loading")
    if failed:
        print(f"\nYAML errors in {len(failed)} of {len(folders)} defs.yaml folder(s)")
        return 1
    print(f"YAML of {len(folders)} folder(s) valid; loading the definitions ...", flush=True)
    # --no-check-yaml: checked above, and its whole-project pass would claim success anyway.
    done = subprocess.run(
        [dg, "check", "defs", "--no-check-yaml"], cwd=project, env=dg_environment()
    )
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
