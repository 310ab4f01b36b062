"""The Dagster layer: the AzureExport component and the factories it builds definitions with.

`azexport_assets.components` is the registry module dg lists (`dg list components`), so the
component's type name is `azexport_assets.components.AzureExport`.
"""

from azexport_assets.import_pause import collection_paused

# Everything the code location imports comes in through here: import it with the garbage
# collector paused (docs/operating.md, "What a run costs besides its data").
with collection_paused():
    from azexport_assets.components.azure_export import AzureExport

__all__ = ["AzureExport"]
