import numpy as np
import pytest

from roadwork_ml.config import load_profile
from roadwork_ml.contracts import LeakageError
from roadwork_ml.policy import suite


def _data(n, seed):
    rng = np.random.default_rng(seed)
    p1 = rng.beta(0.6, 0.6, n)
    y = (rng.random(n) < p1).astype(int)  # calibrated by construction
    probs = np.c_[1 - p1, p1]
    wrong = probs.argmax(1) != y
    gate_conf = np.clip(probs.max(1) + rng.normal(0, 0.05, n), 0, 1)
    return probs, y, gate_conf, wrong


def test_gate_threshold_is_the_largest_coverage_meeting_the_risk():
    probs, y, conf, wrong = _data(3000, 0)
    out = suite.gate_accept_threshold(conf, wrong, 0.05)
    acc = conf >= out["cut"]
    assert out["feasible"] and wrong[acc].mean() <= 0.05 + 1e-12
    assert out["coverage"] == pytest.approx(acc.mean())
    # any lower cut (more coverage) breaks the target
    lower = np.sort(np.unique(conf[conf < out["cut"]]))[-5:]
    assert all(wrong[conf >= c].mean() > 0.05 for c in lower)
    assert not suite.gate_accept_threshold(conf, np.ones_like(wrong), 0.05)["feasible"]


def test_held_out_evaluation_meets_guarantees_and_round_trips():
    cfg = load_profile("production").policy.conformal
    probs, y, conf, _ = _data(3000, 1)
    held = suite.held_out_evaluation(probs, y, conf, cfg, "val_calib")
    rows = held.by_method()
    assert set(rows) == {"lac", "aps", "raps", "crc_fnr", "scrc"}
    assert all(suite.within_guarantee(r) for r in held.rows), held.rows
    assert rows["lac"]["value"] == pytest.approx(1 - cfg.alpha, abs=0.03)
    fitted = suite.fit_all(probs, y, conf, cfg, "val_calib")
    again = suite.from_dict(suite.to_dict(fitted))
    assert np.array_equal(again["lac"].predict_sets(probs), fitted["lac"].predict_sets(probs))
    assert np.array_equal(again["scrc"].predict_sets(probs, conf), fitted["scrc"].predict_sets(probs, conf))
    with pytest.raises(LeakageError):
        suite.fit_all(probs, y, conf, cfg, "val_test")


def test_within_guarantee_fails_when_it_should():
    assert not suite.within_guarantee({"metric": "coverage", "value": 0.80, "target": 0.9, "se": 0.01})
    assert not suite.within_guarantee({"metric": "selective_risk", "value": 0.12, "target": 0.05, "se": 0.01})
    assert suite.within_guarantee({"metric": "selective_risk", "value": 0.06, "target": 0.05, "se": 0.01})
