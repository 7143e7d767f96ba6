"""Calibration metrics: top-label reliability bins, ECE, MCE, SCE, ACE, Brier, NLL."""

from __future__ import annotations

from typing import Any

import numpy as np

from roadwork_ml.evaluation.metrics._checks import (
    DEFAULT_N_BINS,
    NLL_EPS,
    _finite_scores,
    _int_labels,
    _probs_2d,
    _same_length,
)


def top_label(probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and predicted class.

    Args:
        probs: ``[N]`` P(class 1) or ``[N, C]`` class probabilities.

    Returns:
        ``(confidence [N] float64, pred [N] int64)``: the max probability and its
        argmax. Exact ties go to the lowest class index (numpy/torch argmax), so a
        binary ``p = 0.5`` predicts class 0 here; :func:`classification_report`
        thresholds with ``p >= threshold`` instead.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N] or [N, C], got shape {p.shape}")
    pred = np.argmax(p, axis=1).astype(np.int64)
    return p[np.arange(p.shape[0]), pred], pred


def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each value in [0, 1]: right-closed, first bin [0, 1/B]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], values, side="left")


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability_bins(confidence: Any, hits: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, np.ndarray]:
    """Equal-width reliability statistics (for ECE/MCE and reliability diagrams).

    Args:
        confidence: float ``[N]`` in [0, 1] (e.g. top-label confidence).
        hits: bool/int ``[N]`` in {0, 1} (e.g. prediction correct).
        n_bins: number of bins B over [0, 1]; right-closed, first bin ``[0, 1/B]``.

    Returns:
        dict of ndarrays: ``edges [B+1]``, ``count [B]`` (int64), ``confidence [B]``
        (mean confidence per bin) and ``accuracy [B]`` (mean hit per bin); the means
        are nan for empty bins.
    """
    b = _check_bins(n_bins)
    c = _finite_scores(confidence, "confidence")
    h = _int_labels(hits, "hits")
    _same_length(c, h, "confidence", "hits")
    if np.any(c < 0) or np.any(c > 1):
        raise ValueError("confidence must lie in [0, 1]")
    idx = _bin_index(c, b)
    count = np.bincount(idx, minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.bincount(idx, weights=c, minlength=b) / count
        mean_h = np.bincount(idx, weights=h.astype(np.float64), minlength=b) / count
    return {
        "edges": np.linspace(0.0, 1.0, b + 1),
        "count": count.astype(np.int64),
        "confidence": mean_c,
        "accuracy": mean_h,
    }


def _binned_gaps(conf: np.ndarray, hits: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights n_b / N, |acc_b - conf_b|) over non-empty equal-width bins."""
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_c = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_h = np.bincount(idx, weights=hits.astype(np.float64), minlength=n_bins)
    nz = count > 0
    gap = np.abs(sum_h[nz] / count[nz] - sum_c[nz] / count[nz])
    return count[nz] / conf.shape[0], gap


def ece(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Expected calibration error (top-label, equal-width bins), in [0, 1].

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over the B bins of top-label
    confidence (see module notes for bin edges), where ``acc_b`` is the fraction of
    correct argmax predictions in bin b and ``conf_b`` their mean confidence.
    Binary ``[N]`` input uses ``max(p, 1 - p)`` (Guo et al. 2017). Equals
    torchmetrics ``MulticlassCalibrationError(norm="l1")`` away from bin edges.

    Args:
        labels: int ``[N]``; probs: ``[N]`` P(class 1) or ``[N, C]``; n_bins: B.
    """
    b = _check_bins(n_bins)
    y, p = _probs_2d(labels, probs)
    conf, pred = top_label(p)
    w, gap = _binned_gaps(conf, pred == y, b)
    return float(np.sum(w * gap))


def mce(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Maximum calibration error: ``max_b |acc_b - conf_b|`` over non-empty top-label bins.

    Same bins as :func:`ece`; in [0, 1]. Equals torchmetrics
    ``MulticlassCalibrationError(norm="max")`` away from bin edges.
    """
    b = _check_bins(n_bins)
    y, p = _probs_2d(labels, probs)
    conf, pred = top_label(p)
    _, gap = _binned_gaps(conf, pred == y, b)
    return float(np.max(gap))


def sce(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Static calibration error (Nixon et al. 2019), in [0, 1].

    ``SCE = (1/K) sum_k sum_b (n_bk / N) |acc_bk - conf_bk|``: for every class k the
    probabilities ``p_k`` of all N samples are binned in B equal-width bins (same
    edges as :func:`ece`), ``acc_bk`` is the fraction of samples in the bin whose
    label is k and ``conf_bk`` the mean ``p_k``. Binary ``[N]`` input uses K = 2
    classes ``[1 - p, p]``; for each k the term equals torchmetrics
    ``BinaryCalibrationError(p_k, labels == k)`` away from bin edges.
    """
    b = _check_bins(n_bins)
    y, p = _probs_2d(labels, probs)
    k = p.shape[1]
    total = 0.0
    for j in range(k):
        w, gap = _binned_gaps(p[:, j], y == j, b)
        total += float(np.sum(w * gap))
    return total / k


def ace(labels: Any, probs: Any, n_ranges: int = DEFAULT_N_BINS) -> float:
    """Adaptive calibration error (Nixon et al. 2019), equal-mass ranges, in [0, 1].

    For every class k, sort the N values ``p_k`` (ties: label-indicator 0 first),
    split them into R consecutive ranges of (nearly) equal size with
    ``np.array_split``, and average ``|acc_rk - conf_rk|`` weighted by range size:
    ``ACE = (1/K) sum_k sum_r (n_rk / N) |acc_rk - conf_rk|``. When R divides N this
    is Nixon's ``1/(KR) sum |acc - conf|``. Binary ``[N]`` input uses K = 2.

    Args:
        labels: int ``[N]``; probs: ``[N]`` or ``[N, C]``; n_ranges: R.
    """
    r = _check_bins(n_ranges)
    y, p = _probs_2d(labels, probs)
    n, k = p.shape
    total = 0.0
    for j in range(k):
        hit = (y == j).astype(np.float64)
        order = np.lexsort((hit, p[:, j]))
        pj, hj = p[order, j], hit[order]
        for chunk_p, chunk_h in zip(np.array_split(pj, r), np.array_split(hj, r), strict=False):
            if chunk_p.shape[0]:
                total += chunk_p.shape[0] / n * abs(chunk_h.mean() - chunk_p.mean())
    return total / k


def brier(labels: Any, probs: Any) -> float:
    """Brier score (lower is better).

    - Binary (``[N]`` P(class 1), or ``[N, 2]``): ``mean((p1 - y)^2)``, in [0, 1]
      (sklearn ``brier_score_loss``).
    - C > 2 classes ``[N, C]``: ``mean_i sum_k (p_ik - 1[y_i = k])^2``, in [0, 2]
      (Brier 1950; sklearn ``brier_score_loss(..., scale_by_half="auto")``).
    """
    y, p = _probs_2d(labels, probs)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    per_row = np.sum((p - onehot) ** 2, axis=1)
    if p.shape[1] == 2:
        per_row = per_row / 2.0  # (1-p - (1-y))^2 == (p - y)^2
    return float(np.mean(per_row))


def nll(labels: Any, probs: Any, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood of the true class, in nats (>= 0).

    ``NLL = -mean_i log(max(p_{i, y_i}, eps))`` with ``eps = 1e-12`` (so one
    confidently wrong sample costs at most ~27.6 nats). Binary ``[N]`` input uses
    ``p_{i,1} = p_i`` and ``p_{i,0} = 1 - p_i`` (binary cross-entropy).
    """
    y, p = _probs_2d(labels, probs)
    pt = np.maximum(p[np.arange(p.shape[0]), y], eps)
    return float(-np.mean(np.log(pt)))
