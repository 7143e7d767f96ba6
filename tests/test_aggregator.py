import numpy as np
import pytest

from roadwork_ml.contracts import LeakageError, Split
from roadwork_ml.evaluation.metrics import mcc
from roadwork_ml.models.aggregator import aggregate, choose, compare_aggregators, fit_attention, single_view_indices
from roadwork_ml.models.multiview import ViewSpec


def _views(n: int, seed: int):
    """10 views per image; one informative view (index 3) whose embedding says so, the rest noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    v, d = 10, 16
    p1 = rng.uniform(0.2, 0.8, (n, v))
    p1[:, 3] = np.where(y == 1, rng.uniform(0.8, 0.99, n), rng.uniform(0.01, 0.2, n))
    emb = rng.normal(0, 1, (n, v, d)).astype(np.float32)
    emb[:, 3, 0] += 4.0  # the informative view is recognisable from its embedding
    probs = np.stack([1 - p1, p1], -1)
    return emb, probs, y


def test_attention_learns_to_trust_the_informative_view():
    emb, probs, y = _views(600, 0)
    fit = fit_attention(
        emb, probs, y, Split.TRAIN, epochs=30, lr=3e-3, weight_decay=0.0, batch_size=64, dropout=0.0, seed=0
    )
    assert fit.losses[-1] < fit.losses[0] * 0.5
    emb_t, probs_t, y_t = _views(400, 1)
    import torch

    with torch.no_grad():
        w = fit.module(torch.from_numpy(emb_t)).numpy()
    assert w[:, 3].mean() > 0.8
    att = aggregate("attention", probs_t, weights=w)
    mean = aggregate("mean", probs_t)
    assert mcc(y_t, att[:, 1] > 0.5) > 0.95 > mcc(y_t, mean[:, 1] > 0.5) + 0.2


def test_attention_refuses_evaluation_splits():
    emb, probs, y = _views(50, 0)
    with pytest.raises(LeakageError):
        fit_attention(emb, probs, y, Split.VAL_TEST, epochs=1, lr=1e-3, weight_decay=0, batch_size=8, dropout=0, seed=0)


def test_topk_and_single_view_subsets():
    p1 = np.array([[0.1, 0.9, 0.5, 0.7]])
    probs = np.stack([1 - p1, p1], -1)
    assert aggregate("topk", probs, k=2)[0, 1] == pytest.approx(0.8)
    assert aggregate("global", probs)[0, 1] == pytest.approx(0.1)
    spec = ViewSpec(size=32, flip=True)
    assert list(single_view_indices(spec)) == [0, 10]
    assert list(single_view_indices(ViewSpec(size=32))) == [0]


def test_compare_and_choose_pick_the_best_candidate_by_val_select_mcc():
    emb, probs, y = _views(300, 2)
    spec = ViewSpec(size=32)
    w = np.zeros((300, 10))
    w[:, 3] = 1.0  # an oracle attention on the informative view
    cands = compare_aggregators(probs, y, Split.VAL_SELECT, spec, [2, 3, 5, 7], {True: w})
    names = {c.name for c in cands}
    assert {
        "single-view mean",
        "multi-view mean",
        "multi-view global",
        "multi-view topk K=3",
        "multi-view attention",
    } <= names
    best = choose(cands, True, "auto")
    assert best.aggregator == "attention" and best.mcc == pytest.approx(mcc(y, probs[:, 3, 1] > 0.5))
    topk = choose(cands, True, "topk")
    assert topk.aggregator == "topk" and topk.mcc == max(c.mcc for c in cands if c.aggregator == "topk")
    assert choose(cands, False, "auto").multi_view is False
    with pytest.raises(LeakageError):
        compare_aggregators(probs, y, Split.VAL_CALIB, spec, [2], {})
