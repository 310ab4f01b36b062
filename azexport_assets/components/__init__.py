"""The Dagster layer: the AzureExport component and the factories it builds definitions with.

`azexport_assets.components` is the registry module dg lists (`dg list components`), so the
component's type name is `azexport_assets.components.AzureExport`.
"""

from azexport_assets.components.azure_export import AzureExport

__all__ = ["AzureExport"]
