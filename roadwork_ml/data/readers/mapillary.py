"""Mapillary Vistas v2.0: mostly negatives, the natural source of hard negatives.

Layout: ``config_v2.0.json`` at the root (``labels`` list; a label's id is its index),
``{training,validation}/images/<key>.jpg`` and ``{training,validation}/v2.0/labels/<key>.png``
(one label id per pixel: 8-bit grey or palette, 16-bit grey, or RGB colours from the config).
An image is a positive when its pixels of :data:`ROADWORK_CLASSES` add up to at least
``SourceConfig.mapillary_min_pixels``. Images without a label PNG (all of ``testing/``)
are skipped and counted. Ids are always read from the config, never hard-coded.

Licence: Vistas is released under CC BY-NC-SA for research; commercial use needs a
licence from Mapillary/Meta.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator, MutableMapping
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image

from roadwork_ml.config import SourceConfig
from roadwork_ml.data.records import ImageRecord, Quarantined

CONFIG_NAME = "config_v2.0.json"
LABELED_SPLITS = ("training", "validation")
UNLABELED_SPLITS = ("testing",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Temporary roadwork evidence. Most other construction--* labels are permanent infrastructure.
ROADWORK_CLASSES = (
    "object--traffic-cone",
    "construction--barrier--temporary",
    "object--traffic-sign--temporary-front",
    "object--traffic-sign--temporary-back",
)
LABEL_PNG_MAX_PIXELS = 64_000_000  # Vistas images reach ~25 MP; anything far beyond is not a label map


def load_vistas_config(root: Path) -> tuple[dict[str, int], dict[str, tuple[int, int, int]]]:
    """``(name → id, name → colour)`` from ``config_v2.0.json``; id = index in ``labels``."""
    path = root / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"Mapillary Vistas source {root}: {CONFIG_NAME} not found; point the path at the Vistas v2.0 root"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        labels = config["labels"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a Vistas config with a 'labels' list: {exc}") from exc
    ids: dict[str, int] = {}
    colours: dict[str, tuple[int, int, int]] = {}
    for index, entry in enumerate(labels):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not name:
            continue
        ids[str(name)] = index
        colour = entry.get("color")
        if isinstance(colour, (list, tuple)) and len(colour) >= 3:
            colours[str(name)] = (int(colour[0]), int(colour[1]), int(colour[2]))
    return ids, colours


def roadwork_pixel_counts(
    label_png: bytes, class_ids: dict[str, int], class_colours: dict[str, tuple[int, int, int]]
) -> dict[str, int]:
    """Pixels per roadwork class in one label PNG (label ids, or RGB colours of the config)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(label_png), formats=["PNG"])
        if img.width * img.height > LABEL_PNG_MAX_PIXELS:
            raise ValueError(f"label map {img.width}x{img.height} is implausibly large")
        img.load()
    if img.mode in ("RGB", "RGBA"):
        arr = np.asarray(img.convert("RGB")).astype(np.uint32)
        codes = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
        return {
            name: int(np.count_nonzero(codes == ((c[0] << 16) | (c[1] << 8) | c[2])))
            for name, c in class_colours.items()
        }
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(f"label map mode {img.mode} is not a label-id image")
    arr = np.asarray(img)  # palette images give their indices: the label ids
    return {name: int(np.count_nonzero(arr == cid)) for name, cid in class_ids.items()}


def _iter_vistas(
    root: Path, source: str, min_pixels: int, stats: MutableMapping[str, int]
) -> Iterator[ImageRecord | Quarantined]:
    ids, colours = load_vistas_config(root)
    present = [c for c in ROADWORK_CLASSES if c in ids]
    if not present:
        raise ValueError(f"{root / CONFIG_NAME} names none of the roadwork classes {ROADWORK_CLASSES}")
    missing = sorted(set(ROADWORK_CLASSES) - set(present))
    if missing:
        stats["roadwork_classes_missing_from_config"] = len(missing)
    class_ids = {c: ids[c] for c in present}
    class_colours = {c: colours[c] for c in present if c in colours}

    for split in UNLABELED_SPLITS:
        folder = root / split / "images"
        if folder.is_dir():
            n = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            stats["skipped_unlabeled"] = stats.get("skipped_unlabeled", 0) + n

    found_split = False
    for split in LABELED_SPLITS:
        image_dir = root / split / "images"
        label_dir = root / split / "v2.0" / "labels"
        if not image_dir.is_dir():
            continue
        found_split = True
        for image_path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            label_path = label_dir / f"{image_path.stem}.png"
            if not label_path.is_file():
                stats["skipped_unlabeled"] = stats.get("skipped_unlabeled", 0) + 1
                continue
            try:
                counts = roadwork_pixel_counts(label_path.read_bytes(), class_ids, class_colours)
            except Exception as exc:  # noqa: BLE001 - a broken label map quarantines one image
                yield Quarantined(
                    source=source, origin=str(label_path), reason=f"bad_label_map: {type(exc).__name__}: {exc}"
                )
                continue
            try:
                data = image_path.read_bytes()
            except OSError as exc:
                yield Quarantined(source=source, origin=str(image_path), reason=f"unreadable: {exc}")
                continue
            total = sum(counts.values())
            label = int(total >= min_pixels)
            stats["positives" if label else "negatives"] = stats.get("positives" if label else "negatives", 0) + 1
            yield ImageRecord(
                record_id=f"{source}:{split}/{image_path.stem}",
                source=source,
                label=label,
                image_bytes=data,
                origin=str(image_path),
                tags=json.dumps(
                    {"split": split, "roadwork_pixels": total, "class_pixels": {k: v for k, v in counts.items() if v}},
                    sort_keys=True,
                ),
            )
    if not found_split:
        raise FileNotFoundError(f"Mapillary Vistas source {root}: neither training/images nor validation/images exists")


def read_mapillary_vistas(
    root: str | Path,
    source: str,
    cfg: SourceConfig | None = None,
    stats: MutableMapping[str, int] | None = None,
    max_images: int | None = None,
    min_pixels: int | None = None,
) -> Iterator[ImageRecord | Quarantined]:
    """Stream Vistas records labelled from their label-id PNGs."""
    root = Path(root).expanduser()
    load_vistas_config(root)  # fail fast on a wrong path
    stats = stats if stats is not None else {}
    if min_pixels is None:
        min_pixels = cfg.mapillary_min_pixels if cfg is not None else 400
    limit = max_images if max_images is not None else (cfg.max_images if cfg is not None else None)
    return islice(_iter_vistas(root, source, min_pixels, stats), limit)
