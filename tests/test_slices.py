"""roadwork_ml.evaluation.slices against metrics computed directly on masked arrays.

Oracles: scikit-learn (accuracy, precision, recall, F1, AUROC) and a brute-force
ECE loop written from Guo et al.'s formula.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from roadwork_ml.data.records import TIMES_OF_DAY, WEATHERS, time_of_day
from roadwork_ml.evaluation.slices import slice_metrics, time_weather_accuracy, worst_slice


def _data(n: int = 800, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Synthetic eval set with a planted weak slice: weather 'snow' errs 50% of the time, others 5%."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        {
            "hour": rng.integers(0, 24, n),
            "weather": rng.choice(["clear", "rain", "snow", "fog"], n, p=[0.45, 0.2, 0.2, 0.15]),
            "source": rng.choice(["natix", "roadwork", "mapillary"], n),
        }
    )
    y = rng.integers(0, 2, n)
    conf = rng.uniform(0.5, 1.0, n)
    err_rate = np.where(meta["weather"] == "snow", 0.5, 0.05)
    wrong = rng.random(n) < err_rate
    pred = np.where(wrong, 1 - y, y)
    p = np.where(pred == 1, conf, 1 - conf)
    return meta, y, p


def _ece_oracle(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    conf = np.maximum(p, 1 - p)
    hit = ((p > 0.5).astype(int) == y).astype(float)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if m.any():
            total += m.sum() / len(y) * abs(hit[m].mean() - conf[m].mean())
    return total


def _mask(meta: pd.DataFrame, p: np.ndarray, family: str, name: str) -> np.ndarray:
    if family == "time_of_day":
        return np.array([time_of_day(int(h)) for h in meta["hour"]]) == name
    if family == "confidence":
        c = np.maximum(p, 1 - p)
        lo, hi = (float(v) for v in name.strip("[])").split(","))
        return (c >= lo) & ((c <= hi) if name.endswith("]") else (c < hi))
    return meta[family].to_numpy() == name


def test_slice_values_equal_direct_computation():
    meta, y, p = _data()
    t = slice_metrics(meta, y, p)
    assert list(t.columns[:3]) == ["family", "slice", "n"]
    assert set(t["family"]) == {"time_of_day", "weather", "source", "confidence"}
    for fam in ("time_of_day", "weather", "source", "confidence"):
        assert t.loc[t["family"] == fam, "n"].sum() == len(y), fam  # each family partitions the rows
    for _, row in t.iterrows():
        m = _mask(meta, p, row["family"], row["slice"])
        ys, ps = y[m], p[m]
        pred = (ps > 0.5).astype(int)
        assert row["n"] == m.sum()
        assert row["accuracy"] == pytest.approx(skm.accuracy_score(ys, pred), abs=1e-12)
        assert row["precision"] == pytest.approx(skm.precision_score(ys, pred, zero_division=0), abs=1e-12)
        assert row["recall"] == pytest.approx(skm.recall_score(ys, pred, zero_division=0), abs=1e-12)
        assert row["f1"] == pytest.approx(skm.f1_score(ys, pred, zero_division=0), abs=1e-12)
        assert row["ece"] == pytest.approx(_ece_oracle(ys, ps), abs=1e-12)
        if len(set(ys)) == 2:
            assert row["auroc"] == pytest.approx(skm.roc_auc_score(ys, ps), abs=1e-12)
        else:
            assert math.isnan(row["auroc"])
    tod = t[t["family"] == "time_of_day"]["slice"].tolist()
    assert tod == [s for s in TIMES_OF_DAY if s in tod]  # canonical order
    conf = t[t["family"] == "confidence"]["slice"].tolist()
    assert conf == ["[0.5,0.6)", "[0.6,0.7)", "[0.7,0.8)", "[0.8,0.9)", "[0.9,1]"]


def test_worst_slice_finds_the_planted_one():
    meta, y, p = _data()
    tiny = pd.DataFrame({"hour": [12] * 5, "weather": ["clear"] * 5, "source": ["tiny"] * 5})
    meta = pd.concat([meta, tiny], ignore_index=True)
    y = np.r_[y, np.ones(5, int)]
    p = np.r_[p, np.zeros(5)]  # 5 wrong rows: accuracy 0, but under min_count
    t = slice_metrics(meta, y, p, min_count=20)
    assert not t.loc[t["slice"] == "tiny", "reliable"].item()
    w = worst_slice(t, "accuracy", min_count=20)
    assert (w["family"], w["slice"]) == ("weather", "snow")
    assert 0.4 < w["value"] < 0.6 and w["n"] == (meta["weather"] == "snow").sum()
    assert worst_slice(t, "accuracy", min_count=1)["slice"] == "tiny"
    assert worst_slice(t, "ece")["value"] == t.loc[t["n"] >= 20, "ece"].max()  # ece: higher is worse
    assert worst_slice(t, "accuracy", min_count=10**6)["slice"] is None


def test_time_of_day_column_wins_over_hour_and_missing_values():
    meta, y, p = _data(100)
    meta["time_of_day"] = ["night"] * 50 + [None] * 50
    t = slice_metrics(meta, y, p, families=("time_of_day",))
    assert dict(zip(t["slice"], t["n"], strict=False)) == {"night": 50, "unknown": 50}
    with pytest.raises(ValueError, match="'source' column"):
        slice_metrics(meta.drop(columns="source"), y, p, families=("source",))
    with pytest.raises(ValueError, match="aligned"):
        slice_metrics(meta.iloc[:10], y, p)


def test_time_weather_accuracy_grid():
    meta, y, p = _data(400, seed=3)
    meta.loc[meta["weather"] == "fog", "hour"] = 12  # fog only by day: other fog cells empty
    acc, cnt = time_weather_accuracy(meta, y, p)
    assert list(acc.index) == list(TIMES_OF_DAY) and list(acc.columns) == list(WEATHERS)
    assert cnt.to_numpy().sum() == len(y) and cnt.shape == acc.shape
    tod = np.array([time_of_day(int(h)) for h in meta["hour"]])
    correct = (p > 0.5).astype(int) == y
    for t_ in TIMES_OF_DAY:
        for w in WEATHERS:
            m = (tod == t_) & (meta["weather"].to_numpy() == w)
            assert cnt.loc[t_, w] == m.sum()
            if m.any():
                assert acc.loc[t_, w] == pytest.approx(correct[m].mean())
            else:
                assert math.isnan(acc.loc[t_, w])
    assert math.isnan(acc.loc["night", "fog"]) and cnt.loc["night", "fog"] == 0
