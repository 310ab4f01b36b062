"""The WARN checks of an export (`warnings:` in YAML): declared next to the asset, evaluated
from the export's outcome. Each shows its threshold beside the observed value.

A check that failed in its last evaluation and passes now says so, once: its description
starts with "Recovered" and its metadata holds `recovered: true` and the run it failed in
(the warnings webhook posts that evaluation as a recovery). The next passing evaluation is
an ordinary pass again."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import dagster as dg
from croniter import croniter

from azexport_assets.asset_keys import export_key
from azexport_assets.export import ExportOutcome
from azexport_assets.project import Project
from azexport_assets.storage import sas_expiry

DESCRIPTIONS = {
    "min_rows": "The export wrote at least `min_rows` rows (fewer hints at a broken upstream).",
    "max_removed_ratio": (
        "The share of the baseline removed in one run stays at or below `max_removed_ratio`."
    ),
    "max_change_ratio": (
        "The share of the baseline added, updated or removed in one run stays at or below "
        "`max_change_ratio`."
    ),
    "sas_expiry": (
        "The destination's SAS token is valid for `sas_expiry_days` more days and beyond the "
        "next scheduled run."
    ),
    "xml_removed_characters": "No XML-invalid characters had to be removed from values.",
}


def _wanted_checks(project: Project, name: str) -> list[str]:
    activation = project.activations[name]
    warnings = activation.warnings
    checks = [
        check
        for check in ("min_rows", "max_removed_ratio", "max_change_ratio")
        if getattr(warnings, check) is not None
    ]
    destination = project.destinations[activation.destination]
    if warnings.sas_expiry_days is not None and (destination.sas_token or destination.sas_url):
        checks.append("sas_expiry")
    if activation.format == "xml":
        checks.append("xml_removed_characters")
    return checks


def warning_specs(project: Project, name: str) -> list[dg.AssetCheckSpec]:
    key = export_key(name)
    return [
        dg.AssetCheckSpec(check, asset=key, description=DESCRIPTIONS[check])
        for check in _wanted_checks(project, name)
    ]


def next_scheduled_run(cron: str | None, tz: str, now: datetime) -> datetime | None:
    if not cron:
        return None
    return croniter(cron, now.astimezone(ZoneInfo(tz))).get_next(datetime).astimezone(timezone.utc)


RECOVERED = "recovered"


def last_failures(
    instance: dg.DagsterInstance, project: Project, name: str, current_run: str
) -> dict[str, str]:
    """{check: run id} of the activation's checks whose last finished evaluation (before
    `current_run`) failed."""
    failed = {}
    for check in _wanted_checks(project, name):
        records = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(export_key(name), check), limit=10
        )
        for record in records:  # newest first; this run's own planned record is skipped
            status = check_status(record)
            if record.run_id == current_run or status not in ("SUCCEEDED", "FAILED"):
                continue
            if status == "FAILED":
                failed[check] = record.run_id
            break
    return failed


def check_status(record) -> str:
    """'SUCCEEDED' / 'FAILED' / ... of a check execution record (compared by name, so no
    import from Dagster's private modules is needed)."""
    status = record.status
    return str(getattr(status, "value", status))


def warning_results(
    project: Project,
    name: str,
    outcome: ExportOutcome,
    sas_token: str | None,
    now: datetime,
    failed_before: Mapping[str, str] | None = None,
) -> list[dg.AssetCheckResult]:
    """The checks' results; `failed_before` ({check: run id}, see `last_failures`) marks a
    check that passes again as recovered."""
    activation = project.activations[name]
    warnings = activation.warnings
    change, report = outcome.change, outcome.report
    key = export_key(name)
    wanted = _wanted_checks(project, name)
    results = []

    def result(check: str, passed: bool, description: str, **metadata) -> None:
        failed_in = (failed_before or {}).get(check)
        if passed and failed_in:
            description = f"Recovered (failed in run {failed_in[:8]}): {description}"
            metadata = {**metadata, RECOVERED: True, "failed_in_run": failed_in}
        if check in wanted:
            results.append(
                dg.AssetCheckResult(
                    asset_key=key,
                    check_name=check,
                    passed=passed,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=description,
                    metadata=metadata,
                )
            )

    base = max(change.baseline_rows, 1)
    if warnings.min_rows is not None:
        result(
            "min_rows",
            outcome.rows >= warnings.min_rows,
            f"{outcome.rows:,} rows exported; at least {warnings.min_rows:,} expected",
            rows=outcome.rows,
            min_rows=warnings.min_rows,
        )
    if warnings.max_removed_ratio is not None:
        ratio = change.removed / base if not change.full else 0.0
        result(
            "max_removed_ratio",
            ratio <= warnings.max_removed_ratio,
            f"{ratio:.2%} of the baseline removed; at most {warnings.max_removed_ratio:.2%}",
            ratio=ratio,
            max_removed_ratio=warnings.max_removed_ratio,
            removed=change.removed,
            baseline_rows=change.baseline_rows,
        )
    if warnings.max_change_ratio is not None:
        changed = change.added + change.updated + change.removed
        ratio = changed / base if not change.full else 0.0
        result(
            "max_change_ratio",
            ratio <= warnings.max_change_ratio,
            f"{ratio:.2%} of the baseline changed; at most {warnings.max_change_ratio:.2%}",
            ratio=ratio,
            max_change_ratio=warnings.max_change_ratio,
            changed=changed,
            baseline_rows=change.baseline_rows,
        )
    if warnings.sas_expiry_days is not None and sas_token is not None:
        expiry = sas_expiry(sas_token)
        limit = now + timedelta(days=warnings.sas_expiry_days)
        next_run = next_scheduled_run(activation.schedule, activation.timezone, now)
        if next_run:
            limit = max(limit, next_run)  # the token must also outlive the next scheduled run
        metadata = {
            "sas_expiry_days": warnings.sas_expiry_days,
            "expires_at": dg.MetadataValue.timestamp(expiry) if expiry else "unknown",
            "next_scheduled_run": dg.MetadataValue.timestamp(next_run)
            if next_run
            else "not scheduled",
        }
        result(
            "sas_expiry",
            expiry is None or expiry > limit,
            f"SAS token expires {expiry.isoformat() if expiry else 'never (no se field)'}; "
            f"must be valid until {limit.isoformat()}",
            **metadata,
        )
    if activation.format == "xml":
        result(
            "xml_removed_characters",
            report.xml_removed_chars == 0,
            f"{report.xml_removed_chars:,} XML-invalid characters removed; 0 expected",
            removed_characters=report.xml_removed_chars,
        )
    return results
