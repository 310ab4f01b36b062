"""File name templates: every variable, time zones, blob-name rules."""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from azexport_assets import naming

AT = datetime(2025, 4, 14, 9, 5, 7, 123456, tzinfo=timezone.utc)


def test_spec_example():
    name = naming.render("{YY}-{MM}-{DD}_export", datetime(2025, 4, 14, tzinfo=timezone.utc), "UTC")
    assert name + naming.extension("csv") == "25-04-14_export.csv"


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("YYYY", "2025"),
        ("YY", "25"),
        ("MM", "04"),
        ("DD", "14"),
        ("HH", "09"),
        ("mm", "05"),
        ("ss", "07"),
        ("ms", "123"),
        ("X", str(int(AT.timestamp()))),
        ("x", str(int(AT.timestamp()) * 1000 + 123)),
    ],
)
def test_every_variable(variable, expected):
    assert naming.render(f"a_{{{variable}}}_b", AT, "UTC") == f"a_{expected}_b"


def test_the_ten_time_variables_and_the_four_names_are_known():
    assert set(naming.VALID_VARIABLES) == {
        "activation",
        "run_id",
        "model",
        "segment",
        "YYYY",
        "YY",
        "MM",
        "DD",
        "HH",
        "mm",
        "ss",
        "ms",
        "X",
        "x",
    }


def test_time_zone_moves_the_date_but_not_unix_time():
    late = datetime(2025, 4, 14, 23, 30, tzinfo=timezone.utc)
    assert naming.render("{YYYY}-{MM}-{DD}T{HH}", late, "Europe/Paris") == "2025-04-15T01"
    assert naming.render("{YYYY}-{MM}-{DD}T{HH}", late, "America/New_York") == "2025-04-14T19"
    assert naming.render("{X}", late, "Asia/Tokyo") == naming.render("{X}", late, "UTC")


def test_daylight_saving_boundary():
    # 2025-03-30 01:30 UTC is 03:30 in Paris (CEST), an hour after 00:30 UTC was 01:30 (CET).
    assert (
        naming.render("{HH}{mm}", datetime(2025, 3, 30, 0, 30, tzinfo=timezone.utc), "Europe/Paris")
        == "0130"
    )
    assert (
        naming.render("{HH}{mm}", datetime(2025, 3, 30, 1, 30, tzinfo=timezone.utc), "Europe/Paris")
        == "0330"
    )


def test_same_logical_time_same_name():
    a = naming.render("x/{YYYY}{MM}{DD}_{HH}{mm}{ss}{ms}", AT, "UTC")
    b = naming.render(
        "x/{YYYY}{MM}{DD}_{HH}{mm}{ss}{ms}", AT.astimezone(ZoneInfo("Asia/Tokyo")), "UTC"
    )
    assert a == b == "x/20250414_090507123"


def test_unknown_variable_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        naming.validate_template("export_{DATE}_{YYYY}")
    assert (
        "{DATE}" in str(error.value) and "{YYYY}" in str(error.value) and "{ms}" in str(error.value)
    )


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("a/../b", "'..'"),
        ("a/./b", "'.'"),
        ("folder/", "not end with '/'"),
        ("/leading", "empty path segment"),
        ("a//b", "empty path segment"),
        ("x" * 1030, "1 to 1024"),
        ("unbalanced{", "unbalanced"),
        ("", "empty"),
    ],
)
def test_invalid_names(template, problem):
    with pytest.raises(ValueError, match=None) as error:
        naming.validate_template(template)
    assert problem in str(error.value)


def test_extensions_and_parts():
    assert naming.extension("json", "lines", "gzip") == ".jsonl.gz"
    assert naming.extension("json") == ".json"
    assert naming.extension("xml", compression="zstd") == ".xml.zst"
    assert naming.extension("parquet") == ".parquet"
    assert naming.part_suffix(1) == "_part-00001"
    assert naming.join_prefix("/marketing/", "crm/x") == "marketing/crm/x"
    assert naming.join_prefix("", "crm/x") == "crm/x"


def test_unknown_time_zone():
    with pytest.raises(ValueError, match="IANA"):
        naming.zone("Mars/Olympus")
