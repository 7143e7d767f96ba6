"""Hard-negative mining: negatives that the model confidently calls roadwork (orange cones,
barriers, signs that are not roadwork), found with out-of-fold scores on TRAIN so no image is
scored by a model that saw it, turned into per-sample loss weights for the next training.

Pure functions: the caller supplies ``fit_predict`` (train a model on some TRAIN rows, score
others), so this module knows nothing about the trainer or Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

__all__ = ["HardNegatives", "false_positive_rate", "mine_hard_negatives", "out_of_fold_scores"]

FitPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def out_of_fold_scores(
    fit_predict: FitPredict, labels: Sequence[int], groups: Sequence[str], n_folds: int = 5, seed: int = 0
) -> np.ndarray:
    """P(roadwork) ``[N]`` for every TRAIN row from a model fitted on the other folds.

    ``fit_predict(train_idx, score_idx) -> scores [len(score_idx)]``. Folds are stratified by
    label and keep ``groups`` (sequence / place) together, so near-duplicates never leak.
    """
    y = np.asarray(labels, dtype=np.int64)
    g = np.asarray(groups).astype(str)
    scores = np.full(len(y), np.nan)
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fit_idx, score_idx in folds.split(np.zeros(len(y)), y, g):
        out = np.asarray(fit_predict(fit_idx, score_idx), dtype=np.float64).reshape(-1)
        if out.shape != score_idx.shape:
            raise ValueError(f"fit_predict returned {out.shape[0]} scores for {len(score_idx)} rows")
        scores[score_idx] = out
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} rows got no out-of-fold score")
    return scores


@dataclass
class HardNegatives:
    """``indices``: mined rows (label 0, score >= ``min_score``), most confident first;
    ``weights [N]``: 1 everywhere, ``weight`` at the mined rows; ``scores [N]``: the OOF scores."""

    indices: np.ndarray
    weights: np.ndarray
    scores: np.ndarray
    min_score: float


def mine_hard_negatives(
    scores: Sequence[float],
    labels: Sequence[int],
    min_score: float = 0.5,
    max_fraction: float = 0.2,
    weight: float = 3.0,
) -> HardNegatives:
    """High-confidence false positives among TRAIN negatives.

    Args:
        scores: out-of-fold P(roadwork) ``[N]``. labels: 0/1 ``[N]``.
        min_score: a negative scored at or above this is a false positive (the validator cuts at 0.5).
        max_fraction: keep at most this share of the negatives (the most confident ones).
        weight: loss weight of a mined row (others 1).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores for {len(y)} labels")
    if weight < 1:
        raise ValueError(f"a hard negative's weight must be >= 1, got {weight}")
    cand = np.flatnonzero((y == 0) & (s >= min_score))
    cand = cand[np.argsort(-s[cand], kind="stable")]
    cap = int(np.floor(max_fraction * (y == 0).sum()))
    idx = cand[:cap]
    w = np.ones(len(y), dtype=np.float64)
    w[idx] = weight
    return HardNegatives(idx, w, s, float(min_score))


def false_positive_rate(
    scores: Sequence[float], labels: Sequence[int], mask: Sequence[bool] | None = None, threshold: float = 0.5
) -> float:
    """FP / (FP + TN) at ``score > threshold`` among rows in ``mask`` (e.g. the hard-negative slice:
    negatives whose scene holds orange non-roadwork objects); NaN without negatives."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    m = np.ones(len(y), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    neg = m & (y == 0)
    if not neg.any():
        return float("nan")
    return float((s[neg] > threshold).mean())


def hard_negative_slice(tags: Sequence[str]) -> np.ndarray:
    """Rows whose manifest ``tags`` JSON marks a hard negative (the synthetic generator's ``hard_negative``)."""
    import json

    out = np.zeros(len(tags), dtype=bool)
    for i, t in enumerate(tags):
        try:
            out[i] = bool(json.loads(t or "{}").get("hard_negative", False))
        except (ValueError, AttributeError):
            out[i] = False
    return out
