"""Failure-predictor features beyond the softmax: oracles for each feature, and the nested cross-fit
gate beating max-prob where the softmax is blind (out-of-distribution inputs), but not where it is not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.covariance import EmpiricalCovariance

from roadwork_ml.policy.failure_features import (
    TrainDistanceFeatures,
    compare_with_max_prob,
    cross_fit_gate,
    image_quality,
    tta_variance,
    view_disagreement,
)

D = 8


def _train(rng, n=1000):
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, D))
    x[:, 0] += np.where(y == 1, 1.5, -1.5)
    return x, y


def test_distances_match_sklearn_and_trust_score_sign():
    rng = np.random.default_rng(0)
    x, y = _train(rng)
    f = TrainDistanceFeatures(n_neighbors=5, shrinkage=0.0).fit(x, y)
    q = rng.normal(size=(20, D))
    q[:, 0] += 1.5
    out = f.transform(q, np.ones(20, dtype=int))
    z = (x - x.mean(0)) / x.std(0)
    centred = z - np.stack([z[y == c].mean(0) for c in (0, 1)])[y]
    cov = EmpiricalCovariance(assume_centered=True).fit(centred)
    zq = (q - x.mean(0)) / x.std(0)
    expected = cov.mahalanobis(zq - z[y == 1].mean(0))
    assert out[:, 1] == pytest.approx(expected, rel=1e-6)
    assert (out[:, 3] > 0).mean() >= 0.7 and out[
        :, 3
    ].mean() > 0.1  # class-1 points predicted 1: nearer their own class
    wrong = f.transform(q, np.zeros(20, dtype=int))
    assert wrong[:, 3] == pytest.approx(-out[:, 3]) and (wrong[:, 2] > 0).mean() >= 0.8  # two classes: the ratio flips
    far = f.transform(q + 6.0, np.ones(20, dtype=int))
    assert far[:, 0].min() > out[:, 0].max()  # k-NN distance grows off the TRAIN set


def test_image_quality_views_and_tta():
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 256, size=(1, 3, 32, 32)).astype(np.uint8)
    blurred = ndimage.uniform_filter(sharp.astype(float), size=(1, 1, 5, 5)).astype(np.uint8)
    dark = (sharp // 8).astype(np.uint8)
    q = image_quality(np.concatenate([sharp, blurred, dark]))
    assert q[1, 0] < q[0, 0] and q[2, 1] < 0.1 < q[0, 1] and q[2, 2] > q[0, 2]
    grey = 0.299 * sharp[0, 0] + 0.587 * sharp[0, 1] + 0.114 * sharp[0, 2]
    assert q[0, 0] == pytest.approx(np.log1p(ndimage.laplace(grey.astype(float))[1:-1, 1:-1].var()))
    assert view_disagreement(np.array([[0.2, 0.8], [0.5, 0.5]])) == pytest.approx([0.3, 0.0])
    assert tta_variance(np.array([[0.2, 0.4, 0.6]])) == pytest.approx([np.var([0.2, 0.4, 0.6])])
    with pytest.raises(ValueError, match="V >= 2"):
        view_disagreement(np.ones((3, 1)))


def _calib(rng, ood_share, n=1000):
    """VAL_CALIB rows in sequences of 5. OOD rows sit off the TRAIN set; the model stays confident there
    but is wrong 45 % of the time. In-distribution errors follow the (calibrated) max-prob. The
    embedding agrees with the *prediction* (what the model saw), so it carries no label the model missed."""
    groups = np.repeat(np.arange(n // 5), 5)
    ood = np.repeat(rng.random(n // 5) < ood_share, 5)
    pred = rng.integers(0, 2, n)
    emb = rng.normal(size=(n, D))
    emb[:, 0] += np.where(pred == 1, 1.5, -1.5)
    emb[ood, 3] += 5.0
    max_prob = rng.uniform(0.6, 1.0, n)
    failure = np.where(ood, rng.random(n) < 0.45, rng.random(n) < 1 - max_prob).astype(int)
    return emb, pred, max_prob, failure, groups


@pytest.mark.parametrize("ood_share, beats", [(0.25, True), (0.0, False)])
def test_gate_with_distance_features_beats_max_prob_only_when_softmax_is_blind(ood_share, beats):
    rng = np.random.default_rng(2)
    x, y = _train(rng)
    emb, pred, max_prob, failure, groups = _calib(rng, ood_share)
    dist = TrainDistanceFeatures().fit(x, y).transform(emb, pred)
    sets = {"max_prob": max_prob[:, None], "max_prob+distance": np.column_stack([max_prob, dist])}
    fit = cross_fit_gate(sets, failure, groups)
    cmp = compare_with_max_prob(failure, fit.oof_score, max_prob, n_resamples=200, seed=0)
    if beats:
        assert fit.chosen == "max_prob+distance" and fit.fold_choices.count("max_prob+distance") >= 4
        assert cmp["difference"] >= 0.03 and cmp["excludes_zero"] and cmp["interval"][0] > 0, cmp
    else:  # nothing beyond the softmax to find: no significant gain (the comparison can fail)
        assert not (cmp["excludes_zero"] and cmp["interval"][0] > 0), cmp
        assert abs(cmp["difference"]) < 0.03


def test_feature_blocks_and_candidate_sets():
    from roadwork_ml.policy.failure_features import candidate_sets, failure_feature_blocks

    rng = np.random.default_rng(3)
    x, y = _train(rng, 200)
    dist = TrainDistanceFeatures(n_neighbors=5).fit(x, y)
    n = 12
    blocks = failure_feature_blocks(
        rng.random((n, 7)),
        rng.uniform(0.5, 1, n),
        rng.normal(size=(n, D)),
        rng.integers(0, 2, n),
        dist,
        tta_probs1=rng.random((n, 3)),
        images=rng.integers(0, 256, (n, 3, 16, 16)).astype(np.uint8),
    )
    sets = candidate_sets(blocks)
    assert set(sets) == {
        "max_prob",
        "softmax",
        "softmax+distance",
        "softmax+distance+quality",
        "softmax+distance+views",
        "all",
    }
    assert sets["all"].shape == (n, 7 + 4 + 1 + 3) and sets["max_prob"].shape == (n, 1)
    no_extras = candidate_sets(
        failure_feature_blocks(
            rng.random((n, 7)), rng.uniform(0.5, 1, n), rng.normal(size=(n, D)), np.zeros(n, int), dist
        )
    )
    assert set(no_extras) == {"max_prob", "softmax", "softmax+distance"}  # single view, no images: those sets drop out
