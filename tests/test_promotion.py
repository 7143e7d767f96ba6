"""The promotion gate refuses a significantly worse bundle and promotes an equivalent one."""

import numpy as np

from roadwork_ml.evaluation.metrics import mcc
from roadwork_ml.evaluation.promotion import promotion_decision

GATE = dict(metric="mcc", margin=0.02, alpha=0.05, n_resamples=1000, seed=0)


def _champion(n: int, rng: np.random.Generator):
    y = rng.integers(0, 2, n)
    p = np.clip(np.where(y == 1, rng.beta(6, 2, n), rng.beta(2, 6, n)), 0, 1)  # MCC ~0.6
    return y, p


def test_a_degraded_bundle_is_refused_with_the_reason():
    rng = np.random.default_rng(0)
    y, champ = _champion(400, rng)
    degraded = champ.copy()
    right = np.flatnonzero((champ > 0.5) == y)
    flip = rng.choice(right, size=len(right) // 4, replace=False)  # a quarter of its right answers turn wrong
    degraded[flip] = 1 - degraded[flip]
    d = promotion_decision(y, degraded, champ, **GATE)
    assert not d.promote and d.comparison.significantly_worse and d.comparison.p_value < 0.01
    assert d.comparison.diff == mcc(y, degraded > 0.5) - mcc(y, champ > 0.5) < -0.2
    assert "significantly below" in d.reason and f"{d.comparison.new:.4f}" in d.reason


def test_an_equivalent_bundle_is_promoted():
    rng = np.random.default_rng(1)
    y, champ = _champion(400, rng)
    d = promotion_decision(y, champ, champ, **GATE)
    assert d.promote and d.comparison.diff == 0 and d.comparison.p_value == 1.0
    # a retrained model of the same quality (independent small differences) also passes
    noisy = np.clip(champ + rng.normal(0, 0.05, len(champ)), 0, 1)
    d2 = promotion_decision(y, noisy, champ, **GATE)
    assert d2.promote and abs(d2.comparison.diff) < 0.05


def test_refusal_rate_for_an_equal_model_stays_below_alpha():
    """Two models of identical quality, many test sets: the gate refuses at most ~alpha of them."""
    refused = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        y, champ = _champion(200, rng)
        other = np.clip(np.where(y == 1, rng.beta(6, 2, len(y)), rng.beta(2, 6, len(y))), 0, 1)
        refused += not promotion_decision(
            y, other, champ, metric="mcc", margin=0.0, alpha=0.05, n_resamples=300, seed=seed
        ).promote
    assert refused / 40 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 40)
