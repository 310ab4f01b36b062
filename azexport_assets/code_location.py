"""The code location of a dg project whose defs folder holds AzureExport components.

A project's `definitions.py` returns `load_code_location(Path(__file__).parent)` from its
`@dg.definitions` function (this package's own `definitions.py` does). It is what
`dg.load_from_defs_folder` builds, plus what the components need from the code location
(the warehouse resource and the run watchdog), and:

- built once per process while nothing it was built from changes (Dagster calls the function
  several times per run: `components/load_cache.py`);
- without Dagster's catalog of installed component types unless a code server serves the
  location (`components/loading.tree_definitions`);
- a broken `defs.yaml` reported as its one-line message (file:line, object, field), not as the
  last line under Dagster's component-tree tracebacks.
"""

from __future__ import annotations

import functools
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


@functools.cache
def _project_folders(path_within_project: Path) -> tuple[Path, Path]:
    """(project root, defs folder) of the dg project around `path_within_project`: Dagster
    reads its pyproject.toml for them (about 20 ms, so once per process)."""
    tree = dg.ComponentTree.for_project(path_within_project=path_within_project)
    return Path(tree.project_root), Path(tree.defs_module_path)


def load_code_location(path_within_project: Path) -> dg.Definitions:
    """Every component under the dg project's defs folder, the warehouse resource and the run
    watchdog (see the module docstring)."""
    project_root, defs_root = _project_folders(Path(path_within_project).resolve())

    def build(with_catalog: bool) -> dg.Definitions:
        with config_errors_first(project_root, defs_root):
            tree = dg.ComponentTree.for_project(path_within_project=defs_root)
            loaded = tree_definitions(tree, with_catalog)
        return dg.Definitions.merge(loaded, location_definitions(WarehouseResource()))

    return cached_definitions(defs_root, build, lambda: last_validated(project_root))
