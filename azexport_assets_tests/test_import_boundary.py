"""Dagster lives in one layer: storage, formats, the delta engine, the warehouse and the export
pipeline import no Dagster (nor dagster-azure), so scripts and benchmarks use them as is."""

from __future__ import annotations

import json
import subprocess
import sys

PLAIN_MODULES = [
    "azexport_assets.export",
    "azexport_assets.preview",
    "azexport_assets.storage",
    "azexport_assets.storage.streaming",
    "azexport_assets.formats",
    "azexport_assets.delta",
    "azexport_assets.delta.synclog",
    "azexport_assets.formats.pgp",
    "azexport_assets.warehouse",
    "azexport_assets.warehouse.csv_dialect",
    "azexport_assets.naming",
    "azexport_assets.lakehouse",
]


def test_plain_layers_import_no_dagster():
    script = (
        "import importlib, json, sys\n"
        f"for name in {PLAIN_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster'))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(output) == []


def test_the_dagster_layer_does_import_dagster():
    # The check above must be able to fail: the resources module is Dagster's side.
    script = "import sys, azexport_assets.resources; print('dagster' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "True"


def test_encryption_library_is_imported_only_to_encrypt():
    """Loading the code location (components, export pipeline) does not import pgpy: only an
    activation with `pgp_public_key` uses it, and it takes about 70 ms to import."""
    script = (
        "import sys\n"
        "import azexport_assets.components, azexport_assets.export\n"
        "from azexport_assets.formats.pgp import PgpRecipient\n"
        "print('pgpy' in sys.modules)"
    )
    run = [sys.executable, "-c", script]
    output = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False"]
