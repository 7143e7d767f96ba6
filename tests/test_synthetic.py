"""Synthetic street scenes: determinism, label statistics, sequences, styles, hard negatives."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from roadwork_ml.data.records import TIMES_OF_DAY, WEATHERS, ImageRecord, time_of_day
from roadwork_ml.data.synthetic import ROADWORK_KINDS, SceneSpec, generate_source, make_sequence, render_scene
from tests.fixtures_data import MAPILLARY, NATIX, ROADWORK

SMALL = 48  # px: fast, still decodable and measurable
N_STATS = 2000
Z = 4.0  # tolerance in standard deviations (deterministic data: no flakiness, just a sanity band)


def _decode(rec: ImageRecord) -> Image.Image:
    im = Image.open(io.BytesIO(rec.image_bytes))
    im.load()
    return im


def _orange_fraction(rec: ImageRecord) -> float:
    """Share of pixels that are saturated, reasonably bright orange (hue ~11°–42°)."""
    hsv = np.asarray(_decode(rec).convert("RGB").convert("HSV")).astype(np.int16)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return float(((h >= 8) & (h <= 30) & (s >= 110) & (v >= 80)).mean())


@pytest.fixture(scope="module")
def natix() -> list[ImageRecord]:
    return list(generate_source("natix", NATIX, SMALL, seed=123, n_images=N_STATS))


@pytest.fixture(scope="module")
def sequences(natix) -> dict[str, list[ImageRecord]]:
    out: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in natix:
        out[r.sequence_id].append(r)
    return out


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_records():
    a = list(generate_source("natix", NATIX, SMALL, seed=7, n_images=40))
    b = list(generate_source("natix", NATIX, SMALL, seed=7, n_images=40))
    assert [r.image_bytes for r in a] == [r.image_bytes for r in b]
    assert [(r.record_id, r.label, r.true_label, r.tags, r.hour, r.weather, r.camera_id) for r in a] == [
        (r.record_id, r.label, r.true_label, r.tags, r.hour, r.weather, r.camera_id) for r in b
    ]


def test_different_seed_or_source_gives_different_images():
    a = list(generate_source("natix", NATIX, SMALL, seed=7, n_images=40))
    b = list(generate_source("natix", NATIX, SMALL, seed=8, n_images=40))
    c = list(generate_source("mapillary", NATIX, SMALL, seed=7, n_images=40))  # same style, other source name
    assert sum(x.image_bytes != y.image_bytes for x, y in zip(a, b, strict=True)) == 40
    assert sum(x.image_bytes != y.image_bytes for x, y in zip(a, c, strict=True)) == 40


_DIGEST_SCRIPT = """
import hashlib
from roadwork_ml.config import SyntheticStyle
from roadwork_ml.data.synthetic import generate_source
style = SyntheticStyle.model_validate_json({style!r})
h = hashlib.sha256()
for r in generate_source("natix", style, 40, seed=11, n_images=25):
    h.update(r.image_bytes + r.tags.encode())
print(h.hexdigest())
"""


def test_bytes_identical_across_processes_and_hash_seeds():
    script = _DIGEST_SCRIPT.format(style=NATIX.model_dump_json())
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    h = hashlib.sha256()
    for r in generate_source("natix", NATIX, 40, seed=11, n_images=25):
        h.update(r.image_bytes + r.tags.encode())
    digests.add(h.hexdigest())
    assert len(digests) == 1, digests


def test_prefix_of_a_longer_run_is_identical():
    short = list(generate_source("mapillary", MAPILLARY, SMALL, seed=3, n_images=13))
    long = list(generate_source("mapillary", MAPILLARY, SMALL, seed=3, n_images=37))
    assert len(short) == 13 and len(long) == 37
    assert [(r.record_id, r.image_bytes, r.tags) for r in short] == [
        (r.record_id, r.image_bytes, r.tags) for r in long[:13]
    ]


def test_render_scene_is_a_pure_function_of_spec_size_and_rng():
    spec = make_sequence("roadwork", ROADWORK, 5, 0)[0]
    assert isinstance(spec, SceneSpec)
    a = render_scene(spec, 80, np.random.default_rng(1))
    b = render_scene(spec, 80, np.random.default_rng(1))
    assert a.mode == "RGB" and a.size == (80, 80)
    assert a.tobytes() == b.tobytes()
    big = render_scene(spec, 160, np.random.default_rng(1))
    assert big.size == (160, 160)


# ----------------------------------------------------------------------------- records


def test_records_have_the_documented_fields(natix):
    assert len(natix) == N_STATS
    for i, r in enumerate(natix):
        assert r.record_id == f"natix-{i:06d}"
        assert r.source == "natix"
        assert r.origin == f"synthetic:natix:123:{i}"
        assert re.fullmatch(r"natix-cam-\d{3}", r.camera_id) and int(r.camera_id[-3:]) < NATIX.n_cameras
        assert r.group_id == f"natix:{r.sequence_id}" and r.sequence_id.startswith("natix-seq")
        assert 0 <= r.hour <= 23 and r.weather in WEATHERS
        assert r.label in (0, 1) and r.true_label in (0, 1)
        tags = json.loads(r.tags)
        assert tags["roadwork"] == bool(r.true_label)
        assert tags["label_flipped"] == (r.label != r.true_label)
        assert NATIX.jpeg_quality[0] <= tags["jpeg_quality"] <= NATIX.jpeg_quality[1]


def test_images_decode_as_rgb_of_the_requested_size(natix):
    for r in natix[::10]:
        im = _decode(r)
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SMALL, SMALL)
    for size in (64, 131):
        for r in generate_source("roadwork", ROADWORK, size, seed=1, n_images=3):
            im = _decode(r)
            assert im.mode == "RGB" and im.size == (size, size)


def test_n_images_defaults_to_the_style_and_zero_is_empty():
    tiny = ROADWORK.model_copy(update={"n_images": 5})
    assert len(list(generate_source("roadwork", tiny, SMALL, seed=1))) == 5
    assert list(generate_source("roadwork", ROADWORK, SMALL, seed=1, n_images=0)) == []


def test_bad_style_is_rejected_with_a_clear_message():
    bad = NATIX.model_copy(update={"weather_probs": {"clear": 0.5, "hail": 0.5}})
    with pytest.raises(ValueError, match="hail"):
        next(generate_source("natix", bad, SMALL, seed=1, n_images=1))
    bad = NATIX.model_copy(update={"frames_per_sequence": (5, 2)})
    with pytest.raises(ValueError, match="frames_per_sequence"):
        next(generate_source("natix", bad, SMALL, seed=1, n_images=1))


# ----------------------------------------------------------------------------- label statistics


def test_positive_rate_within_binomial_tolerance(natix, sequences):
    # roadwork presence is drawn once per sequence: test the sequence share (plain binomial) ...
    seq_pos = [s[0].true_label for s in sequences.values()]
    n_seq = len(seq_pos)
    p = NATIX.positive_rate
    assert abs(np.mean(seq_pos) - p) <= Z * math.sqrt(p * (1 - p) / n_seq), (np.mean(seq_pos), n_seq)
    # ... and the frame share, whose variance grows with the squared sequence lengths
    lengths = np.array([len(s) for s in sequences.values()])
    sigma = math.sqrt(p * (1 - p) * float((lengths**2).sum())) / lengths.sum()
    frame_share = np.mean([r.true_label for r in natix])
    assert abs(frame_share - p) <= Z * sigma, (frame_share, sigma)


def test_label_noise_rate_within_binomial_tolerance(natix):
    flips = np.array([r.label != r.true_label for r in natix])
    q = NATIX.label_noise
    assert abs(flips.mean() - q) <= Z * math.sqrt(q * (1 - q) / len(natix)), flips.mean()
    # noise hits both classes
    truth = np.array([r.true_label for r in natix])
    assert 0.03 < flips[truth == 1].mean() < 0.2 and 0.03 < flips[truth == 0].mean() < 0.2


def test_roadwork_source_is_mostly_positive_and_mapillary_mostly_negative():
    rw = [r.true_label for r in generate_source("roadwork", ROADWORK, 32, seed=2, n_images=300)]
    mp = [r.true_label for r in generate_source("mapillary", MAPILLARY, 32, seed=2, n_images=300)]
    assert np.mean(rw) > 0.8
    assert np.mean(mp) < 0.25


def test_all_weathers_and_times_of_day_appear_at_about_the_configured_rates(sequences):
    first = [s[0] for s in sequences.values()]
    n = len(first)
    weathers = Counter(r.weather for r in first)
    tods = Counter(time_of_day(r.hour) for r in first)
    assert set(weathers) == set(WEATHERS)
    assert set(tods) == set(TIMES_OF_DAY)
    for w, p in NATIX.weather_probs.items():
        assert abs(weathers[w] / n - p) <= Z * math.sqrt(p * (1 - p) / n), (w, weathers[w] / n)
    p = NATIX.night_rate
    assert abs(tods["night"] / n - p) <= Z * math.sqrt(p * (1 - p) / n), tods


def test_frames_of_a_sequence_share_camera_hour_weather_and_truth(sequences):
    lo, hi = NATIX.frames_per_sequence
    ids = list(sequences)
    for sid, frames in sequences.items():
        assert len({(r.camera_id, r.hour, r.weather, r.true_label, r.group_id) for r in frames}) == 1, sid
        if sid != ids[-1]:  # the last sequence may be cut short by n_images
            assert lo <= len(frames) <= hi
        assert [json.loads(r.tags)["frame"] for r in frames] == list(range(len(frames)))
    # ... but the frames are different pictures (the camera moves)
    multi = [f for f in sequences.values() if len(f) > 1]
    assert all(f[0].image_bytes != f[1].image_bytes for f in multi)


# ----------------------------------------------------------------------------- content


def test_positives_show_a_clearly_visible_roadwork_object_and_negatives_none(natix):
    for r in natix:
        tags = json.loads(r.tags)
        objs = tags["roadwork_objects"]
        if r.true_label:
            assert sum(objs.values()) >= 1, r.record_id
            assert set(objs) <= set(ROADWORK_KINDS)
            assert tags["roadwork_max_height"] >= 0.09, (r.record_id, tags)
        else:
            assert objs == {} and tags["roadwork_max_height"] == 0
    positives = [json.loads(r.tags) for r in natix if r.true_label]
    assert np.mean([sum(t["roadwork_objects"].values()) for t in positives]) >= 3  # usually several
    kinds = Counter(k for t in positives for k in t["roadwork_objects"])
    assert {"cone", "barrier", "drum", "work_sign", "worker"} <= set(kinds), kinds


def test_roadwork_boxes_tag_where_the_roadwork_is(natix):
    """``roadwork_boxes``: image fractions, none on negatives, at least one on nearly every positive
    (fog may hide them all), never more than the visible roadwork objects; inside the boxes the
    pixels are far more often orange than outside (cones, barriers, drums and signs are)."""
    inside, outside, with_boxes, positives = [], [], 0, 0
    for r in natix:
        tags = json.loads(r.tags)
        boxes = np.asarray(tags["roadwork_boxes"], dtype=float).reshape(-1, 4)
        if not r.true_label:
            assert len(boxes) == 0, r.record_id
            continue
        positives += 1
        with_boxes += len(boxes) > 0
        assert len(boxes) <= sum(tags["roadwork_objects"].values())
        assert (
            ((boxes >= 0) & (boxes <= 1)).all()
            and (boxes[:, 2] > boxes[:, 0]).all()
            and (boxes[:, 3] > boxes[:, 1]).all()
        )
        rgb = np.asarray(Image.open(io.BytesIO(r.image_bytes)).convert("RGB"), dtype=float)
        h, w, _ = rgb.shape
        orange = (rgb[..., 0] > 150) & (rgb[..., 0] - rgb[..., 2] > 70)
        mask = np.zeros((h, w), dtype=bool)
        for u0, v0, u1, v1 in boxes:
            mask[int(v0 * h) : math.ceil(v1 * h), int(u0 * w) : math.ceil(u1 * w)] = True
        if mask.any() and (~mask).any():
            inside.append(orange[mask].mean())
            outside.append(orange[~mask].mean())
    assert with_boxes >= 0.9 * positives
    assert np.mean(inside) > 5 * np.mean(outside), (np.mean(inside), np.mean(outside))


def test_hard_negatives_hold_orange_non_roadwork_things(natix):
    rows = [(json.loads(r.tags), r) for r in natix if r.true_label == 0]
    hard = [(t, r) for t, r in rows if t["hard_negative"]]
    plain = [(t, r) for t, r in rows if not t["hard_negative"]]
    share = len(hard) / len(rows)
    assert abs(share - NATIX.hard_negative_rate) < 0.12, share  # sequence-clustered, hence the wide band
    for t, r in hard:
        assert not t["roadwork"] and t["roadwork_objects"] == {} and t["distractors"], r.record_id
    # measured in pixels (not night: at night orange things are dark, as in real dashcam footage)
    lit = lambda pairs: [_orange_fraction(r) for t, r in pairs if time_of_day(r.hour) != "night"]
    hard_orange, plain_orange = lit(hard), lit(plain)
    assert len(hard_orange) > 100
    assert np.mean(np.array(hard_orange) > 0) >= 0.9, np.mean(np.array(hard_orange) > 0)
    assert np.mean(hard_orange) > 2.0 * np.mean(plain_orange), (np.mean(hard_orange), np.mean(plain_orange))
    kinds = Counter(k for t, _ in hard for k in t["distractors"])
    assert len(kinds) >= 6, kinds  # cars, vans, awnings, lights, jackets, bins, trees...


def test_jpeg_quality_style_natix_smaller_than_roadwork():
    natix = [len(r.image_bytes) for r in generate_source("natix", NATIX, 96, seed=4, n_images=60)]
    roadwork = [len(r.image_bytes) for r in generate_source("roadwork", ROADWORK, 96, seed=4, n_images=60)]
    assert np.mean(natix) < 0.7 * np.mean(roadwork), (np.mean(natix), np.mean(roadwork))


def test_cameras_fix_their_style_and_mapillary_is_diverse():
    specs = [make_sequence("mapillary", MAPILLARY, 9, i)[0] for i in range(80)]
    cams = {s.camera.camera_id for s in specs}
    assert len(cams) > 50  # 200 cameras, short sequences: mostly distinct
    by_cam = defaultdict(set)
    for i in range(80):
        s = make_sequence("natix", NATIX, 9, i)[0]
        by_cam[s.camera.camera_id].add((s.camera.horizon, s.camera.cast, s.camera.jpeg_quality))
    assert all(len(v) == 1 for v in by_cam.values())
    horizons = [s.camera.horizon for s in specs]
    assert max(horizons) - min(horizons) > 0.15
