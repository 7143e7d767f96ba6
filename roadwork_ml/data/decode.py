"""Safe image decoding, normalisation for the store, perceptual hashes, and ingest.

Every image a source yields passes through :func:`ingest`:

1. :func:`safe_open` decodes the raw bytes defensively: empty data, non-images,
   formats outside :data:`ALLOWED_FORMATS`, decompression bombs (judged from the header,
   before any pixel is decoded), truncated files (a full decode is forced) and tiny images
   raise :class:`DecodeError`. The EXIF orientation is applied and any pixel mode is turned
   into 8-bit RGB (16-bit data is scaled, alpha is composited on a neutral background).
2. :func:`normalize_for_store` downscales to ``store_max_side`` and re-encodes as JPEG;
   a JPEG that is already RGB, upright and small enough keeps its original bytes.
3. The stored bytes get a SHA-256, the image a 64-bit DCT pHash.

A failure becomes a :class:`~roadwork_ml.data.records.Quarantined` entry with a reason
``"<code>: <detail>"`` (see :data:`REASON_CODES`) and never stops the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import islice

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps, UnidentifiedImageError

from roadwork_ml.config import DecodeConfig
from roadwork_ml.data.records import MANIFEST_SCHEMA, ImageRecord, Quarantined, time_of_day, validate_table

# Formats we let PIL parse. Anything else (EPS would even run Ghostscript) is "not_an_image".
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # JPEG also opens MPO (phone) files

# Transparent pixels are composited on mid-grey: neutral after ImageNet normalisation,
# and neither the black nor the white of a real scene.
ALPHA_BACKGROUND = (128, 128, 128)

REASON_CODES = {
    "empty": "zero-byte data",
    "not_an_image": "PIL cannot identify the data as an image of an allowed format",
    "corrupt_header": "the header could be identified but not parsed",
    "decompression_bomb": "width*height above DecodeConfig.max_pixels (or PIL's own bomb limit)",
    "too_small": "a side below DecodeConfig.min_side",
    "truncated": "the pixel data ends early",
    "decode_failed": "the pixel data could not be decoded",
    "convert_failed": "the decoded image could not be converted to RGB",
    "encode_failed": "the normalised image could not be encoded",
}


class DecodeError(ValueError):
    """An image that cannot be used. ``reason`` is a short code from :data:`REASON_CODES`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


def reason_code(reason: str) -> str:
    """The machine code of a quarantine reason (``"truncated: ..."`` → ``"truncated"``)."""
    return reason.split(":", 1)[0].strip()


# ---------------------------------------------------------------------------------------
# decoding


def _open_lazy(data: bytes, cfg: DecodeConfig) -> Image.Image:
    """``Image.open`` (header only) with PIL's bomb warning turned into an error, no global state touched."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except Image.DecompressionBombWarning as exc:
            # PIL's warning threshold (MAX_IMAGE_PIXELS) is below the configured limit:
            # the configured limit decides (checked by the caller from the header).
            if cfg.max_pixels <= (Image.MAX_IMAGE_PIXELS or 0):
                raise DecodeError("decompression_bomb", str(exc)) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)


def _scale_16bit(arr: np.ndarray) -> np.ndarray:
    """0..65535 → 0..255 by rounding v/257 (65535 → 255, 32768 → 128), not by clipping."""
    arr = np.clip(arr.astype(np.float64), 0, 65535)
    return np.rint(arr / 257.0).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray, mode="L").convert("RGB")


def _composite(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, background + (255,))
    base.alpha_composite(rgba)
    return base.convert("RGB")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = ALPHA_BACKGROUND) -> Image.Image:
    """Any PIL mode → 8-bit RGB, scaling high-bit-depth data and compositing alpha on ``background``."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF): scale, do not clip
        return _gray_to_rgb(_scale_16bit(np.asarray(img)))
    if mode == "I":  # 32-bit int container (TIFF, older PNG plugins for 16-bit grey)
        arr = np.asarray(img).astype(np.int64)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:  # 8-bit data in a wide container
            gray = arr.astype(np.uint8)
        elif lo >= 0 and hi <= 65535:
            gray = _scale_16bit(arr)
        else:  # arbitrary range: stretch
            gray = np.rint((arr - lo) * (255.0 / max(hi - lo, 1))).astype(np.uint8)
        return _gray_to_rgb(gray)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            gray = np.rint(arr * 255.0)
        elif lo >= 0.0 and hi <= 255.0:
            gray = np.rint(arr)
        else:
            gray = np.rint((arr - lo) * (255.0 / max(hi - lo, 1e-12)))
        return _gray_to_rgb(gray.astype(np.uint8))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return _composite(img, background)
    # 1, L, P, CMYK (Adobe inversion handled by the JPEG plugin), YCbCr, LAB, HSV, RGBX ...
    return img.convert("RGB")


def safe_open(data: bytes, cfg: DecodeConfig) -> Image.Image:
    """Decode ``data`` into an upright, fully loaded RGB image or raise :class:`DecodeError`."""
    rgb, _ = _safe_open(data, cfg)
    return rgb


def _safe_open(data: bytes, cfg: DecodeConfig) -> tuple[Image.Image, bool]:
    """:func:`safe_open`, also saying whether ``data`` is already a storable JPEG (RGB, upright)."""
    if not data:
        raise DecodeError("empty", "zero-byte data")
    try:
        img = _open_lazy(data, cfg)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise DecodeError("not_an_image", f"{len(data)} bytes not recognised as {'/'.join(ALLOWED_FORMATS)}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure on hostile input
        raise DecodeError("corrupt_header", f"{type(exc).__name__}: {exc}") from None

    # Header checks, before a single pixel is decoded.
    width, height = img.size
    if width * height > cfg.max_pixels:
        raise DecodeError(
            "decompression_bomb", f"{width}x{height} = {width * height} pixels > max_pixels {cfg.max_pixels}"
        )
    if min(width, height) < cfg.min_side:
        raise DecodeError("too_small", f"{width}x{height}, min_side {cfg.min_side}")

    src_format, src_mode = img.format, img.mode
    drafted = False
    if src_format == "JPEG" and src_mode in ("RGB", "L") and max(width, height) >= 2 * cfg.store_max_side:
        # DCT-domain downscale while decoding (1/2, 1/4, 1/8): still reads every byte, so
        # truncation is still caught, but a 12 MP photo decodes several times faster.
        scale = cfg.store_max_side / max(width, height)
        img.draft(src_mode, (math.ceil(width * scale), math.ceil(height * scale)))
        drafted = img.size != (width, height)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()  # forces the full decode: truncation shows up here
    except Image.DecompressionBombWarning as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError("decompression_bomb", str(exc)) from None
    except OSError as exc:
        text = str(exc)
        code = "truncated" if "truncat" in text.lower() else "decode_failed"
        raise DecodeError(code, text) from None
    except Exception as exc:  # noqa: BLE001
        raise DecodeError("decode_failed", f"{type(exc).__name__}: {exc}") from None

    orientation = 1
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block does not make a broken image
        orientation = 1
    if orientation != 1:
        with contextlib.suppress(Exception):  # keep the pixels as stored
            img = ImageOps.exif_transpose(img)

    try:
        rgb = to_rgb(img)
    except Exception as exc:  # noqa: BLE001
        raise DecodeError("convert_failed", f"mode {src_mode}: {type(exc).__name__}: {exc}") from None
    storable_jpeg = src_format == "JPEG" and src_mode == "RGB" and orientation in (0, 1) and not drafted
    return rgb, storable_jpeg


# ---------------------------------------------------------------------------------------
# store normalisation and hashes


def _fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_for_store(img: Image.Image, cfg: DecodeConfig) -> Image.Image:
    """RGB, downscaled (Lanczos) so the long side is at most ``store_max_side``."""
    if img.mode != "RGB":
        img = to_rgb(img)
    size = _fitted_size(img.width, img.height, cfg.store_max_side)
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def encode_jpeg(img: Image.Image, quality: int, subsampling: int | None = None) -> bytes:
    """JPEG bytes of ``img`` at ``quality`` (1-95); ``subsampling`` 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0,
    None = the encoder's default. The one JPEG encoder of roadwork_ml (ingest, synthetic scenes)."""
    buf = io.BytesIO()
    kw = {} if subsampling is None else {"subsampling": int(subsampling)}
    try:
        img.save(buf, format="JPEG", quality=int(quality), **kw)
    except Exception as exc:  # noqa: BLE001
        raise DecodeError("encode_failed", f"{type(exc).__name__}: {exc}") from None
    return buf.getvalue()


def normalize_for_store(img: Image.Image, cfg: DecodeConfig) -> tuple[bytes, int, int]:
    """Downscale so the long side is ≤ ``store_max_side`` and JPEG-encode; ``(bytes, width, height)``."""
    fitted = fit_for_store(img, cfg)
    return encode_jpeg(fitted, cfg.store_jpeg_quality), fitted.width, fitted.height


def phash64(img: Image.Image) -> int:
    """64-bit DCT perceptual hash (``imagehash.phash``, hash_size 8) as an unsigned int.

    Bit order is imagehash's (row-major, first bit most significant), so
    ``phash64(img) == int(str(imagehash.phash(img)), 16)``.
    """
    import imagehash  # only the ingest hashes images: training and evaluation machines do without it

    bits = imagehash.phash(img, hash_size=8).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


# ---------------------------------------------------------------------------------------
# ingest


@dataclass
class IngestedRecord:
    """A record whose ``record.image_bytes`` are the bytes to store, with what the manifest needs."""

    record: ImageRecord
    sha256: str
    phash: int
    width: int
    height: int

    @property
    def record_id(self) -> str:
        return self.record.record_id

    @property
    def source(self) -> str:
        return self.record.source

    @property
    def label(self) -> int:
        return self.record.label

    @property
    def image_bytes(self) -> bytes:
        return self.record.image_bytes


@dataclass
class IngestResult:
    records: list[IngestedRecord] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    def reason_counts(self) -> dict[str, int]:
        return dict(Counter(reason_code(q.reason) for q in self.quarantined))


def ingest_one(
    item: ImageRecord | Quarantined, cfg: DecodeConfig, keep_bytes_if_jpeg_ok: bool = True
) -> IngestedRecord | Quarantined:
    """Decode, normalise and hash one record; a failure comes back as :class:`Quarantined`."""
    if isinstance(item, Quarantined):
        return item
    try:
        rgb, storable = _safe_open(item.image_bytes, cfg)
        if keep_bytes_if_jpeg_ok and storable and max(rgb.size) <= cfg.store_max_side:
            stored_img, data = rgb, item.image_bytes  # already what we would store: no re-encode
        else:
            stored_img = fit_for_store(rgb, cfg)
            data = encode_jpeg(stored_img, cfg.store_jpeg_quality)
        ph = phash64(stored_img)  # the hash of the image as stored (cheaper than the full-size one)
        width, height = stored_img.size
    except DecodeError as exc:
        return Quarantined(source=item.source, origin=item.origin or item.record_id, reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - never abort the batch on one image
        return Quarantined(
            source=item.source,
            origin=item.origin or item.record_id,
            reason=f"decode_failed: {type(exc).__name__}: {exc}",
        )
    stored = replace(item, image_bytes=data)
    return IngestedRecord(record=stored, sha256=hashlib.sha256(data).hexdigest(), phash=ph, width=width, height=height)


def iter_ingest(
    records: Iterable[ImageRecord | Quarantined],
    cfg: DecodeConfig,
    keep_bytes_if_jpeg_ok: bool = True,
    workers: int = 0,
    chunk_size: int = 64,
) -> Iterator[IngestedRecord | Quarantined]:
    """Streaming :func:`ingest`: yields results in input order. ``workers > 1`` decodes in threads
    (PIL releases the GIL while decoding), ``chunk_size * workers`` records in flight at most."""
    if workers <= 1:
        for item in records:
            yield ingest_one(item, cfg, keep_bytes_if_jpeg_ok)
        return
    iterator = iter(records)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        while True:
            chunk = list(islice(iterator, chunk_size * workers))
            if not chunk:
                return
            yield from pool.map(lambda it: ingest_one(it, cfg, keep_bytes_if_jpeg_ok), chunk)


def ingest(
    records: Iterable[ImageRecord | Quarantined],
    cfg: DecodeConfig,
    keep_bytes_if_jpeg_ok: bool = True,
    workers: int = 0,
) -> IngestResult:
    """Run every raw record through safe decoding; bad ones are quarantined, never fatal."""
    out = IngestResult()
    for result in iter_ingest(records, cfg, keep_bytes_if_jpeg_ok, workers):
        if isinstance(result, Quarantined):
            out.quarantined.append(result)
        else:
            out.records.append(result)
    return out


# ---------------------------------------------------------------------------------------
# manifest


def store_relpath(ing: IngestedRecord) -> str:
    """A collision-free relative path for the stored bytes: ``images/<source>/<sha[:2]>/<sha>.jpg``."""
    ext = "jpg"
    head = ing.image_bytes[:8]
    if head.startswith(b"\x89PNG"):
        ext = "png"
    return f"images/{ing.source}/{ing.sha256[:2]}/{ing.sha256}.{ext}"


def manifest_row(ing: IngestedRecord, path: str) -> dict:
    """One MANIFEST_SCHEMA row; ``path`` is relative to the manifest's directory."""
    rec = ing.record
    hour = int(rec.hour) if rec.hour is not None and 0 <= int(rec.hour) <= 23 else -1
    return {
        "record_id": rec.record_id,
        "source": rec.source,
        "path": path,
        "label": int(rec.label),
        "true_label": int(rec.true_label),
        "sha256": ing.sha256,
        "phash": int(ing.phash),
        "width": int(ing.width),
        "height": int(ing.height),
        "hour": hour,
        "time_of_day": time_of_day(hour),
        "weather": rec.weather,
        "camera_id": rec.camera_id,
        "sequence_id": rec.sequence_id,
        "group_id": rec.group_id,
        "origin": rec.origin,
        "tags": rec.tags,
    }


def to_manifest_table(ingested: Sequence[IngestedRecord], paths: Sequence[str] | None = None) -> pa.Table:
    """A table matching MANIFEST_SCHEMA exactly; ``paths`` default to :func:`store_relpath`."""
    if paths is None:
        paths = [store_relpath(ing) for ing in ingested]
    if len(paths) != len(ingested):
        raise ValueError(f"to_manifest_table: {len(ingested)} records but {len(paths)} paths")
    rows = [manifest_row(ing, p) for ing, p in zip(ingested, paths, strict=False)]
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    validate_table(table, MANIFEST_SCHEMA)
    return table
