"""The code location's imports run with the garbage collector paused, and leave it as found."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from azexport_assets.import_pause import collection_paused


def test_the_collector_is_paused_inside_and_running_again_after_even_on_an_error():
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ImportError), collection_paused():
        raise ImportError("a module that fails to import")
    assert gc.isenabled()


def test_a_collector_paused_by_the_caller_stays_paused():
    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_code_location_is_imported_without_collections_and_leaves_the_collector_running():
    # Dagster is imported first, as the CLI does; then the code location, counting the
    # collections that start meanwhile (about 170 without the pause).
    code = (
        "import gc, dagster\n"
        "count = []\n"
        "gc.callbacks.append(lambda phase, info: count.append(phase) if phase == 'start' else 0)\n"
        "import azexport_assets.components.build\n"
        "print(len(count), gc.isenabled())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    collections, running = done.stdout.split()
    assert int(collections) <= 5 and running == "True"
