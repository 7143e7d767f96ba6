"""roadwork_ml.evaluation.fairness on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from roadwork_ml.evaluation.fairness import fairness_report

# day:   labels 1 1 1 0 0 0, preds 1 1 0 1 0 0 -> P(yhat=1) 3/6, TPR 2/3, FPR 1/3
# night: labels 1 1 0 0 0 0, preds 1 0 0 0 0 0 -> P(yhat=1) 1/6, TPR 1/2, FPR 0
# dusk rows must be ignored.
LABELS = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0]
PREDS = [1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]
GROUPS = ["day"] * 6 + ["night"] * 6 + ["dusk"] * 2


def test_hand_computed_gaps():
    r = fairness_report(LABELS, PREDS, GROUPS)
    day, night = r["groups"]["day"], r["groups"]["night"]
    assert (day["n"], day["n_positive"], day["n_negative"]) == (6, 3, 3)
    assert (night["n"], night["n_positive"], night["n_negative"]) == (6, 2, 4)
    assert day["positive_rate"] == pytest.approx(0.5) and night["positive_rate"] == pytest.approx(1 / 6)
    assert day["tpr"] == pytest.approx(2 / 3) and night["tpr"] == pytest.approx(0.5)
    assert day["fpr"] == pytest.approx(1 / 3) and night["fpr"] == 0.0

    dp, eo, eodds = (
        r["demographic_parity_difference"],
        r["equal_opportunity_difference"],
        r["equalized_odds_difference"],
    )
    assert dp["value"] == pytest.approx(1 / 3) and dp["rate_a"] == pytest.approx(0.5)
    assert eo["value"] == pytest.approx(1 / 6)
    assert eodds["value"] == pytest.approx(1 / 3)
    assert eodds["tpr_gap"] == pytest.approx(1 / 6) and eodds["fpr_gap"] == pytest.approx(1 / 3)
    assert not (dp["passed"] or eo["passed"] or eodds["passed"] or r["passed"])
    assert dp["reason"] is None


def test_threshold_decides_passed():
    r = fairness_report(LABELS, PREDS, GROUPS, threshold=0.2)  # only EO = 1/6 passes
    assert r["equal_opportunity_difference"]["passed"]
    assert not r["demographic_parity_difference"]["passed"] and not r["passed"]
    r = fairness_report(LABELS, PREDS, GROUPS, threshold=0.4)
    assert r["passed"]
    r = fairness_report(LABELS, PREDS, GROUPS, threshold=1 / 3)  # the boundary passes (<=)
    assert r["demographic_parity_difference"]["passed"]


def test_equal_groups_have_zero_gaps():
    y = np.array([1, 0, 1, 0])
    r = fairness_report(y, y, ["day", "day", "night", "night"])
    assert r["equalized_odds_difference"]["value"] == 0.0 and r["passed"]


def test_empty_group():
    r = fairness_report([1, 0], [1, 0], ["day", "day"])
    for key in ("demographic_parity_difference", "equal_opportunity_difference", "equalized_odds_difference"):
        assert math.isnan(r[key]["value"]) and not r[key]["passed"]
        assert "'night' has no samples" in r[key]["reason"]
    assert r["groups"]["night"]["n"] == 0 and math.isnan(r["groups"]["night"]["tpr"])


def test_group_without_positives_or_negatives():
    # night has no positives: DP defined, EO and equalized odds not
    r = fairness_report([1, 0, 0, 0], [1, 0, 1, 0], ["day", "day", "night", "night"])
    assert r["demographic_parity_difference"]["value"] == 0.0
    assert math.isnan(r["equal_opportunity_difference"]["value"])
    assert "no positive labels" in r["equal_opportunity_difference"]["reason"]
    assert not r["equalized_odds_difference"]["passed"]
    # night has no negatives: EO defined, equalized odds not
    r = fairness_report([1, 0, 1, 1], [1, 0, 1, 0], ["day", "day", "night", "night"])
    assert r["equal_opportunity_difference"]["value"] == pytest.approx(0.5)
    assert "no negative labels" in r["equalized_odds_difference"]["reason"]
    assert math.isnan(r["equalized_odds_difference"]["value"])


def test_other_group_names_and_validation():
    r = fairness_report(LABELS, PREDS, GROUPS, group_a="night", group_b="day")
    assert r["demographic_parity_difference"]["value"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="equal length"):
        fairness_report(LABELS[:-1], PREDS, GROUPS)
    with pytest.raises(ValueError, match="0/1"):
        fairness_report([2] * 14, PREDS, GROUPS)
    with pytest.raises(ValueError, match="differ"):
        fairness_report(LABELS, PREDS, GROUPS, group_a="day", group_b="day")
