"""azexport: activate DuckDB models and segments into Azure Blob Storage with Dagster."""
