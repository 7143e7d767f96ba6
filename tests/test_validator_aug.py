"""roadwork_ml.augment.streetvision against the documented validator facts (v2.0.4) and independent oracles."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from roadwork_ml.augment import streetvision as V
from roadwork_ml.augment.policy import PhotoStyle, ValidatorPolicy
from roadwork_ml.evaluation.streetvision import augment, image_params


def _img(h=150, w=200, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def test_parameter_tables_match_the_documented_ones():
    assert V.SEVERITY_TABLES == {
        "CS": (0.4, 0.3, 0.2, 0.1, 0.0),
        "CC": (0.85, 0.725, 0.6, 0.475, 0.35),
        "JPEG": (2, 3, 4, 5, 6),
        "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),
        "GB": (7, 9, 13, 17, 21),
    }
    assert V.DISTORTION_ORDER == {2: (("CS", "CC", "JPEG"), 1), 3: (("CS", "CC", "JPEG", "GNC", "GB"), 2)}
    assert V.LEVEL_PROBS == (0.25,) * 4 and V.JPEG_QUALITY == 75 and V.IMAGE_SIZE == 224
    assert V.MAX_ROTATION == 20.0 and V.RRC_SCALE == (0.2, 1.0) and V.RRC_RATIO == (1.0, 1.0)


def test_drawn_parameters_follow_the_documented_distributions():
    rng = np.random.default_rng(0)
    draws = {lv: [V.draw_params(rng, lv, 300, 300) for _ in range(3000)] for lv in (1, 2, 3)}
    angles = np.array([p.angle for p in draws[1]])
    assert angles.min() >= -20 and angles.max() <= 20
    assert stats.kstest((angles + 20) / 40, "uniform").pvalue > 1e-3
    crops = np.array([p.crop for p in draws[1]])
    assert (crops[:, 2] == crops[:, 3]).all()  # square crops
    scale = crops[:, 2] * crops[:, 3] / 300**2
    assert scale.min() >= 0.19 and scale.max() <= 1.0
    assert stats.kstest((scale - 0.2) / 0.8, "uniform").pvalue > 1e-3
    assert draws[1][0].severities == {}
    for lv, top in ((2, 1), (3, 2)):
        kinds = V.DISTORTION_ORDER[lv][0]
        for k in kinds:
            sev = np.array([p.severities[k] for p in draws[lv]])
            counts = np.bincount(sev, minlength=top + 1)
            assert len(counts) == top + 1
            assert stats.chisquare(counts).pvalue > 1e-3, (lv, k, counts)
        assert set(draws[lv][0].severities) == set(kinds)
    # a naive variant (severity 0..top exclusive) fails the same check
    naive = np.bincount(rng.integers(0, 2, 3000), minlength=3)
    assert stats.chisquare(naive).pvalue < 1e-3
    levels = np.bincount([V.draw_level(rng) for _ in range(4000)], minlength=4)
    assert stats.chisquare(levels).pvalue > 1e-3


def test_level0_is_centre_square_pil_bilinear_then_jpeg75():
    img = _img(100, 160)
    sq = Image.fromarray(img[:, :, 30:130].permute(1, 2, 0).numpy()).resize((224, 224), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    sq.save(buf, format="JPEG", quality=75)
    want = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(V.validator_augment(img, V.ValidatorParams(0)), want)


def test_level1_rotation_is_nearest_black_fill_without_flip_or_centre_crop():
    vals = np.arange(0, 256, 17, dtype=np.uint8)
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.choice(vals, (3, 224, 224)))
    full = (0, 0, 224, 224)
    same = V.validator_augment(img, V.ValidatorParams(1, 0.0, full), jpeg=False)
    assert torch.equal(same, img)  # angle 0, whole image: identity (no flip, exact 8-bit round trip)
    rot = V.validator_augment(img, V.ValidatorParams(1, 15.0, full), jpeg=False)
    assert set(np.unique(rot.numpy())) <= set(vals.tolist()) | {0}  # nearest: no new grey levels
    assert (rot[:, 0, 0] == 0).all()  # corner rotated out: black fill
    # levels 1-3 crop from the whole rectangle, not a centre square
    lefts = [image_params(0, i, 1, 150, 400).crop[1] for i in range(200)]
    assert min(lefts) < 100 or max(lefts) > 150


def _ycrcb_oracle(bgr):
    b, g, r = [bgr[..., i].astype(np.float64) for i in range(3)]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, (r - y) * 0.713 + 0.5, (b - y) * 0.564 + 0.5


def test_saturation_scales_studio_range_chroma():
    rng = np.random.default_rng(2)
    bgr = rng.integers(60, 200, (32, 32, 3), dtype=np.uint8)
    for sev, f in ((1, 0.4), (2, 0.3)):
        out = V.apply_distortion(bgr, "CS", sev)
        y, cr, cb = _ycrcb_oracle(bgr)
        off = (1 - f) * (111.5 / 224 - 0.5)  # the studio-range round trip's offset
        cr2, cb2 = f * (cr - 0.5) + 0.5 + off, f * (cb - 0.5) + 0.5 + off
        r = y + 1.403 * (cr2 - 0.5)
        g = y - 0.714 * (cr2 - 0.5) - 0.344 * (cb2 - 0.5)
        b = y + 1.773 * (cb2 - 0.5)
        want = np.stack([b, g, r], -1)
        assert np.abs(out.astype(np.float64) - want).max() <= 1.01
        # saturation only lowers chroma: spread across channels shrinks
        assert out.astype(float).std(-1).mean() < bgr.astype(float).std(-1).mean() * (f + 0.1)


def test_contrast_truncates_the_product():
    bgr = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for sev, f in ((1, 0.85), (2, 0.725)):
        assert np.array_equal(
            V.apply_distortion(bgr, "CC", sev), np.floor(bgr.astype(np.float32) * np.float32(f)).astype(np.uint8)
        )


def test_jpeg_is_down_up_sampling_not_reencoding():
    bgr = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = V.apply_distortion(bgr, "JPEG", 1)
    assert out.shape == bgr.shape
    blocks = bgr.astype(np.float64).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    # bilinear x2 down-sampling samples between pixels: the 2x2 mean; interior up-sampled
    # pixels are blends of those means, so the output never leaves their range
    small = V.jpeg_downup(bgr, 2)
    assert (
        np.abs(
            small[1::2, 1::2][:-1, :-1].astype(float)
            - (
                0.75 * 0.75 * blocks[:-1, :-1]
                + 0.75 * 0.25 * (blocks[1:, :-1] + blocks[:-1, 1:])
                + 0.0625 * blocks[1:, 1:]
            )
        ).max()
        <= 1.01
    )
    assert V.jpeg_downup(bgr, 3).shape == bgr.shape


def test_blur_matches_a_separable_gaussian_with_reflect101_border():
    bgr = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for sev, k in ((1, 7), (2, 9)):
        sigma = k / 6
        x = np.arange(k) - k // 2
        g = np.exp(-(x**2) / (2 * sigma**2))
        g /= g.sum()
        pad = np.pad(bgr.astype(np.float64), ((k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="reflect")
        rows = sum(g[i] * pad[i : i + 40] for i in range(k))
        want = sum(g[i] * rows[:, i : i + 40] for i in range(k))
        assert np.abs(V.apply_distortion(bgr, "GB", sev).astype(float) - want).max() <= 1.01


def test_noise_variance_is_in_ycbcr_over_255_units():
    grey = np.full((200, 200, 3), 128, dtype=np.uint8)
    for sev, var in ((1, 0.001), (2, 0.002)):
        out = V.apply_distortion(grey, "GNC", sev, np.random.default_rng(sev)).astype(float)
        sigma_y = 255**2 * math.sqrt(var) / 219  # noise added to Y'/255, undone by the studio-range scale
        assert out[..., 2].std() == pytest.approx(sigma_y * math.sqrt(1 + 1.403**2 * (219 / 224) ** 2), rel=0.06)
        naive_sigma = 255 * math.sqrt(var)  # variance read as RGB units would be ~2x too weak
        assert abs(out[..., 2].std() - naive_sigma) > 0.3 * naive_sigma


def test_evaluation_and_training_use_the_same_pipeline():
    img = _img()
    for lv in V.LEVELS:
        prm = image_params(7, 3, lv, 150, 200)
        assert torch.equal(augment([img], lv, seed=7, start_index=3)[0], V.validator_augment(img, prm))
    pol = ValidatorPolicy(64, (0, 0, 0, 1), styles=[PhotoStyle((30, 60), 1.0, 5.0)], style_prob=0.5)
    a, b = pol(img, 11), pol(img, 11)
    assert a.shape == (3, 64, 64) and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, pol(img, 12))
    with pytest.raises(ValueError, match="probabilities"):
        ValidatorPolicy(64, (0.5, 0.5, 0.5, 0.5))
