"""Input checks shared by every metric, and the module-wide constants."""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_N_BINS = 15
NLL_EPS = 1e-12
RISK_TARGETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)
COVERAGE_TARGETS: tuple[float, ...] = (0.70, 0.80, 0.90, 0.95)
_ROW_SUM_ATOL = 1e-3


# --------------------------------------------------------------------------- validation
def _as_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of shape [N], got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: metrics need at least one sample")
    return a


def _int_labels(labels: Any, name: str = "labels", n_classes: int = 2) -> np.ndarray:
    y = _as_1d(labels, name)
    if y.dtype == bool:
        return y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric class indices, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating) and (not np.all(np.isfinite(y)) or np.any(y != np.round(y))):
        raise ValueError(f"{name} must hold integer class indices; got non-integer values")
    yi = y.astype(np.int64)
    bad = (yi < 0) | (yi >= n_classes)
    if np.any(bad):
        raise ValueError(
            f"{name} must be in 0..{n_classes - 1}; found {np.unique(yi[bad])[:5].tolist()} "
            f"(first offending row {int(np.flatnonzero(bad)[0])})"
        )
    return yi


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{na} has {a.shape[0]} rows but {nb} has {b.shape[0]}; they must match")


def _finite_scores(x: Any, name: str) -> np.ndarray:
    s = _as_1d(x, name).astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(s)))} non-finite values (nan/inf)")
    return s


def _binary_pair(labels: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _int_labels(labels, "labels")
    p = _int_labels(preds, "preds")
    _same_length(y, p, "labels", "preds")
    return y, p


def _probs_2d(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (labels [N] int64, probs [N, C] float64); [N] -> [1 - p, p]."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        if p.shape[0] == 0:
            raise ValueError("probs is empty: metrics need at least one sample")
        p = np.stack([1.0 - p, p], axis=1)
        one_d = True
    elif p.ndim == 2:
        if p.shape[0] == 0:
            raise ValueError("probs is empty: metrics need at least one sample")
        if p.shape[1] < 2:
            raise ValueError(f"probs [N, C] needs C >= 2 columns, got shape {p.shape}; pass [N] for P(class 1)")
        one_d = False
    else:
        raise ValueError(f"probs must be [N] (P(class 1)) or [N, C], got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains non-finite values (nan/inf)")
    if np.any(p < 0.0) or np.any(p > 1.0):
        raise ValueError(
            f"probs must lie in [0, 1] (got min {p.min():.4g}, max {p.max():.4g}); "
            "pass probabilities, not logits (apply sigmoid/softmax first)"
        )
    if not one_d:
        dev = np.abs(p.sum(axis=1) - 1.0)
        if np.any(dev > _ROW_SUM_ATOL):
            i = int(np.argmax(dev))
            raise ValueError(
                f"rows of probs must sum to 1 (row {i} sums to {p[i].sum():.6g}); "
                "pass softmax probabilities, not logits or scores"
            )
    y = _int_labels(labels, "labels", n_classes=p.shape[1])
    _same_length(y, p, "labels", "probs")
    return y, p


def _correct_conf(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    c = _finite_scores(confidence, "confidence")
    ok = _int_labels(correct, "correct")
    _same_length(c, ok, "confidence", "correct")
    return c, ok
