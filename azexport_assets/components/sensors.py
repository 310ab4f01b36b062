"""Source-change sensors: activations with `trigger: on_change` run when their sources change.

A source's fingerprint is the name, size and modification time of its file(s): the DuckDB
file (with its write-ahead log and checkpoint headers), or every file matched by a Parquet/CSV
glob; for a Postgres or lake source, the change signal of the tables models read
(`fingerprints.source_fingerprint`, which also tells whether a model must be rebuilt).
The sensor's cursor holds the fingerprints it last saw; a change starts the activation's job
(model, segment, delta, export), keyed by the new fingerprint so the same change never starts
two runs. The first evaluation only records the current state: deploying a sensor does not
trigger an export by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request

import dagster as dg

from azexport_assets.asset_keys import export_key
from azexport_assets.components.checks import RECOVERED, check_status
from azexport_assets.components.fingerprints import source_fingerprint
from azexport_assets.components.lineage import upstream_models
from azexport_assets.introspect import ProjectShape
from azexport_assets.project import Project

MINIMUM_INTERVAL_SECONDS = 60
# Bumped whenever `source_fingerprint` computes its values differently.
CURSOR_FORMAT = 2


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
            f"Runs activation `{activation}` when a file or table of its sources "
            f"({', '.join(sources) or 'none'}) changes."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        current = {s: source_fingerprint(project, s, shape) for s in sources}
        previous = _previous_fingerprints(context.cursor)
        changed = sorted(
            s for s in sources if previous is not None and previous.get(s) != current[s]
        )
        requests = []
        if changed:
            run_key = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
            requests.append(
                dg.RunRequest(run_key=run_key, tags={"azexport/changed_sources": ",".join(changed)})
            )
        cursor = {"format": CURSOR_FORMAT, "sources": current}
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor, sort_keys=True))

    return _sensor


def _previous_fingerprints(cursor: str | None) -> dict | None:
    """The fingerprints of the last evaluation; None (record only) for a first evaluation or
    a cursor written with another way of fingerprinting, which would differ for every source."""
    saved = json.loads(cursor) if cursor else None
    if not isinstance(saved, dict) or saved.get("format") != CURSOR_FORMAT:
        return None
    return saved["sources"]


def warning_webhook_sensor(
    project: Project, activation: str, check_names: list[str]
) -> dg.SensorDefinition:
    """Posts every failed warning check of the activation's export to a webhook, once, and
    every recovery (a check that failed and passes again, see `checks.py`), once.

    The URL is read from the environment variable named by `warnings.webhook_url_env` at
    each evaluation (it often embeds a token: it is never logged). The cursor is the id of the
    last delivered check evaluation; a delivery error fails the tick and leaves the cursor, so
    the warning is sent again on the next tick.
    """
    url_env = project.activations[activation].warnings.webhook_url_env or ""
    asset_key = export_key(activation)

    @dg.sensor(
        name=f"activate_{activation}_warnings",
        minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Sends failed warning checks of `{activation}` to the webhook in ${url_env}.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        seen = int(context.cursor or 0)
        news = []
        for check in check_names:
            records = context.instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(asset_key, check), limit=100
            )
            news += [
                r
                for r in records
                if r.id > seen and r.event is not None and _delivered_status(r) is not None
            ]
        if not news:
            return dg.SkipReason("no new warnings")
        url = os.environ.get(url_env)
        if not url:
            return dg.SkipReason(f"{len(news)} warning(s) to send, but ${url_env} is not set")
        for record in sorted(news, key=lambda r: r.id):
            post_json(url, warning_payload(activation, record))
        return dg.SensorResult(cursor=str(max(r.id for r in news)))

    return _sensor


def _delivered_status(record) -> str | None:
    """'failed' for a failed evaluation, 'recovered' for the first pass after a failure,
    None for anything the webhook does not hear about."""
    status = check_status(record)
    if status == "FAILED":
        return "failed"
    if status == "SUCCEEDED":
        evaluation = record.event.dagster_event.event_specific_data
        recovered = evaluation.metadata.get(RECOVERED)
        if recovered is not None and recovered.value is True:
            return "recovered"
    return None


def warning_payload(activation: str, record) -> dict:
    evaluation = record.event.dagster_event.event_specific_data
    return {
        "activation": activation,
        "asset": record.key.asset_key.to_user_string(),
        "check": record.key.name,
        "status": _delivered_status(record),
        "severity": evaluation.severity.value,
        "run_id": record.run_id,
        "timestamp": record.create_timestamp,
        "description": evaluation.description,
        "metadata": {k: v.value for k, v in evaluation.metadata.items()},
    }


def post_json(url: str, payload: dict, timeout: float = 10.0) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, default=str).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError) as error:
        # The URL may hold a token: name the variable, never the URL.
        reason = getattr(error, "reason", None) or getattr(error, "code", None) or type(error)
        raise dg.Failure(
            f"webhook delivery failed ({reason}); check the URL in the variable"
        ) from None
