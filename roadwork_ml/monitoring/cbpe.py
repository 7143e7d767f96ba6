"""Confidence-based performance estimation (CBPE, as NannyML's) for the binary roadwork model.

If the served probability ``p_i = P(y_i = 1)`` is calibrated, the confusion matrix of the
prediction ``ŷ_i = [p_i > threshold]`` has the *expected* entries

    ``TP = Σ_{ŷ=1} p_i``, ``FP = Σ_{ŷ=1} (1 - p_i)``, ``FN = Σ_{ŷ=0} p_i``, ``TN = Σ_{ŷ=0} (1 - p_i)``

and the estimates are the metrics of that matrix (NannyML's estimators):
accuracy ``(TP + TN) / N``; F1 ``2 TP / (2 TP + FP + FN)``; MCC
``(TP TN - FP FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))``.

Sampling interval: given the probabilities, the realised labels are independent
Bernoulli(p_i) draws, so the metric the labels *would* show varies around the estimate.
:func:`cbpe` draws ``n_draws`` label vectors (seeded) and reports the central ``level``
interval of the realised metric: "if calibration holds, the labelled metric of these N
images lies in [low, high] with probability ``level``".

Reliability: CBPE is only as good as calibration. Under covariate shift with calibration
intact it stays unbiased; under concept shift (P(y | x) changes) it is silently wrong. With
labelled rows on the day, :func:`cbpe_reliability` checks it against them: the estimate on
the labelled rows vs their realised metric (a z-score on the Monte-Carlo spread) and the
labelled ECE vs the reference's; either failing marks the estimate unreliable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from roadwork_ml.evaluation import metrics
from roadwork_ml.evaluation.metrics.calibration import _bin_index

__all__ = [
    "METRICS",
    "CBPEEstimate",
    "cbpe",
    "cbpe_reliability",
    "expected_confusion",
    "metrics_from_confusion",
    "realised_metrics",
]

METRICS = ("accuracy", "f1", "mcc")


def _probs(probs1: Any) -> np.ndarray:
    p = np.asarray(probs1, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs1 must be a non-empty [N] array, got shape {list(p.shape)}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probs1 must be finite probabilities in [0, 1]")
    return p


def expected_confusion(probs1: Any, threshold: float = 0.5) -> dict[str, float]:
    """Expected TP, FP, FN, TN (row counts, floats) of ``ŷ = p > threshold`` under calibration."""
    p = _probs(probs1)
    pos = p > threshold
    return {
        "tp": float(p[pos].sum()),
        "fp": float((1 - p[pos]).sum()),
        "fn": float(p[~pos].sum()),
        "tn": float((1 - p[~pos]).sum()),
    }


def metrics_from_confusion(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, Any]:
    """accuracy, F1, MCC of (possibly vectors of) confusion counts; 0/0 gives nan."""
    tp, fp, fn, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = (tp + tn) / n
        f1 = 2 * tp / (2 * tp + fp + fn)
        mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"accuracy": acc, "f1": f1, "mcc": mcc}


def realised_metrics(probs1: Any, labels: Any, threshold: float = 0.5) -> dict[str, float]:
    """accuracy, F1, MCC of ``ŷ = p > threshold`` against labels ``[N]`` (0/1)."""
    p = _probs(probs1)
    y = np.asarray(labels, dtype=np.int64)
    pred = p > threshold
    tp, fp = np.sum(pred & (y == 1)), np.sum(pred & (y == 0))
    fn, tn = np.sum(~pred & (y == 1)), np.sum(~pred & (y == 0))
    return {k: float(v) for k, v in metrics_from_confusion(tp, fp, fn, tn).items()}


@dataclass
class CBPEEstimate:
    """``estimate[m]``: CBPE value; ``interval[m]``: (low, high) sampling interval at ``level``;
    ``se[m]``: standard deviation of the realised metric over the label draws; all fractions
    (MCC in [-1, 1]). ``reliable`` / ``reasons``: see :func:`cbpe_reliability` (None = not checked)."""

    n: int
    estimate: dict[str, float]
    interval: dict[str, tuple[float, float]]
    se: dict[str, float]
    level: float
    n_draws: int
    confusion: dict[str, float]
    reliable: bool | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = {k: [v[0], v[1]] for k, v in self.interval.items()}
        return d


def cbpe(
    probs1: Any,
    threshold: float = 0.5,
    level: float = 0.95,
    n_draws: int = 500,
    seed: int = 0,
    chunk_cells: int = 4_000_000,
) -> CBPEEstimate:
    """CBPE of accuracy, F1 and MCC for calibrated ``probs1`` [N], with a Monte-Carlo sampling interval.

    Label draws are generated in chunks of at most ``chunk_cells`` booleans (memory bound).
    """
    p = _probs(probs1)
    if not 0 < level < 1 or n_draws < 10:
        raise ValueError(f"level must be in (0, 1) and n_draws >= 10, got {level}, {n_draws}")
    conf = expected_confusion(p, threshold)
    est = {k: float(v) for k, v in metrics_from_confusion(**conf).items()}
    pos = p > threshold
    rng = np.random.default_rng(seed)
    step = max(1, chunk_cells // p.size)
    draws: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, n_draws, step):
        y = rng.random((min(step, n_draws - start), p.size)) < p  # [S, N] realised labels
        tp = (y & pos).sum(axis=1)
        fn = (y & ~pos).sum(axis=1)
        fp, tn = pos.sum() - tp, (~pos).sum() - fn
        for m, v in metrics_from_confusion(tp, fp, fn, tn).items():
            draws[m].append(v)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    interval, se = {}, {}
    for m in METRICS:
        v = np.concatenate(draws[m])
        v = v[np.isfinite(v)]
        interval[m] = (float(np.quantile(v, lo_q)), float(np.quantile(v, hi_q))) if v.size else (math.nan, math.nan)
        se[m] = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return CBPEEstimate(
        n=int(p.size), estimate=est, interval=interval, se=se, level=float(level), n_draws=int(n_draws), confusion=conf
    )


def _ece_under_calibration(p: np.ndarray, n_bins: int, n_draws: int, seed: int) -> np.ndarray:
    """ECE [n_draws] of labels drawn from ``p`` itself (same top-label bins as ``metrics.ece``)."""
    conf = np.maximum(p, 1 - p)
    pred1 = p > 0.5
    onehot = np.zeros((p.size, n_bins))
    onehot[np.arange(p.size), _bin_index(conf, n_bins)] = 1.0
    y = np.random.default_rng([seed, 1]).random((n_draws, p.size)) < p
    correct = (y == pred1).astype(np.float64)  # [S, N]
    gap = (conf[None, :] - correct) @ onehot  # [S, bins] summed conf - correct per bin
    return np.abs(gap).sum(axis=1) / p.size


def cbpe_reliability(
    estimate: CBPEEstimate,
    probs1: Any,
    labels: Any,
    min_labels: int = 30,
    z_max: float = 3.0,
    ece_quantile: float = 0.99,
    n_bins: int = 15,
    n_draws: int = 400,
    seed: int = 0,
) -> CBPEEstimate:
    """Mark ``estimate`` reliable or not from the day's labelled rows (``labels`` [N], -1/NaN = none).

    Unreliable when, on the labelled rows, (a) ``|CBPE accuracy - realised accuracy| / SE > z_max``
    (SE: spread of the realised accuracy over labels drawn from the probabilities), or (b) the
    labelled ECE exceeds the ``ece_quantile`` of the ECE that calibrated labels would give on
    those same rows (small samples have a large ECE even when calibrated, so a fixed margin
    over the reference's ECE would flag every quiet day). With fewer than ``min_labels``
    labels it stays unchecked (``reliable = None``).
    """
    p = _probs(probs1)
    y = np.asarray(labels, dtype=np.float64)
    ok = np.isin(y, (0.0, 1.0))
    if ok.sum() < min_labels:
        estimate.reliable, estimate.reasons = (
            None,
            [f"only {int(ok.sum())} labelled rows (< {min_labels}): not checked"],
        )
        return estimate
    pl, yl = p[ok], y[ok].astype(np.int64)
    sub = cbpe(pl, n_draws=n_draws, seed=seed)
    real = realised_metrics(pl, yl)
    reasons = []
    z = abs(sub.estimate["accuracy"] - real["accuracy"]) / max(sub.se["accuracy"], 1e-9)
    if z > z_max:
        reasons.append(
            f"on {int(ok.sum())} labelled rows CBPE accuracy {sub.estimate['accuracy']:.3f} vs realised {real['accuracy']:.3f} (|z| = {z:.1f} > {z_max})"
        )
    ece = metrics.ece(yl, pl, n_bins=n_bins)
    null = _ece_under_calibration(pl, n_bins, n_draws, seed)
    q = float(np.quantile(null, ece_quantile))
    if ece > q:
        reasons.append(
            f"labelled ECE {ece:.3f} > {q:.3f}, the {ece_quantile:.0%} quantile under calibration on these rows: calibration drifted"
        )
    estimate.reliable, estimate.reasons = not reasons, reasons
    return estimate
