"""Phase 2: the exit-threshold sweep and the StreetVision-folded decision cut.

* **Exit threshold** τ (cascade exit policy), on the *folded* probability f (below): a
  sample *exits* with the deployed decision ``f > 0.5`` when its confidence
  ``max(f, 1 − f) ≥ τ``; otherwise it is deferred to the next stage. We choose the τ with the highest coverage (exited share) whose false-negative
  rate among exited samples, FN / (TP + FN), is at most ``target_fnr_exit``, provided that
  coverage is at least ``min_coverage``.
* **Decision cut** t*: ``cut_rule="clean_mcc"``, the cut on p1 that maximizes MCC on the
  VAL_CALIB images as stored; ``"validator_reward"``, the cut that maximizes the StreetVision
  reward ``(0.5 MCC + 0.5 accuracy)^3`` on VAL_CALIB as the validator would send it (the
  emulation's levels 0-3 pooled, the classes weighted to ``positive_share``), the distribution a
  miner is paid on; ``"half"``, no tuning: the model's own 0.5 (for a recipe whose tuned cut
  does not transfer: on the demo's current recipe the reward-optimal VAL_CALIB cut swung from 0.33
  to 0.69 between training seeds and scored no better than 0.5 on VAL_SELECT or VAL_TEST,
  docs/training_recipe.md). ``fold_probability`` maps p1 monotonically so that t* lands on 0.5 ("above
  0.5 means roadwork", the StreetVision contract) and every output is a finite value in [0, 1].
"""

from __future__ import annotations

import numpy as np

from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.evaluation import metrics
from roadwork_ml.policy.estimator import PolicyEstimator

_EPS = 1e-6
CUT_RULES = ("clean_mcc", "validator_reward", "half")


class ExitThresholds(PolicyEstimator):
    """The exit threshold τ and the decision cut t*, fitted on VAL_CALIB probabilities.

    Hyper-parameters: ``target_fnr_exit`` (max FN / (TP + FN) among exited samples),
    ``min_coverage`` (min exited share), ``grid_size`` (τ grid on [0.5, 1]), ``cut_rule``
    (``clean_mcc`` | ``validator_reward`` | ``half``, module docstring) and ``positive_share`` (the
    validator's label prior for ``validator_reward``).
    Fitted: ``tau_``, ``coverage_``, ``fnr_exit_``, ``feasible_``, ``decision_cut_``,
    ``mcc_at_cut_`` (clean VAL_CALIB), ``reward_at_cut_`` (the emulated reward, NaN for
    ``clean_mcc``) and ``sweep_`` (``{"tau", "coverage", "fnr"}`` lists over the grid).
    """

    kind = "thresholds"

    def __init__(
        self,
        target_fnr_exit: float = 0.05,
        min_coverage: float = 0.5,
        grid_size: int = 1001,
        cut_rule: str = "clean_mcc",
        positive_share: float = 0.5,
    ) -> None:
        if cut_rule not in CUT_RULES:
            raise ValueError(f"ExitThresholds: cut_rule must be one of {CUT_RULES}, got {cut_rule!r}")
        if not 0.0 < positive_share < 1.0:
            raise ValueError(f"ExitThresholds: positive_share must lie in (0, 1), got {positive_share}")
        self.cut_rule = cut_rule
        self.positive_share = float(positive_share)
        if not 0.0 <= target_fnr_exit <= 1.0 or not 0.0 <= min_coverage <= 1.0:
            raise ValueError(
                f"ExitThresholds: target_fnr_exit and min_coverage must lie in [0, 1], got {target_fnr_exit}, {min_coverage}"
            )
        if int(grid_size) < 2:
            raise ValueError(f"ExitThresholds: grid_size must be >= 2, got {grid_size}")
        self.target_fnr_exit = float(target_fnr_exit)
        self.min_coverage = float(min_coverage)
        self.grid_size = int(grid_size)

    def fit(
        self,
        p1: np.ndarray,
        labels: np.ndarray,
        *,
        split: Split | str,
        validator_p1: np.ndarray | None = None,
        validator_labels: np.ndarray | None = None,
    ) -> ExitThresholds:
        """Fit both thresholds on VAL_CALIB probabilities ``p1`` ``[N]`` with labels ``[N]``;
        ``cut_rule="validator_reward"`` also needs ``validator_p1`` ``[M]`` with
        ``validator_labels`` ``[M]``: the same images through the StreetVision emulation,
        every level pooled."""
        self.check_split(split)
        p1 = np.asarray(p1, dtype=np.float64)
        labels = np.asarray(labels).astype(np.int64)
        if p1.ndim != 1 or labels.shape != p1.shape or p1.size == 0:
            raise ContractError(
                f"ExitThresholds.fit: p1 and labels must be [N] with N > 0, got {list(p1.shape)}, {list(labels.shape)}"
            )
        cut, mcc = mcc_optimal_cut(p1, labels)
        reward = float("nan")
        if self.cut_rule == "validator_reward":
            if validator_p1 is None or validator_labels is None:
                raise ContractError(
                    "ExitThresholds.fit: cut_rule 'validator_reward' needs validator_p1 and validator_labels"
                )
            vp = np.asarray(validator_p1, dtype=np.float64)
            vy = np.asarray(validator_labels).astype(np.int64)
            if vp.ndim != 1 or vy.shape != vp.shape or vp.size == 0:
                raise ContractError(
                    f"ExitThresholds.fit: validator_p1 and validator_labels must be [M] with M > 0, got {list(vp.shape)}, {list(vy.shape)}"
                )
            cut, reward = reward_optimal_cut(vp, vy, self.positive_share)
            mcc = metrics.mcc(labels, (p1 > cut).astype(np.int64))
        elif self.cut_rule == "half":
            cut = 0.5
            mcc = metrics.mcc(labels, (p1 > cut).astype(np.int64))
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
        self.reward_at_cut_ = reward
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
    mcc, _ = _mcc_acc(tp, fp, P - tp, N - fp)
    k = int(np.argmax(mcc))
    s_distinct = s[last_of_tie]
    below = s_distinct[k + 1] if k + 1 < len(s_distinct) else 0.0
    cut = float((s_distinct[k] + below) / 2)
    return float(np.clip(cut, _EPS, 1 - _EPS)), float(mcc[k])


def _mcc_acc(tp, fp, fn, tn) -> tuple[np.ndarray, np.ndarray]:
    """MCC (0 where a margin is empty) and accuracy of confusion counts or weights, element-wise."""
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    with np.errstate(invalid="ignore"):  # weights summing to a share leave margins of -1e-17: MCC 0 there
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), 0.0)
    return mcc, (tp + tn) / (tp + fp + fn + tn)


def reward_optimal_cut(p1: np.ndarray, labels: np.ndarray, positive_share: float = 0.5) -> tuple[float, float]:
    """The cut t maximizing the StreetVision reward ``(0.5 MCC + 0.5 accuracy)^3`` of ``p1 > t``
    with each class weighted so positives make ``positive_share`` of the weight (the validator
    draws half its images from each class). ``p1``, ``labels``: ``[M]``. t is a midpoint between
    distinct scores. Returns (t, reward at t)."""
    p1 = np.asarray(p1, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ContractError("reward_optimal_cut needs both classes")
    w = np.where(y == 1, positive_share / n_pos, (1 - positive_share) / n_neg)
    order = np.argsort(-p1, kind="stable")
    s, yy, ww = p1[order], y[order], w[order]
    tp = np.cumsum(ww * yy)
    fp = np.cumsum(ww * (1 - yy))
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    # candidate k: everything scored at or above s_distinct[k] is called roadwork; plus "none"
    tp, fp = np.r_[0.0, tp], np.r_[0.0, fp]
    mcc, acc = _mcc_acc(tp, fp, positive_share - tp, (1 - positive_share) - fp)
    reward = (0.5 * mcc + 0.5 * acc) ** 3
    k = int(np.argmax(reward))
    s_distinct = s[last_of_tie]
    if k == 0:
        cut = float(s_distinct[0])  # nothing above: the top score itself is not > cut
    else:
        below = s_distinct[k] if k < len(s_distinct) else 0.0
        cut = float((s_distinct[k - 1] + below) / 2)
    return float(np.clip(cut, _EPS, 1 - _EPS)), float(reward[k])


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
    cut_rule: str = "clean_mcc",
    positive_share: float = 0.5,
    validator_p1: np.ndarray | None = None,
    validator_labels: np.ndarray | None = None,
) -> ExitThresholds:
    """``ExitThresholds(...).fit(p1, labels, split=split, validator_p1=..., validator_labels=...)``."""
    return ExitThresholds(target_fnr_exit, min_coverage, grid_size, cut_rule, positive_share).fit(
        p1, labels, split=split, validator_p1=validator_p1, validator_labels=validator_labels
    )
