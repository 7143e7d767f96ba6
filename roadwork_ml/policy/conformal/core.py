"""Shared pieces of the conformal methods: input checks, the finite-sample quantile, class scores."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from roadwork_ml.contracts import ContractError

_TIE_TOL = 1e-12
_CONTAMINATION_MODELS = ("huber", "uniform_label")


class ConformalError(ValueError):
    """A conformal estimator was misconfigured, misused or is not fitted."""


# --- small helpers -----------------------------------------------------------------------


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ConformalError(f"{name} must lie in (0, 1), got {alpha}")
    return alpha


def _check_eps(eps: float, model: str) -> float:
    eps = float(eps)
    if not 0.0 <= eps < 1.0:
        raise ConformalError(f"contamination_eps must lie in [0, 1), got {eps}")
    if model not in _CONTAMINATION_MODELS:
        raise ConformalError(f"contamination_model must be one of {_CONTAMINATION_MODELS}, got {model!r}")
    return eps


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ContractError(f"{name} must be [N, C] class probabilities with C >= 2, got shape {list(p.shape)}")
    if not np.isfinite(p).all():
        raise ContractError(f"{name} holds non-finite values in {int((~np.isfinite(p)).any(axis=1).sum())} rows")
    if p.size and (p.min() < -1e-9 or p.max() > 1 + 1e-9):
        raise ContractError(
            f"{name} must lie in [0, 1], got range [{p.min():.3g}, {p.max():.3g}]; pass softmax outputs, not logits"
        )
    bad = np.abs(p.sum(axis=1) - 1.0) > 1e-6
    if bad.any():
        raise ContractError(
            f"{name} rows must sum to 1 (+-1e-6); {int(bad.sum())} rows do not (first: row {int(np.argmax(bad))})"
        )
    return p


def _check_labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ContractError(f"labels must be [{n}], got shape {list(y.shape)}")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ContractError("labels must be integer class indices")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise ContractError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ContractError(f"labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _check_u(u: Any, n: int) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n,):
        raise ConformalError(f"u must be [{n}] uniforms, got shape {list(u.shape)}")
    if u.size and (not np.isfinite(u).all() or u.min() < 0.0 or u.max() > 1.0):
        raise ConformalError("u must lie in [0, 1]")
    return u


def _require_fitted(obj: Any, attr: str) -> None:
    if getattr(obj, attr, None) is None:
        raise ConformalError(
            f"{type(obj).__name__} is not fitted: call fit(..., split='val_calib') or from_dict() first"
        )


# --- the finite-sample quantile ----------------------------------------------------------


def conformal_rank(n: int, alpha: float) -> int:
    """``k = ceil((n + 1)(1 - alpha))``, robust to round-off (``100 * 0.9`` is 90, not 91).

    ``k > n`` means the level cannot be reached with ``n`` points (threshold ``+inf``).
    """
    if n < 0:
        raise ConformalError(f"n must be >= 0, got {n}")
    x = (n + 1) * (1.0 - float(alpha))
    r = round(x)
    k = int(r) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else math.ceil(x)
    return max(k, 1)


def conformal_quantile(scores: Any, alpha: float, axis: int = -1) -> np.ndarray | float:
    """The split-conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score.

    Equal to the empirical quantile at level ``ceil((n+1)(1-alpha))/n`` read as an order
    statistic; ``+inf`` when that level exceeds 1. Works on a batch: ``scores`` of shape
    ``[B, n]`` with ``axis=-1`` returns ``B`` thresholds (one per calibration split).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 0:
        raise ConformalError("scores must have at least one dimension")
    n = s.shape[axis]
    if n == 0:
        raise ConformalError("no calibration scores: the conformal quantile needs n >= 1")
    k = conformal_rank(n, alpha)
    if k > n:
        out = np.full(np.delete(np.array(s.shape), axis % s.ndim), np.inf) if s.ndim > 1 else np.inf
        return float(out) if np.ndim(out) == 0 else out
    q = np.take(np.partition(s, k - 1, axis=axis), k - 1, axis=axis)
    return float(q) if np.ndim(q) == 0 else q


# --- non-conformity scores of every class ------------------------------------------------


def lac_class_scores(probs: np.ndarray) -> np.ndarray:
    """LAC score of each class as the label: ``1 - p_c``."""
    return 1.0 - np.asarray(probs, dtype=np.float64)


def raps_class_scores(
    probs: np.ndarray,
    u: np.ndarray | None = None,
    *,
    k_reg: int = 0,
    lambda_reg: float = 0.0,
) -> np.ndarray:
    """RAPS score of each class (APS when ``lambda_reg == 0``), shape ``[N, C]``.

    ``E(x, y, u) = rho_x(y) + u * pi_x(y) + lambda_reg * max(0, o_x(y) - k_reg)`` with
    ``rho_x(y)`` the total probability of the classes ranked above ``y``, ``pi_x(y)``
    the probability of ``y`` and ``o_x(y)`` its 1-based rank by decreasing probability
    (ties broken by class index). ``u=None`` is the non-randomized score (``u = 1``:
    the cumulative mass up to and including ``y``). One ``u`` per row is shared by all
    classes, so the set ``{y : E(x, y, u) <= tau}`` is the top-``L`` classes.
    """
    p = np.asarray(probs, dtype=np.float64)
    n, c = p.shape
    order = np.argsort(-p, axis=1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=1)
    mass_above = np.zeros_like(sorted_p)
    if c > 1:
        mass_above[:, 1:] = np.cumsum(sorted_p[:, :-1], axis=1)
    rank = np.arange(1, c + 1, dtype=np.float64)[None, :]
    penalty = float(lambda_reg) * np.maximum(0.0, rank - float(k_reg))
    uu = 1.0 if u is None else np.asarray(u, dtype=np.float64).reshape(n, 1)
    e_sorted = mass_above + uu * sorted_p + penalty
    out = np.empty_like(e_sorted)
    np.put_along_axis(out, order, e_sorted, axis=1)
    return out


def _plugin_uniform_label_threshold(true_scores: np.ndarray, all_scores: np.ndarray, alpha: float, eps: float) -> float:
    """Smallest calibration score ``t`` with ``(F_n(t) - eps F_Q(t)) / (1 - eps) >= k/n``."""
    n = true_scores.size
    k = conformal_rank(n, alpha)
    if k > n:
        return math.inf
    level = k / n
    t = np.sort(true_scores)
    f_n = np.searchsorted(t, t, side="right") / n
    q_sorted = np.sort(all_scores.ravel())
    f_q = np.searchsorted(q_sorted, t, side="right") / q_sorted.size
    f_clean = (f_n - eps * f_q) / (1.0 - eps)
    hit = np.nonzero(f_clean >= level - 1e-12)[0]
    return float(t[hit[0]]) if hit.size else math.inf
