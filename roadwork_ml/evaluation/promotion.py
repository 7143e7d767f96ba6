"""The statistical promotion gate: does a new bundle replace the champion?

The new bundle is refused only when it is *significantly worse* than the champion on the
same images: a one-sided paired bootstrap on the metric, where "worse" means worse by more
than ``margin`` (see :func:`~roadwork_ml.evaluation.bootstrap.paired_bootstrap`). A new
bundle that is merely not proven better is promoted: retraining on fresh data should not be
blocked by the noise of a small test set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roadwork_ml.evaluation.bootstrap import PairedComparison, paired_bootstrap
from roadwork_ml.evaluation.display import format_pvalue


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    comparison: PairedComparison


def promotion_decision(
    labels: np.ndarray,
    new_probs: np.ndarray,
    champion_probs: np.ndarray,
    *,
    metric: str,
    margin: float,
    alpha: float,
    n_resamples: int,
    seed: int,
) -> PromotionDecision:
    """``labels`` [N] and both bundles' StreetVision probabilities [N] on the same images."""
    c = paired_bootstrap(
        labels, new_probs, champion_probs, metric=metric, n_resamples=n_resamples, seed=seed, margin=margin, alpha=alpha
    )
    span = f"difference {c.diff:+.4f} [{c.interval.low:+.4f}, {c.interval.high:+.4f}]"
    if c.significantly_worse:
        return PromotionDecision(
            False,
            f"{metric} {c.new:.4f} vs champion {c.ref:.4f}: {span} is significantly below −{margin} (p = {format_pvalue(c.p_value)} < {alpha})",
            c,
        )
    return PromotionDecision(
        True,
        f"{metric} {c.new:.4f} vs champion {c.ref:.4f}: {span}, not significantly worse than −{margin} (p = {format_pvalue(c.p_value)})",
        c,
    )
