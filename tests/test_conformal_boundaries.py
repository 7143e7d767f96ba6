"""Boundaries of SCRC that a one-character bug would move (issue 16 item 10), tested through
the public behaviour only (constructor, ``fit``, ``accept``, fitted attributes):

* the rule fitted on calibration data accepts exactly the recorded calibration coverage
  (catches ``>=`` → ``>`` in the accept rule: the thresholds are data values, so ties exist);
* Learn-Then-Test certifies at ``p <= delta`` and not at ``p`` slightly above ``delta``
  (catches ``<=`` → ``<``), with the p-value checked against scipy's binomial CDF.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from roadwork_ml.policy.conformal import SCRC


def _tied_population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidences and gate scores on coarse grids (many exact ties); errors are frequent
    at a low gate score and at a low confidence, so the chosen rule binds on both."""
    rng = np.random.default_rng(seed)
    conf = rng.choice(np.linspace(0.5, 0.99, 8), n)
    gate = rng.choice(np.linspace(0.0, 1.0, 6), n)
    p_err = np.where(gate < 0.3, 0.4, 0.02) + np.where(conf < 0.65, 0.3, 0.0)
    top = rng.integers(0, 2, n)
    probs = np.where(top[:, None] == 1, np.stack([1 - conf, conf], 1), np.stack([conf, 1 - conf], 1))
    y = np.where(rng.uniform(size=n) < p_err, 1 - top, top)
    return probs, y, gate


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fitted_acceptance_on_calibration_data_equals_the_recorded_coverage_and_risk(seed):
    probs, y, gate = _tied_population(3000, seed)
    est = SCRC(0.1, 0.1, n_grid=10, seed=seed).fit(probs, y, gate, split="val_calib")
    assert est.certified_
    acc = est.accept(probs, gate)
    # both chosen thresholds bind and accepted rows sit exactly on each (otherwise this test
    # could not tell >= from > on either side) ...
    assert np.isfinite(est.lambda_conf_) and np.isfinite(est.lambda_gate_)
    assert (acc & (probs.max(1) == est.lambda_conf_)).any() and (acc & (gate == est.lambda_gate_)).any()
    # ... and the rule accepts exactly what fit recorded
    assert acc.sum() == round(est.calibration_coverage_ * len(y))
    wrong = probs.argmax(1) != y
    assert wrong[acc].mean() == pytest.approx(est.calibration_selective_risk_, abs=1e-12)


def _all_correct(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every prediction right, one confidence, one gate score: every grid point accepts every
    row, so each has the same LTT p-value ``BinomCDF(0; n_test, alpha) = (1 - alpha)^n_test``."""
    probs = np.tile([0.2, 0.8], (n, 1))
    return probs, np.ones(n, dtype=int), np.full(n, 0.7)


def test_learn_then_test_certifies_at_p_equal_to_delta_and_not_just_above():
    probs, y, gate = _all_correct(60)
    alpha = 0.05
    first = SCRC(alpha, 0.5).fit(probs, y, gate, split="val_calib")
    p = first.p_value_
    assert first.certified_ and p == pytest.approx(binom.cdf(0, first.n_test_, alpha), rel=1e-12)
    assert 1e-3 < p < 0.5  # a p-value strictly inside (0, 1): the boundary is meaningful
    at = SCRC(alpha, p).fit(probs, y, gate, split="val_calib")
    assert at.certified_ and at.calibration_coverage_ == 1.0 and at.accept(probs, gate).all()
    below = SCRC(alpha, float(np.nextafter(p, 0))).fit(probs, y, gate, split="val_calib")
    assert not below.certified_ and not below.accept(probs, gate).any()


def test_learn_then_test_p_value_counts_errors_with_the_binomial_cdf():
    # one error among the testing rows: p = BinomCDF(1; n_test, alpha), certified iff <= delta
    probs, y, gate = _all_correct(200)
    alpha = 0.1
    ref = SCRC(alpha, 0.5).fit(probs, y, gate, split="val_calib")
    # make one row wrong, row after row, until it lands in the testing part (found by fitting,
    # not by reimplementing the split): the p-value then jumps from BinomCDF(0) to BinomCDF(1)
    p0 = binom.cdf(0, ref.n_test_, alpha)
    p1 = binom.cdf(1, ref.n_test_, alpha)
    for i in range(len(y)):
        y_try = y.copy()
        y_try[i] = 0
        est = SCRC(alpha, 0.5).fit(probs, y_try, gate, split="val_calib")
        if est.p_value_ != pytest.approx(p0, rel=1e-12):
            break
    assert est.p_value_ == pytest.approx(p1, rel=1e-12)
    assert SCRC(alpha, p1).fit(probs, y_try, gate, split="val_calib").certified_
    assert not SCRC(alpha, float(np.nextafter(p1, 0))).fit(probs, y_try, gate, split="val_calib").certified_
