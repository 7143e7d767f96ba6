"""Evaluation as the StreetVision (subnet 72) validators score a miner.

The augmentation levels are :mod:`roadwork_ml.augment.streetvision` (the one copy of the
validator's pipeline, shared with training): every request is one 224x224 image after a
level drawn with probability 1/4, 8-bit truncation and a Pillow JPEG at quality 75. Image
``i`` uses a generator seeded with ``(seed, i)`` and the same draw at every level it is
evaluated at (levels 2 and 3 repeat level 1's rotation and crop).

The miner answers one float in [0, 1] (> 0.5 = roadwork); NaN, -1 or a value outside
[0, 1] is invalid and scores as a wrong answer here. Reward = ``(0.5 MCC + 0.5 accuracy)^3``.

Half of the validator's images are diffusion-generated; no generator runs here, so
:func:`load_generated_slice` reads an optional folder of such images
(``<dir>/<class>/*.jpg``, class names as in the image-folder reader) and the evaluation
reports it as a separate slice.

Note: the real score uses MCC over the last 100 answers and accuracy over the last
10; :func:`streetvision_eval` reports the reward of the metrics over the whole set,
which is what those windows estimate (the expected windowed reward is lower because
of the cube of a noisy window).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from roadwork_ml.augment.streetvision import IMAGE_SIZE, LEVELS, ValidatorParams, draw_params, validator_augment
from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.bootstrap import (
    Interval,
    bootstrap_distribution,
    bootstrap_statistic,
    interval_from_distribution,
)

__all__ = [
    "IMAGE_SIZE",
    "LEVELS",
    "augment",
    "augment_with",
    "emulated_outputs",
    "load_generated_slice",
    "paired_streetvision",
    "predict_augmented",
    "reward",
    "score_outputs",
    "streetvision_eval",
]


# --------------------------------------------------------------------------- augmentation
def image_params(seed: int, index: int, level: int, height: int, width: int) -> ValidatorParams:
    """The draw of image ``index`` at ``level``: one generator per (seed, index), so levels share rotation and crop."""
    return draw_params(np.random.default_rng([int(seed), int(index)]), level, height, width)


def _check_level(level: int) -> int:
    if int(level) not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}, got {level!r}")
    return int(level)


def _image_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    seq = list(images.unbind(0)) if isinstance(images, torch.Tensor) and images.ndim == 4 else list(images)
    for i, im in enumerate(seq):
        if not isinstance(im, torch.Tensor) or im.dtype != torch.uint8 or im.ndim != 3 or im.shape[0] != 3:
            raise ValueError(
                f"image {i}: expected a uint8 tensor [3, H, W] (RGB); got "
                f"{type(im).__name__} {getattr(im, 'dtype', '')} {tuple(getattr(im, 'shape', ()))}"
            )
    return seq


def augment(
    images: torch.Tensor | Sequence[torch.Tensor],
    level: int,
    seed: int,
    size: int = IMAGE_SIZE,
    start_index: int = 0,
    n_threads: int = 1,
) -> torch.Tensor:
    """Apply a validator augmentation level to every image, ending as the validator does
    (8-bit, Pillow JPEG q75).

    Args:
        images: uint8 ``[N, 3, H, W]`` RGB (or a sequence of uint8 ``[3, H, W]`` of any sizes).
        level: 0..3. seed: int; image i uses a generator seeded with
            ``(seed, start_index + i)``, so results do not depend on batching.
        size: output side in pixels (the validator: 224).
        n_threads: images augmented at once (OpenCV, Pillow and torch release the GIL);
            the result does not depend on it.

    Returns:
        uint8 ``[N, 3, size, size]``.
    """
    lv = _check_level(level)
    return augment_with(
        images, lambda i, h, w: image_params(seed, i, lv, h, w), size, start_index=start_index, n_threads=n_threads
    )


ParamsOf = Callable[[int, int, int], ValidatorParams]  # (image index, height, width) -> its draw


def augment_with(
    images: torch.Tensor | Sequence[torch.Tensor],
    params_of: ParamsOf,
    size: int = IMAGE_SIZE,
    start_index: int = 0,
    n_threads: int = 1,
    jpeg: bool = True,
) -> torch.Tensor:
    """:func:`augment` with each image's parameters from ``params_of(start_index + i, H, W)``
    (e.g. one distortion at a time, :mod:`roadwork_ml.evaluation.distortions`); ``jpeg=False``
    leaves out the closing JPEG q75 (a diagnosis of what the codec costs, not the validator)."""
    imgs = _image_list(images)
    if not imgs:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)

    def one(i: int) -> torch.Tensor:
        im = imgs[i]
        return validator_augment(
            im, params_of(start_index + i, int(im.shape[-2]), int(im.shape[-1])), int(size), jpeg=jpeg
        )

    if int(n_threads) > 1 and len(imgs) > 1:
        with ThreadPoolExecutor(min(int(n_threads), len(imgs))) as pool:
            return torch.stack(list(pool.map(one, range(len(imgs)))))
    return torch.stack([one(i) for i in range(len(imgs))])


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load_generated_slice(
    folder: str | Path, decode, max_images: int | None = None
) -> tuple[list[torch.Tensor], np.ndarray, list[tuple[str, str]]]:
    """Generated (diffusion) images for an extra evaluation slice: ``<folder>/<class>/**/*``.

    Decoded with the store's safe decoder (``decode``: DecodeConfig). Returns (uint8
    ``[3, H, W]`` images, labels ``[N]``, quarantined ``(path, reason)`` of files that failed).
    """
    from roadwork_ml.data.decode import DecodeError, safe_open
    from roadwork_ml.data.readers.image_folder import IMAGE_EXTENSIONS, class_dirs

    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"generated-image folder {root} does not exist")
    images, labels, quarantined = [], [], []
    for class_dir, label in sorted(class_dirs(root).items()):
        for path in sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            if max_images is not None and len(images) >= max_images:
                break
            try:
                img = safe_open(path.read_bytes(), decode)
            except DecodeError as exc:
                quarantined.append((str(path), str(exc)))
                continue
            images.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
            labels.append(label)
    return images, np.asarray(labels, dtype=np.int64), quarantined


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


def predict_augmented(
    predict_fn: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor | Sequence[torch.Tensor],
    params_of: ParamsOf,
    batch_size: int = 64,
    size: int = IMAGE_SIZE,
    n_threads: int | None = None,
    jpeg: bool = True,
) -> np.ndarray:
    """``predict_fn``'s outputs (float64 ``[N]``) on ``images`` augmented as
    :func:`augment_with` does (``jpeg`` as there), in batches of ``batch_size`` so only one
    batch of augmented images is in memory; ``n_threads`` (default: the CPU count, at most 8)
    augments a batch's images at once."""
    threads = _default_threads() if n_threads is None else int(n_threads)
    imgs = _image_list(images)
    if int(batch_size) < 1:
        raise ValueError("batch_size must be >= 1")
    parts = [np.empty(0, dtype=np.float64)]
    for s in range(0, len(imgs), int(batch_size)):
        batch = augment_with(
            imgs[s : s + int(batch_size)], params_of, size, start_index=s, n_threads=threads, jpeg=jpeg
        )
        raw = predict_fn(batch)
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().float().cpu().numpy()
        out = np.asarray(raw, dtype=np.float64).reshape(-1)
        if out.shape[0] != batch.shape[0]:
            raise ValueError(f"predict_fn returned {out.shape[0]} outputs for a batch of {batch.shape[0]} images")
        parts.append(out)
    return np.concatenate(parts)


def emulated_outputs(
    predict_fn: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor | Sequence[torch.Tensor],
    levels: Sequence[int] = LEVELS,
    seed: int = 0,
    batch_size: int = 64,
    size: int = IMAGE_SIZE,
    n_threads: int | None = None,
) -> dict[int, np.ndarray]:
    """``predict_fn``'s outputs on ``images`` as the validator would send them: ``{level:
    float64 [N]}``, image i at every level drawn from ``(seed, i)`` (:func:`augment`), through
    :func:`predict_augmented`."""
    imgs = _image_list(images)
    return {
        lv: predict_augmented(
            predict_fn, imgs, lambda i, h, w, lv=lv: image_params(seed, i, lv, h, w), batch_size, size, n_threads
        )
        for lv in (_check_level(v) for v in levels)
    }


def streetvision_eval(
    predict_fn: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor | Sequence[torch.Tensor],
    labels: Any,
    levels: Sequence[int] = LEVELS,
    seed: int = 0,
    batch_size: int = 64,
    n_resamples: int = 1000,
    level: float = 0.95,
    method: str = "percentile",
    n_jobs: int = 1,
    return_outputs: bool = False,
) -> dict[str, Any]:
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
    outputs = emulated_outputs(predict_fn, imgs, lvls, seed, batch_size)
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


class _PairedLevelsStatistic:
    """Per level MCC, the level-0 minus level-3 MCC gap and the pooled reward of two models on
    rows ``idx``, each the mean over that model's runs (e.g. training seeds)."""

    def __init__(
        self, labels: np.ndarray, preds: dict[str, list[dict[int, np.ndarray]]], levels: list[int], gap: tuple
    ):
        self.labels, self.preds, self.levels, self.gap = labels, preds, levels, gap

    def _one(self, y: np.ndarray, by_level: dict[int, np.ndarray], idx: np.ndarray) -> dict[str, float]:
        mccs = {lv: M.mcc(y, by_level[lv][idx]) for lv in self.levels}
        out = {f"mcc_level_{lv}": m for lv, m in mccs.items()}
        if self.gap:
            out[f"mcc_gap_{self.gap[0]}_{self.gap[1]}"] = mccs[self.gap[0]] - mccs[self.gap[1]]
        yy = np.tile(y, len(self.levels))
        pp = np.concatenate([by_level[lv][idx] for lv in self.levels])
        acc, m = M.accuracy(yy, pp), M.mcc(yy, pp)
        out.update({"pooled_mcc": m, "pooled_accuracy": acc, "pooled_reward": reward(m, acc)})
        return out

    def __call__(self, idx: np.ndarray) -> dict[str, float]:
        y = self.labels[idx]
        out: dict[str, float] = {}
        for name, runs in self.preds.items():
            per_run = [self._one(y, by_level, idx) for by_level in runs]
            out.update({f"{name}/{k}": float(np.mean([r[k] for r in per_run])) for k in per_run[0]})
        return out


def paired_streetvision(
    labels: Any,
    outputs_new: dict[int, Any] | Sequence[dict[int, Any]],
    outputs_ref: dict[int, Any] | Sequence[dict[int, Any]],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    n_jobs: int = 1,
) -> dict[str, dict[str, Any]]:
    """Compare two models' StreetVision emulation outputs on the same images by a paired bootstrap.

    Args:
        labels: 0/1 ``[N]``. outputs_new, outputs_ref: ``{level: P(roadwork) [N]}`` (e.g.
            :func:`streetvision_eval`'s ``"outputs"``), the same levels in both; invalid
            outputs count as wrong answers (:func:`score_outputs`). Either may be a list of
            such dicts, one per run of the recipe (training seeds): each metric is then the
            mean over the runs, on the same resampled images.

    Each resample draws N images once and scores both models on them at every level, so the
    per-level MCC, the level-0 minus level-3 MCC gap (when both levels are present) and the
    pooled reward are all paired. Returns ``{metric: {"new": Interval, "ref": Interval,
    "diff": Interval}}`` (percentile intervals; ``diff`` = new - ref) for ``mcc_level_<lv>``,
    ``mcc_gap_0_3``, ``pooled_mcc``, ``pooled_accuracy`` and ``pooled_reward``. With runs, the
    interval covers the image sample for these seeds, not the spread of further seeds.
    """
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    runs = {
        name: [outs] if isinstance(outs, dict) else list(outs)
        for name, outs in (("new", outputs_new), ("ref", outputs_ref))
    }
    if not runs["new"] or not runs["ref"]:
        raise ValueError("each model needs at least one run of outputs")
    levels = sorted(int(lv) for lv in runs["new"][0])
    for outs in (*runs["new"], *runs["ref"]):
        if sorted(int(lv) for lv in outs) != levels or not levels:
            raise ValueError(f"every run needs the same, non-empty levels; got {sorted(outs)} and {levels}")
    preds = {
        name: [{int(lv): score_outputs(out, y)["preds"] for lv, out in outs.items()} for outs in model_runs]
        for name, model_runs in runs.items()
    }
    gap = (0, 3) if {0, 3} <= set(levels) else ()
    est, dist = bootstrap_distribution(
        y.shape[0], _PairedLevelsStatistic(y, preds, levels, gap), n_resamples, seed, n_jobs
    )
    keys = list(est)
    col = {k: i for i, k in enumerate(keys)}
    metrics = [k.split("/", 1)[1] for k in keys if k.startswith("new/")]
    result: dict[str, dict[str, Interval]] = {}
    for m in metrics:
        a, b = col[f"new/{m}"], col[f"ref/{m}"]
        result[m] = {
            "new": interval_from_distribution(est[f"new/{m}"], dist[:, a], "percentile", level),
            "ref": interval_from_distribution(est[f"ref/{m}"], dist[:, b], "percentile", level),
            "diff": interval_from_distribution(
                est[f"new/{m}"] - est[f"ref/{m}"], dist[:, a] - dist[:, b], "percentile", level
            ),
        }
    return result
