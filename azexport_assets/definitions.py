"""The code location: every defs.yaml under azexport_assets/defs, plus the warehouse resource
and the run watchdog."""

from pathlib import Path

import dagster as dg

from azexport_assets.code_location import load_code_location


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster calls this several times per run: it is built once while nothing changed.
    return load_code_location(Path(__file__).parent)
