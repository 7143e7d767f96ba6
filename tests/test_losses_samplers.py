"""Losses, samplers and hard-negative mining against torch / torchvision / scikit-learn oracles."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import WeightedRandomSampler
from torchvision.ops import sigmoid_focal_loss

from roadwork_ml.config import LossConfig, SamplerConfig
from roadwork_ml.training.hard_negatives import (
    false_positive_rate,
    hard_negative_slice,
    mine_hard_negatives,
    out_of_fold_scores,
)
from roadwork_ml.training.losses import balanced_class_weights, build_loss, focal_loss
from roadwork_ml.training.samplers import build_sampler, class_source_weights


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * 2, torch.randint(0, 2, (n,), generator=g)


def test_ce_with_smoothing_and_class_weights_equals_torch():
    logits, y = _batch()
    labels = np.r_[np.zeros(90), np.ones(10)].astype(int)
    w = balanced_class_weights(labels, 2)
    assert np.allclose(w.numpy(), compute_class_weight("balanced", classes=np.array([0, 1]), y=labels))
    for cw, ls in (("none", 0.0), ("none", 0.1), ("balanced", 0.0), ("balanced", 0.1), ([0.3, 2.0], 0.05)):
        fn = build_loss(LossConfig(name="ce", class_weights=cw), ls, labels)
        weight = None if cw == "none" else (w if cw == "balanced" else torch.tensor(cw))
        want = F.cross_entropy(logits, y, weight=weight, label_smoothing=ls)
        assert fn(logits, y).item() == pytest.approx(want.item(), rel=1e-5), (cw, ls)
    # per-sample weights of 1 change nothing; weight 2 on a row = that row twice
    fn = build_loss(LossConfig(name="ce"), 0.0, labels)
    assert fn(logits, y, torch.ones(64)).item() == pytest.approx(fn(logits, y).item(), rel=1e-6)
    sw = torch.ones(64)
    sw[0] = 2
    dup = fn(torch.cat([logits, logits[:1]]), torch.cat([y, y[:1]]))
    assert fn(logits, y, sw).item() == pytest.approx(dup.item(), rel=1e-5)


def test_focal_gamma0_is_ce_and_matches_torchvision_sigmoid_focal():
    logits, y = _batch()
    assert torch.allclose(focal_loss(logits, y, 0.0), F.cross_entropy(logits, y, reduction="none"), atol=1e-6)
    # two-class softmax on logits [0, z] is a sigmoid of z: torchvision's binary focal loss is the oracle
    z = logits[:, 1] - logits[:, 0]
    for gamma in (0.5, 2.0):
        ours = focal_loss(logits, y, gamma)
        assert torch.allclose(ours, sigmoid_focal_loss(z, y.float(), alpha=-1, gamma=gamma), atol=1e-5)
        alpha = 0.25
        weighted = focal_loss(logits, y, gamma, torch.tensor([1 - alpha, alpha]))
        assert torch.allclose(weighted, sigmoid_focal_loss(z, y.float(), alpha=alpha, gamma=gamma), atol=1e-5)
    fn = build_loss(LossConfig(name="focal", focal_gamma=2.0), 0.0, y.numpy())
    assert fn(logits, y).item() < F.cross_entropy(logits, y).item()  # easy samples down-weighted


def test_class_source_sampler_draws_half_positives():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(900), np.ones(100)].astype(int)  # 10% positives
    sources = rng.choice(["natix", "roadwork", "mapillary"], 1000, p=[0.6, 0.3, 0.1])
    for mode in ("proportional", "equal"):
        w = class_source_weights(labels, sources, 0.5, mode)
        assert w.sum() == pytest.approx(1.0)
        assert w[labels == 1].sum() == pytest.approx(0.5)
        sampler = build_sampler(SamplerConfig(kind="class_source", source_mode=mode), labels, sources, seed=1)
        drawn = np.array(list(sampler))
        k = int(labels[drawn].sum())
        assert stats.binomtest(k, len(drawn), 0.5).pvalue > 1e-3
        if mode == "equal":
            neg_src = sources[drawn][labels[drawn] == 0]
            counts = np.array([np.sum(neg_src == s) for s in ("natix", "roadwork", "mapillary")])
            assert stats.chisquare(counts).pvalue > 1e-3
    # the naive uniform draw fails the same check
    naive = np.array(
        list(
            WeightedRandomSampler(
                torch.ones(1000, dtype=torch.double), 1000, generator=torch.Generator().manual_seed(1)
            )
        )
    )
    assert stats.binomtest(int(labels[naive].sum()), 1000, 0.5).pvalue < 1e-3
    assert build_sampler(SamplerConfig(), labels, sources, 0) is None


def test_hard_negative_mining_out_of_fold():
    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, n)
    hard = (y == 0) & (rng.random(n) < 0.3)  # negatives with a positive-looking feature (orange cones)
    x = np.c_[y + rng.normal(0, 0.6, n) + 1.2 * hard, rng.normal(0, 1, n)]
    groups = np.array([f"g{i // 3}" for i in range(n)])
    seen_overlap = []

    def fit_predict(fit_idx, score_idx):
        seen_overlap.append(len(set(groups[fit_idx]) & set(groups[score_idx])))
        return LogisticRegression().fit(x[fit_idx], y[fit_idx]).predict_proba(x[score_idx])[:, 1]

    oof = out_of_fold_scores(fit_predict, y, groups, n_folds=4, seed=0)
    assert max(seen_overlap) == 0 and oof.shape == (n,)
    mined = mine_hard_negatives(oof, y, min_score=0.5, max_fraction=0.5, weight=3.0)
    assert (y[mined.indices] == 0).all() and (oof[mined.indices] >= 0.5).all()
    assert np.all(np.diff(oof[mined.indices]) <= 0)
    assert set(np.unique(mined.weights)) <= {1.0, 3.0} and (mined.weights == 3.0).sum() == len(mined.indices)
    assert hard[mined.indices].mean() > 2 * hard[y == 0].mean()  # the mined rows are mostly the hard slice
    # FPR against scikit-learn's confusion matrix on the slice
    tn, fp, _, _ = confusion_matrix(y[hard], (oof[hard] > 0.5).astype(int), labels=[0, 1]).ravel()
    assert false_positive_rate(oof, y, hard) == pytest.approx(fp / (fp + tn))
    assert false_positive_rate(oof, y, hard) > false_positive_rate(oof, y, ~hard)
    tags = ['{"hard_negative":true}', '{"hard_negative":false}', "{}", "not json"]
    assert hard_negative_slice(tags).tolist() == [True, False, False, False]


@pytest.mark.parametrize("views", [2, 3])
def test_js_consistency_matches_scipy_entropy(views):
    """JS(p_1..p_k) = H(mean p) - mean H(p_i), nats, per image, then the mean over images."""
    from roadwork_ml.training.losses import js_consistency

    g = torch.Generator().manual_seed(views)
    logits = torch.randn(views * 7, 2, generator=g) * 3
    p = torch.softmax(logits.double(), 1).view(views, 7, 2).numpy()
    expected = np.mean(
        [stats.entropy(p[:, j].mean(0)) - np.mean([stats.entropy(p[i, j]) for i in range(views)]) for j in range(7)]
    )
    assert float(js_consistency(logits, views)) == pytest.approx(expected, rel=1e-5)
    if views == 2:
        from scipy.spatial.distance import jensenshannon

        js2 = np.mean([jensenshannon(p[0, j], p[1, j]) ** 2 for j in range(7)])
        assert float(js_consistency(logits, 2)) == pytest.approx(js2, rel=1e-5)
    assert float(js_consistency(logits[:7].repeat(views, 1), views)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="not 2 views"):
        js_consistency(logits[:5], 2)
