"""The exported files, read back by the readers our users use, with the options of
docs/readers.md: Apache Spark 3.5 (local mode), Polars and pandas. A table of hard values
(`hard_values.py`) goes through real Dagster runs into a real Azurite; the blobs are downloaded
and every value each reader returns is compared with the source's own value, exactly.

Run with `make test-readers` (Java 17 and the `readers` extra; marker `readers`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pytest
import zstandard
from azure.storage.blob import BlobServiceClient
from pyspark import sql as pyspark_sql

from azexport_assets.demo.azurite import Azurite, container_sas
from azexport_assets_tests import hard_values
from azexport_assets_tests.hard_values import COLUMNS, differences, source_rows
from azexport_assets_tests.project_kit import ProjectKit

pytestmark = pytest.mark.readers


LOGICAL = datetime(2025, 4, 14, 6, 0, tzinfo=timezone.utc)
NEXT = datetime(2025, 4, 15, 6, 0, tzinfo=timezone.utc)
INTEGER_COLUMNS = {"id", "tiny", "big", "ubig", "huge"}
# The CSV `nullValue` of the Spark recipe: any text that never is a whole value.
SPARK_NULL = "\u0000null\u0000"

ACTIVATIONS = {
    "csv_comma": "format: csv",
    "csv_semicolon_gzip": "format: csv\ncsv: {delimiter: ';'}\ncompression: gzip",
    "csv_zstd": "format: csv\ncompression: zstd",
    "json_array": "format: json",
    "json_lines": "format: json\njson: {style: lines}",
    "parquet": "format: parquet",
    "xml": "format: xml",
}


def project_yaml() -> str:
    activations = "".join(
        f"  {name}:\n    source: hard\n    destination: lake\n    file_name: out/{name}\n"
        + "".join(f"    {line}\n" for line in options.splitlines())
        for name, options in ACTIVATIONS.items()
    )
    difference = (
        "  changes:\n    source: hard\n    destination: lake\n"
        "    file_name: diff/{YYYY}{MM}{DD}_hard\n    format: parquet\n"
        "    run_type: full_then_delta\n    sync_mode: difference\n    manifest: true\n"
        "    change_column: _change\n"
    )
    return (
        "models:\n  hard:\n    sql: SELECT * FROM src.hard\n    primary_key: id\n"
        f"activations:\n{activations}{difference}"
    )


@pytest.fixture(scope="module")
def exported(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Every activation run once (the difference one twice) and its blobs downloaded:
    {'source': {id: row}, 'files': {activation: local path}, 'diff': folder, 'kit': kit}."""
    tmp = tmp_path_factory.mktemp("readers")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(f"r-{uuid.uuid4().hex[:20]}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        kit = ProjectKit.create(
            tmp,
            azurite,
            container,
            container_sas(azurite.account_url, container.container_name),
            monkeypatch,
        )
        kit.source_sql(*hard_values.hard_table_sql())
        kit.write_defs(project_yaml())
        downloads = tmp / "downloads"
        files: dict[str, Path] = {}
        for name in ACTIVATIONS:
            kit.run(name, logical_time=LOGICAL)
            (blob,) = kit.blob_names(f"out/{name}")
            files[name] = downloads / blob
        kit.run("changes", logical_time=LOGICAL)
        source = source_rows(kit.source_path)
        # A day of changes: two rows updated, one removed, one added.
        kit.source_sql(
            "UPDATE hard SET \"first name\" = 'changed' WHERE id IN (2, 3)",
            "DELETE FROM hard WHERE id = 4",
            "INSERT INTO hard SELECT 100000 AS id, * EXCLUDE (id) FROM hard WHERE id = 1",
        )
        kit.run("changes", logical_time=NEXT)
        for blob in kit.blob_names():
            path = downloads / blob
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(kit.download(blob))
        yield {
            "source": source,
            "changed": source_rows(kit.source_path),
            "files": files,
            "diff": downloads / "diff",
        }
        kit.close()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark for the module (two cores, no UI), in UTC like the exported instants."""
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("azexport-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


# -- what each column becomes, reader by reader (docs/readers.md) -------------------------

SPARK_TYPES = {
    "id": "BIGINT",
    "first name": "STRING",
    "tiny": "TINYINT",
    "big": "BIGINT",
    "ubig": "DECIMAL(20,0)",
    "huge": "DECIMAL(38,0)",
    "dec18": "DECIMAL(18,4)",
    "dec38": "DECIMAL(38,10)",
    "dbl": "DOUBLE",
    "flag": "BOOLEAN",
    "day": "DATE",
    "ts": "TIMESTAMP",
    "tstz": "TIMESTAMP",
    "ints": "ARRAY<INT>",
    "rec": "STRUCT<a: INT, b: STRING>",
}


def spark_ddl(nested_as_text: bool) -> str:
    """The schema of the Spark recipes; CSV and XML carry nested values as JSON text."""
    return ", ".join(
        f"`{name}` "
        + ("STRING" if nested_as_text and name in hard_values.NESTED_COLUMNS else spark_type)
        for name, spark_type in SPARK_TYPES.items()
    )


def spark_rows(df: Any, nested_as_text: bool) -> dict[int, dict[str, Any]]:
    """Rows of a Spark DataFrame as canonical values: instants as `unix_micros` (exact,
    whatever the Python process's zone), nested JSON text through `from_json`."""
    from pyspark.sql import functions as F

    items = []
    for name, spark_type in SPARK_TYPES.items():
        column = F.col(f"`{name}`")
        if name in hard_values.TIMESTAMP_COLUMNS:
            column = F.unix_micros(column)
        elif nested_as_text and name in hard_values.NESTED_COLUMNS:
            column = F.from_json(column, spark_type)
        items.append(column.alias(name))
    return canonical_rows(row.asDict(recursive=True) for row in df.select(*items).collect())


def canonical(name: str, value: Any) -> Any:
    """A reader's value in the source's terms (the comparison itself stays exact)."""
    if value is None:
        return None
    if name in INTEGER_COLUMNS:
        if isinstance(value, Decimal):
            assert value == value.to_integral_value(), (name, value)
        return int(value)
    if name in hard_values.NESTED_COLUMNS and isinstance(value, str):
        return json.loads(value)
    if name == "rec" and isinstance(value, list):  # a struct as (key, value) pairs
        return dict(value)
    return value


def canonical_rows(rows: Any) -> dict[int, dict[str, Any]]:
    out = {}
    for row in rows:
        values = {name: canonical(name, row[name]) for name in ["id", *COLUMNS]}
        out[values["id"]] = values
    return out


def assert_exact(source: dict, read: dict, reader: str) -> None:
    problems = differences(source, read)
    assert not problems, f"{reader}:\n" + "\n".join(problems)


def json_expected(source: dict) -> dict:
    """JSON has no NaN or infinity: they are written as null (docs/formats.md)."""
    out = {}
    for key, row in source.items():
        value = row["dbl"]
        finite = value is None or value - value == 0
        out[key] = row | {"dbl": value if finite else None}
    return out


# -- CSV -----------------------------------------------------------------------------------


def spark_csv(spark: Any, path: Path, delimiter: str = ",") -> Any:
    return (
        spark.read.schema(spark_ddl(nested_as_text=True))
        .option("header", True)
        .option("sep", delimiter)
        .option("multiLine", True)
        .option("escape", '"')
        .option("nullValue", SPARK_NULL)
        .option("mode", "FAILFAST")
        .csv(str(path))
    )


POLARS_TYPES = {
    "id": "Int64",
    "first name": "String",
    "tiny": "Int8",
    "big": "Int64",
    "ubig": "UInt64",
    "huge": "Int128",
    "dbl": "Float64",
    "flag": "Boolean",
    "day": "Date",
    "ints": "String",
    "rec": "String",
}


def polars_schema() -> dict[str, Any]:
    schema = {name: getattr(pl, kind) for name, kind in POLARS_TYPES.items()}
    schema |= {"dec18": pl.Decimal(18, 4), "dec38": pl.Decimal(38, 10)}
    schema |= {"ts": pl.String, "tstz": pl.String}
    return {name: schema[name] for name in ["id", *COLUMNS]}


def polars_frame_rows(df: Any, text_timestamps: bool) -> dict[int, dict[str, Any]]:
    """A Polars frame's rows; instants as epoch microseconds (ISO text parsed first)."""
    stamps = []
    for name in hard_values.TIMESTAMP_COLUMNS:
        column = pl.col(name)
        if text_timestamps:
            column = column.str.to_datetime(
                "%Y-%m-%dT%H:%M:%S%.fZ", time_unit="us", time_zone="UTC"
            )
        stamps.append(column.dt.epoch("us").alias(name))
    return canonical_rows(df.with_columns(stamps).to_dicts())


def polars_csv(path: Path, delimiter: str = ",") -> Any:
    return pl.read_csv(
        path,
        schema=polars_schema(),
        separator=delimiter,
        raise_if_empty=False,
    )


def pyarrow_csv_types() -> dict[str, pa.DataType]:
    return {
        "id": pa.int64(),
        "first name": pa.string(),
        "tiny": pa.int8(),
        "big": pa.int64(),
        "ubig": pa.uint64(),
        "huge": pa.decimal128(38, 0),
        "dec18": pa.decimal128(18, 4),
        "dec38": pa.decimal128(38, 10),
        "dbl": pa.float64(),
        "flag": pa.bool_(),
        "day": pa.date32(),
        "ts": pa.timestamp("us", tz="UTC"),
        "tstz": pa.timestamp("us", tz="UTC"),
        "ints": pa.string(),
        "rec": pa.string(),
    }


def pandas_csv(path: Path, delimiter: str = ",") -> Any:
    """pandas through pyarrow's CSV reader: the one pandas route that tells '' from NULL."""
    table = pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=pyarrow_csv_types(),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def pandas_frame_rows(df: Any) -> dict[int, dict[str, Any]]:
    """A pandas frame of Arrow-backed columns: values as its Arrow arrays hold them."""
    columns = {}
    for name in df.columns:
        array = pa.array(df[name])
        if name in hard_values.TIMESTAMP_COLUMNS:
            array = array.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        columns[name] = array.to_pylist()
    return canonical_rows(
        {name: values[i] for name, values in columns.items()} for i in range(len(df))
    )


def test_csv_comma_read_exactly_by_spark_polars_and_pandas(exported, spark):
    path, source = exported["files"]["csv_comma"], exported["source"]
    assert_exact(source, spark_rows(spark_csv(spark, path), nested_as_text=True), "Spark CSV")
    assert_exact(source, polars_frame_rows(polars_csv(path), text_timestamps=True), "Polars CSV")
    assert_exact(source, pandas_frame_rows(pandas_csv(path)), "pandas CSV")


def test_csv_semicolon_gzip_read_exactly(exported, spark):
    path, source = exported["files"]["csv_semicolon_gzip"], exported["source"]
    assert path.name.endswith(".csv.gz")
    spark_df = spark_csv(spark, path, delimiter=";")
    assert_exact(source, spark_rows(spark_df, nested_as_text=True), "Spark CSV gzip")
    polars_df = polars_csv(path, delimiter=";")
    assert_exact(source, polars_frame_rows(polars_df, text_timestamps=True), "Polars CSV gzip")
    assert_exact(source, pandas_frame_rows(pandas_csv(path, delimiter=";")), "pandas CSV gzip")


def test_csv_zstd_read_by_polars_and_pandas_but_not_by_spark(exported, spark, tmp_path):
    """Spark 3.5's Hadoop codec needs a native zstd library that the pyspark wheel lacks
    (docs/readers.md: decompress first, or use gzip for Spark)."""
    path, source = exported["files"]["csv_zstd"], exported["source"]
    assert path.name.endswith(".csv.zst")
    assert_exact(source, polars_frame_rows(polars_csv(path), text_timestamps=True), "Polars zstd")
    plain = tmp_path / "export.csv"
    with open(path, "rb") as compressed:
        plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(compressed).read())
    assert_exact(source, pandas_frame_rows(pandas_csv(plain)), "pandas zstd (decompressed)")
    with pytest.raises(Exception, match="zstd"):
        spark_csv(spark, path).collect()


# -- JSON ----------------------------------------------------------------------------------


def spark_json(spark: Any, path: Path, multi_line: bool) -> Any:
    return (
        spark.read.schema(spark_ddl(nested_as_text=False))
        .option("multiLine", multi_line)
        .option("mode", "FAILFAST")
        .json(str(path))
    )


def test_json_read_exactly_by_spark_polars_and_pandas(exported, spark):
    expected = json_expected(exported["source"])
    for name, multi_line in (("json_array", True), ("json_lines", False)):
        path = exported["files"][name]
        rows = spark_rows(spark_json(spark, path, multi_line), nested_as_text=False)
        assert_exact(expected, rows, f"Spark {name}")
        if multi_line:
            # Polars reads JSON numbers as Float64 before a Decimal schema applies: the
            # decimals lose digits (docs/readers.md), every other column is exact.
            polars_df = pl.read_json(path, schema=polars_json_schema())
            decimals = {"dec18", "dec38"}
            assert_exact(
                drop(expected, decimals),
                drop(polars_frame_rows(polars_df, text_timestamps=True), decimals),
                f"Polars {name} (without decimals)",
            )
        else:  # JSON lines: exact through pyarrow's reader
            polars_df = pl.from_arrow(arrow_json(path))
            rows = polars_frame_rows(polars_df, text_timestamps=False)
            assert_exact(expected, rows, f"Polars {name} via pyarrow")
        # pandas: Python's json with Decimal, kept as objects (a numeric dtype would turn a
        # column of ints and NULLs into float64); JSON lines also typed through pyarrow.
        with open(path, encoding="utf-8") as f:
            records = (
                json.load(f, parse_float=Decimal)
                if multi_line
                else [json.loads(line, parse_float=Decimal) for line in f]
            )
        pandas_df = pd.DataFrame(records, dtype=object)
        assert_exact(expected, pandas_json_rows(pandas_df), f"pandas {name}")
        if not multi_line:
            typed = arrow_json(path).to_pandas(types_mapper=pd.ArrowDtype)
            assert_exact(expected, pandas_frame_rows(typed), f"pandas {name} via pyarrow")


def polars_json_schema() -> dict[str, Any]:
    return polars_schema() | {
        "ints": pl.List(pl.Int32),
        "rec": pl.Struct({"a": pl.Int32, "b": pl.String}),
    }


def arrow_json(path: Path) -> pa.Table:
    """JSON lines through pyarrow's reader with an explicit schema: decimals exact."""
    types = pyarrow_csv_types() | {
        "ints": pa.list_(pa.int32()),
        "rec": pa.struct([("a", pa.int32()), ("b", pa.string())]),
    }
    types["day"] = pa.string()  # Arrow's JSON reader takes dates as numbers: cast the text
    schema = pa.schema(list(types.items()))
    table = pa_json.read_json(path, parse_options=pa_json.ParseOptions(explicit_schema=schema))
    index = table.schema.get_field_index("day")
    return table.set_column(index, "day", table.column("day").cast(pa.date32()))


def drop(rows: dict[int, dict[str, Any]], columns: set[str]) -> dict[int, dict[str, Any]]:
    return {k: {c: v for c, v in row.items() if c not in columns} for k, row in rows.items()}


def pandas_json_rows(df: Any) -> dict[int, dict[str, Any]]:
    """The pandas recipe for JSON keeps the parsed Python values (Decimal, int); text values
    become dates and instants here as a pandas user's `pd.to_datetime` would."""
    rows = []
    for record in df.to_dict(orient="records"):
        row = {}
        for name, value in record.items():
            if value is None or (isinstance(value, float) and value != value):
                row[name] = None if name != "dbl" else value
                continue
            if name in hard_values.TIMESTAMP_COLUMNS:
                instant = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=timezone.utc
                )
                delta = instant - datetime(1970, 1, 1, tzinfo=timezone.utc)
                value = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            elif name == "day":
                value = datetime.strptime(value, "%Y-%m-%d").date()
            elif name == "dbl" and isinstance(value, (Decimal, int)):
                value = float(value)
            row[name] = value
        rows.append(row)
    return canonical_rows(rows)


# -- Parquet -------------------------------------------------------------------------------


def test_parquet_read_exactly_with_spark_defaults_polars_and_pandas(exported, spark):
    path, source = exported["files"]["parquet"], exported["source"]
    spark_df = spark.read.parquet(str(path))  # no option: the file tells Spark its calendar
    assert dict(spark_df.dtypes)["ubig"] == "decimal(20,0)"
    assert_exact(source, spark_rows(spark_df, nested_as_text=False), "Spark Parquet")
    polars_df = pl.read_parquet(path)
    assert_exact(source, polars_frame_rows(polars_df, text_timestamps=False), "Polars Parquet")
    pandas_df = pd.read_parquet(path, dtype_backend="pyarrow")
    assert_exact(source, pandas_frame_rows(pandas_df), "pandas Parquet")


def test_spark_defaults_read_ancient_dates_from_parquet(exported, spark):
    """Spark's default `datetimeRebaseModeInRead` (EXCEPTION) refuses a file without the
    calendar key as soon as it holds a date before 1582-10-15; ours carry the key."""
    from pyspark.sql import functions as F

    path = exported["files"]["parquet"]
    assert spark.conf.get("spark.sql.parquet.datetimeRebaseModeInRead") == "EXCEPTION"
    df = spark.read.parquet(str(path)).where(F.col("id") <= hard_values.HARD_ROWS)
    days = {row["day"] for row in df.select("day").collect()}
    assert datetime(1, 1, 1).date() in days and datetime(1582, 10, 4).date() in days
    micros = {row[0] for row in df.select(F.unix_micros("ts")).collect()}
    assert -62135596800000000 in micros  # 0001-01-01T00:00:00Z, not shifted by two days


def test_a_parquet_file_without_the_calendar_key_fails_on_spark_defaults(exported, spark, tmp_path):
    """The control: the same rows rewritten without key-value metadata (what DuckDB's COPY
    writes by default) fail on Spark's defaults, so the test above proves the key works."""
    import duckdb

    bare = tmp_path / "bare.parquet"
    duckdb.sql(
        f"COPY (SELECT day FROM read_parquet('{exported['files']['parquet']}')) "
        f"TO '{bare}' (FORMAT parquet)"
    )
    with pytest.raises(Exception, match="READ_ANCIENT_DATETIME|datetimeRebaseModeInRead"):
        spark.read.parquet(str(bare)).collect()


# -- DIFFERENCE folders --------------------------------------------------------------------


def test_difference_folder_read_by_spark_polars_and_pandas_with_a_glob(exported, spark):
    """A folder of difference files and their manifests: a glob keeps the manifests out,
    and `change_column` says each row's change kind, whichever file it came from."""
    from pyspark.sql import functions as F

    folder = exported["diff"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "20250414_hard_added.parquet",  # a full run: every row; the other two files are empty
        "20250414_hard_manifest.json",
        "20250414_hard_removed.parquet",
        "20250414_hard_updated.parquet",
        "20250415_hard_added.parquet",
        "20250415_hard_manifest.json",
        "20250415_hard_removed.parquet",
        "20250415_hard_updated.parquet",
    ]
    changed = exported["changed"]
    expected = {2: "updated", 3: "updated", 4: "removed", 100000: "added"}
    df = (
        spark.read.option("pathGlobFilter", "20250415_hard_*.parquet")
        .parquet(str(folder))
        .withColumn("file", F.input_file_name())
    )
    rows = df.select("id", "first name", "_change", "file").collect()
    assert {r["id"]: r["_change"] for r in rows} == expected
    assert all(r["file"].endswith(f"_{r['_change']}.parquet") for r in rows)
    assert {r["id"]: r["first name"] for r in rows if r["id"] != 4} == {
        i: changed[i]["first name"] for i in (2, 3, 100000)
    }
    # Without the filter Spark reads the manifests as Parquet and fails.
    with pytest.raises(Exception, match="manifest.json"):
        spark.read.parquet(str(folder)).collect()
    # The first day: every row, each marked added.
    first = spark.read.option("pathGlobFilter", "20250414_hard_*.parquet").parquet(str(folder))
    assert first.groupBy("_change").count().collect() == [("added", len(exported["source"]))]
    polars_df = pl.read_parquet(folder / "20250415_hard_*.parquet")
    assert dict(zip(polars_df["id"], polars_df["_change"], strict=True)) == expected
    pandas_df = pd.read_parquet(
        [folder / f"20250415_hard_{k}.parquet" for k in ("added", "updated", "removed")]
    )
    assert dict(zip(pandas_df["id"], pandas_df["_change"], strict=True)) == expected


# -- XML -----------------------------------------------------------------------------------


def test_xml_read_by_pandas_with_nested_json_and_non_finite_doubles(exported):
    """pandas.read_xml reads the elements; `NaN`/`Infinity`/`-Infinity` become floats and
    nested values are JSON text. (It cannot tell `xsi:nil` from an empty element, nor keep a
    string such as 'NaN': docs/readers.md gives the exact route.)"""
    path = exported["files"]["xml"]
    text = {"first_name": str, "ints": str, "rec": str}
    df = pd.read_xml(path, parser="etree", dtype=text | {"dbl": "float64"})
    source = exported["source"]
    assert list(df.columns) == ["id", "first_name", *list(COLUMNS)[1:]]
    by_id = df.set_index("id")
    for key in range(1, hard_values.HARD_ROWS + 1):
        for name in hard_values.NESTED_COLUMNS:
            value = by_id.loc[key, name]
            expected = source[key][name]
            assert (None if pd.isna(value) else json.loads(value)) == expected, (key, name)
        dbl = by_id.loc[key, "dbl"]
        assert hard_values.same(
            source[key]["dbl"] if source[key]["dbl"] is not None else float("nan"), float(dbl)
        ), (key, dbl)
