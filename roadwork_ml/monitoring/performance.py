"""Model performance in production: estimated without labels, measured where labels arrived.

Label-free estimate (confidence-based performance estimation, "CBPE"): if the served
probability ``p_i = P(roadwork)`` is calibrated, the argmax prediction is right with
probability ``c_i = max(p_i, 1 - p_i)``, so the expected accuracy of the day is
``â = mean_i c_i``. Given the confidences, the realised accuracy is a mean of independent
Bernoulli(c_i), so its standard error around ``â`` is ``sqrt(Σ c_i (1 - c_i)) / N``
(Poisson-binomial variance). That is the SE reported: "the true accuracy of these N
images lies within ±2 SE of the estimate ~95 % of the time" — *if* calibration still
holds. Covariate drift that breaks calibration biases â (usually upwards), which is why
the labelled accuracy overrides it in :mod:`.decisions` once enough labels exist.

Labelled metrics use the argmax rule (``p > 0.5`` → roadwork; a tie is class 0, as ``argmax``), the same prediction the
estimate describes, and reuse :func:`roadwork_ml.evaluation.metrics.accuracy` / ``ece``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from roadwork_ml.evaluation import metrics

__all__ = ["PerformanceEstimate", "estimate_accuracy", "LabelledPerformance", "labelled_performance"]


@dataclass(frozen=True)
class PerformanceEstimate:
    """``accuracy``: expected accuracy in [0.5, 1]; ``se``: its standard error (fraction); ``n``: rows."""

    accuracy: float
    se: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_accuracy(probs1: Any) -> PerformanceEstimate:
    """Label-free accuracy of the argmax prediction from calibrated ``probs1`` [N] in [0, 1]."""
    p = np.asarray(probs1, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probs1 must be a non-empty [N] array, got shape {list(p.shape)}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probs1 must be finite probabilities in [0, 1]")
    c = np.maximum(p, 1.0 - p)
    return PerformanceEstimate(
        accuracy=float(c.mean()), se=float(math.sqrt(np.sum(c * (1.0 - c))) / p.size), n=int(p.size)
    )


@dataclass(frozen=True)
class LabelledPerformance:
    """Measured on the ``n`` rows with a label: accuracy and top-label ECE (fractions)."""

    accuracy: float
    ece: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_performance(probs1: Any, labels: Any, n_bins: int = 15) -> LabelledPerformance | None:
    """Accuracy and ECE over rows whose label is 0 or 1 (``-1`` / NaN = no label); None if none."""
    p = np.asarray(probs1, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"probs1 and labels must both be [N], got {list(p.shape)} and {list(y.shape)}")
    ok = np.isin(y, (0.0, 1.0))
    if not ok.any():
        return None
    yl, pl = y[ok].astype(np.int64), p[ok]
    return LabelledPerformance(
        accuracy=metrics.accuracy(yl, (pl > 0.5).astype(np.int64)),
        ece=metrics.ece(yl, pl, n_bins=n_bins),
        n=int(ok.sum()),
    )
