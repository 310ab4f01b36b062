"""File name templates, extensions, part and change-kind suffixes, and Azure blob name rules.

A template such as `crm/{YYYY}-{MM}-{DD}_export` is rendered at the run's *logical* time
(see `logical_time.py`) in the activation's time zone. The extension comes from the format.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_VARIABLES: dict[str, Callable[[datetime], str]] = {
    "YYYY": lambda t: f"{t.year:04d}",
    "YY": lambda t: f"{t.year % 100:02d}",
    "MM": lambda t: f"{t.month:02d}",
    "DD": lambda t: f"{t.day:02d}",
    "HH": lambda t: f"{t.hour:02d}",
    "mm": lambda t: f"{t.minute:02d}",
    "ss": lambda t: f"{t.second:02d}",
    "ms": lambda t: f"{t.microsecond // 1000:03d}",
    "X": lambda t: str(int(t.timestamp())),
    "x": lambda t: str(int(t.timestamp()) * 1000 + t.microsecond // 1000),
}
VALID_VARIABLES = tuple(_VARIABLES)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

CHANGE_KINDS = ("added", "updated", "removed")


def validate_template(template: str) -> None:
    """Raise ValueError for unknown `{...}` variables, stray braces or an unusable name."""
    if not template or not template.strip():
        raise ValueError("must not be empty")
    unknown = [m for m in _PLACEHOLDER.findall(template) if m not in _VARIABLES]
    if unknown:
        raise ValueError(
            f"unknown template variable(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"valid: {', '.join('{' + v + '}' for v in VALID_VARIABLES)}"
        )
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ValueError("has an unbalanced '{' or '}'")
    # Render at a fixed time so name rules are checked before any run.
    sample = render(template, datetime(2025, 4, 14, 12, 0, 0, tzinfo=ZoneInfo("UTC")), "UTC")
    if sample.endswith("/"):
        raise ValueError("must name a file, not end with '/'")
    validate_blob_name(sample + ".csv")


def template_variables(template: str) -> list[str]:
    """The `{...}` variables a template uses, in order ('crm/{YYYY}' -> ['{YYYY}'])."""
    return ["{" + m + "}" for m in _PLACEHOLDER.findall(template)]


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not an IANA time zone name (e.g. 'UTC', 'Europe/Paris')"
        ) from None


def render(template: str, logical_time: datetime, timezone: str) -> str:
    """Fill the template's variables with `logical_time` seen in `timezone`."""
    if logical_time.tzinfo is None:
        raise ValueError("logical_time must be timezone-aware")
    local = logical_time.astimezone(zone(timezone))
    return _PLACEHOLDER.sub(lambda m: _VARIABLES[m.group(1)](local), template)


def extension(file_format: str, json_style: str = "array", compression: str = "none") -> str:
    """'.csv', '.json', '.jsonl', '.xml', '.parquet', plus '.gz' / '.zst' for text formats."""
    ext = {"csv": ".csv", "xml": ".xml", "parquet": ".parquet"}.get(file_format)
    if file_format == "json":
        ext = ".jsonl" if json_style == "lines" else ".json"
    if ext is None:
        raise ValueError(f"unknown format {file_format!r}")
    return ext + {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]


def part_suffix(index: int) -> str:
    """1 -> '_part-00001' (parts are numbered from 1)."""
    return f"_part-{index:05d}"


def join_prefix(prefix: str, name: str) -> str:
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def validate_blob_name(name: str) -> str:
    """Azure's rules: 1..1024 characters, no '.'/'..' segments, no trailing '/' or '.'."""
    problems = []
    if not 1 <= len(name) <= 1024:
        problems.append(f"is {len(name)} characters long (Azure allows 1 to 1024)")
    if name.endswith(("/", ".")):
        problems.append("ends with '/' or '.'")
    segments = name.split("/")
    if any(s in (".", "..") for s in segments):
        problems.append("has a '.' or '..' path segment")
    if any(s == "" for s in segments[:-1]):
        problems.append("has an empty path segment ('//' or a leading '/')")
    if any(ord(c) < 32 or c == "\\" for c in name):
        problems.append("has a control character or a backslash")
    if problems:
        raise ValueError(f"blob name {name!r} " + "; ".join(problems))
    return name
