"""Jobs and schedules: `activate_<a>` per activation, and one job per schedule tick.

An activation's steps are sequential and serialised on the warehouse anyway, so its jobs run
in process: one Python process per run instead of one per step.

Activations with the same cron and time zone share one scheduled job: their upstream models
and segments are built once per tick, every activation then exports data of that tick, and no
activation's export looks stale in the UI because another one rebuilt its model. A job with a
single activation is its own `activate_<a>` job; ad-hoc runs of `activate_<a>` refresh what
that activation needs.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict

import dagster as dg

from azexport_assets.asset_keys import (
    delta_key,
    export_key,
    model_key,
    segment_key,
    sync_log_key,
)
from azexport_assets.components.activation_assets import ACTIVATION_TAG
from azexport_assets.components.lineage import upstream_models
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project


def activation_keys(project: Project, shape: ProjectShape, name: str) -> list[dg.AssetKey]:
    """What a run of the activation materializes: upstream models, its segment, delta, export
    (and its sync log, written in the export's step)."""
    source = project.activations[name].source
    keys = [model_key(m) for m in upstream_models(project, shape, project.model_of(source))]
    if source in project.segments:
        keys.append(segment_key(source))
    keys += [delta_key(name), export_key(name)]
    if project.activations[name].sync_log_options is not None:
        keys.append(sync_log_key(name))
    return keys


def activation_job(
    project: Project, shape: ProjectShape, name: str
) -> dg.UnresolvedAssetJobDefinition:
    """Runs the activation's upstream models and segment, then its delta and export."""
    source = project.activations[name].source
    return dg.define_asset_job(
        name=f"activate_{name}",
        selection=dg.AssetSelection.assets(*activation_keys(project, shape, name)),
        description=f"Refresh `{source}` and export it for activation `{name}`.",
        tags={ACTIVATION_TAG: name},
        executor_def=dg.in_process_executor,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def tick_job_name(cron: str, timezone: str) -> str:
    """'0 6 * * *' in Europe/Paris -> 'activations_0_6_x_x_x_europe_paris'."""
    return f"activations_{_slug(cron.replace('*', 'x'))}_{_slug(timezone)}"


def tick_job_names(groups: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str], str]:
    """The job name of each shared schedule (groups of more than one activation). Distinct
    crons or zones can read the same once reduced to a name ('1-5' and '1,5', 'Etc/GMT+1' and
    'Etc/GMT-1'): those get a digest of their own cron and zone, so no two collide."""
    shared = [key for key, names in groups.items() if len(names) > 1]
    plain = {key: tick_job_name(*key) for key in shared}
    taken = Counter(plain.values())
    return {
        key: name if taken[name] == 1 else f"{name}_{_digest(*key)}" for key, name in plain.items()
    }


def _digest(cron: str, timezone: str) -> str:
    return hashlib.sha256(f"{cron}\n{timezone}".encode()).hexdigest()[:8]


def scheduled_groups(project: Project) -> dict[tuple[str, str], list[str]]:
    """Scheduled activations by (cron, time zone), in declaration order."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, activation in project.activations.items():
        if activation.schedule:
            groups[(activation.schedule, activation.timezone)].append(name)
    return dict(groups)


def tick_job(
    project: Project,
    shape: ProjectShape,
    cron: str,
    timezone: str,
    names: list[str],
    job_name: str,
) -> dg.UnresolvedAssetJobDefinition:
    keys = {key: None for name in names for key in activation_keys(project, shape, name)}
    return dg.define_asset_job(
        name=job_name,
        selection=dg.AssetSelection.assets(*keys),
        description=(
            f"Activations scheduled at `{cron}` ({timezone}): "
            f"{', '.join(f'`{n}`' for n in names)}. Shared models are built once per tick."
        ),
        tags={"azexport/activations": ",".join(names)},
        executor_def=dg.in_process_executor,
    )


def schedule_for(
    cron: str, timezone: str, names: list[str], job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    name = f"activate_{names[0]}_schedule" if len(names) == 1 else f"{job.name}_schedule"
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=cron,
        execution_timezone=timezone,
        # Declaring a schedule in YAML is the intent to run it.
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Runs {', '.join(f'`{n}`' for n in names)} at `{cron}` ({timezone}).",
    )
