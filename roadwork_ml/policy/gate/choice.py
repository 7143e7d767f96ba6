"""Which gate ships: the honest comparison of the feature sets against max-prob, and the decision rule.

:func:`choose_gate` runs :func:`~roadwork_ml.policy.failure_features.cross_fit_gate` (nested
group cross-fitting over :data:`~roadwork_ml.policy.failure_features.CANDIDATE_SETS`) on the
VAL_CALIB blocks, compares its honest out-of-fold score with ``1 - max_prob`` by a paired
bootstrap (:func:`~roadwork_ml.policy.failure_features.compare_with_max_prob`) and applies the
rule: the logistic gate on the chosen set ships only when the interval of
``AUROC(gate) - AUROC(max-prob)`` lies above 0; otherwise the gate falls back to max-prob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roadwork_ml.evaluation import metrics
from roadwork_ml.policy.failure_features import (
    CANDIDATE_SETS,
    GateCrossFit,
    TrainDistanceFeatures,
    candidate_sets,
    compare_with_max_prob,
    cross_fit_gate,
)
from roadwork_ml.policy.gate.feature_gate import FeatureGate

__all__ = ["GateChoice", "beats_max_prob", "choose_gate"]

SHIPS_GATE, SHIPS_MAX_PROB = "feature_gate", "max_prob"


def beats_max_prob(comparison: dict | None) -> bool:
    """The decision rule: the paired-bootstrap interval of the AUROC difference lies above 0."""
    return bool(comparison is not None and comparison["interval"][0] > 0)


@dataclass
class GateChoice:
    """``gate``: what ships; ``ships``: "feature_gate" or "max_prob"; ``oof_score`` [N]: the honest
    out-of-fold P(wrong) of the nested cross-fit (None when nothing could be cross-fitted)."""

    gate: FeatureGate
    ships: str
    crossfit: GateCrossFit | None
    comparison: dict | None
    auprc: dict
    reason: str
    within_fold: list[dict] = field(default_factory=list)

    @property
    def oof_score(self) -> np.ndarray | None:
        return None if self.crossfit is None else self.crossfit.oof_score

    @property
    def headline(self) -> str:
        c = self.comparison
        delta = (
            f"ΔAUROC {c['difference']:+.3f} [{c['interval'][0]:+.3f}, {c['interval'][1]:+.3f}]" if c else self.reason
        )
        if self.ships == SHIPS_GATE:
            return f"gate: the failure predictor on '{self.crossfit.chosen}' beats max-prob ({delta})"
        return f"gate: falls back to max-prob — the failure predictor did not beat it ({delta})"

    def to_dict(self) -> dict[str, Any]:
        cf = self.crossfit.to_dict() if self.crossfit is not None else None
        return {
            "ships": self.ships,
            "headline": self.headline,
            "reason": self.reason,
            "candidate_sets": {name: list(blocks) for name, blocks in CANDIDATE_SETS},
            "crossfit": cf,
            "comparison": self.comparison,
            "auprc": self.auprc,
            # diagnostic, not the rule: each outer fold's AUROC of its own model vs max-prob's on the
            # same rows (pooling scores of 5 different fold models costs a cross-fitted gate some
            # AUROC that one deployed model would not lose)
            "within_fold": self.within_fold,
            "within_fold_mean": _fold_means(self.within_fold),
        }


def choose_gate(
    blocks: dict[str, np.ndarray],
    failure: Any,
    groups: Any,
    flip: bool,
    distance: TrainDistanceFeatures | None,
    n_folds: int = 5,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> GateChoice:
    """Cross-fit, compare, decide (see the module notes). ``blocks`` from
    :func:`~roadwork_ml.policy.gate.inputs.gate_blocks` on VAL_CALIB (must hold ``max_prob``),
    ``failure`` [N] 1 = the prediction is wrong, ``groups`` [N] (sequences / scene groups)."""
    y = np.asarray(failure, dtype=np.int64)
    g = np.asarray(groups)
    max_prob = np.asarray(blocks["max_prob"], dtype=np.float64).reshape(-1)
    folds = min(int(n_folds), len(np.unique(g)))
    n_wrong = int(y.sum())
    if folds < 2 or min(n_wrong, len(y) - n_wrong) < 2 * folds:
        reason = f"too few groups or errors to cross-fit ({len(np.unique(g))} groups, {n_wrong} wrong of {len(y)})"
        gate = FeatureGate.max_prob_fallback(flip, record={"reason": reason})
        return GateChoice(gate, SHIPS_MAX_PROB, None, None, {}, reason)
    sets = candidate_sets(blocks)
    cf = cross_fit_gate(sets, y, g, n_folds=folds)
    cmp = compare_with_max_prob(y, cf.oof_score, max_prob, n_resamples=n_resamples, seed=seed, level=level)
    auprc = {"gate": float(metrics.auprc(y, cf.oof_score)), "max_prob": float(metrics.auprc(y, 1.0 - max_prob))}
    names = dict(CANDIDATE_SETS)
    if beats_max_prob(cmp):
        reason = f"the interval of ΔAUROC lies above 0 (lower bound {cmp['interval'][0]:+.4f})"
        ships = SHIPS_GATE
    else:
        reason = f"the interval of ΔAUROC includes or lies below 0 (lower bound {cmp['interval'][0]:+.4f})"
        ships = SHIPS_MAX_PROB
    within = _within_fold(y, cf.oof_score, max_prob, g, folds)
    choice = GateChoice(FeatureGate.max_prob_fallback(flip), ships, cf, cmp, auprc, reason, within)
    record = {"ships": ships, "headline": choice.headline, "comparison": cmp, "chosen": cf.chosen}
    choice.gate = (
        FeatureGate.fit_logistic(blocks, cf.chosen, tuple(names[cf.chosen]), y, flip, distance, record)
        if ships == SHIPS_GATE
        else FeatureGate.max_prob_fallback(flip, record)
    )
    return choice


def _within_fold(y: np.ndarray, score: np.ndarray, max_prob: np.ndarray, g: np.ndarray, folds: int) -> list[dict]:
    """AUROC of the out-of-fold gate score and of 1 - max_prob inside each outer fold (the same
    GroupKFold split :func:`cross_fit_gate` uses)."""
    from sklearn.model_selection import GroupKFold

    rows = []
    for k, (_, te) in enumerate(GroupKFold(n_splits=folds).split(np.zeros(len(y)), y, g)):
        if 0 < y[te].sum() < len(te):
            rows.append(
                {
                    "fold": k,
                    "n": len(te),
                    "n_wrong": int(y[te].sum()),
                    "gate_auroc": float(metrics.auroc(y[te], score[te])),
                    "max_prob_auroc": float(metrics.auroc(y[te], 1.0 - max_prob[te])),
                }
            )
    return rows


def _fold_means(rows: list[dict]) -> dict:
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in ("gate_auroc", "max_prob_auroc")}
