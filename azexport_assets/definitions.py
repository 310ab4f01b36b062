"""The code location: every defs.yaml under azexport_assets/defs, plus the warehouse resource."""

from pathlib import Path

import dagster as dg

from azexport_assets.resources import WAREHOUSE_KEY, WarehouseResource


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(resources={WAREHOUSE_KEY: WarehouseResource()}),
    )
