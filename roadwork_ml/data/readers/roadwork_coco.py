"""ROADWork (CMU, Ghosh et al. 2024): ``scene/images/*.jpg`` + COCO ``scene/annotations/*.json``.

Every ROADWork image shows a work zone, so every record is a positive (label 1).
The annotation files named in ``SourceConfig.roadwork_annotation_files`` (by default the
GPS-split train/val files, images at least 100 m apart) list the images; an image listed in
several files is read once. The sequence comes from the file name
(``pgh<seq>_<frame>.jpg`` or ``<city>_<seq>_<video>_<frame>.jpg``), else from the image
entry's ``video_info``, else the group is the GPS cell. A listed image whose file is missing
is quarantined.

The source path may be the release root (holding ``scene/``) or the ``scene`` folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, MutableMapping
from itertools import islice
from pathlib import Path, PurePosixPath

from roadwork_ml.config import SourceConfig
from roadwork_ml.data.readers.natix import scene_metadata
from roadwork_ml.data.records import UNKNOWN, ImageRecord, Quarantined

DEFAULT_ANNOTATION_FILES = ("instances_train_gps_split.json", "instances_val_gps_split.json")

_PGH = re.compile(r"^pgh(?P<seq>\d+)_(?P<frame>\d+)$", re.IGNORECASE)
_CITY = re.compile(r"^(?P<city>[A-Za-z][A-Za-z\-]*)_(?P<seq>[^_]+)_(?P<video>[^_]+)_(?P<frame>[^_]+)$")


def sequence_from_name(file_name: str) -> tuple[str, str] | None:
    """``(sequence_id, camera_id)`` from a ROADWork file name; None if it follows no known pattern.

    ``pgh12_0034.jpg`` → ``("pgh12", "pgh")``; ``boston_3_7_0042.jpg`` → ``("boston_3", "boston")``.
    """
    stem = PurePosixPath(file_name).stem
    m = _PGH.match(stem)
    if m:
        return f"pgh{m['seq']}", "pgh"
    m = _CITY.match(stem)
    if m:
        return f"{m['city'].lower()}_{m['seq']}", m["city"].lower()
    return None


def find_scene_dir(root: str | Path) -> Path:
    root = Path(root).expanduser()
    for candidate in (root / "scene", root):
        if (candidate / "annotations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"ROADWork source {root}: no scene/annotations (or annotations) folder; "
        "point the source path at the ROADWork release root holding scene/images and scene/annotations"
    )


def _resolve_image(scene: Path, file_name: str) -> Path:
    rel = PurePosixPath(file_name.replace("\\", "/"))
    candidates = [scene / "images" / rel.name, scene / "images" / rel, scene / rel]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


# ROADWork's scene classes: annotated in every image, they are not evidence of a work zone
SCENE_CATEGORIES = frozenset({"sidewalk", "road", "bike lane"})


def object_boxes(coco: dict) -> dict[object, list[list[float]]]:
    """``image id -> [[u0, v0, u1, v1], ...]``: the COCO ``bbox`` of each work-zone object
    (every category but :data:`SCENE_CATEGORIES`) in fractions of its image's width and height,
    clipped to the image, rounded to 1e-4. Images without ``width``/``height`` and malformed
    annotations are left out (their boxes are unknown, not empty)."""
    names = {
        c.get("id"): str(c.get("name", "")).strip().lower() for c in coco.get("categories") or [] if isinstance(c, dict)
    }
    sizes = {}
    for entry in coco.get("images") or []:
        dims = (entry.get("width"), entry.get("height")) if isinstance(entry, dict) else (None, None)
        if all(isinstance(d, int | float) and d > 0 for d in dims):
            sizes[entry.get("id")] = (float(dims[0]), float(dims[1]))
    out: dict[object, list[list[float]]] = {k: [] for k in sizes}
    for ann in coco.get("annotations") or []:
        if not isinstance(ann, dict) or ann.get("image_id") not in sizes:
            continue
        if names.get(ann.get("category_id"), "") in SCENE_CATEGORIES:
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            continue
        w, h = sizes[ann["image_id"]]
        x, y, bw, bh = bbox
        box = [round(min(max(v, 0.0), 1.0), 4) for v in (x / w, y / h, (x + bw) / w, (y + bh) / h)]
        if box[2] > box[0] and box[3] > box[1]:
            out[ann["image_id"]].append(box)
    return out


def _iter_roadwork(
    scene: Path, files: list[Path], source: str, stats: MutableMapping[str, int], gps_cell_deg: float
) -> Iterator[ImageRecord | Quarantined]:
    seen: dict[str, Path] = {}
    for ann_path in files:
        try:
            coco = json.loads(ann_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"ROADWork annotation file {ann_path} is not readable COCO JSON: {exc}") from exc
        images = coco.get("images") if isinstance(coco, dict) else None
        if not isinstance(images, list):
            raise ValueError(f"ROADWork annotation file {ann_path} has no 'images' list")
        stats["annotation_files"] = stats.get("annotation_files", 0) + 1
        boxes = object_boxes(coco)
        for entry in images:
            stats["entries"] = stats.get("entries", 0) + 1
            file_name = entry.get("file_name") if isinstance(entry, dict) else None
            if not file_name:
                yield Quarantined(
                    source=source, origin=f"{ann_path.name}#image={entry!r:.80}", reason="bad_entry: no file_name"
                )
                continue
            key = PurePosixPath(str(file_name).replace("\\", "/")).name
            if key in seen:
                stats["duplicate_entries"] = stats.get("duplicate_entries", 0) + 1
                continue
            path = _resolve_image(scene, str(file_name))
            seen[key] = path
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                stats["missing_files"] = stats.get("missing_files", 0) + 1
                yield Quarantined(
                    source=source, origin=str(path), reason=f"missing_file: {file_name} listed in {ann_path.name}"
                )
                continue
            except OSError as exc:
                yield Quarantined(source=source, origin=str(path), reason=f"unreadable: {exc}")
                continue
            meta = scene_metadata(entry, source, gps_cell_deg)
            from_name = sequence_from_name(key)
            camera = UNKNOWN
            if from_name is not None:
                meta["sequence_id"], camera = from_name
                meta["group_id"] = ""
            meta["tags"]["annotation_file"] = ann_path.name
            if "id" in entry:
                meta["tags"]["coco_id"] = entry["id"]
                if entry["id"] in boxes:
                    meta["tags"]["roadwork_boxes"] = boxes[entry["id"]]
            yield ImageRecord(
                record_id=f"{source}:{key}",
                source=source,
                label=1,
                image_bytes=data,
                hour=meta["hour"],
                weather=meta["weather"],
                camera_id=camera,
                sequence_id=meta["sequence_id"],
                group_id=meta["group_id"],
                origin=str(path),
                tags=json.dumps(meta["tags"], sort_keys=True, default=str),
            )


def read_roadwork_coco(
    root: str | Path,
    source: str,
    cfg: SourceConfig | None = None,
    stats: MutableMapping[str, int] | None = None,
    gps_cell_deg: float = 0.01,
    max_images: int | None = None,
) -> Iterator[ImageRecord | Quarantined]:
    """Stream ROADWork positives from the configured COCO annotation files."""
    scene = find_scene_dir(root)
    names = list(cfg.roadwork_annotation_files) if cfg is not None else list(DEFAULT_ANNOTATION_FILES)
    if not names:
        raise ValueError(
            "ROADWork source: roadwork_annotation_files is empty; name at least one scene/annotations/*.json"
        )
    files = [scene / "annotations" / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        available = sorted(p.name for p in (scene / "annotations").glob("*.json"))
        raise FileNotFoundError(
            f"ROADWork source {scene}: annotation file(s) {missing} not found; available: {available}"
        )
    stats = stats if stats is not None else {}
    limit = max_images if max_images is not None else (cfg.max_images if cfg is not None else None)
    return islice(_iter_roadwork(scene, files, source, stats, gps_cell_deg), limit)
