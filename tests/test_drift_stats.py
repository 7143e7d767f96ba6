"""Drift statistics: PSI (ours and evidently's), KS (scipy), MMD (alibi-detect, recorded fixture), embedding shift, PCA."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from roadwork_ml.monitoring.drift_stats import (
    PSI_EPS,
    bin_shares,
    embedding_shift,
    ks,
    median_heuristic_sigma,
    mmd_permutation_test,
    psi,
    psi_categorical,
    quantile_edges,
)
from roadwork_ml.monitoring.projection import PCAProjection

# ------------------------------------------------------------------------------------ PSI


def test_quantile_psi_by_hand():
    ref = np.arange(1, 101, dtype=float)  # deciles at 10, 20, ..., 90 -> 10 bins of 10
    edges = quantile_edges(ref, 10)
    assert list(edges) == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
    assert np.allclose(bin_shares(ref, edges), 0.1)
    cur = np.concatenate([np.full(50, 5.0), np.full(50, 95.0)])  # half in the first decile, half in the last
    c = np.array([0.5] + [0.0] * 8 + [0.5])
    r = np.full(10, 0.1)
    c_eps = np.where(c > 0, c, PSI_EPS)
    expected = np.sum((r - c_eps) * np.log(r / c_eps))
    assert psi(ref, cur, bins=10) == pytest.approx(expected, abs=1e-12)
    assert psi(ref, ref, bins=10) == pytest.approx(0.0, abs=1e-12)


def test_quantile_psi_discrete_column_collapses_bins():
    ref = np.repeat([0.0, 0.5, 1.0], [70, 20, 10])  # e.g. crop_disagreement with 2 views
    edges = quantile_edges(ref, 10)
    assert list(edges) == [0.0, 0.5]  # duplicate deciles dropped -> 3 bins {<=0, (0, .5], > .5}
    cur = np.repeat([0.0, 0.5, 1.0], [40, 40, 20])
    r, c = np.array([0.7, 0.2, 0.1]), np.array([0.4, 0.4, 0.2])
    assert psi(ref, cur) == pytest.approx(float(np.sum((r - c) * np.log(r / c))), abs=1e-12)


def test_psi_categorical_new_category():
    value, new = psi_categorical(["day"] * 70 + ["night"] * 30, ["day"] * 50 + ["night"] * 40 + ["dawn"] * 10)
    r, c = np.array([PSI_EPS, 0.7, 0.3]), np.array([0.1, 0.5, 0.4])
    assert new == ["dawn"]
    assert value == pytest.approx(float(np.sum((r - c) * np.log(r / c))), abs=1e-12)


def _evidently_psi(ref: np.ndarray, cur: np.ndarray) -> float:
    from evidently.legacy.calculations.stattests import psi_stat_test
    from evidently.legacy.core import ColumnType

    return float(psi_stat_test(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1).drift_score)


@pytest.mark.parametrize("case", ["normal", "shifted", "skewed_tail", "discrete", "discrete_new_value", "small"])
def test_psi_evidently_mode_matches_evidently(case):
    rng = np.random.default_rng(7)
    if case == "normal":
        ref, cur = rng.normal(size=500), rng.normal(size=200)
    elif case == "shifted":  # empty bins on both sides -> evidently's zero filling
        ref, cur = rng.normal(size=500), rng.normal(2.5, 0.5, size=200)
    elif case == "skewed_tail":  # max_prob-like: mass near 1, sparse tail
        ref, cur = 1 - rng.beta(0.5, 8, size=800) / 2, 1 - rng.beta(0.7, 5, size=150) / 2
    elif case == "discrete":
        ref, cur = rng.integers(0, 5, size=400) / 4, rng.integers(0, 5, size=100) / 4
    elif case == "discrete_new_value":
        ref, cur = rng.integers(0, 3, size=400).astype(float), rng.integers(1, 5, size=100).astype(float)
    else:
        ref, cur = rng.normal(size=30), rng.normal(size=12)
    ours = psi(ref, cur, mode="evidently")
    theirs = _evidently_psi(ref, cur)
    assert math.isfinite(ours)
    assert abs(ours - theirs) <= 1e-9, (ours, theirs)


def test_psi_rejects_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        psi(np.array([0.1, np.nan]), np.array([0.2]))
    with pytest.raises(ValueError, match="mode"):
        psi(np.arange(10.0), np.arange(10.0), mode="decile")


# ------------------------------------------------------------------------------------ KS


def _ks_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    pooled = np.concatenate([a, b])
    fa = np.array([np.mean(a <= t) for t in pooled])
    fb = np.array([np.mean(b <= t) for t in pooled])
    return float(np.max(np.abs(fa - fb)))


@pytest.mark.parametrize("sizes", [(40, 25), (500, 200)])  # scipy: exact p-value, then asymptotic
def test_ks_equals_scipy_and_hand_statistic(sizes):
    rng = np.random.default_rng(sizes[0])
    a, b = rng.normal(size=sizes[0]), rng.normal(0.3, 1.2, size=sizes[1])
    ours = ks(a, b)
    ref = stats.ks_2samp(a, b)
    assert ours.statistic == ref.statistic and ours.p_value == ref.pvalue
    assert ours.statistic == pytest.approx(_ks_by_hand(a, b), abs=1e-12)


# ------------------------------------------------------------------------------------ MMD


FIXTURE = Path(__file__).parent / "fixtures" / "mmd_alibi.json"


def _fixture_inputs(seed: int, n_x: int, n_y: int, d: int, shift: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The recorded cases' inputs, by the recipe stored in the fixture's provenance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_x, d)).astype(dtype)
    y = (rng.normal(size=(n_y, d)) + shift).astype(dtype)
    return x, y


def _sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mmd_statistic_equals_alibi(dtype):
    """alibi-detect 0.13 is the oracle, recorded in its own venv (bench/peers/record_mmd_fixtures.py)
    because it pins numpy < 2: its median-heuristic bandwidth and its statistic at that bandwidth."""
    doc = json.loads(FIXTURE.read_text())
    assert doc["provenance"]["versions"]["alibi_detect"] == "0.13.0"
    case = next(c for c in doc["cases"] if c["inputs"]["dtype"] == dtype)
    x, y = _fixture_inputs(**case["inputs"])
    assert _sha256_arrays(x, y) == case["inputs_sha256"], "numpy's Generator no longer reproduces the recorded inputs"
    sigma = median_heuristic_sigma(x, dtype=torch.float64 if dtype == "float64" else torch.float32)
    # alibi's own median heuristic (sigma=None) lands on the same bandwidth
    assert case["alibi_sigma_median_heuristic"] == pytest.approx(sigma, rel=1e-6)
    stat_alibi = case["alibi_statistic_at_that_sigma"]
    ours = mmd_permutation_test(x, y, n_permutations=50, sigma=case["alibi_sigma_median_heuristic"], device="cpu")
    assert abs(ours.statistic - stat_alibi) <= 1e-6
    if dtype == "float64":  # same float64 arithmetic: agreement to rounding
        assert abs(ours.statistic - stat_alibi) <= 1e-12
    # a naive variant fails the comparison: the biased (V-statistic) estimator
    assert abs(_biased_mmd2(x, y, case["alibi_sigma_median_heuristic"]) - stat_alibi) > 1e-3
    # the float32 kernel (float64 reductions) gives the float64 answer to ~1e-10
    ours32 = mmd_permutation_test(
        x, y, n_permutations=50, sigma=case["alibi_sigma_median_heuristic"], device="cpu", dtype=torch.float32
    )
    assert abs(ours32.statistic - ours.statistic) <= 1e-8


def _biased_mmd2(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    """MMD² with the diagonal kept (biased V-statistic): what a naive implementation computes."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * sigma**2))

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def test_mmd_null_and_pvalue_definition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(45, 5))
    r = mmd_permutation_test(x, y, n_permutations=99, seed=4)
    assert r.null.shape == (99,) and r.n_permutations == 99
    assert r.p_value == (1 + np.count_nonzero(r.null >= r.statistic)) / 100
    # all permutations at once == one at a time; chunking does not change the null
    r_chunked = mmd_permutation_test(x, y, n_permutations=99, seed=4, chunk=8)
    assert np.allclose(r_chunked.null, r.null, atol=1e-14, rtol=0)
    # every null value is the unbiased estimator on an explicit relabelling: check one by brute force
    z = np.concatenate([x, y])
    gen = torch.Generator().manual_seed(4)
    order = torch.rand(1, len(z), generator=gen, dtype=torch.float64).argsort(dim=1)[0].numpy()
    xs, ys = z[np.sort(order[:60])], z[np.sort(order[60:])]

    def k(a, b):
        d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d / (2 * r.sigma**2))

    kxx, kyy = k(xs, xs), k(ys, ys)
    brute = (kxx.sum() - np.trace(kxx)) / (60 * 59) + (kyy.sum() - np.trace(kyy)) / (45 * 44) - 2 * k(xs, ys).mean()
    assert r.null[0] == pytest.approx(brute, abs=1e-12)
    assert r.to_dict()["n_permutations"] == 99


def test_mmd_false_alarm_rate_and_power():
    alpha, n_sim = 0.05, 60
    rng = np.random.default_rng(11)
    pvals = []
    for i in range(n_sim):
        x, y = rng.normal(size=(120, 6)), rng.normal(size=(80, 6))
        pvals.append(mmd_permutation_test(x, y, n_permutations=99, seed=i).p_value)
    pvals = np.array(pvals)
    rate = float(np.mean(pvals < alpha))
    se = math.sqrt(alpha * (1 - alpha) / n_sim)
    assert rate <= alpha + 3 * se, rate
    # roughly uniform: no pile-up at either end
    assert 0.25 < float(np.mean(pvals < 0.5)) < 0.75
    for i in range(10):  # a clear shift is always found, at the resolution of the test
        x, y = rng.normal(size=(120, 6)), rng.normal(0.8, 1.0, size=(80, 6))
        assert mmd_permutation_test(x, y, n_permutations=99, seed=i).p_value == pytest.approx(0.01)


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="same width"):
        mmd_permutation_test(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        mmd_permutation_test(np.full((5, 2), np.nan), np.zeros((5, 2)))


# ------------------------------------------------------------------------------------ embeddings


def test_embedding_shift_units():
    rng = np.random.default_rng(5)
    d = 16
    ref = rng.normal(0.0, 2.0, size=(20000, d)) + 5.0
    cur = ref[:5000] + 1.0  # every dimension moves by half a reference std
    s = embedding_shift(ref, cur)
    assert s.dim == d
    assert s.rms_std == pytest.approx(0.5, abs=0.03)
    assert s.l2_std == pytest.approx(0.5 * math.sqrt(d), rel=0.06)
    assert s.cosine_distance < 0.01  # both means point along (1, ..., 1)
    same = embedding_shift(ref, ref)
    assert same.l2_std == pytest.approx(0.0, abs=1e-12) and same.cosine_distance == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------ PCA


def test_pca_projection_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    emb = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32)) + 3.0
    proj = PCAProjection.fit(emb, dim=8, seed=0)
    sk = PCA(n_components=8, svd_solver="full").fit(emb)
    ours, theirs = proj.transform(emb), sk.transform(emb)
    signs = np.sign(np.sum(ours * theirs, axis=0))
    assert np.allclose(ours, theirs * signs, atol=1e-4)
    assert np.allclose(proj.explained_variance, sk.explained_variance_, rtol=1e-10)
    assert np.allclose(proj.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-10)
    again = PCAProjection.from_dict(json.loads(json.dumps(proj.to_dict())))
    assert np.array_equal(again.transform(emb), ours)
    assert ours.dtype == np.float32 and ours.shape == (400, 8)
    with pytest.raises(ValueError, match="dim"):
        PCAProjection.fit(emb, dim=64, seed=0)
    with pytest.raises(ValueError, match=r"\[N, 32\]"):
        proj.transform(emb[:, :10])
