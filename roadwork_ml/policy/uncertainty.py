"""The seed plan's seven uncertainty features, computed from several views of one image.

The classifier runs on ``V`` views of each image (1 global view + 9 tiles, optionally
flipped; ``V = 1`` is plain single-view inference). Given the per-view class
probabilities ``p[n, v, c]`` (and optionally per-view pooled embeddings ``e[n, v, d]``)
this module returns one row of seven features per image, in the order of
:data:`FEATURE_NAMES`. The failure-predictor gate (:mod:`roadwork_ml.policy.gate`) is
trained on these rows.

Notation: ``p̄[n, c] = mean_v p[n, v, c]`` is the aggregated prediction (mean over views),
``p1[n, v] = p[n, v, 1]`` is the class-1 ("roadwork") probability of one view and
``H(q) = -Σ_c q_c log q_c`` the entropy in nats (``0 log 0 = 0``). All variances are
population variances (divide by ``V``), so every variance-type feature is exactly 0 when
``V = 1``.

=====  ============================  ===================  ====================================================
index  name                          range (C classes)    meaning
=====  ============================  ===================  ====================================================
0      max_prob                      [1/C, 1]             ``max_c p̄[n, c]``; probability (unitless). [0.5, 1] for C=2
1      cross_view_variance           [0, 0.25]            ``Var_v p1[n, v]``; squared probability
2      entropy                       [0, log C] nats      ``H(p̄)``: total predictive uncertainty. [0, ln 2 ≈ 0.693] for C=2
3      max_minus_mean                [0, 1 - 1/V]         ``max_v p1 - mean_v p1``: how far the most "roadwork" view sticks out
4      crop_disagreement             [0, 1]               fraction of views with ``argmax_c p[n, v] != argmax_c p̄[n]``
5      epistemic_feature_variance    [0, 1/D]             ``mean_d Var_v ê[n, v, d]``, ``ê = e / ‖e‖₂`` (0 without
                                                          embeddings or when V=1); squared unit-norm coordinates
6      aleatoric_expected_entropy    [0, log C] nats      ``mean_v H(p[n, v])``: expected entropy
=====  ============================  ===================  ====================================================

``entropy - aleatoric_expected_entropy`` is the mutual information between the prediction
and the choice of view (the "epistemic" part of the entropy decomposition); it is ≥ 0 by
concavity of ``H`` and exactly 0 when ``V = 1``.

Ties in ``argmax`` resolve to the lowest class index in both numpy and torch.

Two implementations give the same numbers: :func:`uncertainty_features` (numpy, float64,
validates its inputs) and :func:`uncertainty_features_torch` (torch, keeps the input's dtype
and device, no data-dependent checks, so it traces/exports inside a model graph).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from roadwork_ml.numerics import softmax

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_INDEX",
    "FEATURE_INFO",
    "NUM_FEATURES",
    "uncertainty_features",
    "uncertainty_features_torch",
    "features_from_logits",
    "features_from_logits_torch",
]

FEATURE_NAMES: tuple[str, ...] = (
    "max_prob",
    "cross_view_variance",
    "entropy",
    "max_minus_mean",
    "crop_disagreement",
    "epistemic_feature_variance",
    "aleatoric_expected_entropy",
)
NUM_FEATURES = len(FEATURE_NAMES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

#: Human-readable range and unit of each feature (for asset metadata and reports).
FEATURE_INFO: dict[str, dict[str, str]] = {
    "max_prob": {
        "range": "[1/C, 1] ([0.5, 1] for C=2)",
        "unit": "probability",
        "description": "max class probability of the mean-over-views prediction",
    },
    "cross_view_variance": {
        "range": "[0, 0.25]",
        "unit": "probability^2",
        "description": "population variance across views of the class-1 probability",
    },
    "entropy": {
        "range": "[0, ln C] ([0, 0.693] for C=2)",
        "unit": "nats",
        "description": "entropy of the mean-over-views probability vector (total uncertainty)",
    },
    "max_minus_mean": {
        "range": "[0, 1 - 1/V]",
        "unit": "probability",
        "description": "max over views of the class-1 probability minus its mean over views",
    },
    "crop_disagreement": {
        "range": "[0, 1]",
        "unit": "fraction of views",
        "description": "fraction of views whose argmax differs from the aggregated argmax",
    },
    "epistemic_feature_variance": {
        "range": "[0, 1/D]",
        "unit": "unit-norm embedding coordinate^2",
        "description": "mean over dims of the across-view variance of L2-normalized "
        "embeddings; 0 without embeddings or with one view",
    },
    "aleatoric_expected_entropy": {
        "range": "[0, ln C]",
        "unit": "nats",
        "description": "mean over views of each view's entropy; entropy minus this is the mutual information",
    },
}

_NORM_EPS = 1e-12  # same as torch.nn.functional.normalize
_PROB_TOL = 1e-4  # how far a probability row may be from summing to 1 (float32 softmax is ~1e-7)


# --- numpy --------------------------------------------------------------------------------


def _as_3d(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2:  # [N, C]: single-view predictions
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be [N, V, C] (or [N, C] for one view), got shape {list(arr.shape)}")
    return arr


def _check_probs(view_probs: np.ndarray) -> None:
    n, v, c = view_probs.shape
    if v < 1 or c < 2:
        raise ValueError(f"view_probs must have at least 1 view and 2 classes, got shape {[n, v, c]}")
    if not np.isfinite(view_probs).all():
        bad = int((~np.isfinite(view_probs)).any(axis=(1, 2)).sum())
        raise ValueError(f"view_probs holds non-finite values in {bad} of {n} images")
    if view_probs.size:
        lo, hi = float(view_probs.min()), float(view_probs.max())
        if lo < -_PROB_TOL or hi > 1 + _PROB_TOL:
            raise ValueError(
                f"view_probs must be probabilities in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
                "pass logits to features_from_logits instead"
            )
        err = np.abs(view_probs.sum(axis=-1) - 1.0)
        if err.max() > _PROB_TOL:
            n_bad = int((err > _PROB_TOL).any(axis=1).sum())
            raise ValueError(
                f"view_probs rows must sum to 1 over the class axis (last axis); {n_bad} of {n} images "
                f"do not (max |sum - 1| = {err.max():.3g}). Apply softmax first or use features_from_logits"
            )


def _entropy_np(p: np.ndarray) -> np.ndarray:
    """``-Σ_c p log p`` over the last axis with ``0 log 0 = 0`` (same formula as the torch path)."""
    tiny = np.finfo(p.dtype).tiny
    return -np.sum(p * np.log(np.maximum(p, tiny)), axis=-1)


def uncertainty_features(
    view_probs: np.ndarray, view_embeddings: np.ndarray | None = None, decision_probs: np.ndarray | None = None
) -> np.ndarray:
    """The seven features of :data:`FEATURE_NAMES` for each image.

    Args:
        view_probs: ``[N, V, C]`` per-view class probabilities (rows sum to 1). ``[N, C]`` is read
            as one view per image.
        view_embeddings: optional ``[N, V, D]`` per-view pooled embeddings (any scale; they are
            L2-normalized here). Without them ``epistemic_feature_variance`` is 0.
        decision_probs: optional ``[N, C]`` probabilities of the prediction the decision uses
            (e.g. a top-K or global-view aggregate); ``max_prob`` and ``entropy`` describe it.
            Default: the mean over views.

    Returns:
        ``[N, 7]`` float64, finite.
    """
    p = _as_3d("view_probs", view_probs).astype(np.float64, copy=False)
    _check_probs(p)
    p = np.clip(p, 0.0, 1.0)
    n, v, c = p.shape

    agg = p.mean(axis=1)  # [N, C]
    decision = agg if decision_probs is None else np.asarray(decision_probs, dtype=np.float64)
    if decision.shape != agg.shape:
        raise ValueError(f"decision_probs must be [N, C] = {list(agg.shape)}, got {list(decision.shape)}")
    max_prob = decision.max(axis=-1)
    p1 = p[:, :, 1]  # [N, V]
    p1_mean = p1.mean(axis=1)
    cross_view_variance = np.mean((p1 - p1_mean[:, None]) ** 2, axis=1)
    entropy = _entropy_np(decision)
    max_minus_mean = p1.max(axis=1) - p1_mean
    crop_disagreement = (p.argmax(axis=-1) != agg.argmax(axis=-1)[:, None]).mean(axis=1, dtype=np.float64)
    aleatoric = _entropy_np(p).mean(axis=1)

    if view_embeddings is None:
        epistemic = np.zeros(n, dtype=np.float64)
    else:
        e = np.asarray(view_embeddings)
        if e.ndim != 3 or e.shape[:2] != (n, v):
            raise ValueError(
                f"view_embeddings must be [N, V, D] = [{n}, {v}, D] to match view_probs, got {list(e.shape)}"
            )
        e = e.astype(np.float64, copy=False)
        if not np.isfinite(e).all():
            bad = int((~np.isfinite(e)).any(axis=(1, 2)).sum())
            raise ValueError(f"view_embeddings holds non-finite values in {bad} of {n} images")
        if e.shape[2] == 0:
            epistemic = np.zeros(n, dtype=np.float64)
        else:
            e = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), _NORM_EPS)
            e_mean = e.mean(axis=1, keepdims=True)
            epistemic = np.mean((e - e_mean) ** 2, axis=1).mean(axis=-1)

    out = np.stack(
        [max_prob, cross_view_variance, entropy, max_minus_mean, crop_disagreement, epistemic, aleatoric], axis=1
    )
    return out.astype(np.float64, copy=False)


def features_from_logits(view_logits: Any, view_embeddings: Any = None) -> Any:
    """Softmax over the class axis, then :func:`uncertainty_features`.

    Accepts numpy arrays (returns float64 numpy) or torch tensors (dispatches to
    :func:`features_from_logits_torch`). ``[N, C]`` logits are one view per image.
    """
    if isinstance(view_logits, torch.Tensor):
        return features_from_logits_torch(view_logits, view_embeddings)
    logits = _as_3d("view_logits", view_logits)
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=(1, 2)).sum())
        raise ValueError(f"view_logits holds non-finite values in {bad} of {logits.shape[0]} images")
    return uncertainty_features(softmax(logits, axis=-1), view_embeddings)


# --- torch --------------------------------------------------------------------------------


def _entropy_torch(p: torch.Tensor) -> torch.Tensor:
    tiny = torch.finfo(p.dtype).tiny
    return -(p * torch.log(torch.clamp(p, min=tiny))).sum(dim=-1)


def uncertainty_features_torch(
    view_probs: torch.Tensor, view_embeddings: torch.Tensor | None = None, decision_probs: torch.Tensor | None = None
) -> torch.Tensor:
    """Torch twin of :func:`uncertainty_features`: same formulas, same order, same numbers.

    Keeps ``view_probs``' floating dtype and device (integer input becomes float32). Only
    shapes are checked (no data-dependent branches), so it can run inside a traced or
    exported graph. ``[N, C]`` input is one view per image.
    """
    p = view_probs
    if not torch.is_floating_point(p):
        p = p.float()
    if p.dim() == 2:
        p = p.unsqueeze(1)
    if p.dim() != 3:
        raise ValueError(f"view_probs must be [N, V, C] (or [N, C] for one view), got shape {list(p.shape)}")
    p = torch.clamp(p, 0.0, 1.0)

    agg = p.mean(dim=1)
    decision = agg if decision_probs is None else decision_probs.to(p.dtype)
    max_prob = decision.max(dim=-1).values
    p1 = p[:, :, 1]
    p1_mean = p1.mean(dim=1)
    cross_view_variance = ((p1 - p1_mean.unsqueeze(1)) ** 2).mean(dim=1)
    entropy = _entropy_torch(decision)
    max_minus_mean = p1.max(dim=1).values - p1_mean
    crop_disagreement = (p.argmax(dim=-1) != agg.argmax(dim=-1).unsqueeze(1)).to(p.dtype).mean(dim=1)
    aleatoric = _entropy_torch(p).mean(dim=1)

    if view_embeddings is None:
        epistemic = torch.zeros_like(max_prob)
    else:
        e = view_embeddings
        if e.dim() != 3 or e.shape[0] != p.shape[0] or e.shape[1] != p.shape[1]:
            raise ValueError(
                f"view_embeddings must be [N, V, D] = [{p.shape[0]}, {p.shape[1]}, D], got {list(e.shape)}"
            )
        e = e.to(p.dtype)
        if e.shape[2] == 0:
            epistemic = torch.zeros_like(max_prob)
        else:
            e = e / torch.clamp(torch.linalg.vector_norm(e, dim=-1, keepdim=True), min=_NORM_EPS)
            e_mean = e.mean(dim=1, keepdim=True)
            epistemic = ((e - e_mean) ** 2).mean(dim=1).mean(dim=-1)

    return torch.stack(
        [max_prob, cross_view_variance, entropy, max_minus_mean, crop_disagreement, epistemic, aleatoric], dim=1
    )


def features_from_logits_torch(view_logits: torch.Tensor, view_embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the class axis, then :func:`uncertainty_features_torch`."""
    logits = view_logits if torch.is_floating_point(view_logits) else view_logits.float()
    return uncertainty_features_torch(torch.softmax(logits, dim=-1), view_embeddings)
