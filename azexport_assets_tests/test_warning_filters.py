"""The warning filters of pyproject.toml hide Dagster's warnings about its own code only.

A small test file runs in a pytest subprocess under the project's configuration. It raises
each filtered category twice: attributed to a Dagster module (or gql), where it is hidden, and
to one of our modules, where it must still be reported. A Dagster beta parameter passed by
code outside Dagster (here the test file itself) is reported too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WARNINGS_TEST = '''
import warnings

import dagster as dg

CASES = [
    (dg.BetaWarning, "beta"),
    (dg.PreviewWarning, "preview"),
    (dg.SupersessionWarning, "superseded"),
    (DeprecationWarning, "deprecated"),
]


def warn_from(module, category, message):
    """A warning as if raised in `module` (the module the filters look at)."""
    path = module.replace(".", "/") + ".py"
    warnings.warn_explicit(message, category, path, 1, module=module)


def test_dagster_warnings_about_dagster_are_hidden():
    for category, word in CASES:
        warn_from("dagster._core.definitions.sensor_definition", category, f"dagster-{word}")
        warn_from("dagster_graphql.client.client", category, f"dagster-graphql-{word}")
    warn_from("gql.client", DeprecationWarning, "gql-deprecated")


def test_warnings_from_our_code_are_reported():
    for category, word in CASES:
        warn_from("azexport_assets.components.build", category, f"ours-{word}")


def test_a_beta_parameter_passed_by_our_code_is_reported():
    dg.SensorDefinition(
        name="s", evaluation_fn=lambda context: None, job_name="j", owners=["team:data"]
    )
'''


def test_project_filters_hide_dagster_internals_and_keep_our_warnings(tmp_path):
    test_file = tmp_path / "test_warnings_probe.py"
    test_file.write_text(WARNINGS_TEST)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *("-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path)),
            str(test_file),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"\b3 passed, 5 warnings\b", output), output
    for word in ("beta", "preview", "superseded", "deprecated"):
        assert f"ours-{word}" in output, output
        assert f"dagster-{word}" not in output, output
        assert f"dagster-graphql-{word}" not in output, output
    assert "gql-deprecated" not in output, output
    assert "Parameter `owners` of initializer `SensorDefinition.__init__`" in output, output
