"""roadwork_ml.evaluation.bootstrap against independent oracles.

Oracles: scipy.stats.bootstrap (percentile and BCa, leave-one-out jackknife),
scikit-learn (point estimates), the known true mean of simulated Bernoulli data
(coverage), and hand-built paired cases.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from roadwork_ml.evaluation.bootstrap import (
    JACKKNIFE_MAX_BLOCKS,
    METRICS,
    Interval,
    bootstrap_metrics,
    bootstrap_statistic,
    interval_from_distribution,
    paired_bootstrap,
)


def _scores(n: int, seed: int = 0, noise: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, noise, n), 0, 1)
    return y, p


class _Mean:
    def __init__(self, x: np.ndarray):
        self.x = x

    def __call__(self, idx: np.ndarray) -> dict[str, float]:
        return {"mean": float(self.x[idx].mean())}


def _rel_close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * abs(b)


def test_point_estimates_equal_sklearn():
    y, p = _scores(350)
    res = bootstrap_metrics(y, p, n_resamples=20, n_jobs=1, methods=("percentile",))
    pred = (p > 0.5).astype(int)
    oracle = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "mcc": skm.matthews_corrcoef(y, pred),
        "auroc": skm.roc_auc_score(y, p),
        "auprc": skm.average_precision_score(y, p),
        "brier": skm.brier_score_loss(y, p),
    }
    assert set(res) == set(METRICS)
    for name, want in oracle.items():
        assert res[name]["percentile"].estimate == pytest.approx(want, abs=1e-12), name


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_mean_interval_matches_scipy(method):
    x = np.random.default_rng(1).exponential(1.0, 200)  # skewed: BCa differs from percentile
    ours = bootstrap_statistic(x.shape[0], _Mean(x), n_resamples=4000, seed=3, n_jobs=1, methods=(method.lower(),))[
        "mean"
    ][method.lower()]
    ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method=method, random_state=0).confidence_interval
    print(f"{method}: ours [{ours.low:.4f}, {ours.high:.4f}] scipy [{ref.low:.4f}, {ref.high:.4f}]")
    assert _rel_close(ours.low, ref.low, 0.01) and _rel_close(ours.high, ref.high, 0.01)


def test_bca_shift_matches_scipy_direction():
    x = np.random.default_rng(2).exponential(1.0, 150)
    r = bootstrap_statistic(x.shape[0], _Mean(x), n_resamples=4000, seed=0, n_jobs=1)["mean"]
    s_p = stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", random_state=0).confidence_interval
    s_b = stats.bootstrap((x,), np.mean, n_resamples=20000, method="BCa", random_state=0).confidence_interval
    ours_shift = r["bca"].high - r["percentile"].high
    ref_shift = s_b.high - s_p.high
    assert ref_shift > 0 and ours_shift > 0  # right skew pushes BCa up
    assert ours_shift == pytest.approx(ref_shift, abs=0.01)


def test_accuracy_interval_matches_scipy_paired():
    y, p = _scores(350, seed=4, noise=0.35)
    pred = (p > 0.5).astype(int)
    ours = bootstrap_metrics(y, p, metrics=["accuracy"], n_resamples=3000, seed=0, n_jobs=1)["accuracy"]

    def acc(a, b, axis=-1):
        return np.mean(a == b, axis=axis)

    for method in ("percentile", "BCa"):
        ref = stats.bootstrap(
            (y, pred), acc, paired=True, vectorized=True, n_resamples=20000, method=method, random_state=0
        ).confidence_interval
        got = ours[method.lower()]
        print(f"accuracy {method}: ours [{got.low:.4f}, {got.high:.4f}] scipy [{ref.low:.4f}, {ref.high:.4f}]")
        assert _rel_close(got.low, ref.low, 0.01) and _rel_close(got.high, ref.high, 0.01)


def test_grouped_jackknife_bca_matches_scipy_and_bounds_cost():
    x = np.random.default_rng(5).lognormal(0.0, 0.8, 3000)
    calls = {"n": 0}

    def stat(idx):
        calls["n"] += 1
        return {"mean": float(x[idx].mean())}

    got = bootstrap_statistic(x.shape[0], stat, n_resamples=2000, seed=0, n_jobs=1, methods=("bca",))["mean"]["bca"]
    assert calls["n"] == 1 + 2000 + JACKKNIFE_MAX_BLOCKS
    ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method="BCa", random_state=0).confidence_interval
    print(f"grouped-jackknife BCa n=3000: ours [{got.low:.4f}, {got.high:.4f}] scipy [{ref.low:.4f}, {ref.high:.4f}]")
    assert _rel_close(got.low, ref.low, 0.01) and _rel_close(got.high, ref.high, 0.01)


def test_coverage_of_bernoulli_accuracy():
    rng = np.random.default_rng(123)
    true_p, n, sims = 0.8, 200, 200
    hits = {"percentile": 0, "bca": 0}
    for s in range(sims):
        x = (rng.random(n) < true_p).astype(float)
        # labels all 1 and probs1 = x: accuracy = mean(x), through the real metric path
        r = bootstrap_metrics(np.ones(n, int), x, metrics=["accuracy"], n_resamples=300, seed=s, n_jobs=1)
        for m in hits:
            iv = r["accuracy"][m]
            hits[m] += iv.low <= true_p <= iv.high
    rates = {m: h / sims for m, h in hits.items()}
    print(f"coverage of 95% intervals over {sims} data sets: {rates}")
    for m, rate in rates.items():
        assert 0.90 <= rate <= 0.985, (m, rate)


def test_bca_equals_percentile_on_symmetric_case():
    x = np.random.default_rng(7).normal(0.0, 1.0, 500)
    r = bootstrap_statistic(x.shape[0], _Mean(x), n_resamples=2000, seed=1, n_jobs=1)["mean"]
    assert r["bca"].low == pytest.approx(r["percentile"].low, abs=0.01)
    assert r["bca"].high == pytest.approx(r["percentile"].high, abs=0.01)


def test_same_seed_same_result_for_any_n_jobs():
    y, p = _scores(300, seed=8)
    kw = dict(metrics=["mcc", "auroc", "ece"], n_resamples=200, seed=11)
    a = bootstrap_metrics(y, p, n_jobs=1, **kw)
    b = bootstrap_metrics(y, p, n_jobs=2, **kw)
    dump = lambda r: json.dumps({k: {m: iv.to_dict() for m, iv in v.items()} for k, v in r.items()})  # noqa: E731
    assert dump(a) == dump(b)
    c = bootstrap_metrics(y, p, n_jobs=1, **{**kw, "seed": 12})
    assert dump(a) != dump(c)


def test_nan_resamples_are_dropped_and_counted():
    y = np.zeros(30, int)
    y[:2] = 1  # 2 positives: ~ (28/30)^30 = 13% of resamples hold none
    p = np.linspace(0.05, 0.95, 30)
    r = bootstrap_metrics(y, p, metrics=["auroc", "accuracy"], n_resamples=500, n_jobs=1)
    au = r["auroc"]["percentile"]
    assert au.n_dropped > 20 and au.n_valid + au.n_dropped == 500
    assert math.isfinite(au.low) and math.isfinite(au.high) and math.isfinite(r["auroc"]["bca"].low)
    assert r["accuracy"]["percentile"].n_dropped == 0


def test_degenerate_distribution_has_no_nan():
    y = np.array([0, 1] * 20)
    p = np.where(y == 1, 0.9, 0.1)
    r = bootstrap_metrics(y, p, metrics=["accuracy", "ece"], n_resamples=100, n_jobs=1)
    for m in ("percentile", "bca"):
        iv = r["accuracy"][m]
        assert (iv.estimate, iv.low, iv.high, iv.se) == (1.0, 1.0, 1.0, 0.0)
        assert all(math.isfinite(v) for v in (r["ece"][m].low, r["ece"][m].high))
    const = interval_from_distribution(0.3, np.full(50, 0.3), "bca", 0.95, acceleration=0.0)
    assert (const.low, const.high, const.se) == (0.3, 0.3, 0.0)
    empty = interval_from_distribution(0.3, np.full(5, np.nan), "percentile")
    assert empty.n_valid == 0 and empty.n_dropped == 5 and math.isnan(empty.low)


def test_interval_format_and_dict():
    iv = Interval(0.8731, 0.8612, 0.8849, "bca", 0.95, 0.006, 1000, 0)
    assert iv.format() == "0.873 [0.861, 0.885]"
    assert iv.format(2) == "0.87 [0.86, 0.88]"
    d = Interval(float("nan"), float("nan"), 1.0, "percentile", 0.95, float("nan")).to_dict()
    assert d["estimate"] is None and d["high"] == 1.0
    json.dumps(d, allow_nan=False)


def test_paired_identical_models():
    y, p = _scores(400, seed=9)
    c = paired_bootstrap(y, p, p, metric="mcc", n_resamples=500, n_jobs=1)
    assert c.diff == 0.0 and c.interval.low == 0.0 and c.interval.high == 0.0
    assert c.p_value == 1.0 and not c.significantly_worse


def test_paired_degraded_model_is_significantly_worse():
    y, p = _scores(400, seed=10, noise=0.15)
    rng = np.random.default_rng(0)
    correct = np.flatnonzero((p > 0.5) == y)
    flip = rng.choice(correct, size=int(0.2 * correct.shape[0]), replace=False)
    worse = p.copy()
    worse[flip] = 1.0 - worse[flip]
    c = paired_bootstrap(y, worse, p, metric="mcc", n_resamples=1000, n_jobs=1)
    print(f"degraded: diff {c.diff:.3f} [{c.interval.low:.3f}, {c.interval.high:.3f}], p = {c.p_value:.4f}")
    assert c.diff < 0 and c.interval.high < 0
    assert c.significantly_worse and c.p_value < 0.01
    json.dumps(c.to_dict(), allow_nan=False)


def test_paired_equivalent_model_is_not_significantly_worse():
    y, p = _scores(400, seed=11)
    q = np.clip(p + np.random.default_rng(1).normal(0, 0.02, p.shape[0]), 0, 1)
    for metric in ("mcc", "auroc"):
        c = paired_bootstrap(y, q, p, metric=metric, n_resamples=1000, n_jobs=1)
        print(f"equivalent {metric}: diff {c.diff:.4f}, p = {c.p_value:.3f}")
        assert not c.significantly_worse and c.p_value > 0.1
    # a margin makes a small real loss acceptable
    c0 = paired_bootstrap(y, np.clip(p - 0.03, 0, 1), p, metric="accuracy", n_resamples=1000, n_jobs=1, margin=0.05)
    assert not c0.significantly_worse


def test_input_validation():
    y, p = _scores(20)
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_metrics(y[:-1], p, n_jobs=1)
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_metrics(y + 1, p, n_jobs=1)
    with pytest.raises(ValueError, match="probabilities"):
        bootstrap_metrics(y, p * 3, n_jobs=1)
    with pytest.raises(ValueError, match="unknown metrics"):
        bootstrap_metrics(y, p, metrics=["nope"], n_jobs=1)
    with pytest.raises(ValueError, match="methods"):
        bootstrap_metrics(y, p, methods=("studentized",), n_jobs=1)
    with pytest.raises(ValueError, match="lower-is-better"):
        paired_bootstrap(y, p, p, metric="ece", n_jobs=1)
