"""Source readers: each streams :class:`~roadwork_ml.data.records.ImageRecord` objects with the
raw image bytes as found (or :class:`~roadwork_ml.data.records.Quarantined` for items that
cannot even be read). Decoding and validation happen later, in
:func:`roadwork_ml.data.decode.ingest`.

Every reader has the signature ``read_x(path, source, cfg=None, stats=None, ..., max_images=None)``,
honours ``cfg.max_images``, and adds its counters (consistency drops, skipped unlabeled
images, duplicate entries ...) to the ``stats`` mapping it is given.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path

from roadwork_ml.config import SourceConfig
from roadwork_ml.data.readers.image_folder import CLASS_DIR_LABELS, IMAGE_EXTENSIONS, parse_label, read_image_folder
from roadwork_ml.data.readers.manifest import read_manifest
from roadwork_ml.data.readers.mapillary import ROADWORK_CLASSES, read_mapillary_vistas
from roadwork_ml.data.readers.natix import find_natix_parquet, natix_rows_to_records, read_natix
from roadwork_ml.data.readers.roadwork_coco import read_roadwork_coco
from roadwork_ml.data.records import ImageRecord, Quarantined

__all__ = [
    "CLASS_DIR_LABELS",
    "IMAGE_EXTENSIONS",
    "READERS",
    "ROADWORK_CLASSES",
    "find_natix_parquet",
    "natix_rows_to_records",
    "parse_label",
    "read_image_folder",
    "read_manifest",
    "read_mapillary_vistas",
    "read_natix",
    "read_roadwork_coco",
    "read_records",
]

# SourceConfig.kind → reader (the synthetic kind is served by roadwork_ml.data.synthetic)
READERS = {
    "image_folder": read_image_folder,
    "manifest": read_manifest,
    "natix_parquet": read_natix,
    "roadwork_coco": read_roadwork_coco,
    "mapillary_vistas": read_mapillary_vistas,
}

_TAKES_GPS_CELL = ("natix_parquet", "roadwork_coco")


def read_records(
    kind: str,
    path: str | Path,
    source: str,
    cfg: SourceConfig | None = None,
    stats: MutableMapping[str, int] | None = None,
    gps_cell_deg: float = 0.01,
) -> Iterator[ImageRecord | Quarantined]:
    """Dispatch on a source kind to its reader."""
    try:
        reader = READERS[kind]
    except KeyError:
        raise ValueError(f"no reader for source kind {kind!r}; known: {sorted(READERS)} (or 'synthetic')") from None
    if kind in _TAKES_GPS_CELL:
        return reader(path, source, cfg, stats=stats, gps_cell_deg=gps_cell_deg)
    return reader(path, source, cfg, stats=stats)
