"""Image folder: ``root/<class>/**/*.{jpg,jpeg,png,webp,bmp}``.

The class directory names the label (see :data:`CLASS_DIR_LABELS`). Sub-directories below
a class directory are taken as sequences (``root/roadwork/drive_07/000123.jpg`` →
``sequence_id = "drive_07"``) so frames of one drive share a split group. Files with an
image extension are yielded with their raw bytes even when corrupt: ``ingest`` decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from itertools import islice
from pathlib import Path

from roadwork_ml.config import SourceConfig
from roadwork_ml.data.records import UNKNOWN, ImageRecord, Quarantined

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

CLASS_DIR_LABELS: dict[str, int] = {
    "1": 1,
    "0": 0,
    "roadwork": 1,
    "no_roadwork": 0,
    "positive": 1,
    "negative": 0,
    "pos": 1,
    "neg": 0,
}


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def parse_label(value: object, where: str = "") -> int:
    """0/1, True/False, '0'/'1', or a class name of :data:`CLASS_DIR_LABELS` → 0 or 1."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int,)) and value in (0, 1):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    if isinstance(value, str):
        key = _norm(value)
        if key in ("1.0", "0.0"):
            key = key[0]
        if key in ("true", "false"):
            return int(key == "true")
        if key in CLASS_DIR_LABELS:
            return CLASS_DIR_LABELS[key]
    raise ValueError(
        f"{where}label {value!r} is not one of 0, 1 or {sorted(k for k in CLASS_DIR_LABELS if not k.isdigit())}"
    )


def class_dir_label(name: str, root: Path) -> int:
    key = _norm(name)
    if key not in CLASS_DIR_LABELS:
        raise ValueError(
            f"image folder {root}: class directory {name!r} is not a known class; "
            f"name class directories one of {sorted(CLASS_DIR_LABELS)} (1/roadwork/positive/pos = roadwork)"
        )
    return CLASS_DIR_LABELS[key]


def class_dirs(root: Path) -> dict[Path, int]:
    """The class directories of ``root`` and their labels; raises on an unknown class name."""
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(
            f"image folder {root} has no class directories; expected root/<class>/*.jpg with <class> in {sorted(CLASS_DIR_LABELS)}"
        )
    return {d: class_dir_label(d.name, root) for d in dirs}


def _iter_image_folder(
    root: Path, source: str, labels: dict[Path, int], stats: MutableMapping[str, int]
) -> Iterator[ImageRecord | Quarantined]:
    stray = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if stray:
        stats["skipped_unclassified"] = stats.get("skipped_unclassified", 0) + len(stray)
    for class_dir, label in labels.items():
        for path in sorted(class_dir.rglob("*")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue
            if not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                stats["skipped_non_image"] = stats.get("skipped_non_image", 0) + 1
                continue
            rel = path.relative_to(root).as_posix()
            sub = path.parent.relative_to(class_dir).as_posix()
            sequence = sub if sub not in ("", ".") else UNKNOWN
            try:
                data = path.read_bytes()
            except OSError as exc:
                yield Quarantined(source=source, origin=str(path), reason=f"unreadable: {exc}")
                continue
            yield ImageRecord(
                record_id=f"{source}:{rel}",
                source=source,
                label=label,
                image_bytes=data,
                sequence_id=sequence,
                origin=str(path),
                tags=json.dumps({"class_dir": class_dir.name}),
            )


def read_image_folder(
    root: str | Path,
    source: str,
    cfg: SourceConfig | None = None,
    stats: MutableMapping[str, int] | None = None,
    max_images: int | None = None,
) -> Iterator[ImageRecord | Quarantined]:
    """Stream records from an image folder; ``cfg.max_images`` (or ``max_images``) caps the count."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    labels = class_dirs(root)  # an unknown class name fails here, before any file is read
    stats = stats if stats is not None else {}
    limit = max_images if max_images is not None else (cfg.max_images if cfg is not None else None)
    return islice(_iter_image_folder(root, source, labels, stats), limit)
