"""`dg scaffold defs azexport_assets.components.AzureExport <folder>`: a commented example.

The example loads as written (it is validated by the tests): one source, one model, one
destination and one activation, named after the folder so that several scaffolds never clash
(names are global across the project). Edit it, then `dg check yaml` and `dg check defs`.
"""

from __future__ import annotations

import re

import dagster as dg

EXAMPLE = """\
# Exports to Azure Blob Storage. Reference: README "Configuration reference".
# Check this file with `dg check yaml` (typos, with line and column) and `dg check defs`.
# Names are global across all defs.yaml files of the project; references may cross folders.
type: {type_name}
attributes:
  sources:
    # A DuckDB file (attached read-only), or {{parquet: glob}} / {{csv: glob}}.
    # Paths are relative to the project root. Tables of a database instead:
    #   postgres: {{dsn: {{env: CRM_DSN}}, schema: sales}}    # the whole DSN is the secret
    #   lake: raw                                          # a schema of the DuckLake warehouse
    #   tables: [customers]                                # optional: the only tables to read
    {name}_crm:
      duckdb: data/{name}_crm.duckdb

  models:
    # A SELECT over sources (<source>.<table>) or other models (models.<name>);
    # or `sql_file: model.sql` next to this file.
    {name}_customers:
      sql: SELECT id, email, country FROM {name}_crm.customers
      primary_key: id
      owners: [team:data]

  destinations:
    # Secrets are named by environment variable ({{env: VAR}}) and read only at run time.
    # Do not use '{{{{ env.VAR }}}}' for secrets: templates are rendered into the config.
    {name}_lake:
      account_url: {{env: AZURE_STORAGE_ACCOUNT_URL}}
      container: exports
      path_prefix: {name}
      sas_token: {{env: AZURE_STORAGE_SAS_TOKEN}}
      # Or exactly one other sign-in (README "Destinations"):
      #   connection_string: {{env: AZURE_STORAGE_CONNECTION_STRING}}   # no account_url
      #   sas_url: {{env: AZURE_STORAGE_CONTAINER_SAS_URL}}             # no account_url
      #   account_key: {{env: AZURE_STORAGE_KEY}}
      #   service_principal:
      #     tenant_id: {{env: AZURE_TENANT_ID}}
      #     client_id: {{env: AZURE_CLIENT_ID}}
      #     client_secret: {{env: AZURE_CLIENT_SECRET}}    # or certificate_path: sp.pem
      #     # Another cloud or a private authority (default: login.microsoftonline.com):
      #     # authority_host: https://login.microsoftonline.us
      #     # disable_instance_discovery: true   # an authority Microsoft does not know
      #   default_azure_credential: true    # managed / workload identity (https only)

  activations:
    # run_type full_only + sync_mode snapshot; or full_then_delta + upsert/insert/difference.
    {name}_customers_csv:
      source: {name}_customers
      destination: {name}_lake
      file_name: customers/{{YYYY}}-{{MM}}-{{DD}}_customers
      format: csv
      schedule: "0 6 * * *"
      timezone: UTC
      # Properties every blob gets when it is committed (README "Blob properties"):
      # blob_properties:
      #   cache_control: no-cache
      #   access_tier: Cool          # Hot | Cool | Cold | Archive (read only after rehydration)
      #   tags: {{team: data, run: "{{run_id}}"}}   # index tags; a SAS needs 't'
      #   metadata: {{owner: data}}    # besides activation, run_id, logical_time, rows, md5
      # file_name may also use {{activation}}, {{model}}, {{segment}} and {{run_id}}.
      # Hive-style folders (country=FR/) before the file name, one complete file each:
      # partition_by: [country]
      # WARN checks; a check that failed and passes again says so once (and the webhook
      # in $EXPORT_WEBHOOK_URL posts failures and recoveries):
      # warnings: {{min_rows: 1, max_change_ratio: 0.5, webhook_url_env: EXPORT_WEBHOOK_URL}}
      # See what the next run would export, writing nothing: the job preview_activation
      # (config activation: {name}_customers_csv), or
      # `python -m azexport_assets.preview <activation>`.
      # Keep each run's exported keys (run id, logical time, operation) in the warehouse
      # table azexport_log.<activation>, committed with the baseline; it shows as the asset
      # activations/<activation>/<activation>_sync_log, materialized with the export:
      # sync_log: {{retention_days: 30}}
      # Encrypt each file to a public key (blobs end in .pgp; files at most 64MB each),
      # and/or name Azure's server-side encryption scope (Azurite ignores it):
      # max_file_size: 64MB
      # encryption:
      #   pgp_public_key: {{env: EXPORT_PGP_PUBLIC_KEY}}
      #   encryption_scope: my-scope
"""


def example_prefix(folder_name: str) -> str:
    """A folder name as an identifier prefix: 'crm-exports' -> 'crm_exports'."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", folder_name).strip("_") or "export"
    return f"_{name}" if name[0].isdigit() else name


def example_yaml(type_name: str, folder_name: str) -> str:
    return EXAMPLE.format(type_name=type_name, name=example_prefix(folder_name))


class AzureExportScaffolder(dg.Scaffolder):
    """Writes `<folder>/defs.yaml` with a complete, commented example."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        if request.scaffold_format != "yaml":  # `--format python`: Dagster's stub
            dg.scaffold_component(request)
            return
        if request.append:  # `--append` adds a document to an existing defs.yaml
            with open(request.target_path, "a", encoding="utf-8") as f:
                f.write("---\n" + example_yaml(request.type_name, request.target_path.parent.name))
            return
        request.target_path.mkdir(parents=True, exist_ok=True)
        text = example_yaml(request.type_name, request.target_path.name)
        (request.target_path / "defs.yaml").write_text(text, encoding="utf-8")
