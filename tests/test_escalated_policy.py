"""While monitoring has escalated, the SCRC decision policy runs at its stricter selective risk:
it defers more, its accepted images meet the stricter risk on fresh data, and a bundle without
the stricter fit defers everything."""

import numpy as np

from roadwork_ml.contracts import Split
from roadwork_ml.policy.calibration import TemperatureScaling
from roadwork_ml.policy.conformal import SCRC, SplitConformalLAC
from roadwork_ml.policy.decision import DecisionPolicy
from roadwork_ml.policy.gate.feature_gate import FeatureGate


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    margin = rng.gamma(1.5, 1.2, n)  # easy and hard images
    right = rng.random(n) < 1 / (1 + np.exp(-2 * margin))
    logit1 = np.where(right == (y == 1), margin, -margin)
    return np.stack([np.zeros(n), logit1], 1), y


def _policy(with_escalated: bool) -> DecisionPolicy:
    logits, y = _data(3000, 0)
    cal = TemperatureScaling().fit(logits, y, split=Split.VAL_CALIB)
    probs = cal.predict_proba(logits)
    conf = probs.max(1)  # the max-prob fallback gate's confidence
    scrc = SCRC(0.10, 0.1, n_grid=50, seed=0).fit(probs, y, conf, split=Split.VAL_CALIB)
    params = scrc.to_dict()
    if with_escalated:
        params["escalated"] = SCRC(0.03, 0.1, n_grid=50, seed=0).fit(probs, y, conf, split=Split.VAL_CALIB).to_dict()
    lac = SplitConformalLAC(0.1).fit(probs, y, split=Split.VAL_CALIB)
    return DecisionPolicy(cal, "scrc", params, 0.5, lac, FeatureGate.max_prob_fallback(flip=False))


def _risk(decisions, y) -> tuple[float, float]:
    acc = decisions.accepted
    return float(acc.mean()), float((decisions.label[acc] != y[acc]).mean())


def test_escalation_defers_more_and_meets_the_stricter_risk():
    policy = _policy(with_escalated=True)
    logits, y = _data(4000, 1)  # fresh images
    features = np.zeros((len(y), 7))
    normal_cov, normal_risk = _risk(policy.decide(logits, features), y)
    policy.escalated = True
    strict_cov, strict_risk = _risk(policy.decide(logits, features), y)
    assert strict_cov < normal_cov - 0.05  # defers more
    assert normal_risk <= 0.10 + 0.02 and strict_risk <= 0.03 + 0.01 and strict_risk < normal_risk
    policy.escalated = False
    assert _risk(policy.decide(logits, features), y)[0] == normal_cov  # cleared: back to normal


def test_an_escalated_bundle_without_the_stricter_fit_defers_everything():
    policy = _policy(with_escalated=False)
    logits, y = _data(500, 2)
    policy.escalated = True
    decided = policy.decide(logits, np.zeros((len(y), 7)))
    assert not decided.accepted.any() and set(decided.decision) == {"defer"}
