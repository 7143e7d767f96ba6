"""Builders of tiny data sets in the REAL on-disk layouts (see /work/shared/DATA_FORMATS.md).

Plain functions (not pytest fixtures) so any test can call them with its ``tmp_path``:

* :func:`make_corrupt_image_folder` — an image folder with good images of every awkward
  mode and one of each kind of bad file; ``expected`` says what ``ingest`` must do.
* :func:`make_image_folder` — a clean, balanced image folder.
* :func:`make_manifest` — CSV or Parquet manifest with relative / absolute paths.
* :func:`make_natix` — NATIX parquet shards (struct or raw-bytes image column,
  ``data/`` / flat / Hugging Face cache layouts).
* :func:`make_roadwork` — ROADWork ``scene/images`` + GPS-split COCO annotation files.
* :func:`make_vistas` — Mapillary Vistas v2.0 with a shuffled ``config_v2.0.json``.

Each returns a small dataclass with the root path and the expected counts.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from roadwork_ml.config import SyntheticStyle

# ---------------------------------------------------------------------------------------
# image bytes


def scene_array(width: int = 64, height: int = 48, seed: int = 0) -> np.ndarray:
    """A structured (not noise) RGB picture: distinct seeds give distinct pHashes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy, phase = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 6.3)
    base = 127 + 100 * np.sin(fx * x / width * 6.28 + phase) * np.cos(fy * y / height * 6.28)
    img = np.stack([base, np.roll(base, width // 3, axis=1), 255 - base], axis=-1)
    for _ in range(3):
        x0, y0 = rng.integers(0, width // 2), rng.integers(0, height // 2)
        img[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0, quality: int = 90) -> bytes:
    return encode(Image.fromarray(scene_array(width, height, seed)), "JPEG", quality=quality)


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return encode(Image.fromarray(scene_array(width, height, seed)), "PNG")


def truncated_jpeg(seed: int = 1) -> bytes:
    data = jpeg_bytes(96, 64, seed=seed)
    return data[: len(data) // 2]


def cmyk_jpeg(width: int = 40, height: int = 32) -> bytes:
    """Left half pure red in CMYK (0, 255, 255, 0), right half pure blue (255, 255, 0, 0)."""
    img = Image.new("CMYK", (width, height), (0, 255, 255, 0))
    img.paste((255, 255, 0, 0), (width // 2, 0, width, height))
    return encode(img, "JPEG", quality=95)


def png16_bytes(width: int = 32, height: int = 24) -> bytes:
    """16-bit grey PNG: columns 0-7 = 65535, 8-15 = 32768, 16-23 = 0, 24+ = 257."""
    arr = np.zeros((height, width), dtype=np.uint16)
    arr[:, 0:8] = 65535
    arr[:, 8:16] = 32768
    arr[:, 24:] = 257
    return encode(Image.fromarray(arr), "PNG")


def rgba_png(width: int = 32, height: int = 24) -> bytes:
    """Left half opaque red, right half fully transparent (RGB under it is green)."""
    arr = np.zeros((height, width, 4), dtype=np.uint8)
    arr[:, : width // 2] = (255, 0, 0, 255)
    arr[:, width // 2 :] = (0, 255, 0, 0)
    return encode(Image.fromarray(arr, "RGBA"), "PNG")


def palette_transparent_png(width: int = 32, height: int = 24) -> bytes:
    """P mode; index 0 (black) is transparent via tRNS, index 1 is blue, left half index 1."""
    img = Image.new("P", (width, height), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    img.paste(1, (0, 0, width // 2, height))
    return encode(img, "PNG", transparency=0)


def one_bit_png(width: int = 32, height: int = 24) -> bytes:
    img = Image.new("1", (width, height), 0)
    img.paste(1, (0, 0, width // 2, height))
    return encode(img, "PNG")


def grey_la_png(width: int = 32, height: int = 24) -> bytes:
    arr = np.zeros((height, width, 2), dtype=np.uint8)
    arr[..., 0] = 200
    arr[..., 1] = 255
    return encode(Image.fromarray(arr, "LA"), "PNG")


def exif_rotated_jpeg(width: int = 80, height: int = 40) -> bytes:
    """Stored 80x40, left half red, right half blue, EXIF orientation 6 (display rotated 90° CW:
    upright it is 40x80 with red on top)."""
    img = Image.new("RGB", (width, height), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=95, exif=exif.tobytes())


def tiny_png() -> bytes:
    return encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header claiming ``width x height`` RGB, with a tiny IDAT: decoding it would
    allocate width*height*3 bytes (30 GB by default); it must be refused from the header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def broken_stream_png(width: int = 32, height: int = 32) -> bytes:
    """A valid PNG header (CRCs fine) whose IDAT is not a zlib stream: fails at full decode."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"garbage-not-zlib" * 8)
        + _png_chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------------
# image folder


@dataclass
class FolderFixture:
    root: Path
    expected: dict[str, str | None]  # path relative to root → None (kept) or quarantine reason code
    skipped_non_image: int = 0

    @property
    def n_kept(self) -> int:
        return sum(v is None for v in self.expected.values())

    @property
    def n_quarantined(self) -> int:
        return sum(v is not None for v in self.expected.values())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def make_corrupt_image_folder(tmp_path: Path) -> FolderFixture:
    """``tmp_path/corrupt_folder/{roadwork,no_roadwork}/...``: 9 good images in awkward modes,
    6 bad ones (truncated, empty, text, 1x1, bomb header, broken pixel stream) and one .txt."""
    root = Path(tmp_path) / "corrupt_folder"
    files: dict[str, tuple[bytes, str | None]] = {
        "roadwork/good_a.jpg": (jpeg_bytes(64, 48, seed=11), None),
        "roadwork/cmyk.jpg": (cmyk_jpeg(), None),
        "roadwork/exif_rot6.jpg": (exif_rotated_jpeg(), None),
        "roadwork/rgba.png": (rgba_png(), None),
        "roadwork/palette_transparent.png": (palette_transparent_png(), None),
        "roadwork/drive_01/png16.png": (png16_bytes(), None),
        "roadwork/truncated.jpg": (truncated_jpeg(), "truncated"),
        "no_roadwork/good_b.jpeg": (jpeg_bytes(72, 56, seed=12), None),
        "no_roadwork/one_bit.png": (one_bit_png(), None),
        "no_roadwork/grey_alpha.webp": (
            encode(Image.open(io.BytesIO(grey_la_png())).convert("RGBA"), "WEBP", lossless=True),
            None,
        ),
        "no_roadwork/empty.jpg": (b"", "empty"),
        "no_roadwork/text.jpg": (b"this is not an image, just text with a .jpg name\n" * 4, "not_an_image"),
        "no_roadwork/tiny.png": (tiny_png(), "too_small"),
        "no_roadwork/bomb.png": (bomb_png(), "decompression_bomb"),
        "no_roadwork/broken_stream.png": (broken_stream_png(), "decode_failed"),
    }
    for rel, (data, _) in files.items():
        _write(root / rel, data)
    (root / "no_roadwork" / "notes.txt").write_text("not an image extension: skipped")
    return FolderFixture(root=root, expected={rel: why for rel, (_, why) in files.items()}, skipped_non_image=1)


def make_image_folder(
    tmp_path: Path, n_pos: int = 4, n_neg: int = 4, class_names: tuple[str, str] = ("roadwork", "no_roadwork")
) -> FolderFixture:
    root = Path(tmp_path) / "image_folder"
    expected: dict[str, str | None] = {}
    for i in range(n_pos):
        rel = f"{class_names[0]}/pos_{i:03d}.jpg"
        _write(root / rel, jpeg_bytes(64, 48, seed=100 + i))
        expected[rel] = None
    for i in range(n_neg):
        rel = f"{class_names[1]}/neg_{i:03d}.png"
        _write(root / rel, png_bytes(64, 48, seed=200 + i))
        expected[rel] = None
    return FolderFixture(root=root, expected=expected)


# ---------------------------------------------------------------------------------------
# manifest


@dataclass
class ManifestFixture:
    path: Path
    n_rows: int
    n_records: int
    quarantine_reasons: dict[str, int]


def make_manifest(tmp_path: Path, fmt: str = "csv") -> ManifestFixture:
    """``manifest.{csv,parquet}`` with a relative path, an absolute path, a missing file and a bad label."""
    base = Path(tmp_path) / f"manifest_{fmt}"
    _write(base / "images" / "a.jpg", jpeg_bytes(seed=301))
    outside = Path(tmp_path) / f"elsewhere_{fmt}" / "b.png"
    _write(outside, png_bytes(seed=302))
    _write(base / "images" / "c.jpg", jpeg_bytes(seed=303))
    rows = [
        {
            "path": "images/a.jpg",
            "label": "1",
            "hour": "14",
            "weather": "rain",
            "camera_id": "cam1",
            "sequence_id": "s1",
        },
        {
            "path": str(outside),
            "label": "no_roadwork",
            "hour": "",
            "weather": "Foggy",
            "camera_id": "",
            "sequence_id": "",
        },
        {"path": "images/c.jpg", "label": "0", "hour": "99", "weather": "", "camera_id": "cam2", "sequence_id": "s1"},
        {
            "path": "images/missing.jpg",
            "label": "1",
            "hour": "3",
            "weather": "snow",
            "camera_id": "cam1",
            "sequence_id": "s2",
        },
        {"path": "images/a.jpg", "label": "maybe", "hour": "", "weather": "", "camera_id": "", "sequence_id": ""},
    ]
    if fmt == "csv":
        path = base / "manifest.csv"
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(r[h] for h in header) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path = base / "manifest.parquet"
        table = pa.Table.from_pylist(
            [{**r, "hour": int(r["hour"]) if r["hour"] else None, "label": r["label"]} for r in rows]
        )
        pq.write_table(table, path)
    return ManifestFixture(
        path=path, n_rows=len(rows), n_records=3, quarantine_reasons={"missing_file": 1, "bad_label": 1}
    )


# ---------------------------------------------------------------------------------------
# NATIX parquet

NATIX_COLUMNS = (
    "image",
    "id",
    "width",
    "height",
    "license",
    "flickr_url",
    "coco_url",
    "date_captured",
    "gps",
    "city_name",
    "scene_description",
    "video_info.frame_id",
    "video_info.seq_id",
    "video_info.vid_id",
    "scene_level_tags.daytime",
    "scene_level_tags.scene_environment",
    "scene_level_tags.travel_alteration",
    "scene_level_tags.weather",
    "label",
)


@dataclass
class NatixFixture:
    root: Path
    n_rows: int
    n_records: int  # rows the reader yields (after the consistency filter)
    n_dropped: int  # rows the consistency filter drops
    n_corrupt: int  # yielded rows whose bytes ingest must quarantine
    rows: list[dict] = field(repr=False, default_factory=list)


def natix_rows() -> tuple[list[dict], list[dict]]:
    """(train rows, test rows) as the HF dataset holds them (tags are stringified lists)."""

    def row(
        i,
        label,
        desc,
        *,
        seq=None,
        vid=None,
        frame=None,
        gps=None,
        city="pittsburgh",
        daytime="['Day']",
        weather="['Sunny']",
        image=None,
    ):
        return {
            "image": image if image is not None else jpeg_bytes(64, 48, seed=400 + i),
            "id": i,
            "width": 64,
            "height": 48,
            "license": 1,
            "flickr_url": "",
            "coco_url": "",
            "date_captured": "2023-05-0%d" % (1 + i % 9),
            "gps": gps,
            "city_name": city,
            "scene_description": desc,
            "video_info.frame_id": frame,
            "video_info.seq_id": seq,
            "video_info.vid_id": vid,
            "scene_level_tags.daytime": daytime,
            "scene_level_tags.scene_environment": "['Urban']",
            "scene_level_tags.travel_alteration": "['Lane shift']" if label else "[]",
            "scene_level_tags.weather": weather,
            "label": label,
        }

    train = [
        row(1, 1, "Cones close the right lane", seq=5, vid=2, frame=1, weather="['Rainy']", daytime="['Night']"),
        row(2, 1, "Barrier and workers", seq=5, vid=2, frame=2),
        row(3, 0, "", gps="40.4406, -79.9959", weather="['Snowy', 'Cloudy']", daytime="['Dusk']"),
        row(4, 0, "Road work ahead sign", seq=9),  # inconsistent: description with label 0
        row(5, 1, "", seq=9),  # inconsistent: label 1 without description
        row(
            6, 0, None, gps="[40.4410, -79.9950]", weather="[]", daytime="['Day'"
        ),  # malformed daytime list, empty weather list
    ]
    test = [
        row(7, 1, "Temporary signs", seq=11, image=b"corrupt bytes, not a jpeg"),
        row(8, 0, "", vid=77, weather="['Foggy']", daytime="['Dawn']", city=None),
    ]
    return train, test


def _natix_table(rows: list[dict], image_as: str) -> pa.Table:
    if image_as == "struct":
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        images = [{"bytes": r["image"], "path": f"{r['id']}.jpg"} for r in rows]
    elif image_as == "bytes":
        image_type = pa.binary()
        images = [r["image"] for r in rows]
    else:
        raise ValueError(image_as)
    cols = {"image": pa.array(images, type=image_type)}
    types = {
        "id": pa.int64(),
        "width": pa.int64(),
        "height": pa.int64(),
        "license": pa.int64(),
        "label": pa.int64(),
        "video_info.frame_id": pa.int64(),
        "video_info.seq_id": pa.int64(),
        "video_info.vid_id": pa.int64(),
    }
    for name in NATIX_COLUMNS[1:]:
        cols[name] = pa.array([r[name] for r in rows], type=types.get(name, pa.string()))
    return pa.table(cols)


def make_natix(tmp_path: Path, image_as: str = "struct", layout: str = "data") -> NatixFixture:
    """NATIX shards. ``image_as``: 'struct' ({bytes, path}) or 'bytes'. ``layout``: 'data'
    (root/data/train-*.parquet), 'flat' (root/*.parquet) or 'hf_cache' (a Hugging Face cache
    entry with refs/main, snapshots/<rev>/data/*.parquet symlinked to blobs/)."""
    train, test = natix_rows()
    root = Path(tmp_path) / f"natix_{image_as}_{layout}"
    if layout == "data":
        data_dir = root / "data"
    elif layout == "flat":
        data_dir = root
    elif layout == "hf_cache":
        root = root / "datasets--natix-network-org--roadwork"
        rev = "0123456789abcdef0123456789abcdef01234567"
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(rev)
        data_dir = root / "snapshots" / rev / "data"
        (root / "snapshots" / "old_revision" / "data").mkdir(parents=True)  # must be ignored
    else:
        raise ValueError(layout)
    data_dir.mkdir(parents=True, exist_ok=True)
    shards = {
        "train-00000-of-00002.parquet": train[:3],
        "train-00001-of-00002.parquet": train[3:],
        "test-00000-of-00001.parquet": test,
    }
    for name, rows in shards.items():
        table = _natix_table(rows, image_as)
        if layout == "hf_cache":
            blob = root / "blobs" / f"blob_{name}"
            blob.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, blob, row_group_size=2)
            (data_dir / name).symlink_to(blob)
        else:
            pq.write_table(table, data_dir / name, row_group_size=2)
    all_rows = train + test
    return NatixFixture(root=root, n_rows=len(all_rows), n_records=6, n_dropped=2, n_corrupt=1, rows=all_rows)


# ---------------------------------------------------------------------------------------
# ROADWork COCO


@dataclass
class RoadworkFixture:
    root: Path
    n_unique_listed: int  # distinct images listed in the two GPS-split files (present or not)
    n_records: int
    n_missing: int
    n_duplicates: int


def make_roadwork(tmp_path: Path) -> RoadworkFixture:
    """``scene/images`` + ``instances_{train,val}_gps_split.json``; one image is listed in both files,
    one listed image is missing on disk; a third annotation file is not configured (ignored)."""
    root = Path(tmp_path) / "roadwork"
    scene = root / "scene"
    names = ["pgh01_0001.jpg", "pgh01_0002.jpg", "boston_3_7_0042.jpg", "boston_3_7_0043.jpg", "pgh02_0001.jpg"]
    for i, name in enumerate(names):
        _write(scene / "images" / name, jpeg_bytes(80, 60, seed=500 + i))
    (scene / "sem_seg" / "gtFine" / "train").mkdir(parents=True)

    def entry(img_id: int, name: str) -> dict:
        return {
            "id": img_id,
            "file_name": name,
            "width": 80,
            "height": 60,
            "gps": [40.44 + img_id * 1e-4, -79.99],
            "scene_description": f"work zone {img_id}",
            "city_name": name.split("_")[0],
        }

    def coco(entries: list[dict]) -> dict:
        return {
            "info": {"description": "ROADWork fixture"},
            "categories": [{"id": 1, "name": "Cone"}, {"id": 2, "name": "Barrier"}],
            "images": entries,
            "annotations": [
                {
                    "id": k,
                    "image_id": e["id"],
                    "category_id": 1,
                    "bbox": [1, 2, 3, 4],
                    "area": 12,
                    "iscrowd": 0,
                    "attributes": {"occluded": False},
                }
                for k, e in enumerate(entries)
            ],
        }

    train = [entry(1, names[0]), entry(2, names[1]), entry(3, names[2])]
    val = [entry(30, names[2]), entry(4, names[3]), entry(5, "pgh09_0099.jpg")]  # shared + missing
    other = [entry(6, names[4])]
    ann = scene / "annotations"
    ann.mkdir(parents=True)
    (ann / "instances_train_gps_split.json").write_text(json.dumps(coco(train)))
    (ann / "instances_val_gps_split.json").write_text(json.dumps(coco(val)))
    (ann / "instances_geographic_da_test.json").write_text(json.dumps(coco(other)))
    return RoadworkFixture(root=root, n_unique_listed=5, n_records=4, n_missing=1, n_duplicates=1)


# ---------------------------------------------------------------------------------------
# Mapillary Vistas v2.0

VISTAS_LABEL_NAMES = [
    "animal--bird",
    "construction--barrier--curb",
    "construction--flat--road",
    "object--traffic-sign--temporary-back",
    "construction--structure--building",
    "nature--sky",
    "object--traffic-sign--front",
    "construction--barrier--fence",
    "human--person",
    "object--traffic-cone",
    "construction--flat--sidewalk",
    "construction--barrier--temporary",
    "object--vehicle--car",
    "object--traffic-sign--temporary-front",
    "void--unlabeled",
]


@dataclass
class VistasFixture:
    root: Path
    ids: dict[str, int]
    expected_labels: dict[str, int]  # record id suffix "split/stem" → label
    skipped_unlabeled: int


def _vistas_colour(i: int) -> tuple[int, int, int]:
    return ((i * 37) % 256, (i * 91) % 256, (i * 53 + 7) % 256)


def _label_map(ids: dict[str, int], fill: dict[str, int], width: int = 64, height: int = 48) -> np.ndarray:
    """A label-id map: 'construction--flat--road' everywhere, then ``fill`` pixels per class."""
    arr = np.full(height * width, ids["construction--flat--road"], dtype=np.int64)
    pos = 0
    for name, count in fill.items():
        arr[pos : pos + count] = ids[name]
        pos += count
    return arr.reshape(height, width)


def make_vistas(tmp_path: Path, min_pixels: int = 400) -> VistasFixture:
    """Vistas v2.0 with roadwork classes at non-standard ids; label PNGs in palette (8-bit),
    16-bit grey and RGB-colour form, above and below ``min_pixels``."""
    root = Path(tmp_path) / "vistas"
    root.mkdir(parents=True)
    labels = [
        {
            "name": n,
            "readable": n.split("--")[-1],
            "color": list(_vistas_colour(i)),
            "instances": True,
            "evaluate": True,
        }
        for i, n in enumerate(VISTAS_LABEL_NAMES)
    ]
    (root / "config_v2.0.json").write_text(json.dumps({"labels": labels, "version": "2.0"}))
    ids = {n: i for i, n in enumerate(VISTAS_LABEL_NAMES)}
    palette = [c for i in range(256) for c in (_vistas_colour(i) if i < len(labels) else (0, 0, 0))]

    def write(split: str, stem: str, label_map: np.ndarray | None, form: str = "palette") -> None:
        _write(root / split / "images" / f"{stem}.jpg", jpeg_bytes(64, 48, seed=zlib.crc32(stem.encode()) % 1000))
        if label_map is None:
            return
        if form == "palette":
            img = Image.frombytes("P", (label_map.shape[1], label_map.shape[0]), label_map.astype(np.uint8).tobytes())
            img.putpalette(palette)
        elif form == "uint16":
            img = Image.fromarray(label_map.astype(np.uint16))
        elif form == "rgb":
            img = Image.fromarray(np.array([_vistas_colour(i) for i in range(256)], dtype=np.uint8)[label_map], "RGB")
        else:
            raise ValueError(form)
        _write(root / split / "v2.0" / "labels" / f"{stem}.png", encode(img, "PNG"))

    above, below = min_pixels + 100, min_pixels - 100
    write("training", "tr_cones", _label_map(ids, {"object--traffic-cone": above}))
    write(
        "training",
        "tr_few_cones",
        _label_map(ids, {"object--traffic-cone": below, "construction--barrier--curb": 1500}),
    )
    write("training", "tr_no_label", None)
    write(
        "validation",
        "va_mixed16",
        _label_map(
            ids,
            {
                "construction--barrier--temporary": min_pixels // 2 + 50,
                "object--traffic-sign--temporary-front": min_pixels // 2,
            },
        ),
        "uint16",
    )
    write(
        "validation",
        "va_permanent",
        _label_map(ids, {"construction--barrier--fence": 2000, "object--traffic-sign--front": 900}),
    )
    write("validation", "va_rgb_back", _label_map(ids, {"object--traffic-sign--temporary-back": above}), "rgb")
    for stem in ("te_1", "te_2"):
        write("testing", stem, None)
    expected = {
        "training/tr_cones": 1,
        "training/tr_few_cones": 0,
        "validation/va_mixed16": 1,
        "validation/va_permanent": 0,
        "validation/va_rgb_back": 1,
    }
    return VistasFixture(root=root, ids=ids, expected_labels=expected, skipped_unlabeled=3)


# The production profile's styles, written out so the tests do not depend on profile edits.
NATIX = SyntheticStyle(
    n_images=6000,
    positive_rate=0.30,
    label_noise=0.10,
    hard_negative_rate=0.35,
    jpeg_quality=(35, 70),
    blur_max=1.6,
    noise_std=9.0,
    n_cameras=40,
    frames_per_sequence=(3, 8),
    night_rate=0.30,
    weather_probs={"clear": 0.55, "rain": 0.2, "snow": 0.1, "fog": 0.15},
)
ROADWORK = SyntheticStyle(
    n_images=4000,
    positive_rate=0.92,
    label_noise=0.05,
    hard_negative_rate=0.5,
    jpeg_quality=(85, 95),
    blur_max=0.4,
    noise_std=2.0,
    n_cameras=12,
    frames_per_sequence=(4, 10),
    night_rate=0.15,
    weather_probs={"clear": 0.7, "rain": 0.15, "snow": 0.05, "fog": 0.1},
)
MAPILLARY = SyntheticStyle(
    n_images=4000,
    positive_rate=0.12,
    label_noise=0.03,
    hard_negative_rate=0.45,
    jpeg_quality=(60, 95),
    blur_max=1.0,
    noise_std=5.0,
    n_cameras=200,
    frames_per_sequence=(1, 3),
    night_rate=0.25,
    weather_probs={"clear": 0.5, "rain": 0.2, "snow": 0.15, "fog": 0.15},
)
