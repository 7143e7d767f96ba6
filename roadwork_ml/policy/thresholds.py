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

from dataclasses import asdict, dataclass, field

import numpy as np

from roadwork_ml.contracts import Purpose, Split, require_split, validate_policy_json

_EPS = 1e-6


@dataclass
class ExitThresholds:
    tau: float
    coverage: float
    fnr_exit: float
    feasible: bool
    decision_cut: float
    mcc_at_cut: float
    target_fnr_exit: float
    min_coverage: float
    sweep: dict = field(default_factory=dict, repr=False)  # tau, coverage, fnr arrays (lists)

    def to_dict(self, with_sweep: bool = False) -> dict:
        d = asdict(self)
        if not with_sweep:
            d.pop("sweep")
        return {"kind": "thresholds", **d}

    @classmethod
    def from_dict(cls, d: dict) -> "ExitThresholds":
        validate_policy_json(d, "thresholds", ["tau", "decision_cut"])
        return cls(**{k: v for k, v in d.items() if k != "kind"})

    def exits(self, p1: np.ndarray) -> np.ndarray:
        """Boolean ``[N]``: which samples leave the cascade at this stage."""
        f = self.fold(p1)
        return np.maximum(f, 1 - f) >= self.tau

    def fold(self, p1: np.ndarray) -> np.ndarray:
        return fold_probability(p1, self.decision_cut)


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


def fit_thresholds(p1: np.ndarray, labels: np.ndarray, split: Split | str, target_fnr_exit: float, min_coverage: float, grid_size: int = 1001) -> ExitThresholds:
    """Fit both thresholds on VAL_CALIB probabilities ``p1`` ``[N]`` with labels ``[N]``."""
    require_split(Purpose.FIT_POLICY, split)
    p1 = np.asarray(p1, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    cut, mcc = mcc_optimal_cut(p1, labels)
    taus = np.linspace(0.5, 1.0, grid_size)
    coverage, fnr = exit_sweep(fold_probability(p1, cut), labels, taus)
    ok = (fnr <= target_fnr_exit) & (coverage >= min_coverage)
    feasible = bool(ok.any())
    # Highest coverage among feasible τ; ties → the smallest such τ (coverage is non-increasing in τ).
    if feasible:
        k = int(np.flatnonzero(ok)[0])
    else:  # report the best compromise: lowest FNR among τ that keep the minimum coverage
        candidates = np.flatnonzero(coverage >= min_coverage)
        k = int(candidates[np.argmin(fnr[candidates])]) if len(candidates) else 0
    return ExitThresholds(
        tau=float(taus[k]),
        coverage=float(coverage[k]),
        fnr_exit=float(fnr[k]),
        feasible=feasible,
        decision_cut=cut,
        mcc_at_cut=mcc,
        target_fnr_exit=target_fnr_exit,
        min_coverage=min_coverage,
        sweep={"tau": taus.tolist(), "coverage": coverage.tolist(), "fnr": fnr.tolist()},
    )
