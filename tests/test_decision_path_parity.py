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
    parity = decision_path_parity(served, served.decide(served_policy), served_policy, ref, policy, TOL)
    # the calibration images are the isotonic knots: the float32 difference lands on its ramps
    assert parity.max_raw_prob_diff < 1e-5
    assert parity.max_calibrated_prob_diff > TOL  # a fixed 1e-4 on calibrated probabilities would fail here
    assert parity.max_policy_prob_diff == 0.0 and parity.policy_decisions_equal
    assert parity.off_edge_disagreements == 0 and parity.passed(TOL)


def test_a_different_calibrator_in_the_bundle_fails(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    stale = TemperatureScaling.from_dict({**temp.to_dict()})
    stale.temperature_ = temp.temperature_ * 1.01  # a bundle that shipped last week's calibrator
    served_policy = _policy(stale, logits, y)
    ref = _outputs(logits, rng)
    parity = decision_path_parity(ref, ref.decide(served_policy), served_policy, ref, policy, TOL)
    assert parity.max_raw_prob_diff == 0.0
    assert parity.max_policy_prob_diff > 1e-4 and not parity.passed(TOL)


def test_a_preprocessing_difference_fails_on_the_model(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    ref = _outputs(logits, rng)
    # e.g. the served path resizing differently: logits off by a few hundredths
    served = ModelOutputs(logits + rng.normal(0, 0.03, logits.shape), ref.features, ref.embeddings, ref.view_logits)
    parity = decision_path_parity(served, served.decide(policy), policy, ref, policy, TOL)
    assert parity.max_raw_prob_diff > TOL and parity.max_policy_prob_diff == 0.0
    assert not parity.passed(TOL)
    # the features alone off (a different view order) fail as well
    moved = ModelOutputs(ref.logits, ref.features + 1e-3, ref.embeddings, ref.view_logits)
    assert not decision_path_parity(moved, moved.decide(policy), policy, ref, policy, TOL).passed(TOL)


def test_lengths_must_match(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    ref = _outputs(logits, rng)
    short = _outputs(logits[:10], rng)
    with pytest.raises(ValueError, match="10 served images, 400 reference"):
        decision_path_parity(short, short.decide(policy), policy, ref, policy, TOL)


def _on_a_cut(policy: DecisionPolicy, ref: ModelOutputs, i: int) -> ModelOutputs:
    """``ref`` with image ``i``'s logit margin moved onto a cut of ``policy`` (bisection to 1e-12)."""

    def decision(margin: float) -> str:
        z = ref.logits.copy()
        z[i] = (0.0, margin)
        return ModelOutputs(z, ref.features, ref.embeddings, ref.view_logits).decide(policy).decision[i]

    lo, hi = -8.0, 8.0  # "no_roadwork" far below, "roadwork" far above; a defer band lies between
    assert decision(lo) != decision(hi)
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if decision(mid) == decision(lo) else (lo, mid)
    z = ref.logits.copy()
    z[i] = (0.0, lo)
    return ModelOutputs(z, ref.features, ref.embeddings, ref.view_logits)


def test_an_image_on_a_cut_may_flip_one_off_the_edge_may_not(calib):
    rng, logits, y = calib
    temp = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    policy = _policy(temp, logits, y)
    ref = _on_a_cut(policy, _outputs(logits, rng), 0)
    # the served backend lands 1e-9 above the cut: image 0 flips, nothing else moves
    z = ref.logits.copy()
    z[0, 1] += 1e-9
    served = ModelOutputs(z, ref.features, ref.embeddings, ref.view_logits)
    decisions = served.decide(policy)
    parity = decision_path_parity(served, decisions, policy, ref, policy, TOL)
    assert decisions.decision[0] != ref.decide(policy).decision[0]
    assert parity.edge_images >= 1 and parity.off_edge_disagreements == 0 and parity.passed(TOL)
    # a served path that changes the decision of an image far from every cut fails
    far = int(np.argmax(np.abs(ref.logits[:, 1])))
    tampered = served.decide(policy)
    tampered.decision = tampered.decision.copy()
    tampered.decision[far] = "defer" if tampered.decision[far] != "defer" else "roadwork"
    bad = decision_path_parity(served, tampered, policy, ref, policy, TOL)
    assert bad.off_edge_disagreements == 1 and not bad.passed(TOL)
    assert "no move within the tolerance explains" in bad.failures(TOL)[0]
