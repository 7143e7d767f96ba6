"""Choosing the checkpoint on what a StreetVision miner is paid on.

The trainer keeps the epoch with the best selection score. By default that is VAL_SELECT MCC on
the images as stored. With ``train.selection.metric: streetvision_reward`` it is the reward
``(0.5 MCC + 0.5 accuracy)^3`` at the validator's 0.5 cut, pooled over the validator's levels,
of VAL_SELECT as the validator would send it, scored through the served global view (the
profile's resize and flip TTA), as :mod:`roadwork_ml.evaluation.streetvision` scores a bundle.

The views are drawn once (image ``i`` at every level from ``(selection.seed, i)``, its own seed
so the evaluation's draws of VAL_SELECT stay apart) and kept as the served path first resizes
them, at ``S = min(inference.input_size, 224)``: ``len(levels) x N x 3 x S x S`` bytes (the demo:
4 x 529 x 3 x 128^2 = 104 MB; a 672-px production input keeps the 224-px draws, 0.6 MB an image,
and resizes each batch when it scores). ``selection.max_images`` caps N.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from roadwork_ml.augment.streetvision import IMAGE_SIZE
from roadwork_ml.config import InferenceConfig, ModelConfig, SelectionConfig
from roadwork_ml.data.transforms import to_float
from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.report import resize_images
from roadwork_ml.evaluation.streetvision import augment, reward

__all__ = ["StreetVisionViews", "selection_rows", "streetvision_views"]


@dataclass
class StreetVisionViews:
    """``views``: uint8 ``[L * N, 3, S, S]``, level-major (rows ``l * N .. (l + 1) * N`` are
    ``levels[l]``), at ``S = min(input_size, validator side)``; ``labels``: int64 ``[L * N]``;
    ``input_size``: the served input side each batch is resized to when scored."""

    views: torch.Tensor
    labels: np.ndarray
    levels: tuple[int, ...]
    input_size: int

    def __post_init__(self) -> None:
        if self.views.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.views.shape[0]} views but {self.labels.shape[0]} labels")

    @torch.no_grad()
    def outputs(self, model: torch.nn.Module, model_cfg: ModelConfig, inf: InferenceConfig) -> np.ndarray:
        """P(roadwork) float64 ``[L * N]`` of ``model`` served as its global view (resize, flip TTA, mean)."""
        from roadwork_ml.models.inference import multiview_model

        was_training = model.training
        mv = multiview_model(model, model_cfg, inf, choice={"multi_view": False, "aggregator": "mean", "top_k": 1})
        device = next(model.parameters()).device
        out = []
        for s in range(0, self.views.shape[0], inf.batch_size):
            x = to_float(resize_images(self.views[s : s + inf.batch_size], self.input_size).to(device))
            out.append(mv(x)[0].exp()[:, 1].float().cpu())
        model.train(was_training)
        return torch.cat(out).double().numpy()

    def score(self, model: torch.nn.Module, model_cfg: ModelConfig, inf: InferenceConfig) -> dict[str, float]:
        """Pooled ``reward``, ``mcc`` and ``accuracy`` at the 0.5 cut, and ``mcc_level_<k>`` per level."""
        p = self.outputs(model, model_cfg, inf)
        preds = (p > 0.5).astype(np.int64)
        acc, m = M.accuracy(self.labels, preds), M.mcc(self.labels, preds)
        res = {"reward": reward(m, acc), "mcc": m, "accuracy": acc}
        n = len(self.labels) // len(self.levels)
        for i, lv in enumerate(self.levels):
            rows = slice(i * n, (i + 1) * n)
            res[f"mcc_level_{lv}"] = M.mcc(self.labels[rows], preds[rows])
        return res

    def scorer(self, model_cfg: ModelConfig, inf: InferenceConfig) -> Callable[[torch.nn.Module], float]:
        """``model -> pooled reward``, the trainer's ``select_score``."""
        return lambda model: self.score(model, model_cfg, inf)["reward"]


def streetvision_views(
    batches: Iterable[tuple[torch.Tensor, np.ndarray]],
    levels: Iterable[int],
    seed: int,
    input_size: int,
    size: int = IMAGE_SIZE,
    n_threads: int = 1,
) -> StreetVisionViews:
    """Draw every image's view at every level once and keep them as the served path's first
    resize leaves them (at ``min(input_size, size)``).

    Args:
        batches: ``(uint8 [B, 3, H, W], labels int [B])`` in a fixed order (a streamed split),
            so no more than one batch of source images is held.
        levels: validator augmentation levels (0..3). seed: image ``i`` (its position in the
            stream) at every level uses ``(seed, i)``.
        input_size: the served model's input side (``inference.input_size``); the views are
            kept at ``min(input_size, size)``, as the served path's first resize leaves them.
        size: the validator's image side. n_threads: images augmented at once.
    """
    lv = tuple(int(v) for v in levels)
    if not lv:
        raise ValueError("need at least one level")
    per_level: dict[int, list[torch.Tensor]] = {v: [] for v in lv}
    labels, start = [], 0
    for images, y in batches:
        for v in lv:
            drawn = augment(images, v, seed, size=size, start_index=start, n_threads=n_threads)
            per_level[v].append(resize_images(drawn, min(int(input_size), int(size))))
        labels.append(np.asarray(y, dtype=np.int64).reshape(-1))
        start += images.shape[0]
    if not start:
        raise ValueError("no images to draw the selection views from")
    y_all = np.concatenate(labels)
    views = torch.cat([torch.cat(per_level[v]) for v in lv])
    return StreetVisionViews(views, np.tile(y_all, len(lv)), lv, int(input_size))


def selection_rows(val_rows: pd.DataFrame, sel: SelectionConfig) -> pd.DataFrame:
    """VAL_SELECT rows the views are drawn from: all, or ``sel.max_images`` drawn with ``sel.seed``
    (kept in split order), so a cap never keeps just the first source or sequence."""
    if not sel.max_images or sel.max_images >= len(val_rows):
        return val_rows
    return val_rows.sample(n=sel.max_images, random_state=sel.seed).sort_index()
