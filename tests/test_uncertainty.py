"""Uncertainty features: hand-computed values, single-view invariants, numpy/torch parity, ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from roadwork_ml.policy.uncertainty import (
    FEATURE_INDEX,
    FEATURE_INFO,
    FEATURE_NAMES,
    NUM_FEATURES,
    features_from_logits,
    features_from_logits_torch,
    uncertainty_features,
    uncertainty_features_torch,
)

I = FEATURE_INDEX


def _h(q):
    return -sum(x * math.log(x) for x in q if x > 0)


def _reference(probs, embs=None):
    """Pure-Python loops straight from the definitions (no numpy reductions)."""
    out = []
    for n, views in enumerate(probs):
        V, C = len(views), len(views[0])
        agg = [sum(views[v][c] for v in range(V)) / V for c in range(C)]
        agg_arg = max(range(C), key=lambda c: (agg[c], -c))
        p1 = [views[v][1] for v in range(V)]
        m1 = sum(p1) / V
        var = sum((x - m1) ** 2 for x in p1) / V
        dis = sum(1 for v in range(V) if max(range(C), key=lambda c: (views[v][c], -c)) != agg_arg) / V
        epi = 0.0
        if embs is not None:
            e = [[x / math.sqrt(sum(y * y for y in vec)) for x in vec] for vec in embs[n]]
            D = len(e[0])
            tot = 0.0
            for d in range(D):
                md = sum(e[v][d] for v in range(V)) / V
                tot += sum((e[v][d] - md) ** 2 for v in range(V)) / V
            epi = tot / D
        ale = sum(_h(views[v]) for v in range(V)) / V
        out.append([max(agg), var, _h(agg), max(p1) - m1, dis, epi, ale])
    return np.array(out)


def test_feature_names_order_and_docs():
    assert FEATURE_NAMES == (
        "max_prob",
        "cross_view_variance",
        "entropy",
        "max_minus_mean",
        "crop_disagreement",
        "epistemic_feature_variance",
        "aleatoric_expected_entropy",
    )
    assert NUM_FEATURES == 7 and set(FEATURE_INFO) == set(FEATURE_NAMES)
    assert all({"range", "unit"} <= set(v) for v in FEATURE_INFO.values())


def test_hand_computed_tiny_example():
    p1 = np.array([[0.9, 0.6, 0.3], [0.0, 0.2, 0.1]])
    probs = np.stack([1 - p1, p1], axis=-1)  # [2, 3, 2]
    embs = np.array(
        [[[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], [[1.0, 1.0], [2.0, 2.0], [5.0, 5.0]]]
    )  # second image: all views point the same way
    f = uncertainty_features(probs, embs)
    assert f.shape == (2, 7) and f.dtype == np.float64

    h = lambda a: -(a * math.log(a) if a > 0 else 0.0) - ((1 - a) * math.log(1 - a) if a < 1 else 0.0)
    # image 0: mean p1 = 0.6
    assert f[0, I["max_prob"]] == pytest.approx(0.6, abs=1e-12)
    assert f[0, I["cross_view_variance"]] == pytest.approx(0.06, abs=1e-12)  # (0.09 + 0 + 0.09) / 3
    assert f[0, I["entropy"]] == pytest.approx(h(0.6), abs=1e-12)
    assert f[0, I["max_minus_mean"]] == pytest.approx(0.3, abs=1e-12)
    assert f[0, I["crop_disagreement"]] == pytest.approx(1 / 3, abs=1e-12)  # the 0.3 view votes 0, aggregate votes 1
    # normalized embeddings (0.6, 0.8), (0, 1), (1, 0): per-dim population variances
    d0, d1 = [0.6, 0.0, 1.0], [0.8, 1.0, 0.0]
    var = lambda xs: sum((x - sum(xs) / 3) ** 2 for x in xs) / 3
    assert f[0, I["epistemic_feature_variance"]] == pytest.approx((var(d0) + var(d1)) / 2, abs=1e-12)
    assert f[0, I["aleatoric_expected_entropy"]] == pytest.approx((h(0.9) + h(0.6) + h(0.3)) / 3, abs=1e-12)
    # image 1: mean p1 = 0.1, one view exactly certain (0 log 0 = 0), all views agree
    assert f[1, I["max_prob"]] == pytest.approx(0.9, abs=1e-12)
    assert f[1, I["cross_view_variance"]] == pytest.approx((0.01 + 0.01 + 0.0) / 3, abs=1e-12)
    assert f[1, I["max_minus_mean"]] == pytest.approx(0.1, abs=1e-12)
    assert f[1, I["crop_disagreement"]] == 0.0
    assert f[1, I["epistemic_feature_variance"]] == pytest.approx(0.0, abs=1e-12)
    assert f[1, I["aleatoric_expected_entropy"]] == pytest.approx((0.0 + h(0.2) + h(0.1)) / 3, abs=1e-12)
    np.testing.assert_allclose(f, _reference(probs.tolist(), embs.tolist()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("C", [2, 3])
def test_matches_loop_reference_on_random_data(C):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(C) * 0.7, size=(20, 5))
    embs = rng.normal(size=(20, 5, 4))
    np.testing.assert_allclose(
        uncertainty_features(probs, embs), _reference(probs.tolist(), embs.tolist()), rtol=0, atol=1e-12
    )


def test_single_view_invariants():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([0.5, 0.5], size=(200, 1))
    embs = rng.normal(size=(200, 1, 16))
    f = uncertainty_features(probs, embs)
    for name in ("cross_view_variance", "max_minus_mean", "crop_disagreement", "epistemic_feature_variance"):
        assert np.all(f[:, I[name]] == 0.0), name
    assert np.array_equal(f[:, I["entropy"]], f[:, I["aleatoric_expected_entropy"]])
    np.testing.assert_array_equal(f[:, I["max_prob"]], probs[:, 0, :].max(axis=1))
    # [N, C] means one view per image
    np.testing.assert_array_equal(uncertainty_features(probs[:, 0, :]), uncertainty_features(probs))
    ft = uncertainty_features_torch(torch.from_numpy(probs), torch.from_numpy(embs)).numpy()
    assert np.all(ft[:, [1, 3, 4, 5]] == 0.0) and np.array_equal(ft[:, 2], ft[:, 6])


def test_no_embeddings_gives_zero_epistemic():
    probs = np.random.default_rng(2).dirichlet([1, 1], size=(10, 10))
    assert np.all(uncertainty_features(probs)[:, I["epistemic_feature_variance"]] == 0.0)
    assert np.all(uncertainty_features(probs)[:, I["cross_view_variance"]] > 0)


def test_ranges_c2():
    rng = np.random.default_rng(3)
    V, D = 10, 8
    logits = rng.normal(scale=rng.uniform(0.1, 6, size=(5000, 1, 1)), size=(5000, V, 2))
    embs = rng.normal(size=(5000, V, D))
    f = features_from_logits(logits, embs)
    assert f.shape == (5000, 7) and np.isfinite(f).all()
    eps = 1e-12
    assert f[:, I["max_prob"]].min() >= 0.5 - eps and f[:, I["max_prob"]].max() <= 1 + eps
    assert f[:, I["cross_view_variance"]].min() >= 0 and f[:, I["cross_view_variance"]].max() <= 0.25
    assert -eps <= f[:, I["entropy"]].min() and f[:, I["entropy"]].max() <= math.log(2) + eps
    assert -eps <= f[:, I["max_minus_mean"]].min() and f[:, I["max_minus_mean"]].max() <= 1 - 1 / V + eps
    dis = f[:, I["crop_disagreement"]]
    assert dis.min() >= 0 and dis.max() <= 1 and dis.max() > 0
    np.testing.assert_allclose(dis * V, np.round(dis * V), atol=1e-9)  # multiples of 1/V
    assert (
        f[:, I["epistemic_feature_variance"]].min() >= 0 and f[:, I["epistemic_feature_variance"]].max() <= 1 / D + eps
    )
    # mutual information = entropy - expected entropy >= 0
    assert (f[:, I["entropy"]] - f[:, I["aleatoric_expected_entropy"]]).min() >= -1e-12


@pytest.mark.parametrize("C", [2, 3])
def test_numpy_torch_agree(C):
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=3, size=(300, 10, C))
    embs = rng.normal(size=(300, 10, 32))
    ref = features_from_logits(logits, embs)
    t64 = features_from_logits_torch(torch.from_numpy(logits), torch.from_numpy(embs))
    assert t64.dtype == torch.float64 and t64.shape == (300, 7)
    np.testing.assert_allclose(t64.numpy(), ref, rtol=0, atol=1e-12)
    t32 = features_from_logits(torch.from_numpy(logits).float(), torch.from_numpy(embs).float())  # dispatches to torch
    assert isinstance(t32, torch.Tensor) and t32.dtype == torch.float32
    np.testing.assert_allclose(t32.double().numpy(), ref, rtol=0, atol=1e-6)
    probs = torch.softmax(torch.from_numpy(logits), -1)
    np.testing.assert_allclose(
        uncertainty_features_torch(probs).numpy(), uncertainty_features(probs.numpy()), rtol=0, atol=1e-12
    )


def test_rejects_bad_inputs():
    good = np.full((3, 2, 2), 0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        uncertainty_features(np.full((3, 2, 2), 0.7))
    with pytest.raises(ValueError, match="non-finite"):
        bad = good.copy()
        bad[1, 0, 0] = np.nan
        uncertainty_features(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        uncertainty_features(np.stack([np.full((3, 2), 2.0), np.full((3, 2), -1.0)], -1))
    with pytest.raises(ValueError, match="view_embeddings"):
        uncertainty_features(good, np.zeros((3, 5, 4)))
    with pytest.raises(ValueError, match=r"\[N, V, C\]"):
        uncertainty_features(np.full((2, 2, 2, 2), 0.5))


def test_decision_probs_set_max_prob_and_entropy_in_both_twins():
    rng = np.random.default_rng(7)
    views = rng.dirichlet([1.0, 1.0], size=(20, 5))
    decision = views[:, 0]  # e.g. the global view decides
    out = uncertainty_features(views, decision_probs=decision)
    assert np.allclose(out[:, 0], decision.max(1), atol=1e-12)
    assert np.allclose(out[:, 2], -(decision * np.log(decision)).sum(1), atol=1e-12)
    assert np.array_equal(out[:, [1, 3, 4, 5, 6]], uncertainty_features(views)[:, [1, 3, 4, 5, 6]])
    twin = uncertainty_features_torch(torch.from_numpy(views), decision_probs=torch.from_numpy(decision)).numpy()
    assert np.allclose(out, twin, atol=1e-12)
