"""Manifest: a CSV or Parquet table of ``path`` + ``label`` (+ optional metadata).

``path`` is relative to the manifest's directory, or absolute. Optional columns:
``hour`` (0..23), ``weather`` (one of records.WEATHERS or a tag that maps to one),
``camera_id``, ``sequence_id``, ``group_id`` and ``record_id``. The source path may name
the file, or a directory holding ``manifest.parquet`` / ``manifest.csv`` / ``labels.csv``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, MutableMapping
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq

from roadwork_ml.config import SourceConfig
from roadwork_ml.data.readers.image_folder import parse_label
from roadwork_ml.data.readers.natix import map_weather
from roadwork_ml.data.records import UNKNOWN, ImageRecord, Quarantined

MANIFEST_NAMES = ("manifest.parquet", "manifest.csv", "labels.parquet", "labels.csv")
REQUIRED_COLUMNS = ("path", "label")
KNOWN_COLUMNS = ("path", "label", "hour", "weather", "camera_id", "sequence_id", "group_id", "record_id")


def find_manifest(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"manifest directory {path} holds none of {MANIFEST_NAMES}")
    raise FileNotFoundError(f"manifest {path} does not exist")


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null")


def _hour(value: object) -> int:
    if _missing(value):
        return -1
    try:
        hour = int(float(value))  # "7", "7.0", 7
    except (TypeError, ValueError):
        return -1
    return hour if 0 <= hour <= 23 else -1


def _text(value: object) -> str:
    return UNKNOWN if _missing(value) else str(value).strip()


def _rows(manifest: Path, batch_size: int = 1024) -> Iterator[dict]:
    suffix = manifest.suffix.lower()
    if suffix in (".parquet", ".pq"):
        pf = pq.ParquetFile(manifest)
        names = pf.schema_arrow.names
        _check_columns(manifest, names)
        columns = [c for c in names if c != "image"]  # never pull embedded image bytes of a foreign table
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield from batch.to_pylist()
    elif suffix in (".csv", ".tsv", ".txt"):
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            _check_columns(manifest, reader.fieldnames or [])
            yield from reader
    else:
        raise ValueError(f"manifest {manifest}: unsupported file type {suffix!r}; use .csv, .tsv or .parquet")


def _check_columns(manifest: Path, names: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"manifest {manifest} lacks column(s) {missing}; it has {list(names)}")


def _iter_manifest(manifest: Path, source: str, stats: MutableMapping[str, int]) -> Iterator[ImageRecord | Quarantined]:
    base = manifest.parent
    seen: set[str] = set()
    for i, row in enumerate(_rows(manifest)):
        origin_row = f"{manifest}#row={i}"
        raw_path = row.get("path")
        if _missing(raw_path):
            yield Quarantined(source=source, origin=origin_row, reason="bad_row: empty path")
            continue
        path = Path(str(raw_path).strip()).expanduser()
        if not path.is_absolute():
            path = base / path
        try:
            label = parse_label(row.get("label"))
        except ValueError as exc:
            yield Quarantined(source=source, origin=str(path), reason=f"bad_label: {exc}")
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            yield Quarantined(
                source=source, origin=str(path), reason=f"missing_file: {raw_path} (row {i} of {manifest.name})"
            )
            continue
        except OSError as exc:
            yield Quarantined(source=source, origin=str(path), reason=f"unreadable: {exc}")
            continue
        record_id = _text(row.get("record_id"))
        if record_id == UNKNOWN:
            record_id = f"{source}:{raw_path}"
        if record_id in seen:
            stats["duplicate_entries"] = stats.get("duplicate_entries", 0) + 1
            record_id = f"{record_id}#{i}"
        seen.add(record_id)
        weather = _text(row.get("weather"))
        extra = {
            k: v
            for k, v in row.items()
            if k not in KNOWN_COLUMNS and not _missing(v) and isinstance(v, (str, int, float, bool))
        }
        yield ImageRecord(
            record_id=record_id,
            source=source,
            label=label,
            image_bytes=data,
            hour=_hour(row.get("hour")),
            weather=map_weather([weather]) if weather != UNKNOWN else UNKNOWN,
            camera_id=_text(row.get("camera_id")),
            sequence_id=_text(row.get("sequence_id")),
            group_id="" if _missing(row.get("group_id")) else f"{source}:{str(row['group_id']).strip()}",
            origin=str(path),
            tags=json.dumps(extra, sort_keys=True, default=str),
        )


def read_manifest(
    path: str | Path,
    source: str,
    cfg: SourceConfig | None = None,
    stats: MutableMapping[str, int] | None = None,
    max_images: int | None = None,
) -> Iterator[ImageRecord | Quarantined]:
    """Stream records from a CSV/Parquet manifest; missing files come back quarantined."""
    manifest = find_manifest(path)
    stats = stats if stats is not None else {}
    limit = max_images if max_images is not None else (cfg.max_images if cfg is not None else None)
    return islice(_iter_manifest(manifest, source, stats), limit)
