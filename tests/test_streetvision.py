"""roadwork_ml.evaluation.streetvision: validator augmentations, output scoring and reward."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from roadwork_ml.evaluation.bootstrap import Interval
from roadwork_ml.evaluation.streetvision import LEVELS, augment, reward, score_outputs, streetvision_eval


def _images(n: int = 3, h: int = 150, w: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, h, w), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("level", LEVELS)
def test_shapes_dtype_determinism(level):
    imgs = _images()
    assert augment(imgs[:1], level, seed=5).shape == (1, 3, 224, 224)
    a = augment(imgs, level, seed=5, size=96)
    assert a.shape == (3, 3, 96, 96) and a.dtype == torch.uint8
    assert torch.equal(a, augment(imgs, level, seed=5, size=96))
    # per-image generators: batching does not change the result
    assert torch.equal(a[2:], augment(imgs[2:], level, seed=5, size=96, start_index=2))
    if level > 0:
        assert not torch.equal(a[:1], augment(imgs[:1], level, seed=6, size=96))


def _pil_resize_jpeg75(im: torch.Tensor) -> torch.Tensor:
    pil = Image.fromarray(im.permute(1, 2, 0).numpy()).resize((224, 224), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=75)
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()).permute(2, 0, 1)


def test_level0_is_centre_square_resize_then_validator_jpeg():
    imgs = _images(3, 300, 300)
    assert torch.equal(augment(imgs, 0, seed=0), torch.stack([_pil_resize_jpeg75(im) for im in imgs]))
    # non-square: centre square first
    rect = _images(1, 100, 160)
    assert torch.equal(augment(rect, 0, seed=0)[0], _pil_resize_jpeg75(rect[0, :, :, 30:130].contiguous()))


def test_higher_levels_change_the_image():
    imgs = _images(3, 224, 224)
    outs = {lv: augment(imgs, lv, seed=1, size=128).float() for lv in LEVELS}
    for lv in (1, 2, 3):
        for i in range(3):
            assert (outs[lv][i] - outs[0][i]).abs().mean() > 5, (lv, i)
    assert not torch.equal(outs[2], outs[1]) and not torch.equal(outs[3], outs[2])


def test_variable_size_sequence_and_bad_input():
    seq = [_images(1, 120, 90)[0], _images(1, 256, 300)[0]]
    assert augment(seq, 2, seed=0).shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="uint8"):
        augment(_images().float(), 0, seed=0)
    with pytest.raises(ValueError, match="level"):
        augment(_images(), 4, seed=0)


def test_reward_formula():
    assert reward(1.0, 1.0) == 1.0
    assert reward(0.0, 0.5) == pytest.approx(0.25**3)
    assert reward(0.6, 0.8) == pytest.approx(0.7**3)
    assert reward(-1.0, 0.0) == pytest.approx(-0.125)


def test_score_outputs_marks_invalid_as_wrong():
    out = [0.2, 0.7, np.nan, -1.0, 1.5, 0.5, 1.0, np.inf]
    s = score_outputs(out)
    assert s["valid"].tolist() == [True, True, False, False, False, True, True, False]
    assert s["preds"].tolist() == [0, 1, -1, -1, -1, 0, 1, -1]
    assert s["n_invalid"] == 4
    y = [0, 1, 1, 0, 1, 0, 1, 0]
    s = score_outputs(out, y)
    assert s["preds"].tolist() == [0, 1, 0, 1, 0, 0, 1, 1]  # invalid -> the wrong class
    assert s["accuracy"] == pytest.approx(4 / 8)
    assert s["reward"] == pytest.approx(reward(s["mcc"], 0.5))


def _labelled_images(n: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """Flat images: bright (230) = roadwork, dark (20) = none; the brightest pixel tells them apart."""
    y = np.array([i % 2 for i in range(n)])
    imgs = torch.where(torch.as_tensor(y)[:, None, None, None] == 1, 230, 20).to(torch.uint8).expand(n, 3, 180, 240)
    return imgs.contiguous(), y


def test_oracle_predictor_scores_one():
    imgs, y = _labelled_images(12)
    seen = []

    def oracle(batch: torch.Tensor) -> np.ndarray:
        seen.append(tuple(batch.shape))
        return (batch.flatten(1).max(dim=1).values > 128).numpy().astype(float)

    r = streetvision_eval(oracle, imgs, y, seed=0, batch_size=5, n_resamples=100, return_outputs=True)
    assert all(s[1:] == (3, 224, 224) for s in seen) and max(s[0] for s in seen) == 5
    for part in [r[f"level_{lv}"] for lv in LEVELS] + [r["pooled"]]:
        for key in ("mcc", "accuracy", "reward"):
            iv = part[key]
            assert isinstance(iv, Interval) and (iv.estimate, iv.high) == (1.0, 1.0)
        # a one-class resample has MCC 0 (sklearn convention), so only accuracy is exactly [1, 1]
        assert part["accuracy"].low == 1.0 and part["mcc"].low > 0
        assert part["n_invalid"] == 0
    assert r["pooled"]["n"] == 4 * len(y) and r["n_images"] == len(y)
    assert set(r) == {"level_0", "level_1", "level_2", "level_3", "pooled", "n_images", "seed", "outputs"}
    assert r["outputs"][3].shape == (len(y),)


def test_nan_predictor_is_all_invalid():
    imgs, y = _labelled_images(6)
    r = streetvision_eval(lambda b: np.full(b.shape[0], np.nan), imgs, y, levels=(0, 2), n_resamples=100)
    assert r["pooled"]["n_invalid"] == 12 and r["level_2"]["n_invalid"] == 6 and "level_1" not in r
    assert "outputs" not in r
    assert r["pooled"]["accuracy"].estimate == 0.0
    assert r["pooled"]["reward"].estimate <= 0.0 and r["pooled"]["reward"].high <= 0.0


def test_noisy_predictor_reward_interval_brackets_estimate():
    imgs, y = _labelled_images(12)
    rng = np.random.default_rng(0)

    def noisy(batch: torch.Tensor) -> np.ndarray:
        truth = (batch.flatten(1).max(dim=1).values > 128).numpy()
        flip = rng.random(truth.shape[0]) < 0.2
        return np.where(flip, 1 - truth, truth).astype(float) * 0.8 + 0.1

    r = streetvision_eval(noisy, imgs, y, n_resamples=300)
    pooled = r["pooled"]
    assert pooled["reward"].low <= pooled["reward"].estimate <= pooled["reward"].high
    assert pooled["reward"].estimate == pytest.approx(reward(pooled["mcc"].estimate, pooled["accuracy"].estimate))
    assert 0.0 < pooled["accuracy"].estimate < 1.0 and not math.isnan(pooled["reward"].se)
    as_json = {
        k: {kk: vv.to_dict() if isinstance(vv, Interval) else vv for kk, vv in v.items()} if isinstance(v, dict) else v
        for k, v in r.items()
    }
    json.dumps(as_json, allow_nan=False)
    with pytest.raises(ValueError, match="outputs for a batch"):
        streetvision_eval(lambda b: np.zeros(1), imgs[:2], y[:2], levels=(0,), n_resamples=10)


def test_generated_slice_folder_is_read_with_the_safe_decoder(tmp_path):
    from roadwork_ml.config import DecodeConfig
    from roadwork_ml.evaluation.streetvision import load_generated_slice

    for cls, value in (("roadwork", 230), ("no_roadwork", 20)):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (64 + i, 48), (value,) * 3).save(tmp_path / cls / f"{i}.jpg")
    (tmp_path / "roadwork" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    decode = DecodeConfig(max_pixels=10**7, min_side=16, store_max_side=1024, store_jpeg_quality=90)
    images, labels, quarantined = load_generated_slice(tmp_path, decode)
    assert len(images) == 6 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert len(quarantined) == 1 and quarantined[0][0].endswith("broken.jpg") and quarantined[0][1]
    r = streetvision_eval(
        lambda b: (b.flatten(1).max(dim=1).values > 128).numpy().astype(float),
        images,
        labels,
        levels=(0,),
        n_resamples=100,
    )
    assert r["level_0"]["accuracy"].estimate == 1.0
    with pytest.raises(FileNotFoundError):
        load_generated_slice(tmp_path / "missing", decode)


@pytest.mark.parametrize("level", [0, 3])
def test_threads_do_not_change_the_augmentation(level):
    imgs = _images(n=6, seed=4)
    one = augment(imgs, level, seed=9, start_index=5)
    many = augment(imgs, level, seed=9, start_index=5, n_threads=3)
    assert torch.equal(one, many)
