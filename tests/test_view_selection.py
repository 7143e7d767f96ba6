"""The aggregator choice on VAL_SELECT (roadwork_ml.models.view_selection): the profile's rule
picks the best MCC (scikit-learn's matthews_corrcoef as the oracle) and the saved choice
re-measures exactly; a tampered record does not."""

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from roadwork_ml.config import load_profile
from roadwork_ml.models.aggregator import aggregate
from roadwork_ml.models.multiview import ViewSpec
from roadwork_ml.models.view_selection import remeasure_choice, select_aggregator


def _views(n: int, spec: ViewSpec, seed: int):
    """Per-view probabilities [n, V, 2] where the tiles see the roadwork better than the global
    view (a small sign in a corner), and per-view embeddings [n, V, 8] that say which tile."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    v = spec.n_views
    p1 = np.clip(0.5 + rng.normal(0, 0.25, (n, v)), 0.01, 0.99)
    hit = rng.integers(1, v, n)  # the one tile that shows the sign
    p1[np.arange(n), hit] = np.where(y == 1, rng.uniform(0.8, 0.99, n), rng.uniform(0.01, 0.3, n))
    p1[:, 0] = np.clip(np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.2, n), 0.01, 0.99)
    probs = np.stack([1 - p1, p1], -1)
    emb = rng.normal(0, 1, (n, v, 8)).astype(np.float32)
    emb[np.arange(n), hit, 0] += 3.0
    return probs, emb, y


def test_auto_picks_the_best_candidate_and_the_choice_reproduces():
    inf = load_profile("tiny").inference.model_copy(update={"aggregator": "auto", "multi_view": True})
    spec = ViewSpec(size=16, grid=3, flip=False)
    p_tr, e_tr, y_tr = _views(300, spec, 0)
    p_va, e_va, y_va = _views(200, spec, 1)
    sel = select_aggregator(e_tr, p_tr, y_tr, p_va, e_va, y_va, spec, inf)
    # oracle: recompute every candidate's MCC with scikit-learn
    for c in sel.candidates:
        if c.aggregator == "attention":
            continue
        views = None if c.multi_view else np.array([0])
        agg = aggregate(c.aggregator, p_va, k=c.top_k, views=views)
        assert abs(c.mcc - matthews_corrcoef(y_va, (agg[:, 1] > 0.5).astype(int))) < 1e-12
    assert sel.chosen.mcc == max(c.mcc for c in sel.candidates)
    assert sel.chosen.multi_view  # the tiles carry the signal: multi-view wins over the global view
    rows = [c.to_dict() for c in sel.candidates]
    r = remeasure_choice(sel.choice, rows, p_va, y_va, sel.val_weights, flip=False)
    assert r["reproduces"] and abs(r["measured_mcc"] - sel.chosen.mcc) < 1e-12
    tampered = {**sel.choice, "val_select_mcc": sel.choice["val_select_mcc"] - 0.01}
    assert not remeasure_choice(tampered, rows, p_va, y_va, sel.val_weights, flip=False)["reproduces"]


def test_single_view_profile_keeps_single_view():
    inf = load_profile("tiny").inference.model_copy(update={"aggregator": "mean", "multi_view": False})
    spec = ViewSpec(size=16, grid=3, flip=False)
    p_tr, e_tr, y_tr = _views(120, spec, 2)
    p_va, e_va, y_va = _views(80, spec, 3)
    sel = select_aggregator(e_tr, p_tr, y_tr, p_va, e_va, y_va, spec, inf)
    assert not sel.chosen.multi_view and sel.chosen.aggregator == "mean" and sel.choice["n_views"] == 1
    assert sel.chosen.mcc == matthews_corrcoef(y_va, (p_va[:, 0, 1] > 0.5).astype(int))


def test_single_view_spec_scores_single_view_candidates_and_the_choice_reproduces():
    """``inference.compare_multi_view: false``: the view outputs are the global view and its flip
    alone; only single-view candidates are scored, the choice re-measures on those two views, and
    a multi-view profile refuses such outputs."""
    inf = load_profile("tiny").inference.model_copy(update={"aggregator": "auto", "multi_view": False})
    full = ViewSpec(size=16, grid=3, flip=True)
    single = ViewSpec(size=16, grid=3, flip=True, multi=False)
    p_tr, e_tr, y_tr = _views(300, full, 4)
    p_va, e_va, y_va = _views(200, full, 5)
    keep = [0, full.n_views // 2]  # the global view and its flip
    args = (e_tr[:, keep], p_tr[:, keep], y_tr, p_va[:, keep], e_va[:, keep], y_va)
    sel = select_aggregator(*args, single, inf)
    assert {c.multi_view for c in sel.candidates} == {False} and set(sel.best) == {False}
    assert {c.aggregator for c in sel.candidates} == {"mean", "attention"}
    mean = next(c for c in sel.candidates if c.aggregator == "mean")
    assert abs(mean.mcc - matthews_corrcoef(y_va, (p_va[:, keep, 1].mean(1) > 0.5).astype(int))) < 1e-12
    # the same choice as from the 20-view outputs' single-view subset
    both = select_aggregator(e_tr, p_tr, y_tr, p_va, e_va, y_va, full, inf)
    assert sel.choice["candidate"] == both.choice["candidate"] and sel.choice["n_views"] == both.choice["n_views"] == 2
    assert sel.choice["multi_view_scored"] is False and both.choice["multi_view_scored"] is True
    rows = [c.to_dict() for c in sel.candidates]
    r = remeasure_choice(sel.choice, rows, p_va[:, keep], y_va, sel.val_weights, flip=True)
    assert r["reproduces"]
    with pytest.raises(ValueError, match="multi-view outputs"):
        select_aggregator(*args, single, inf.model_copy(update={"multi_view": True}))
