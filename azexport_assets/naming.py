"""File name templates, extensions, part and change-kind suffixes, and Azure blob name rules.

A template such as `crm/{YYYY}-{MM}-{DD}_export` is rendered at the run's *logical* time
(see `logical_time.py`) in the activation's time zone, and with the names of the run
(`{activation}`, `{run_id}`, `{model}`, `{segment}`). The extension comes from the format.
With `partition_by`, Hive-style folders (`country=FR/`) go between the rendered name's folder
and its file name; `partition_folder` encodes values that are not safe in a blob name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
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
# Names of the run, the same at any time: given to `render` as `values`.
NAME_VARIABLES = ("activation", "run_id", "model", "segment")
# Sample values: templates are checked (names, lengths) before any run.
SAMPLE_NAMES = {
    "activation": "activation",
    "run_id": "00000000-0000-0000-0000-000000000000",
    "model": "model",
    "segment": "segment",
}
VALID_VARIABLES = (*_VARIABLES, *NAME_VARIABLES)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

CHANGE_KINDS = ("added", "updated", "removed")


def validate_template(template: str) -> None:
    """Raise ValueError for unknown `{...}` variables, stray braces or an unusable name."""
    if not template or not template.strip():
        raise ValueError("must not be empty")
    unknown = [m for m in _PLACEHOLDER.findall(template) if m not in VALID_VARIABLES]
    if unknown:
        raise ValueError(
            f"unknown template variable(s) {', '.join('{' + u + '}' for u in unknown)}; "
            f"valid: {', '.join('{' + v + '}' for v in VALID_VARIABLES)}"
        )
    if "{" in _PLACEHOLDER.sub("", template) or "}" in _PLACEHOLDER.sub("", template):
        raise ValueError("has an unbalanced '{' or '}'")
    # Render at a fixed time so name rules are checked before any run.
    sample_time = datetime(2025, 4, 14, 12, 0, 0, tzinfo=ZoneInfo("UTC"))
    sample = render(template, sample_time, "UTC", SAMPLE_NAMES)
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


def render(
    template: str,
    logical_time: datetime,
    timezone: str,
    values: Mapping[str, str] | None = None,
) -> str:
    """Fill the template's time variables with `logical_time` seen in `timezone`, and its
    name variables (`{activation}`, `{run_id}`, `{model}`, `{segment}`) from `values`."""
    if logical_time.tzinfo is None:
        raise ValueError("logical_time must be timezone-aware")
    local = logical_time.astimezone(zone(timezone))
    names = values or {}

    def fill(match: re.Match[str]) -> str:
        variable = match.group(1)
        if variable in _VARIABLES:
            return _VARIABLES[variable](local)
        if variable not in names:
            raise ValueError(f"no value for the file name variable {{{variable}}}")
        return names[variable]

    return _PLACEHOLDER.sub(fill, template)


def time_variables(template: str) -> list[str]:
    """The time variables of a template (those that change from run to run)."""
    return ["{" + m + "}" for m in _PLACEHOLDER.findall(template) if m in _VARIABLES]


# --------------------------------------------------------------------------- partitions

# Hive's name for the folder of NULL values (Spark, Hive, DuckDB and Polars read it as NULL).
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# Characters Hive escapes in partition values, plus what Azure or this encoding needs:
# '%' (the escape itself), '/' (a folder), '\\' and control characters (refused by Azure).
_UNSAFE = frozenset("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(32)}


def partition_value(value: str | None) -> str:
    """A partition value as it appears in a folder name, reversibly.

    NULL is Hive's `__HIVE_DEFAULT_PARTITION__`; every character Hive escapes (among them
    '%', '/', '\\' and control characters) becomes `%XX` (UTF-8 bytes, upper-case hex), as
    Hive and Spark write them, and so do dots that end the value ('..' is `%2E%2E`: Azure
    refuses name parts that end with '.'); other Unicode stays as it is (Azure accepts it).
    The folder always starts with `<column>=`, so '' is `country=`. A value spelled like
    the NULL folder is escaped so that it is not read as NULL.
    """
    if value is None:
        return NULL_PARTITION
    encoded = "".join(
        "".join(f"%{b:02X}" for b in c.encode("utf-8")) if c in _UNSAFE else c for c in value
    )
    if encoded == NULL_PARTITION:
        encoded = "%5F" + encoded[1:]
    # Azure: no name part may end with '.' ('..' would even be a parent folder).
    stripped = encoded.rstrip(".")
    return stripped + "%2E" * (len(encoded) - len(stripped))


def partition_folder(partition: Sequence[tuple[str, str | None]]) -> str:
    """[('country', 'FR'), ('city', None)] -> 'country=FR/city=__HIVE_DEFAULT_PARTITION__'."""
    return "/".join(
        f"{partition_value(column)}={partition_value(value)}" for column, value in partition
    )


def partitioned_stem(stem: str, partition: Sequence[tuple[str, str | None]]) -> str:
    """'crm/25-04-14_export' + [('country', 'FR')] -> 'crm/country=FR/25-04-14_export': the
    partition folders go between the name's folder and its file name."""
    if not partition:
        return stem
    folder, _, base = stem.rpartition("/")
    inner = partition_folder(partition)
    return f"{folder}/{inner}/{base}" if folder else f"{inner}/{base}"


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
