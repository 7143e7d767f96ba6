"""Emulation of the StreetVision (subnet 72) validators: augmentation levels and reward.

What the validators do (see shared DATA_FORMATS.md): every request is one 224x224 RGB
image, centre-cropped and resized; 3 of 4 requests are augmented at a level 1..3.
The miner answers one float in [0, 1] (> 0.5 = roadwork); NaN, -1 or a value
outside [0, 1] is invalid and scores as a wrong answer here. Reward =
``(0.5 MCC + 0.5 accuracy)^3``.

Levels (cumulative; one parameter draw per image, so level k applies exactly the
operations of level k-1 with the same parameters, then its own):

0. centre-crop to a square, resize to ``size`` (bilinear, antialiased);
1. + rotation by U(-20, 20) degrees (bilinear, black fill), RandomResizedCrop with
   scale U(0.2, 1.0) and log-uniform aspect ratio in [3/4, 4/3] (torchvision's
   sampler), horizontal flip with probability 1/2;
2. + saturation and contrast factors U(0.5, 1.5), JPEG re-compression at a quality
   uniform in 40..90 (PIL, in memory);
3. + Gaussian noise with sigma U(2.5, 12.75) grey levels, Gaussian blur (kernel 5,
   sigma U(0.1, 1.5)), both in float, rounded to uint8 once.

Note: the real score uses MCC over the last 100 answers and accuracy over the last
10; :func:`streetvision_eval` reports the reward of the metrics over the whole set,
which is what those windows estimate (the expected windowed reward is lower because
of the cube of a noisy window).
"""

from __future__ import annotations

import io
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.bootstrap import bootstrap_statistic

__all__ = ["LEVELS", "IMAGE_SIZE", "augment", "reward", "score_outputs", "streetvision_eval"]

LEVELS = (0, 1, 2, 3)
IMAGE_SIZE = 224
_MAX_ROTATION = 20.0
_RRC_SCALE = (0.2, 1.0)
_RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_JITTER = (0.5, 1.5)
_JPEG_QUALITY = (40, 90)
_NOISE_SIGMA = (0.01 * 255, 0.05 * 255)
_BLUR_KERNEL = 5
_BLUR_SIGMA = (0.1, 1.5)


# --------------------------------------------------------------------------- augmentation
def _rrc_params(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` with a numpy generator: (top, left, height, width)."""
    area = h * w
    log_ratio = (math.log(_RRC_RATIO[0]), math.log(_RRC_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*_RRC_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    side = min(h, w)  # fallback: central crop, as torchvision
    return (h - side) // 2, (w - side) // 2, side, side


def _draw_params(seed: int, index: int, size: int) -> dict[str, Any]:
    rng = np.random.default_rng([int(seed), int(index)])
    angle = float(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
    crop = _rrc_params(rng, size, size)
    return {
        "angle": angle,
        "crop": crop,
        "flip": bool(rng.random() < 0.5),
        "saturation": float(rng.uniform(*_JITTER)),
        "contrast": float(rng.uniform(*_JITTER)),
        "quality": int(rng.integers(_JPEG_QUALITY[0], _JPEG_QUALITY[1] + 1)),
        "noise_sigma": float(rng.uniform(*_NOISE_SIGMA)),
        "noise_seed": int(rng.integers(0, 2**63 - 1)),
        "blur_sigma": float(rng.uniform(*_BLUR_SIGMA)),
    }


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        arr = np.array(im.convert("RGB"))
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _augment_one(img: torch.Tensor, level: int, seed: int, index: int, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    side = min(h, w)
    out = F.resize(F.center_crop(img, [side, side]), [size, size], antialias=True)
    if level == 0:
        return out
    prm = _draw_params(seed, index, size)
    out = F.rotate(out, prm["angle"], interpolation=InterpolationMode.BILINEAR, fill=[0.0])
    top, left, ch, cw = prm["crop"]
    out = F.resized_crop(out, top, left, ch, cw, [size, size], antialias=True)
    if prm["flip"]:
        out = F.horizontal_flip(out)
    if level >= 2:
        out = F.adjust_contrast(F.adjust_saturation(out, prm["saturation"]), prm["contrast"])
        out = _jpeg(out, prm["quality"])
    if level >= 3:
        gen = torch.Generator().manual_seed(prm["noise_seed"])
        noisy = out.float() + torch.randn(out.shape, generator=gen) * prm["noise_sigma"]
        # blur in float and quantize once
        blurred = F.gaussian_blur(noisy, [_BLUR_KERNEL, _BLUR_KERNEL], [prm["blur_sigma"]] * 2)
        out = blurred.clamp_(0, 255).round_().to(torch.uint8)
    return out


def _check_level(level: int) -> int:
    if int(level) not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}, got {level!r}")
    return int(level)


def _image_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    seq = list(images.unbind(0)) if isinstance(images, torch.Tensor) and images.ndim == 4 else list(images)
    for i, im in enumerate(seq):
        if not isinstance(im, torch.Tensor) or im.dtype != torch.uint8 or im.ndim != 3 or im.shape[0] != 3:
            raise ValueError(f"image {i}: expected a uint8 tensor [3, H, W] (RGB); got "
                             f"{type(im).__name__} {getattr(im, 'dtype', '')} {tuple(getattr(im, 'shape', ()))}")
    return seq


def augment(images: torch.Tensor | Sequence[torch.Tensor], level: int, seed: int, size: int = IMAGE_SIZE,
            start_index: int = 0) -> torch.Tensor:
    """Apply a validator augmentation level to every image.

    Args:
        images: uint8 ``[N, 3, H, W]`` RGB (or a sequence of uint8 ``[3, H, W]`` of any sizes).
        level: 0..3 (see module docstring). seed: int; image i uses a generator
            seeded with ``(seed, start_index + i)``, so results do not depend on batching.
        size: output side in pixels.

    Returns:
        uint8 ``[N, 3, size, size]``.
    """
    lv = _check_level(level)
    imgs = _image_list(images)
    if not imgs:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.stack([_augment_one(im, lv, seed, start_index + i, int(size)) for i, im in enumerate(imgs)])


# --------------------------------------------------------------------------- scoring
def reward(mcc: float, accuracy: float) -> float:
    """StreetVision reward ``(0.5 mcc + 0.5 accuracy)^3``, in [-0.125, 1]."""
    return float((0.5 * mcc + 0.5 * accuracy) ** 3)


def score_outputs(outputs: Any, labels: Any | None = None) -> dict[str, Any]:
    """Validate miner outputs ``[N]`` and cut them at 0.5.

    Invalid outputs (NaN, inf, -1, anything outside [0, 1]) count as wrong answers.

    Returns:
        ``{"preds": int64 [N], "valid": bool [N], "n_invalid": int}``; preds are 1 where
        output > 0.5, and -1 at invalid rows (``1 - label`` there when ``labels [N]`` is
        given, which also adds ``accuracy``, ``mcc`` and ``reward``).
    """
    out = np.asarray(outputs, dtype=np.float64).reshape(-1)
    valid = np.isfinite(out) & (out >= 0.0) & (out <= 1.0)
    preds = np.where(valid, (np.where(valid, out, 0.0) > 0.5).astype(np.int64), -1)
    res: dict[str, Any] = {"preds": preds, "valid": valid, "n_invalid": int((~valid).sum())}
    if labels is not None:
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        if y.shape != out.shape:
            raise ValueError(f"labels has {y.shape[0]} rows but outputs has {out.shape[0]}")
        preds = np.where(valid, preds, 1 - y)
        acc, m = M.accuracy(y, preds), M.mcc(y, preds)
        res.update(preds=preds, accuracy=acc, mcc=m, reward=reward(m, acc))
    return res


class _RewardStatistic:
    """MCC, accuracy and reward over rows ``idx`` of images, pooled over the given levels."""

    def __init__(self, labels: np.ndarray, preds: list[np.ndarray]):
        self.labels, self.preds = labels, preds

    def __call__(self, idx: np.ndarray) -> dict[str, float]:
        y = np.tile(self.labels[idx], len(self.preds))
        p = np.concatenate([pr[idx] for pr in self.preds])
        acc, m = M.accuracy(y, p), M.mcc(y, p)
        return {"mcc": m, "accuracy": acc, "reward": reward(m, acc)}


def streetvision_eval(predict_fn: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor | Sequence[torch.Tensor],
                      labels: Any, levels: Sequence[int] = LEVELS, seed: int = 0, batch_size: int = 64,
                      n_resamples: int = 1000, level: float = 0.95, method: str = "percentile",
                      n_jobs: int = 1, return_outputs: bool = False) -> dict[str, Any]:
    """Score ``predict_fn`` as the validators would, per augmentation level and pooled.

    Args:
        predict_fn: uint8 ``[B, 3, 224, 224]`` -> ``[B]`` P(roadwork) in [0, 1]
            (anything else counts as a wrong answer).
        images: uint8 ``[N, 3, H, W]`` (or a sequence of ``[3, H, W]``). labels: int ``[N]``.
        levels: augmentation levels; pooled = all levels with equal weight (the
            validators' 1/4 unaugmented, 3/4 augmented with LEVELS).
        seed: augmentation seed (image i at every level uses ``(seed, i)``) and
            bootstrap seed. n_resamples, level, method: bootstrap settings.
        n_jobs: bootstrap workers; 1 by default because the statistic is cheap.
        return_outputs: also return the raw outputs under ``"outputs"``.

    Returns:
        ``{"level_0": {"mcc", "accuracy", "reward": Interval, "n": int, "n_invalid": int},
        ... one per level, "pooled": {same}, "n_images": N, "seed": seed}`` and, with
        ``return_outputs``, ``"outputs": {level: float64 [N]}``. Pooled intervals
        resample images (all levels of a drawn image together), since the levels of
        one image are not independent.
    """
    imgs = _image_list(images)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if y.shape[0] != len(imgs) or not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"labels must be 0/1 [N] with N = {len(imgs)} images, got shape {y.shape}")
    lvls = [_check_level(lv) for lv in levels]
    if not lvls or int(batch_size) < 1:
        raise ValueError("need at least one level and batch_size >= 1")
    outputs: dict[int, np.ndarray] = {}
    for lv in lvls:
        parts = []
        for s in range(0, len(imgs), int(batch_size)):
            batch = augment(imgs[s:s + int(batch_size)], lv, seed, IMAGE_SIZE, start_index=s)
            raw = predict_fn(batch)
            if isinstance(raw, torch.Tensor):
                raw = raw.detach().float().cpu().numpy()
            out = np.asarray(raw, dtype=np.float64).reshape(-1)
            if out.shape[0] != batch.shape[0]:
                raise ValueError(f"predict_fn returned {out.shape[0]} outputs for a batch of {batch.shape[0]} images")
            parts.append(out)
        outputs[lv] = np.concatenate(parts)

    scored = {lv: score_outputs(outputs[lv], y) for lv in lvls}

    def summary(levels_: list[int]) -> dict[str, Any]:
        stat = _RewardStatistic(y, [scored[lv]["preds"] for lv in levels_])
        ci = bootstrap_statistic(y.shape[0], stat, n_resamples, level, seed, n_jobs, (method,))
        res: dict[str, Any] = {k: ci[k][method] for k in ("mcc", "accuracy", "reward")}
        res.update(n=y.shape[0] * len(levels_), n_invalid=sum(scored[lv]["n_invalid"] for lv in levels_))
        return res

    result: dict[str, Any] = {f"level_{lv}": summary([lv]) for lv in lvls}
    result.update(pooled=summary(lvls), n_images=int(y.shape[0]), seed=int(seed))
    if return_outputs:
        result["outputs"] = outputs
    return result

