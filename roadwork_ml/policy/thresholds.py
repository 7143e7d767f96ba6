"""Phase 2: the exit-threshold sweep and the StreetVision-folded decision cut.

* **Exit threshold** τ (cascade exit policy), on the *folded* probability f (below): a
  sample *exits* with the deployed decision ``f > 0.5`` when its confidence
  ``max(f, 1 − f) ≥ τ``; otherwise it is deferred to the next stage. We choose the τ with the highest coverage (exited share) whose false-negative
  rate among exited samples, FN / (TP + FN), is at most ``target_fnr_exit``, provided that
  coverage is at least ``min_coverage``.
* **Decision cut** t*: the cut on p1 that maximizes MCC; ``fold_probability`` maps p1
  monotonically so that t* lands on 0.5 ("above 0.5 means roadwork", the StreetVision
  contract) and every output is a finite value in [0, 1].
"""

from __future__ import annotations

import numpy as np

from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.policy.estimator import PolicyEstimator

_EPS = 1e-6


class ExitThresholds(PolicyEstimator):
    """The exit threshold τ and the decision cut t*, fitted on VAL_CALIB probabilities.

    Hyper-parameters: ``target_fnr_exit`` (max FN / (TP + FN) among exited samples),
    ``min_coverage`` (min exited share), ``grid_size`` (τ grid on [0.5, 1]).
    Fitted: ``tau_``, ``coverage_``, ``fnr_exit_``, ``feasible_``, ``decision_cut_``,
    ``mcc_at_cut_`` and ``sweep_`` (``{"tau", "coverage", "fnr"}`` lists over the grid).
    """

    kind = "thresholds"

    def __init__(self, target_fnr_exit: float = 0.05, min_coverage: float = 0.5, grid_size: int = 1001) -> None:
        if not 0.0 <= target_fnr_exit <= 1.0 or not 0.0 <= min_coverage <= 1.0:
            raise ValueError(
                f"ExitThresholds: target_fnr_exit and min_coverage must lie in [0, 1], got {target_fnr_exit}, {min_coverage}"
            )
        if int(grid_size) < 2:
            raise ValueError(f"ExitThresholds: grid_size must be >= 2, got {grid_size}")
        self.target_fnr_exit = float(target_fnr_exit)
        self.min_coverage = float(min_coverage)
        self.grid_size = int(grid_size)

    def fit(self, p1: np.ndarray, labels: np.ndarray, *, split: Split | str) -> ExitThresholds:
        """Fit both thresholds on VAL_CALIB probabilities ``p1`` ``[N]`` with labels ``[N]``."""
        self.check_split(split)
        p1 = np.asarray(p1, dtype=np.float64)
        labels = np.asarray(labels).astype(np.int64)
        if p1.ndim != 1 or labels.shape != p1.shape or p1.size == 0:
            raise ContractError(
                f"ExitThresholds.fit: p1 and labels must be [N] with N > 0, got {list(p1.shape)}, {list(labels.shape)}"
            )
        cut, mcc = mcc_optimal_cut(p1, labels)
        taus = np.linspace(0.5, 1.0, self.grid_size)
        coverage, fnr = exit_sweep(fold_probability(p1, cut), labels, taus)
        ok = (fnr <= self.target_fnr_exit) & (coverage >= self.min_coverage)
        feasible = bool(ok.any())
        # Highest coverage among feasible τ; ties → the smallest such τ (coverage is non-increasing in τ).
        if feasible:
            k = int(np.flatnonzero(ok)[0])
        else:  # report the best compromise: lowest FNR among τ that keep the minimum coverage
            candidates = np.flatnonzero(coverage >= self.min_coverage)
            k = int(candidates[np.argmin(fnr[candidates])]) if len(candidates) else 0
        self.tau_ = float(taus[k])
        self.coverage_ = float(coverage[k])
        self.fnr_exit_ = float(fnr[k])
        self.feasible_ = feasible
        self.decision_cut_ = cut
        self.mcc_at_cut_ = mcc
        self.sweep_ = {"tau": taus.tolist(), "coverage": coverage.tolist(), "fnr": fnr.tolist()}
        return self

    def exits(self, p1: np.ndarray) -> np.ndarray:
        """Boolean ``[N]``: which samples leave the cascade at this stage."""
        f = self.fold(p1)
        return np.maximum(f, 1 - f) >= self.tau_

    def fold(self, p1: np.ndarray) -> np.ndarray:
        self.check_fitted()
        return fold_probability(p1, self.decision_cut_)


def exit_sweep(p1: np.ndarray, labels: np.ndarray, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and FNR-among-exited for each τ. Shapes: ``[N]``, ``[N]``, ``[T]`` → ``[T]``, ``[T]``.

    FNR is 0 where no positive exits (nothing could be missed).
    """
    conf = np.maximum(p1, 1 - p1)
    pred = p1 > 0.5
    exited = conf[None, :] >= taus[:, None]
    pos = (labels == 1)[None, :]
    fn = (exited & pos & ~pred[None, :]).sum(1)
    tp = (exited & pos & pred[None, :]).sum(1)
    coverage = exited.mean(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fnr = np.where(tp + fn > 0, fn / np.maximum(tp + fn, 1), 0.0)
    return coverage, fnr


def mcc_optimal_cut(p1: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The cut t maximizing MCC of ``p1 > t``; t is a midpoint between distinct scores. Returns (t, MCC)."""
    order = np.argsort(-p1, kind="stable")
    s, y = p1[order], labels[order].astype(np.int64)
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    P, N = tp[-1], fp[-1]
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # cut only between distinct scores
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    fn, tn = P - tp, N - fp
    denom = np.sqrt((tp + fp).astype(float) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), 0.0)
    k = int(np.argmax(mcc))
    s_distinct = s[last_of_tie]
    below = s_distinct[k + 1] if k + 1 < len(s_distinct) else 0.0
    cut = float((s_distinct[k] + below) / 2)
    return float(np.clip(cut, _EPS, 1 - _EPS)), float(mcc[k])


def fold_probability(p1: np.ndarray, cut: float) -> np.ndarray:
    """Piecewise-linear monotone map with ``cut → 0.5``, ``0 → 0``, ``1 → 1``; NaN-safe (NaN → 0.5 − ε).

    A sample is roadwork iff ``p1 > cut`` iff the folded value is ``> 0.5``.
    """
    p = np.nan_to_num(np.asarray(p1, dtype=np.float64), nan=cut, posinf=1.0, neginf=0.0).clip(0, 1)
    cut = float(np.clip(cut, _EPS, 1 - _EPS))
    below = 0.5 * p / cut
    above = 0.5 + 0.5 * (p - cut) / (1 - cut)
    out = np.where(p > cut, np.maximum(above, 0.5 + _EPS), np.minimum(below, 0.5))
    return out.clip(0.0, 1.0)


def fit_thresholds(
    p1: np.ndarray,
    labels: np.ndarray,
    split: Split | str,
    target_fnr_exit: float,
    min_coverage: float,
    grid_size: int = 1001,
) -> ExitThresholds:
    """``ExitThresholds(target_fnr_exit, min_coverage, grid_size).fit(p1, labels, split=split)``."""
    return ExitThresholds(target_fnr_exit, min_coverage, grid_size).fit(p1, labels, split=split)
