"""The record schema every source produces, and the quarantine schema for what it rejects.

A *record* is one image plus its label and slice metadata. Sources yield
:class:`ImageRecord` objects; the ``source_images`` asset writes them as a Parquet
manifest with :data:`MANIFEST_SCHEMA`, and stores the image bytes as files next to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import pyarrow as pa

WEATHERS = ("clear", "rain", "snow", "fog")
TIMES_OF_DAY = ("day", "night", "dawn", "dusk")
UNKNOWN = "unknown"


def time_of_day(hour: int | None) -> str:
    """Slice of the seed plan: day 8–18, dusk 18–20, night 20–6, dawn 6–8 (hour in 0..23)."""
    if hour is None or hour < 0:
        return UNKNOWN
    if 8 <= hour < 18:
        return "day"
    if 18 <= hour < 20:
        return "dusk"
    if 6 <= hour < 8:
        return "dawn"
    return "night"


@dataclass
class ImageRecord:
    """One image and what we know about it.

    ``image_bytes`` holds the encoded image (JPEG/PNG) as it will be stored; it is not
    written to the manifest. ``label`` is the observed (possibly noisy) label, 0 or 1;
    ``true_label`` is known only for synthetic data (-1 otherwise).
    """

    record_id: str
    source: str
    label: int
    image_bytes: bytes = field(repr=False)
    hour: int = -1
    weather: str = UNKNOWN
    camera_id: str = UNKNOWN
    sequence_id: str = UNKNOWN
    group_id: str = ""
    true_label: int = -1
    origin: str = ""  # original path / URL / parquet row, for provenance
    tags: str = "{}"  # JSON object of source-specific metadata

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"{self.record_id}: label must be 0 or 1, got {self.label!r}")
        if not self.group_id:
            self.group_id = (
                f"{self.source}:{self.sequence_id}"
                if self.sequence_id != UNKNOWN
                else f"{self.source}:{self.record_id}"
            )


MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the manifest's directory
        pa.field("label", pa.int8(), nullable=False),
        pa.field("true_label", pa.int8(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("phash", pa.uint64(), nullable=False),  # 64-bit DCT perceptual hash
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("hour", pa.int8(), nullable=False),
        pa.field("time_of_day", pa.string(), nullable=False),
        pa.field("weather", pa.string(), nullable=False),
        pa.field("camera_id", pa.string(), nullable=False),
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("tags", pa.string(), nullable=False),
    ],
    metadata={"roadwork.schema": "manifest/1"},
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("origin", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={"roadwork.schema": "quarantine/1"},
)

SPLITS_SCHEMA = pa.schema(
    list(MANIFEST_SCHEMA)
    + [pa.field("split", pa.string(), nullable=False), pa.field("manifest_dir", pa.string(), nullable=False)],
    metadata={"roadwork.schema": "splits/1"},
)


@dataclass
class Quarantined:
    source: str
    origin: str
    reason: str


def quarantine_table(items: Iterable[Quarantined]) -> pa.Table:
    rows = [asdict(q) for q in items]
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def validate_table(table: pa.Table, schema: pa.Schema) -> None:
    """Raise ``ValueError`` naming the first column that differs from ``schema``."""
    for f in schema:
        if f.name not in table.column_names:
            raise ValueError(f"table lacks column {f.name!r} of schema {schema.metadata.get(b'roadwork.schema')}")
        got = table.schema.field(f.name).type
        if got != f.type:
            raise ValueError(f"column {f.name!r} has type {got}, schema says {f.type}")
        if not f.nullable and table.column(f.name).null_count:
            raise ValueError(f"column {f.name!r} has {table.column(f.name).null_count} nulls")
