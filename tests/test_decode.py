"""Safe decoding, store normalisation, hashes, ingest and the manifest table."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
import warnings

import imagehash
import numpy as np
import pyarrow as pa
import pytest
from fixtures_data import (  # tests/ is on sys.path: pytest prepends the dir of an __init__-less test module
    bomb_png,
    broken_stream_png,
    cmyk_jpeg,
    encode,
    exif_rotated_jpeg,
    jpeg_bytes,
    make_corrupt_image_folder,
    one_bit_png,
    palette_transparent_png,
    png16_bytes,
    rgba_png,
    scene_array,
    tiny_png,
    truncated_jpeg,
)
from PIL import Image

from roadwork_ml.config import DecodeConfig
from roadwork_ml.data.decode import (
    DecodeError,
    IngestedRecord,
    ingest,
    normalize_for_store,
    phash64,
    reason_code,
    safe_open,
    store_relpath,
    to_manifest_table,
    to_rgb,
)
from roadwork_ml.data.dedup import hamming
from roadwork_ml.data.readers import read_image_folder
from roadwork_ml.data.records import MANIFEST_SCHEMA, ImageRecord, Quarantined

CFG = DecodeConfig(max_pixels=89_478_485, min_side=16, store_max_side=1024, store_jpeg_quality=95)


def _reason(data: bytes, cfg: DecodeConfig = CFG) -> str:
    with pytest.raises(DecodeError) as info:
        safe_open(data, cfg)
    return info.value.reason


# ---------------------------------------------------------------------------------------
# rejections


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am a text file with a .jpg name\n", "not_an_image"),
        (truncated_jpeg(), "truncated"),
        (tiny_png(), "too_small"),
        (b"\x89PNG\r\n\x1a\n", "not_an_image"),
        (broken_stream_png(), "decode_failed"),
    ],
    ids=["zero_byte", "text", "truncated_jpeg", "one_by_one", "signature_only", "broken_stream"],
)
def test_bad_inputs_raise_decode_error_with_reason(data, reason):
    assert _reason(data) == reason


def test_decode_error_is_value_error_with_machine_reason():
    err = DecodeError("truncated", "12 bytes not processed")
    assert isinstance(err, ValueError)
    assert str(err) == "truncated: 12 bytes not processed"
    assert reason_code(str(err)) == "truncated"


def test_bomb_header_rejected_without_allocating():
    data = bomb_png(100_000, 100_000)  # 30 GB of RGB if decoded
    assert len(data) < 200
    tracemalloc.start()
    try:
        assert _reason(data) == "decompression_bomb"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_configured_pixel_limit_checked_from_header():
    small = DecodeConfig(max_pixels=10_000, min_side=16, store_max_side=1024, store_jpeg_quality=95)
    assert _reason(jpeg_bytes(200, 100), small) == "decompression_bomb"
    assert safe_open(jpeg_bytes(100, 100), small).size == (100, 100)


def test_pil_bomb_warning_becomes_decode_error_and_leaves_no_global_state():
    before_filters = list(warnings.filters)
    before_limit = Image.MAX_IMAGE_PIXELS
    # between PIL's warning (1x) and error (2x) thresholds: PIL only warns
    data = bomb_png(10_000, 10_000)
    assert _reason(data) == "decompression_bomb"
    assert warnings.filters == before_filters
    assert before_limit == Image.MAX_IMAGE_PIXELS
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_configured_limit_above_pil_limit_is_honoured(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL warns above 1000 px, errors above 2000
    data = jpeg_bytes(40, 40)  # 1600 px
    assert (
        _reason(data, DecodeConfig(max_pixels=1000, min_side=16, store_max_side=1024, store_jpeg_quality=95))
        == "decompression_bomb"
    )
    assert safe_open(
        data, DecodeConfig(max_pixels=5000, min_side=16, store_max_side=1024, store_jpeg_quality=95)
    ).size == (40, 40)
    assert (
        _reason(
            jpeg_bytes(50, 50), DecodeConfig(max_pixels=10**6, min_side=16, store_max_side=1024, store_jpeg_quality=95)
        )
        == "decompression_bomb"
    )


def test_large_jpeg_decoded_in_draft_mode_still_catches_truncation():
    cfg = DecodeConfig(max_pixels=10**8, min_side=16, store_max_side=64, store_jpeg_quality=90)
    whole = jpeg_bytes(400, 300, seed=9)
    img = safe_open(whole, cfg)
    assert max(img.size) < 400  # decoded at a DCT scale
    assert _reason(whole[: len(whole) * 2 // 3], cfg) == "truncated"
    (ing,) = ingest([ImageRecord(record_id="big", source="natix", label=1, image_bytes=whole)], cfg).records
    assert (ing.width, ing.height) == (64, 48)


def test_only_allowed_formats_are_parsed():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"
    assert _reason(eps) == "not_an_image"


# ---------------------------------------------------------------------------------------
# mode conversion


def test_png16_scaled_not_clipped():
    rgb = safe_open(png16_bytes(), CFG)
    arr = np.asarray(rgb)
    assert rgb.mode == "RGB" and arr.dtype == np.uint8
    assert (arr[:, 0:8] == 255).all()
    assert np.abs(arr[:, 8:16].astype(int) - 128).max() <= 1
    assert (arr[:, 16:24] == 0).all()
    assert (arr[:, 24:] == 1).all()  # 257 → 1, clipping would give 255


def test_mode_i_and_f_are_scaled():
    arr_i = np.full((20, 20), 65535, dtype=np.int32)
    arr_i[:, :10] = 0
    out = np.asarray(to_rgb(Image.fromarray(arr_i, "I")))
    assert out[0, 0, 0] == 0 and out[0, 15, 0] == 255
    arr_f = np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20)
    out = np.asarray(to_rgb(Image.fromarray(arr_f, "F")))
    assert out.min() == 0 and out.max() == 255


def test_cmyk_jpeg_converted_to_rgb():
    arr = np.asarray(safe_open(cmyk_jpeg(), CFG)).astype(int)
    assert np.abs(arr[16, 5] - [255, 0, 0]).max() < 40  # red half
    assert np.abs(arr[16, 35] - [0, 0, 255]).max() < 40  # blue half


def test_rgba_composited_on_grey_not_alpha_dropped():
    arr = np.asarray(safe_open(rgba_png(), CFG))
    assert tuple(arr[5, 2]) == (255, 0, 0)
    assert tuple(arr[5, 30]) == (128, 128, 128)  # transparent green → background, not green


def test_palette_with_transparency():
    arr = np.asarray(safe_open(palette_transparent_png(), CFG))
    assert tuple(arr[5, 2]) == (0, 0, 255)
    assert tuple(arr[5, 30]) == (128, 128, 128)


def test_one_bit_and_la():
    arr = np.asarray(safe_open(one_bit_png(), CFG))
    assert tuple(arr[5, 2]) == (255, 255, 255) and tuple(arr[5, 30]) == (0, 0, 0)
    la = np.zeros((20, 20, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 200, 0
    la[:, :10, 1] = 255
    arr = np.asarray(safe_open(encode(Image.fromarray(la, "LA"), "PNG"), CFG))
    assert tuple(arr[0, 0]) == (200, 200, 200) and tuple(arr[0, 15]) == (128, 128, 128)


def test_exif_orientation_applied():
    img = safe_open(exif_rotated_jpeg(80, 40), CFG)
    assert img.size == (40, 80)  # transposed
    arr = np.asarray(img).astype(int)
    assert arr[5, 20, 0] > 200 and arr[5, 20, 2] < 60  # red on top after 90° CW
    assert arr[75, 20, 2] > 200 and arr[75, 20, 0] < 60  # blue at the bottom


# ---------------------------------------------------------------------------------------
# store normalisation and hashes


def test_normalize_downscales_long_side_and_encodes_jpeg():
    cfg = DecodeConfig(max_pixels=10**8, min_side=16, store_max_side=100, store_jpeg_quality=80)
    img = Image.fromarray(scene_array(300, 120, seed=3))
    data, w, h = normalize_for_store(img, cfg)
    assert (w, h) == (100, 40)
    stored = Image.open(io.BytesIO(data))
    assert stored.format == "JPEG" and stored.size == (100, 40)


def test_phash64_matches_imagehash_and_hamming():
    a = Image.fromarray(scene_array(64, 48, seed=1))
    b = Image.fromarray(scene_array(64, 48, seed=2))
    ha, hb = phash64(a), phash64(b)
    assert ha == int(str(imagehash.phash(a, hash_size=8)), 16)
    assert 0 <= ha < 2**64
    assert hamming(ha, ha) == 0
    assert hamming(ha, hb) == bin(ha ^ hb).count("1") > 0
    # a re-encoded copy is a near duplicate
    near = Image.open(io.BytesIO(encode(a, "JPEG", quality=60)))
    assert hamming(ha, phash64(near)) <= 4


# ---------------------------------------------------------------------------------------
# ingest


def _rec(i: int, data: bytes, label: int = 1) -> ImageRecord:
    return ImageRecord(record_id=f"t:{i}", source="natix", label=label, image_bytes=data, origin=f"mem://{i}")


def test_ingest_keeps_good_jpeg_bytes_and_reencodes_others():
    good = jpeg_bytes(64, 48, seed=5)
    png = encode(Image.fromarray(scene_array(64, 48, seed=6)), "PNG")
    rot = exif_rotated_jpeg()
    result = ingest([_rec(0, good), _rec(1, png), _rec(2, rot)], CFG)
    assert not result.quarantined
    kept, png_ing, rot_ing = result.records
    assert kept.image_bytes is good  # no needless re-encode
    assert kept.sha256 == hashlib.sha256(good).hexdigest()
    assert (kept.width, kept.height) == (64, 48)
    assert Image.open(io.BytesIO(png_ing.image_bytes)).format == "JPEG"
    assert png_ing.sha256 == hashlib.sha256(png_ing.image_bytes).hexdigest()
    assert (rot_ing.width, rot_ing.height) == (40, 80)  # re-encoded upright
    assert Image.open(io.BytesIO(rot_ing.image_bytes)).size == (40, 80)
    # an oversize JPEG is downscaled even though it is RGB
    small = DecodeConfig(max_pixels=10**8, min_side=16, store_max_side=32, store_jpeg_quality=90)
    (big,) = ingest([_rec(3, good)], small).records
    assert max(big.width, big.height) == 32 and big.image_bytes is not good


def test_ingest_never_aborts_and_passes_reader_quarantine_through():
    items = [
        _rec(0, jpeg_bytes(seed=7)),
        _rec(1, b""),
        Quarantined(source="natix", origin="x.jpg", reason="missing_file: x.jpg"),
        _rec(2, truncated_jpeg()),
        _rec(3, jpeg_bytes(seed=8), label=0),
    ]
    result = ingest(items, CFG)
    assert [r.record_id for r in result.records] == ["t:0", "t:3"]
    assert result.reason_counts() == {"empty": 1, "missing_file": 1, "truncated": 1}
    assert [q.origin for q in result.quarantined] == ["mem://1", "x.jpg", "mem://2"]


def test_ingest_threads_give_the_same_result():
    items = [_rec(i, jpeg_bytes(48, 32, seed=i) if i % 5 else b"junk") for i in range(40)]
    serial = ingest(items, CFG)
    threaded = ingest(items, CFG, workers=4)
    assert [(r.record_id, r.sha256, r.phash) for r in serial.records] == [
        (r.record_id, r.sha256, r.phash) for r in threaded.records
    ]
    assert [q.origin for q in serial.quarantined] == [q.origin for q in threaded.quarantined]


def test_corrupt_image_folder_through_reader_and_ingest(tmp_path):
    fx = make_corrupt_image_folder(tmp_path)
    stats: dict = {}
    raw = list(read_image_folder(fx.root, "natix", stats=stats))
    assert len(raw) == len(fx.expected)  # corrupt files are yielded; ingest judges them
    assert stats["skipped_non_image"] == fx.skipped_non_image
    result = ingest(raw, CFG)
    assert len(result.records) == fx.n_kept == 9
    assert len(result.quarantined) == fx.n_quarantined == 6
    got = {str(q.origin).split("corrupt_folder/")[-1]: reason_code(q.reason) for q in result.quarantined}
    assert got == {rel: why for rel, why in fx.expected.items() if why is not None}
    kept = {r.record_id.split(":", 1)[1]: r for r in result.records}
    assert set(kept) == {rel for rel, why in fx.expected.items() if why is None}
    assert all(Image.open(io.BytesIO(r.image_bytes)).mode == "RGB" for r in result.records)
    assert (kept["roadwork/exif_rot6.jpg"].width, kept["roadwork/exif_rot6.jpg"].height) == (40, 80)
    assert kept["roadwork/drive_01/png16.png"].record.sequence_id == "drive_01"
    assert {r.label for k, r in kept.items() if k.startswith("roadwork/")} == {1}
    assert {r.label for k, r in kept.items() if k.startswith("no_roadwork/")} == {0}


# ---------------------------------------------------------------------------------------
# manifest table


def test_manifest_table_matches_schema(tmp_path):
    recs = [
        ImageRecord(
            record_id="a",
            source="natix",
            label=1,
            image_bytes=jpeg_bytes(seed=20),
            hour=23,
            weather="rain",
            sequence_id="s1",
        ),
        ImageRecord(record_id="b", source="natix", label=0, image_bytes=jpeg_bytes(seed=21), hour=-1),
    ]
    result = ingest(recs, CFG)
    table = to_manifest_table(result.records)
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=True)
    row = table.to_pylist()[0]
    assert row["time_of_day"] == "night" and row["group_id"] == "natix:s1"
    assert row["path"] == store_relpath(result.records[0]) and row["path"].endswith(".jpg")
    assert table.to_pylist()[1]["time_of_day"] == "unknown"
    assert table.column("phash").type == pa.uint64()
    big = IngestedRecord(record=recs[0], sha256="0" * 64, phash=2**64 - 1, width=1, height=1)
    assert to_manifest_table([big], ["x.jpg"]).column("phash").to_pylist() == [2**64 - 1]
    with pytest.raises(ValueError, match="paths"):
        to_manifest_table(result.records, ["only-one"])
