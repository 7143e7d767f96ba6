"""CBPE: NannyML 0.13.1 as oracle (fixture recorded in a separate venv by
scripts/record_nannyml_cbpe.py), scikit-learn for realised metrics, and the estimate's
measured error over simulated stable, covariate-shift and concept-shift days."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from roadwork_ml.monitoring.cbpe import (
    cbpe,
    cbpe_reliability,
    expected_confusion,
    metrics_from_confusion,
    realised_metrics,
)
from roadwork_ml.monitoring.simulation import CONCEPT, STABLE, WINTER, simulate_day

FIXTURE = Path(__file__).parent / "fixtures" / "nannyml_cbpe.json"


def test_estimates_equal_nannyml():
    fx = json.loads(FIXTURE.read_text())
    probs = np.asarray(fx["probs"])
    for i, row in enumerate(fx["estimates"]):
        p = probs[i * fx["chunk"] : (i + 1) * fx["chunk"]]
        est = cbpe(p, n_draws=50)
        conf = expected_confusion(p)
        for ours, theirs in (
            ("tp", "true_positive"),
            ("fp", "false_positive"),
            ("fn", "false_negative"),
            ("tn", "true_negative"),
        ):
            assert conf[ours] == pytest.approx(row[theirs], rel=1e-9)
        assert est.estimate["accuracy"] == pytest.approx(row["accuracy"], rel=1e-9)
        assert est.estimate["f1"] == pytest.approx(row["f1"], rel=1e-9)
        tp, fp, fn, tn = (row[k] for k in ("true_positive", "false_positive", "false_negative", "true_negative"))
        assert est.estimate["mcc"] == pytest.approx(float(metrics_from_confusion(tp, fp, fn, tn)["mcc"]), rel=1e-9)


def test_realised_metrics_equal_sklearn_and_interval_is_seeded():
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p).astype(int)
    r = realised_metrics(p, y)
    pred = (p > 0.5).astype(int)
    assert r["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert r["f1"] == pytest.approx(f1_score(y, pred))
    assert r["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    a, b = cbpe(p, seed=4), cbpe(p, seed=4)
    assert a.interval == b.interval and a.interval["accuracy"][0] < a.estimate["accuracy"] < a.interval["accuracy"][1]
    with pytest.raises(ValueError, match="probabilities"):
        cbpe(np.array([0.2, 1.3]))


def _days(config, n_days, n, seed=31):
    out = []
    for d in range(n_days):
        day = simulate_day(n, config, seed, d)
        p, y = day["prob"].to_numpy(), day["y"].to_numpy()
        est = cbpe(p, n_draws=200, seed=d)
        truth = realised_metrics(p, y)
        covered = est.interval["accuracy"][0] <= truth["accuracy"] <= est.interval["accuracy"][1]
        flagged = cbpe_reliability(est, p, day["label"].to_numpy(), seed=d).reliable is False
        out.append(({m: abs(est.estimate[m] - truth[m]) for m in truth}, covered, flagged))
    return out


@pytest.mark.parametrize("config", [STABLE, WINTER], ids=["stable", "covariate_shift"])
def test_error_small_and_interval_covers_when_calibration_holds(config):
    days = _days(config, 40, 1000)
    err = np.mean([d[0]["accuracy"] for d in days])
    assert err <= 0.02, err
    assert np.mean([d[1] for d in days]) >= 0.85  # 95 % interval, 40 days
    assert np.mean([d[2] for d in days]) <= 0.10  # rarely flagged unreliable


def test_concept_shift_breaks_the_estimate_and_is_flagged():
    days = _days(CONCEPT, 20, 1000)
    assert np.mean([d[0]["accuracy"] for d in days]) > 0.08  # CBPE cannot see P(y|x) change ...
    assert np.mean([d[2] for d in days]) >= 0.9  # ... and the labelled rows say so
