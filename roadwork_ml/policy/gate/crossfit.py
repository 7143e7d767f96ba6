"""Cross-fitting the gate against the max-prob baseline (out-of-fold scores for SCRC), then the refit."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from roadwork_ml.contracts import Split
from roadwork_ml.policy.gate.estimator import FailureGate
from roadwork_ml.policy.gate.model import GateConfig, _json_safe, _safe_auc, _to_2d_float, _to_labels
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

log = logging.getLogger(__name__)


# --- cross-fitting ------------------------------------------------------------------------


@dataclass
class CrossFitResult:
    """Out-of-fold evaluation of the gate against the max-prob baseline, plus the refit gate.

    Scores are error scores (higher = more likely wrong): gate ``P(wrong)`` and baseline
    ``1 - max_prob``. ``pooled`` and each ``per_fold`` entry hold ``gate_auroc``,
    ``gate_auprc``, ``baseline_auroc``, ``baseline_auprc`` (``None`` where undefined).
    When no cross-fitting was possible, ``oof_gate_score`` equals the baseline score and
    ``gate`` is the max-prob fallback; ``fallback`` says why.
    """

    gate: FailureGate
    oof_gate_score: np.ndarray  # [N] out-of-fold P(wrong)
    oof_baseline_score: np.ndarray  # [N] 1 - max_prob
    fold_ids: np.ndarray  # [N] test fold of each row (-1 when no folds were used)
    per_fold: list[dict]
    pooled: dict
    n: int
    n_wrong: int
    n_folds_requested: int
    n_folds_used: int
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def oof_confidence(self) -> np.ndarray:
        """``1 - oof_gate_score``: honest confidences for calibrating SCRC on the same split."""
        return 1.0 - self.oof_gate_score

    @property
    def gate_beats_baseline(self) -> bool | None:
        g, b = self.pooled.get("gate_auroc"), self.pooled.get("baseline_auroc")
        return None if g is None or b is None else bool(g > b)

    def to_dict(self) -> dict:
        """JSON-safe summary (no per-row arrays) for asset metadata and ``gate.json``."""
        return _json_safe(
            {
                "n": self.n,
                "n_wrong": self.n_wrong,
                "error_rate": self.n_wrong / self.n if self.n else None,
                "n_folds_requested": self.n_folds_requested,
                "n_folds_used": self.n_folds_used,
                "fallback": self.fallback,
                "notes": self.notes,
                "pooled": self.pooled,
                "per_fold": self.per_fold,
                "gate_beats_baseline": self.gate_beats_baseline,
                "gate_mode": self.gate.mode_,
            }
        )


def _fold_seed(seed: int, fold: int) -> int:
    return int(np.random.SeedSequence([int(seed), 7919, int(fold)]).generate_state(1)[0])


def cross_fit_gate(
    features: Any,
    is_wrong: Any,
    n_folds: int = 5,
    seed: int = 0,
    config: GateConfig | None = None,
    *,
    split: Split | str | Iterable[Split | str],
    min_wrong_per_fold: int = 2,
    feature_names: Iterable[str] = FEATURE_NAMES,
    progress: bool = False,
) -> CrossFitResult:
    """Stratified K-fold out-of-fold gate scores vs the max-prob baseline, then refit on all rows.

    * Folds: ``StratifiedKFold(n_folds_used, shuffle=True, random_state=seed)``; fold ``k``'s
      gate trains with a seed derived from ``(config.seed, k)``; the final gate uses ``config.seed``.
    * Few errors: the folds are reduced so every test fold holds at least ``min_wrong_per_fold``
      wrong (and right) predictions. If fewer than 2 such folds are possible, nothing is learned:
      the returned gate is :meth:`FailureGate.max_prob_fallback`, ``fallback`` names the reason,
      and the baseline metrics are still reported (pooled over all rows) when defined.
    """
    FailureGate.check_split(FailureGate(), split)  # before any work: the leakage contract
    cfg = config or GateConfig()
    names = tuple(feature_names)
    if "max_prob" not in names:
        raise ValueError("cross_fit_gate: features need a 'max_prob' column for the baseline")
    x = _to_2d_float(features, len(names), "cross_fit_gate")
    n = x.shape[0]
    y = _to_labels(is_wrong, n, "cross_fit_gate")
    n_wrong, n_right = int(y.sum()), int(n - y.sum())
    if n_folds < 2:
        raise ValueError(f"cross_fit_gate: n_folds must be >= 2, got {n_folds}")
    baseline = 1.0 - x[:, names.index("max_prob")]
    notes: list[str] = []

    per_class_min = max(1, int(min_wrong_per_fold))
    n_used = min(n_folds, n_wrong // per_class_min, n_right // per_class_min)
    if n_used < n_folds:
        notes.append(
            f"requested {n_folds} folds but only {n_wrong} wrong / {n_right} right predictions: "
            f"using {n_used} folds so each test fold holds >= {per_class_min} of each"
        )

    if n_used < 2:
        reason = (
            f"too few {'wrong' if n_wrong <= n_right else 'right'} predictions to cross-fit a gate "
            f"({n_wrong} wrong, {n_right} right of {n}; need >= {2 * per_class_min} of each): "
            "using confidence = max_prob"
        )
        log.warning("cross_fit_gate: %s", reason)
        b_auroc, b_auprc = _safe_auc(y, baseline)
        pooled = {
            "gate_auroc": b_auroc,
            "gate_auprc": b_auprc,
            "baseline_auroc": b_auroc,
            "baseline_auprc": b_auprc,
            "gate_is_baseline": True,
        }
        gate = FailureGate.max_prob_fallback(x, cfg, names, reason=reason)
        result = CrossFitResult(
            gate,
            baseline.copy(),
            baseline.copy(),
            np.full(n, -1, dtype=np.int64),
            [],
            pooled,
            n,
            n_wrong,
            n_folds,
            0,
            fallback=reason,
            notes=notes,
        )
        gate.metrics_["cross_fit"] = result.to_dict()
        return result

    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=n_used, shuffle=True, random_state=seed)
    oof = np.full(n, np.nan)
    fold_ids = np.full(n, -1, dtype=np.int64)
    per_fold = []
    folds = list(skf.split(np.zeros(n), y))
    if progress:
        from tqdm.auto import tqdm

        folds = tqdm(folds, desc="gate cross-fit", unit="fold")
    for k, (tr, te) in enumerate(folds):
        g = FailureGate.from_config(replace(cfg, seed=_fold_seed(cfg.seed, k)), names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g.fit(x[tr], y[tr], split=split)
        oof[te] = g.predict_score(x[te])
        fold_ids[te] = k
        ga, gp = _safe_auc(y[te], oof[te])
        ba, bp = _safe_auc(y[te], baseline[te])
        per_fold.append(
            {
                "fold": k,
                "n": int(len(te)),
                "n_wrong": int(y[te].sum()),
                "gate_auroc": ga,
                "gate_auprc": gp,
                "baseline_auroc": ba,
                "baseline_auprc": bp,
            }
        )

    ga, gp = _safe_auc(y, oof)
    ba, bp = _safe_auc(y, baseline)

    def _mean(key: str) -> float | None:
        vals = [f[key] for f in per_fold if f[key] is not None]
        return float(np.mean(vals)) if vals else None

    pooled = {
        "gate_auroc": ga,
        "gate_auprc": gp,
        "baseline_auroc": ba,
        "baseline_auprc": bp,
        "gate_auroc_fold_mean": _mean("gate_auroc"),
        "baseline_auroc_fold_mean": _mean("baseline_auroc"),
        "gate_auprc_fold_mean": _mean("gate_auprc"),
        "baseline_auprc_fold_mean": _mean("baseline_auprc"),
        "gate_is_baseline": False,
    }

    final = FailureGate.from_config(cfg, names).fit(x, y, split=split)
    result = CrossFitResult(
        final, oof, baseline, fold_ids, per_fold, pooled, n, n_wrong, n_folds, n_used, fallback=None, notes=notes
    )
    final.metrics_["cross_fit"] = result.to_dict()
    return result
