"""What to write (`FormatSpec`) and what was written (`WrittenFile`, `WriteResult`).

These are the only types the export asset needs; they know nothing about Dagster or Azure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from azexport_assets import naming

if TYPE_CHECKING:
    from azexport_assets.config import ActivationConfig

FormatName = Literal["csv", "json", "xml", "parquet"]

_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
    "xml": "application/xml",
    "parquet": "application/vnd.apache.parquet",
}
_COMPRESSED_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd"}


@dataclass(frozen=True)
class FormatSpec:
    """The byte-level shape of an export file: format, its options and text compression."""

    format: FormatName
    csv_delimiter: str = ","
    csv_header: bool = True
    json_style: Literal["array", "lines"] = "array"
    xml_root: str = "rows"
    xml_row: str = "row"
    parquet_compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    compression: Literal["none", "gzip", "zstd"] = "none"  # text formats only

    def __post_init__(self) -> None:
        if self.format not in ("csv", "json", "xml", "parquet"):
            raise ValueError(f"unknown format {self.format!r}")
        if len(self.csv_delimiter) != 1 or self.csv_delimiter in {'"', "\r", "\n"}:
            raise ValueError(f"{self.csv_delimiter!r} is not a valid CSV delimiter")
        if self.format == "parquet" and self.compression != "none":
            raise ValueError("text compression does not apply to Parquet")

    @classmethod
    def from_activation(cls, activation: ActivationConfig) -> FormatSpec:
        """The spec an activation's options describe (config has validated them)."""
        return cls(
            format=activation.format,
            csv_delimiter=activation.csv.delimiter,
            csv_header=activation.csv.header,
            json_style=activation.json_options.style,
            xml_root=activation.xml.root,
            xml_row=activation.xml.row,
            parquet_compression=activation.parquet.compression,
            compression=activation.compression,
        )

    @property
    def extension(self) -> str:
        """'.csv', '.json', '.jsonl', '.xml', '.parquet', plus '.gz' / '.zst'."""
        return naming.extension(self.format, self.json_style, self.compression)

    @property
    def content_type(self) -> str:
        """The MIME type of the *uncompressed* content (see `stored_content_type`)."""
        key = "jsonl" if self.format == "json" and self.json_style == "lines" else self.format
        return _CONTENT_TYPES[key]

    @property
    def stored_content_type(self) -> str:
        """The MIME type of the file's bytes as stored: `content_type`, or for a `.gz` / `.zst`
        file application/gzip / application/zstd.

        Blobs declare no Content-Encoding by default: `Content-Encoding: gzip` makes browsers
        and some HTTP clients decompress transparently on download, so the bytes received would
        differ from the blob (and its MD5) and the file name's `.gz` would lie. An activation
        may still declare it (`blob_properties.content_encoding`); the blob's Content-Type is
        then `content_type`.
        """
        return _COMPRESSED_TYPES.get(self.compression, self.content_type)


@dataclass(frozen=True)
class WrittenFile:
    """One local file: its path, exact row count, size in bytes and MD5 (hex) of its bytes."""

    path: Path
    rows: int
    bytes: int
    md5_hex: str


@dataclass(frozen=True)
class WriteResult:
    """Everything `write_export` wrote, in part order."""

    files: list[WrittenFile]  # in part order; exactly one file when no split happened
    columns: list[tuple[str, str]]  # (destination column name, DuckDB type) in order
    xml_removed_chars: int = 0  # XML-forbidden characters removed (for a WARN check)
    # column name -> XML element name, only where they differ
    xml_element_names: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)
