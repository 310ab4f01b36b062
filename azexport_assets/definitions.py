"""The code location: every defs.yaml under azexport_assets/defs, plus the warehouse resource
and the run watchdog."""

from pathlib import Path

import dagster as dg

from azexport_assets.components.build import location_definitions
from azexport_assets.components.load_cache import cached_definitions
from azexport_assets.components.loading import (
    config_errors_first,
    last_validated,
    tree_definitions,
)
from azexport_assets.resources import WarehouseResource

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFS_ROOT = Path(__file__).resolve().parent / "defs"


def _build(with_catalog: bool) -> dg.Definitions:
    # A broken defs.yaml is reported as its one-line message (file:line, object, field),
    # not as the last line under Dagster's component-tree tracebacks.
    with config_errors_first(PROJECT_ROOT):
        # What `dg.load_from_defs_folder` builds, the component catalog only when served.
        tree = dg.ComponentTree.for_project(path_within_project=Path(__file__).parent)
        loaded = tree_definitions(tree, with_catalog)
    return dg.Definitions.merge(loaded, location_definitions(WarehouseResource()))


@dg.definitions
def defs() -> dg.Definitions:
    # Dagster calls this several times per run: build once while nothing changed.
    return cached_definitions(DEFS_ROOT, _build, lambda: last_validated(PROJECT_ROOT))
