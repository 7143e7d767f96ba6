"""The final report builder (roadwork_ml.evaluation.report) on synthetic decisions: numbers
match scikit-learn, every interval holds its estimate, VAL_TEST is the only split it accepts."""

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef, roc_auc_score

from roadwork_ml.config import load_profile
from roadwork_ml.contracts import LeakageError, Split
from roadwork_ml.evaluation.report import (
    HEADLINE,
    build_report,
    cascade_costs,
    intervals_contain_estimates,
    write_report_plots,
)


@dataclass
class Decisions:
    streetvision: np.ndarray
    calibrated: np.ndarray
    label: np.ndarray
    accepted: np.ndarray
    prediction_set: np.ndarray


def _case(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p1 = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, n), 0.01, 0.99)
    cal = np.stack([1 - p1, p1], 1)
    d = Decisions(p1, cal, (p1 > 0.5).astype(int), np.abs(p1 - 0.5) > 0.15, np.stack([p1 < 0.8, p1 > 0.2], 1))
    rows = pd.DataFrame(
        {
            "record_id": [f"r{i:03d}" for i in range(n)],
            "time_of_day": rng.choice(["day", "night"], n),
            "weather": rng.choice(["clear", "rain"], n),
            "source": rng.choice(["natix", "roadwork"], n),
            "hour": rng.integers(0, 24, n),
            "label": y,
        }
    )
    images = torch.from_numpy(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    # the StreetVision emulation's model: brightness of the image decides (any deterministic fn)
    return y, d, rows, images


def _ev():
    """tiny's evaluation settings, cut to what a unit test needs (100 resamples, 2 levels)."""
    ev = load_profile("tiny").evaluation
    return ev.model_copy(
        update={"n_resamples": 100, "streetvision": ev.streetvision.model_copy(update={"levels": [0, 3]})}
    )


def test_report_numbers_match_sklearn_and_intervals_hold(tmp_path):
    ev = _ev()
    y, d, rows, images = _case()
    result = build_report(
        y,
        d,
        rows,
        images,
        lambda b: (b.float().mean((1, 2, 3)) / 255.0).numpy(),
        ev,
        split=Split.VAL_TEST,
        batch_size=32,
    )
    r = result.report
    assert r["record_ids"] == rows["record_id"].tolist()
    assert abs(r["classification"]["accuracy"] - accuracy_score(y, d.streetvision > 0.5)) < 1e-12
    assert abs(r["classification"]["mcc"] - matthews_corrcoef(y, d.streetvision > 0.5)) < 1e-12
    assert abs(result.summary["val_test_auroc"] - roc_auc_score(y, d.streetvision)) < 1e-12
    assert result.summary["val_test_policy_coverage"] == pytest.approx(d.accepted.mean())
    assert set(r["intervals"]) >= set(HEADLINE) and intervals_contain_estimates(r) == []
    assert json.loads(json.dumps(r))  # JSON as written
    tables = result.tables()
    assert [row["metric"] for row in tables["summary"]] == list(HEADLINE) and tables["streetvision"]
    assert isinstance(tables["streetvision"][0]["invalid"], int)
    paths = write_report_plots(result, y, d.calibrated, tmp_path, "scrc", ev.n_bins)
    assert all(p.stat().st_size > 1000 for p in paths)
    bad = json.loads(json.dumps(r))
    bad["intervals"]["mcc"]["bca"]["low"] = bad["intervals"]["mcc"]["bca"]["estimate"] + 0.1
    assert intervals_contain_estimates(bad) == ["mcc/bca"]


def test_report_refuses_any_split_but_val_test():
    y, d, rows, images = _case(20)
    with pytest.raises(LeakageError):
        build_report(y, d, rows, images, lambda b: np.zeros(len(b)), _ev(), split=Split.VAL_CALIB, batch_size=8)


def test_cascade_costs():
    rows = cascade_costs(np.array([True, True, False, False]), [1.0, 10.0])
    assert rows == [{"deferred_to": "stage 1 (cost 10)", "avg_cost": 6.0, "relative_cost": 0.6}]
