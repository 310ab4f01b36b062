from azexport_assets.components.azure_export import AzureExport

__all__ = ["AzureExport"]
