"""Which of the StreetVision validator's steps costs a model: one distortion at a time.

Every image keeps the rotation and crop the emulation draws for it at level 1
(:func:`roadwork_ml.evaluation.streetvision.image_params`), so the rows are paired: ``level_0``
(centre square), ``geometry`` (level 1: rotation and crop only), then ``geometry`` plus exactly
one of the level-3 distortions at one severity (``CS1`` = colour saturation at severity 1, ...),
each ending in the validator's 8-bit step and JPEG q75 at 224 px. A row's drop from ``geometry``
is what that distortion alone costs; the recipe ablation read these rows to find that the demo
model's level-2/3 loss was the colour-saturation step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from roadwork_ml.augment.streetvision import DISTORTION_ORDER, IMAGE_SIZE, ValidatorParams
from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.streetvision import image_params, predict_augmented

__all__ = ["distortion_breakdown", "distortion_rows"]


def distortion_rows(severities: Sequence[int] = (1, 2)) -> list[tuple[str, int, dict[str, int]]]:
    """``(name, level, severities)`` of each row: level 0, geometry, then one distortion at a time."""
    rows: list[tuple[str, int, dict[str, int]]] = [("level_0", 0, {}), ("geometry", 1, {})]
    for kind in DISTORTION_ORDER[3][0]:
        rows += [(f"{kind}{s}", 3, {kind: int(s)}) for s in severities]
    return rows


def _params(seed: int, level: int, sev: dict[str, int], index: int, h: int, w: int) -> ValidatorParams:
    if level == 0:
        return ValidatorParams(0)
    geo = image_params(seed, index, 1, h, w)
    return ValidatorParams(level, geo.angle, geo.crop, dict(sev), geo.noise_seed)


def distortion_breakdown(
    predict: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor | Sequence[torch.Tensor],
    labels: Any,
    seed: int = 0,
    severities: Sequence[int] = (1, 2),
    batch_size: int = 64,
    size: int = IMAGE_SIZE,
    jpeg: bool = True,
) -> list[dict[str, Any]]:
    """Score ``predict`` (uint8 ``[B, 3, size, size]`` → P(roadwork) ``[B]``) on each row of
    :func:`distortion_rows` of ``images`` (uint8 ``[3, H, W]`` each) with 0/1 ``labels`` ``[N]``.

    Returns one dict per row: ``name``, ``mcc`` and ``accuracy`` at the validator's 0.5 cut,
    ``auroc`` (ranking, unaffected by a shift of the scores), ``positive_rate`` (share above
    0.5), ``mean_p_positive`` (mean P(roadwork) of the true positives) and ``mcc_drop`` (the
    ``geometry`` row's MCC minus this row's; 0 for the first two rows). ``jpeg=False`` leaves
    out the validator's closing JPEG q75 on every row, to see what a step costs through the codec.
    """
    imgs = list(images)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(imgs) != y.shape[0]:
        raise ValueError(f"{len(imgs)} images but {y.shape[0]} labels")
    out: list[dict[str, Any]] = []
    for name, level, sev in distortion_rows(severities):
        p = predict_augmented(predict, imgs, partial(_params, seed, level, sev), batch_size, size, jpeg=jpeg)
        pred = (p > 0.5).astype(np.int64)
        out.append(
            {
                "name": name,
                "level": level,
                "severities": sev,
                "mcc": M.mcc(y, pred),
                "accuracy": M.accuracy(y, pred),
                "auroc": M.auroc(y, p),
                "positive_rate": float(pred.mean()),
                "mean_p_positive": float(p[y == 1].mean()) if (y == 1).any() else float("nan"),
            }
        )
    geometry = next(r["mcc"] for r in out if r["name"] == "geometry")
    for r in out:
        r["mcc_drop"] = 0.0 if r["level"] < 3 else geometry - r["mcc"]
    return out
