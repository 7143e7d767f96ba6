"""Samplers that draw TRAIN as the validator draws: an even class balance, by class x source."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from roadwork_ml.config import SamplerConfig

__all__ = ["build_sampler", "class_source_weights"]


def class_source_weights(
    labels: Sequence[int] | np.ndarray,
    sources: Sequence[str] | np.ndarray,
    positive_share: float = 0.5,
    source_mode: str = "proportional",
) -> np.ndarray:
    """Per-sample draw weights ``[N]`` (sum 1) giving positives an expected share ``positive_share``.

    Within a class, ``proportional`` keeps the sources' own mix and ``equal`` gives every source
    present in that class the same share. A class absent from ``labels`` cannot be drawn: the
    other class then takes everything (and a ValueError says so if that is both).
    """
    y = np.asarray(labels, dtype=np.int64)
    src = np.asarray(sources).astype(str)
    if y.shape != src.shape:
        raise ValueError(f"{len(y)} labels but {len(src)} sources")
    share = {1: float(positive_share), 0: 1.0 - float(positive_share)}
    present = [c for c in (0, 1) if (y == c).any()]
    if not present:
        raise ValueError("no samples to draw")
    if len(present) == 1:
        share = {present[0]: 1.0}
    w = np.zeros(len(y), dtype=np.float64)
    for c in present:
        in_c = y == c
        if source_mode == "equal":
            names, counts = np.unique(src[in_c], return_counts=True)
            for name, count in zip(names, counts, strict=False):
                w[in_c & (src == name)] = share[c] / (len(names) * count)
        elif source_mode == "proportional":
            w[in_c] = share[c] / in_c.sum()
        else:
            raise ValueError(f"unknown source_mode {source_mode!r}")
    return w


def build_sampler(
    cfg: SamplerConfig, labels: np.ndarray, sources: np.ndarray, seed: int
) -> WeightedRandomSampler | None:
    """``None`` for plain shuffling; else a WeightedRandomSampler drawing ``len(labels)`` samples per
    epoch with replacement. Per-sample (hard-negative) weights do not enter the draw: the
    trainer applies them in the loss, so balance and hardness stay separate knobs."""
    if cfg.kind == "shuffle":
        return None
    w = class_source_weights(labels, sources, cfg.positive_share, cfg.source_mode)
    gen = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(
        torch.as_tensor(w, dtype=torch.double), num_samples=len(w), replacement=True, generator=gen
    )
