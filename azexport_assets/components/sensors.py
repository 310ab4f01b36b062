"""Source-change sensors: activations with `trigger: on_change` run when their sources change.

A source's fingerprint is the name, size and modification time of its file(s): the DuckDB
file, or every file matched by a Parquet/CSV glob. The sensor's cursor holds the fingerprints
it last saw; a change starts the activation's job (model, segment, delta, export), keyed by
the new fingerprint so the same change never starts two runs. The first evaluation only
records the current state: deploying a sensor does not trigger an export by itself.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import dagster as dg

from azexport_assets.components.jobs import upstream_models
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project
from azexport_assets.warehouse import resolve_path

MINIMUM_INTERVAL_SECONDS = 60


def source_fingerprint(project: Project, source: str) -> str:
    """Changes whenever a file of the source is added, removed, resized or rewritten."""
    config = project.sources[source]
    location = resolve_path(config.location, project.project_root)
    paths = [location] if config.kind == "duckdb" else sorted(glob.glob(location))
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            digest.update(f"{path}:missing;".encode())
            continue
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def activation_sources(project: Project, shape: ProjectShape, activation: str) -> list[str]:
    """Every source the activation's model reads, through the models it reads."""
    model = project.model_of(project.activations[activation].source)
    sources = {
        source
        for m in upstream_models(project, shape, model)
        for source, _ in shape.deps[m].source_tables
    }
    return sorted(sources)


def source_change_sensor(
    project: Project, shape: ProjectShape, activation: str, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    sources = activation_sources(project, shape, activation)

    @dg.sensor(
        name=f"activate_{activation}_on_change",
        job=job,
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Runs activation `{activation}` when a file of its sources "
            f"({', '.join(sources) or 'none'}) changes."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        current = {s: source_fingerprint(project, s) for s in sources}
        previous = json.loads(context.cursor) if context.cursor else None
        changed = sorted(
            s for s in sources if previous is not None and previous.get(s) != current[s]
        )
        requests = []
        if changed:
            run_key = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
            requests.append(
                dg.RunRequest(run_key=run_key, tags={"azexport/changed_sources": ",".join(changed)})
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(current, sort_keys=True))

    return _sensor
