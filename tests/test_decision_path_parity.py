"""roadwork_ml.serving.parity: the bundle check `predicts_through_predictor` holds the model
(served vs reference backend) to the tolerance and the policy (bundle vs assets) to rounding,
and reports the calibrated difference a steep calibrator makes of a float32 difference."""

import numpy as np
import pytest

from roadwork_ml.contracts import Split
from roadwork_ml.numerics import softmax
from roadwork_ml.policy.calibration.calibrators import IsotonicCalibration, TemperatureScaling
from roadwork_ml.policy.conformal import SplitConformalLAC
from roadwork_ml.policy.decision import DecisionPolicy
from roadwork_ml.policy.thresholds import fit_thresholds
from roadwork_ml.serving.parity import ModelOutputs, decision_path_parity

TOL = 1e-4


def _outputs(logits: np.ndarray, rng: np.random.Generator) -> ModelOutputs:
    n = len(logits)
    return ModelOutputs(logits, rng.normal(0, 1, (n, 7)), rng.normal(0, 1, (n, 4)), np.stack([logits, logits], 1))


def _policy(calibrator, logits, y) -> DecisionPolicy:
    th = fit_thresholds(softmax(logits, axis=1)[:, 1], y, Split.VAL_CALIB, 0.3, 0.2, 201)
    lac = SplitConformalLAC(0.1).fit(calibrator.predict_proba(logits), y, split=Split.VAL_CALIB)
    return DecisionPolicy(calibrator, "thresholds", th.to_dict(), th.decision_cut_, lac)


@pytest.fixture()
def calib():
    rng = np.random.default_rng(3)
    n = 400
    y = rng.integers(0, 2, n)
    margin = (2 * y - 1) * 1.2 + rng.normal(0, 1.5, n)
    logits = np.stack([np.zeros(n), margin], 1)
    return rng, logits, y


def _float32_backend(logits: np.ndarray, rng: np.random.Generator, scale: float = 2e-5) -> np.ndarray:
    """Another backend's logits: float32 rounding and reordered sums, a few 1e-5 apart."""
    return (logits + rng.uniform(-scale, scale, logits.shape)).astype(np.float32).astype(np.float64)


def test_isotonic_knot_amplifies_float32_noise_yet_the_path_is_the_same(calib):
    rng, logits, y = calib
    iso = IsotonicCalibration().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(iso, logits, y)
    # the served policy is a second object loaded from the same parameters (the bundle's copy)
    served_policy = _policy(IsotonicCalibration.from_dict(iso.to_dict()), logits, y)
    ref = _outputs(logits, rng)
    served = ModelOutputs(_float32_backend(logits, rng), ref.features, ref.embeddings, ref.view_logits)
    parity = decision_path_parity(served, served.decide(served_policy), served_policy, ref, policy)
    # the calibration images are the isotonic knots: the float32 difference lands on its ramps
    assert parity.max_raw_prob_diff < 1e-5
    assert parity.max_calibrated_prob_diff > TOL  # a fixed 1e-4 on calibrated probabilities would fail here
    assert parity.max_policy_prob_diff == 0.0 and parity.policy_decisions_equal
    assert parity.decision_agreement >= 0.99 and parity.passed(TOL)


def test_a_different_calibrator_in_the_bundle_fails(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    stale = TemperatureScaling.from_dict({**temp.to_dict()})
    stale.temperature_ = temp.temperature_ * 1.01  # a bundle that shipped last week's calibrator
    served_policy = _policy(stale, logits, y)
    ref = _outputs(logits, rng)
    parity = decision_path_parity(ref, ref.decide(served_policy), served_policy, ref, policy)
    assert parity.max_raw_prob_diff == 0.0
    assert parity.max_policy_prob_diff > 1e-4 and not parity.passed(TOL)


def test_a_preprocessing_difference_fails_on_the_model(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    ref = _outputs(logits, rng)
    # e.g. the served path resizing differently: logits off by a few hundredths
    served = ModelOutputs(logits + rng.normal(0, 0.03, logits.shape), ref.features, ref.embeddings, ref.view_logits)
    parity = decision_path_parity(served, served.decide(policy), policy, ref, policy)
    assert parity.max_raw_prob_diff > TOL and parity.max_policy_prob_diff == 0.0
    assert not parity.passed(TOL)
    # the features alone off (a different view order) fail as well
    moved = ModelOutputs(ref.logits, ref.features + 1e-3, ref.embeddings, ref.view_logits)
    assert not decision_path_parity(moved, moved.decide(policy), policy, ref, policy).passed(TOL)


def test_lengths_must_match(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    ref = _outputs(logits, rng)
    short = _outputs(logits[:10], rng)
    with pytest.raises(ValueError, match="10 served images, 400 reference"):
        decision_path_parity(short, short.decide(policy), policy, ref, policy)
