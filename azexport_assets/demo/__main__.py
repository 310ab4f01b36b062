"""`python -m azexport_assets.demo`: run every demo activation once and list the blobs."""

from __future__ import annotations

import sys

import dagster as dg

from azexport_assets.demo.environment import DEMO_CONTAINER, demo_environment


def run_all_activations() -> list[tuple[str, str, int, int | None]]:
    from azexport_assets.definitions import defs

    definitions = defs()
    instance = dg.DagsterInstance.get()
    written = []
    jobs = sorted(
        j.name for j in definitions.resolve_all_job_defs() if j.name.startswith("activate_")
    )
    for job_name in jobs:
        print(f"running {job_name} ...", flush=True)
        result = definitions.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
        if not result.success:
            print(f"  FAILED: see the run in the Dagster UI ({result.run_id})", flush=True)
            continue
        for event in result.get_asset_materialization_events():
            metadata = event.event_specific_data.materialization.metadata
            if "blob_files" in metadata:
                blobs = metadata["blob_files"].value
                if not blobs:
                    print("  no changes since the last export: nothing written", flush=True)
                for blob in blobs:
                    written.append((job_name, blob["name"], blob["bytes"], blob["rows"]))
                if "manifest" in metadata:
                    size = metadata["manifest_bytes"].value
                    written.append((job_name, metadata["manifest"].value, size, None))
    return written


def main() -> int:
    with demo_environment(simulate=True) as env:
        print(f"Azure Blob Storage: {env['account_url']} (container {DEMO_CONTAINER})")
        written = run_all_activations()
    width = max([len(n) for _, n, _, _ in written] + [4])
    print(f"\n{'blob':<{width}}  {'bytes':>12}  {'rows':>8}")
    for _, name, size, rows in written:
        shown = "-" if rows is None else f"{rows:,}"
        print(f"{name:<{width}}  {size:>12,}  {shown:>8}")
    print(
        "\nOpen the Dagster UI on the same setup (warehouse, run history, Azurite data):\n"
        "    make ui      # then browse http://127.0.0.1:3000 -> Assets -> Lineage"
    )
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
