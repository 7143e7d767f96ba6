"""NATIX roadwork (Hugging Face ``natix-network-org/roadwork``): Parquet shards, read in batches.

Layouts accepted for the source path (see :func:`find_natix_parquet`):

* the dataset root with ``data/train-*.parquet``, ``data/test-*.parquet``;
* a directory that directly holds the ``*.parquet`` shards, or one shard file;
* a Hugging Face cache entry ``datasets--natix-network-org--roadwork`` (or its
  ``snapshots`` dir): the revision named by ``refs/main``, else the newest snapshot.

Columns (DATA_FORMATS.md): ``image`` (struct ``{bytes, path}``; raw bytes, a path string or a
PIL image are accepted too), ``id``, ``gps`` (string), ``city_name``, ``scene_description``,
``video_info.{frame_id,seq_id,vid_id}`` and ``scene_level_tags.{daytime,scene_environment,
travel_alteration,weather}`` (flattened columns, or struct columns) whose values are
stringified lists like ``"['Sunny']"`` (parsed with ``ast.literal_eval``, never ``eval``),
``label`` (int64).

The subnet's consistency filter (``SourceConfig.natix_consistency_filter``) drops rows whose
``scene_description`` is non-empty while ``label == 0`` or empty while ``label == 1``; the
drops are counted in ``stats``.
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, MutableMapping
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from roadwork_ml.config import SourceConfig
from roadwork_ml.data.records import UNKNOWN, ImageRecord, Quarantined
from roadwork_ml.data.splitting import gps_cell

SPLIT_ORDER = {"train": 0, "validation": 1, "val": 1, "test": 2}
BATCH_SIZE = 32  # rows per Arrow batch: each row carries a full-size image (~1 MB)
MAX_TAG_CHARS = 4096  # longer "stringified lists" are not parsed

# tag (lower case, '_'/'-' as space) → records.WEATHERS; several tags: the most severe wins
_WEATHER_TAGS = {
    "clear": ("sunny", "clear", "cloudy", "overcast", "partly cloudy", "mostly cloudy", "fair", "dry", "sun", "clouds"),
    "rain": ("rainy", "rain", "drizzle", "wet", "storm", "stormy", "thunderstorm", "showers", "raining"),
    "snow": ("snowy", "snow", "sleet", "hail", "icy", "ice", "snowing"),
    "fog": ("foggy", "fog", "haze", "hazy", "mist", "misty", "smog", "smoke", "smoky"),
}
WEATHER_TAG_MAP = {tag: weather for weather, tags in _WEATHER_TAGS.items() for tag in tags}
_WEATHER_SEVERITY = ("snow", "fog", "rain", "clear")

# daytime tag → a representative hour (records.time_of_day maps it back to the slice)
DAYTIME_HOURS = {
    "day": 12,
    "daytime": 12,
    "daylight": 12,
    "noon": 12,
    "midday": 12,
    "morning": 10,
    "afternoon": 15,
    "night": 23,
    "nighttime": 23,
    "night time": 23,
    "dark": 23,
    "midnight": 0,
    "dawn": 7,
    "sunrise": 7,
    "early morning": 7,
    "dusk": 19,
    "sunset": 19,
    "twilight": 19,
    "evening": 19,
}

_FLOAT = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


# ---------------------------------------------------------------------------------------
# value helpers (shared with the ROADWork reader)


def is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null")


def _norm_tag(tag: str) -> str:
    return " ".join(tag.strip().lower().replace("_", " ").replace("-", " ").split())


def parse_tag_list(value: object) -> list[str]:
    """``"['Sunny', 'Cloudy']"`` / ``['Sunny']`` / ``"Sunny"`` / None → ``['Sunny', 'Cloudy']`` etc.

    Strings are parsed with :func:`ast.literal_eval` (literals only, never code); anything
    that does not parse is split on commas after stripping brackets and quotes.
    """
    if is_missing(value):
        return []
    if isinstance(value, (list, tuple, set)):
        return [str(v).strip() for v in value if not is_missing(v)]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / arrow arrays
        return parse_tag_list(value.tolist())
    text = str(value).strip()
    if len(text) > MAX_TAG_CHARS:
        return []
    if text[:1] in "[(":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            parsed = None
        if isinstance(parsed, (list, tuple, set)):
            return [str(v).strip() for v in parsed if not is_missing(v) and not isinstance(v, (list, tuple, dict))]
        text = text.strip("[]()")
    parts = [p.strip().strip("'\"").strip() for p in text.split(",")]
    return [p for p in parts if p]


def map_weather(tags: Iterable[str]) -> str:
    """Weather tags → one of records.WEATHERS (the most severe one present) or 'unknown'."""
    found = {WEATHER_TAG_MAP.get(_norm_tag(t)) for t in tags}
    for weather in _WEATHER_SEVERITY:
        if weather in found:
            return weather
    return UNKNOWN


def map_daytime(tags: Iterable[str]) -> int:
    """Daytime tags (Day/Night/Dawn/Dusk ...) → a representative hour, -1 when unknown."""
    for tag in tags:
        hour = DAYTIME_HOURS.get(_norm_tag(tag))
        if hour is not None:
            return hour
    return -1


def parse_gps(value: object) -> tuple[float, float] | None:
    """A GPS value (``"40.44, -79.99"``, ``"[40.44, -79.99]"``, ``"{'lat': .., 'lon': ..}"``,
    a list or a dict) → ``(lat, lon)``; None when it does not hold two valid coordinates."""
    if is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_TAG_CHARS:
            return None
        parsed: Any = None
        if text[:1] in "[({":
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                parsed = None
        if parsed is not None:
            return parse_gps(parsed)
        numbers = [float(m) for m in _FLOAT.findall(text)]
    elif isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        lat = next((lowered[k] for k in ("lat", "latitude") if k in lowered), None)
        lon = next((lowered[k] for k in ("lon", "lng", "long", "longitude") if k in lowered), None)
        if lat is None or lon is None:
            return None
        numbers = [lat, lon]
    elif isinstance(value, (list, tuple)):
        numbers = list(value)
    else:
        return None
    try:
        nums = [float(v) for v in numbers[:2]]
    except (TypeError, ValueError):
        return None
    if len(nums) < 2 or not all(math.isfinite(v) for v in nums):
        return None
    lat, lon = nums
    if abs(lat) > 90 and abs(lon) <= 90:  # stored as (lon, lat)
        lat, lon = lon, lat
    if abs(lat) > 90 or abs(lon) > 180 or (lat == 0.0 and lon == 0.0):
        return None
    return lat, lon


def nested_get(row: dict, parent: str, child: str) -> Any:
    """``row['parent.child']`` (flattened column) or ``row['parent'][child]`` (struct / stringified dict)."""
    flat = f"{parent}.{child}"
    if flat in row:
        return row[flat]
    value = row.get(parent)
    if isinstance(value, str) and value.strip().startswith("{") and len(value) <= MAX_TAG_CHARS:
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    if isinstance(value, dict):
        return value.get(child)
    return None


def _id_text(value: object) -> str | None:
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def scene_metadata(row: dict, source: str, gps_cell_deg: float) -> dict[str, Any]:
    """hour, weather, sequence_id, group_id and tags of a flattened ROADWork/NATIX image entry."""
    daytime = parse_tag_list(nested_get(row, "scene_level_tags", "daytime"))
    weather_tags = parse_tag_list(nested_get(row, "scene_level_tags", "weather"))
    environment = parse_tag_list(nested_get(row, "scene_level_tags", "scene_environment"))
    alteration = parse_tag_list(nested_get(row, "scene_level_tags", "travel_alteration"))
    seq = _id_text(nested_get(row, "video_info", "seq_id"))
    vid = _id_text(nested_get(row, "video_info", "vid_id"))
    frame = _id_text(nested_get(row, "video_info", "frame_id"))
    city = None if is_missing(row.get("city_name")) else str(row["city_name"]).strip()
    gps = parse_gps(row.get("gps"))

    sequence_id, group_id = UNKNOWN, ""
    if seq is not None or vid is not None:
        key = f"seq{seq}" if seq is not None else f"vid{vid}"
        sequence_id = f"{city}/{key}" if city else key
    elif gps is not None:
        cell = gps_cell(gps[0], gps[1], gps_cell_deg)
        group_id = f"{source}:{city or 'cell'}:{cell}"
    tags = {
        k: v
        for k, v in {
            "city_name": city,
            "scene_description": None if is_missing(row.get("scene_description")) else str(row["scene_description"]),
            "daytime": daytime or None,
            "weather": weather_tags or None,
            "scene_environment": environment or None,
            "travel_alteration": alteration or None,
            "gps": list(gps) if gps else None,
            "seq_id": seq,
            "vid_id": vid,
            "frame_id": frame,
        }.items()
        if v is not None
    }
    return {
        "hour": map_daytime(daytime),
        "weather": map_weather(weather_tags),
        "sequence_id": sequence_id,
        "group_id": group_id,
        "tags": tags,
    }


def consistency_violation(scene_description: object, label: int) -> str | None:
    """The subnet cache's rule: a description means roadwork. Returns the violated case or None."""
    has_desc = not is_missing(scene_description) and bool(str(scene_description).strip())
    if has_desc and label == 0:
        return "description_label0"
    if not has_desc and label == 1:
        return "empty_description_label1"
    return None


class _LazyImage:
    """An Arrow image cell converted to Python only when the row is kept."""

    __slots__ = ("column", "index")

    def __init__(self, column: pa.Array, index: int) -> None:
        self.column, self.index = column, index

    def value(self) -> object:
        return self.column[self.index].as_py()


def image_value_bytes(value: object, base_dir: Path | None = None) -> tuple[bytes | None, str]:
    """The encoded bytes of an ``image`` cell: struct {bytes, path}, raw bytes, a path or a PIL image.

    Returns ``(bytes or None, why-not)``.
    """
    if isinstance(value, _LazyImage):
        value = value.value()
    if value is None:
        return None, "image is null"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), ""
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is not None and len(data):
            return bytes(data), ""
        path = value.get("path")
        if path:
            return image_value_bytes(str(path), base_dir)
        return None, "image struct has neither bytes nor path"
    if isinstance(value, str):
        candidate = Path(value).expanduser()
        if not candidate.is_absolute() and base_dir is not None:
            candidate = base_dir / candidate
        try:
            return candidate.read_bytes(), ""
        except OSError as exc:
            return None, f"image path {value!r} unreadable: {exc}"
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image (datasets' Image feature)
        buf = io.BytesIO()
        fmt = getattr(value, "format", None) or "PNG"
        value.save(buf, format=fmt if fmt in ("JPEG", "PNG", "WEBP") else "PNG")
        return buf.getvalue(), ""
    return None, f"image cell of type {type(value).__name__} is not bytes, a struct, a path or a PIL image"


# ---------------------------------------------------------------------------------------
# rows → records


def natix_rows_to_records(
    rows: Iterable[tuple[str, dict]],
    source: str,
    consistency_filter: bool,
    stats: MutableMapping[str, int],
    gps_cell_deg: float = 0.01,
    base_dir: Path | None = None,
) -> Iterator[ImageRecord | Quarantined]:
    """``(origin, row dict)`` pairs (from Parquet or a ``datasets`` split) → records.

    ``row['hf_split']`` (set by the Parquet reader) names the shard's split.
    """
    seen: set[str] = set()
    for origin, row in rows:
        stats["rows"] = stats.get("rows", 0) + 1
        raw_label = row.get("label")
        try:
            label = int(raw_label)
        except (TypeError, ValueError):
            label = -1
        if label not in (0, 1):
            yield Quarantined(source=source, origin=origin, reason=f"bad_label: {raw_label!r}")
            continue
        if consistency_filter:
            violation = consistency_violation(row.get("scene_description"), label)
            if violation:
                stats["consistency_dropped"] = stats.get("consistency_dropped", 0) + 1
                key = f"consistency_dropped_{violation}"
                stats[key] = stats.get(key, 0) + 1
                continue
        data, why = image_value_bytes(row.get("image"), base_dir)
        if data is None:
            yield Quarantined(source=source, origin=origin, reason=f"no_image_bytes: {why}")
            continue
        meta = scene_metadata(row, source, gps_cell_deg)
        split = row.get("hf_split") or "data"
        rid = _id_text(row.get("id"))
        record_id = f"{source}:{split}:{rid}" if rid is not None else f"{source}:{origin}"
        if record_id in seen:
            stats["duplicate_ids"] = stats.get("duplicate_ids", 0) + 1
            record_id = f"{record_id}@{origin}"
        seen.add(record_id)
        meta["tags"]["hf_split"] = split
        yield ImageRecord(
            record_id=record_id,
            source=source,
            label=label,
            image_bytes=data,
            hour=meta["hour"],
            weather=meta["weather"],
            sequence_id=meta["sequence_id"],
            group_id=meta["group_id"],
            origin=origin,
            tags=json.dumps(meta["tags"], sort_keys=True, default=str),
        )


# ---------------------------------------------------------------------------------------
# Parquet discovery and streaming


def _shard_key(path: Path) -> tuple[int, str]:
    split = path.name.split("-", 1)[0].split(".", 1)[0].lower()
    return SPLIT_ORDER.get(split, 9), path.name


def _snapshot_dir(cache_dir: Path) -> Path | None:
    """The snapshot to read in a HF cache entry (``refs/main`` first, else the newest)."""
    snapshots = cache_dir / "snapshots" if (cache_dir / "snapshots").is_dir() else cache_dir
    if not snapshots.is_dir():
        return None
    ref = cache_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snapshots / rev).is_dir():
            return snapshots / rev
    revs = [p for p in snapshots.iterdir() if p.is_dir()]
    return max(revs, key=lambda p: p.stat().st_mtime) if revs else None


def find_natix_parquet(root: str | Path) -> list[Path]:
    """The Parquet shards under a NATIX source path, train before test (see module doc)."""
    root = Path(root).expanduser()
    if root.is_file():
        if root.suffix.lower() != ".parquet":
            raise ValueError(f"NATIX source {root} is a file but not a .parquet shard")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"NATIX source {root} does not exist")
    for folder in (root / "data", root):
        shards = sorted((p for p in folder.glob("*.parquet") if p.is_file()), key=_shard_key)
        if shards:
            return shards
    if (root / "snapshots").is_dir() or root.name == "snapshots":
        cache_dir = root if (root / "snapshots").is_dir() else root.parent
        snap = _snapshot_dir(cache_dir)
        if snap is not None:
            return find_natix_parquet(snap)
    raise FileNotFoundError(
        f"NATIX source {root}: no data/*.parquet, *.parquet or HF cache snapshots/<rev>/data/*.parquet found; "
        "point the source path at the dataset root (the folder holding data/train-*.parquet)"
    )


def _batch_rows(batch: pa.RecordBatch, shard: Path, root: Path, start: int) -> Iterator[tuple[str, dict]]:
    names = batch.schema.names
    columns = {name: batch.column(i) for i, name in enumerate(names)}
    image_col = columns.pop("image", None)
    plain = {name: col.to_pylist() for name, col in columns.items()}
    split = _shard_key(shard)[0]
    split_name = shard.name.split("-", 1)[0].split(".", 1)[0] if split != 9 else "data"
    try:
        rel = shard.relative_to(root).as_posix()
    except ValueError:
        rel = shard.name
    for i in range(batch.num_rows):
        row = {name: values[i] for name, values in plain.items()}
        # the image cell is converted row by row: rows the filter drops never copy their bytes
        row["image"] = _LazyImage(image_col, i) if image_col is not None else None
        row["hf_split"] = split_name
        yield f"{rel}#row={start + i}", row


def _iter_natix(
    shards: list[Path],
    root: Path,
    source: str,
    consistency_filter: bool,
    stats: MutableMapping[str, int],
    gps_cell_deg: float,
) -> Iterator[ImageRecord | Quarantined]:
    def rows() -> Iterator[tuple[str, dict]]:
        for shard in shards:
            pf = pq.ParquetFile(shard)
            if "label" not in pf.schema_arrow.names:
                raise ValueError(f"NATIX shard {shard} has no 'label' column; columns: {pf.schema_arrow.names}")
            stats["shards"] = stats.get("shards", 0) + 1
            start = 0
            for batch in pf.iter_batches(batch_size=BATCH_SIZE):
                yield from _batch_rows(batch, shard, root, start)
                start += batch.num_rows

    yield from natix_rows_to_records(rows(), source, consistency_filter, stats, gps_cell_deg, base_dir=root)


def read_natix(
    root: str | Path,
    source: str,
    cfg: SourceConfig | None = None,
    stats: MutableMapping[str, int] | None = None,
    gps_cell_deg: float = 0.01,
    max_images: int | None = None,
) -> Iterator[ImageRecord | Quarantined]:
    """Stream NATIX records from Parquet shards, batch by batch (the full set is ~10 GB)."""
    root = Path(root).expanduser()
    shards = find_natix_parquet(root)
    base = root if root.is_dir() else root.parent
    stats = stats if stats is not None else {}
    consistency_filter = cfg.natix_consistency_filter if cfg is not None else True
    limit = max_images if max_images is not None else (cfg.max_images if cfg is not None else None)
    return islice(_iter_natix(shards, base, source, consistency_filter, stats, gps_cell_deg), limit)
