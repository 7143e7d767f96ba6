"""roadwork_ml.evaluation.metrics against independent implementations.

Oracles: scikit-learn (classification, AUROC, AP, Brier, log loss), scipy
(Mann-Whitney U), torchmetrics (ECE / MCE / per-class reliability for SCE), and
brute-force loops written from the papers' formulas here (bins, ACE, AURC, AUGRC,
working points, prediction sets). Random draws: 50 seeds x N in {10, 100, 1000},
scores with and without ties.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from sklearn import metrics as skm
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from roadwork_ml.evaluation import metrics as M

SEEDS = range(50)
SIZES = (10, 100, 1000)
TOL = 1e-8


def _binary_draw(seed: int):
    """One draw per seed: N = SIZES[seed % 3], ties on odd seeds (6 combinations cycle).

    Returns (rng, n, ties, labels, p1) with p1 = P(class 1) loosely tied to the label;
    tied draws put p1 on a coarse grid that includes 0, 1 and bin edges.
    """
    n, ties = SIZES[seed % 3], seed % 2 == 1
    rng = np.random.default_rng(1000 * seed + n)
    prevalence = rng.uniform(0.05, 0.95)
    y = (rng.random(n) < prevalence).astype(np.int64)
    logit = rng.normal(0, 1.5, n) + rng.uniform(0, 3) * (2 * y - 1)
    p = 1.0 / (1.0 + np.exp(-logit))
    if ties:
        q = rng.choice([3, 10, 40])
        p = np.round(p * q) / q
    return rng, n, ties, y, p


def _draws(ties=None):
    for seed in SEEDS:
        rng, n, t, y, p = _binary_draw(seed)
        if ties is None or t == ties:
            yield rng, n, y, p


def _multiclass_draws():
    for seed in SEEDS:
        n = SIZES[seed % 3]
        rng = np.random.default_rng(7 + 1000 * seed + n)
        c = int(rng.choice([2, 3, 5]))
        logits = rng.normal(0, rng.uniform(0.5, 3.0), (n, c))
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        # labels drawn from a tempered version of p: miscalibrated on purpose
        t = np.exp(np.log(p) * rng.uniform(0.3, 2.0))
        t /= t.sum(1, keepdims=True)
        y = (t.cumsum(1) < rng.random((n, 1))).sum(1).clip(0, c - 1).astype(np.int64)
        yield rng, n, c, y, p


def _tm_ce(conf, hits, n_bins, norm="l1"):
    return binary_calibration_error(
        torch.tensor(np.asarray(conf, np.float64)),
        torch.tensor(np.asarray(hits, np.int64)),
        n_bins=n_bins,
        norm=norm,
        validate_args=False,
    ).item()


def _two_classes(y) -> bool:
    return 0 < int(np.sum(y)) < len(y)


# ----------------------------------------------------------------------------- classification
def test_threshold_metrics_match_sklearn():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rng, _n, y, p in _draws():
            pred = (p >= rng.uniform(0.2, 0.8)).astype(int)
            assert np.array_equal(M.confusion(y, pred), skm.confusion_matrix(y, pred, labels=[0, 1]))
            assert M.accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred), abs=TOL)
            prec, rec, f, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
            assert M.precision(y, pred) == pytest.approx(prec, abs=TOL)
            assert M.recall(y, pred) == pytest.approx(rec, abs=TOL)
            assert M.f1(y, pred) == pytest.approx(f, abs=TOL)
            assert M.mcc(y, pred) == pytest.approx(skm.matthews_corrcoef(y, pred), abs=TOL)


def test_auroc_matches_sklearn_and_mann_whitney():
    for _rng, n, y, p in _draws():
        if not _two_classes(y):
            assert math.isnan(M.auroc(y, p))
            continue
        ours = M.auroc(y, p)
        assert ours == pytest.approx(skm.roc_auc_score(y, p), abs=TOL)
        u = mannwhitneyu(p[y == 1], p[y == 0], alternative="two-sided", method="asymptotic").statistic
        assert ours == pytest.approx(u / (y.sum() * (n - y.sum())), abs=TOL)
        # a monotone transform (probability -> logit-like) ranks the same
        assert M.auroc(y, np.log(p + 1e-3)) == pytest.approx(ours, abs=TOL)


def test_auprc_matches_sklearn():
    for _rng, _n, y, p in _draws():
        if y.sum() == 0:
            assert math.isnan(M.auprc(y, p))
            continue
        assert M.auprc(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=TOL)


def test_classification_degenerate_cases():
    ones, zeros = np.ones(5, int), np.zeros(5, int)
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for y, pred in [(ones, ones), (zeros, zeros), (zeros, ones), (ones, zeros), (np.array([0, 1, 0, 1, 1]), zeros)]:
            assert M.precision(y, pred) == skm.precision_score(y, pred, zero_division=0)
            assert M.recall(y, pred) == skm.recall_score(y, pred, zero_division=0)
            assert M.f1(y, pred) == skm.f1_score(y, pred, zero_division=0)
            assert M.mcc(y, pred) == skm.matthews_corrcoef(y, pred) == 0.0
        assert M.auprc(ones, s) == skm.average_precision_score(ones, s) == 1.0
        assert skm.average_precision_score(zeros, s) == 0.0
    assert math.isnan(M.auprc(zeros, s))  # documented difference: sklearn gives 0.0
    assert math.isnan(M.auroc(ones, s)) and math.isnan(M.auroc(zeros, s))  # sklearn raises
    assert M.auroc([0, 1], [0.3, 0.3]) == 0.5  # full tie
    assert M.auroc([0, 1], [0.7, 0.3]) == 0.0
    assert M.auroc([0, 0, 1], [0.2, 0.5, 0.5]) == 0.75
    assert M.accuracy([1], [1]) == 1.0
    assert M.mcc([0, 1, 1, 0], [0, 1, 1, 0]) == 1.0 and M.mcc([0, 1], [1, 0]) == -1.0
    assert M.mcc([True, False], np.array([True, False])) == 1.0  # bools accepted
    assert isinstance(M.auroc([0, 1], [0.1, 0.9]), float)


# ----------------------------------------------------------------------------- calibration
def _brute_ece(conf, hit, n_bins, reduce="l1"):
    """Guo et al. 2017 style loop: bins (lo, hi], first bin [0, 1/B]."""
    edges = np.linspace(0, 1, n_bins + 1)
    total, worst = 0.0, 0.0
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        inb = (conf > lo) & (conf <= hi)
        if b == 0:
            inb |= conf == lo
        if inb.any():
            gap = abs(hit[inb].mean() - conf[inb].mean())
            total += inb.sum() / len(conf) * gap
            worst = max(worst, gap)
    return total if reduce == "l1" else worst


def _brute_ace(y, p2, r):
    """Nixon et al. 2019 ACE by loops: per class, sort, R near-equal ranges, size-weighted."""
    n, k = p2.shape
    total = 0.0
    for j in range(k):
        rows = sorted(range(n), key=lambda i: (p2[i, j], int(y[i] == j)))
        size, extra = divmod(n, r)
        start = 0
        for q in range(r):
            stop = start + size + (1 if q < extra else 0)
            idx = rows[start:stop]
            if idx:
                total += len(idx) / n * abs(np.mean(y[idx] == j) - np.mean(p2[idx, j]))
            start = stop
    return total / k


def test_ece_mce_match_torchmetrics_top_label():
    """Top-label ECE/MCE == torchmetrics binning of (confidence, correct) in float64, and
    the public multiclass API on float32 inputs (it computes in float32) to 1e-6."""
    for rng, _n, c, y, p in _multiclass_draws():
        conf, hit = p.max(1), (p.argmax(1) == y)
        nb = int(rng.choice([5, 10, 15]))
        assert M.ece(y, p, nb) == pytest.approx(_tm_ce(conf, hit, nb), abs=TOL)
        assert M.mce(y, p, nb) == pytest.approx(_tm_ce(conf, hit, nb, "max"), abs=TOL)
        if rng.random() < 0.2:
            p32 = p.astype(np.float32)
            for norm, ours in (("l1", M.ece), ("max", M.mce)):
                tm = multiclass_calibration_error(
                    torch.tensor(p32), torch.tensor(y), num_classes=c, n_bins=nb, norm=norm
                ).item()
                assert ours(y, p32.astype(np.float64), nb) == pytest.approx(tm, abs=1e-6)


def test_binary_ece_is_top_label_not_torchmetrics_binary():
    for _rng, _n, y, p in _draws(ties=False):
        p2 = np.stack([1 - p, p], 1)
        assert M.ece(y, p) == pytest.approx(_tm_ce(p2.max(1), p2.argmax(1) == y, 15), abs=TOL)
        assert M.ece(y, p) == pytest.approx(M.ece(y, p2), abs=TOL)
    p2 = np.stack([1 - p, p], 1)  # last draw: the public multiclass API agrees too
    tm = multiclass_calibration_error(torch.tensor(p2), torch.tensor(y), num_classes=2, norm="l1").item()
    assert M.ece(y, p) == pytest.approx(tm, abs=1e-6)
    # torchmetrics' *binary* metric is the class-1 reliability error: a different number
    y, p = np.array([1, 1]), np.array([0.8, 0.2])
    assert M.ece(y, p, 2) == pytest.approx(0.3, abs=TOL)  # both at confidence 0.8, one right
    assert _tm_ce(p, y, 2) == pytest.approx(0.5, abs=TOL)  # |1 - 0.2| / 2 + |1 - 0.8| / 2


def test_ece_mce_brute_force_including_bin_edges():
    for rng, _n, y, p in _draws():
        nb = int(rng.choice([3, 5, 10, 15, 20]))
        conf = np.maximum(p, 1 - p)
        hit = (np.where(p > 1 - p, 1, 0) == y).astype(float)
        assert M.ece(y, p, nb) == pytest.approx(_brute_ece(conf, hit, nb), abs=TOL)
        assert M.mce(y, p, nb) == pytest.approx(_brute_ece(conf, hit, nb, "max"), abs=TOL)


def test_bin_edge_convention_differs_from_torchmetrics_only_on_edges():
    edges = np.linspace(0, 1, 11)
    h = np.array([1, 0, 1, 1, 0, 1], float)
    # values exactly on edges: ours (lo, hi], torchmetrics [lo, hi) plus a bin for 1.0
    c = np.array([edges[6], edges[6], edges[8], 1.0, 1.0, 0.95])
    r = M.reliability_bins(c, h, 10)
    assert r["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 1, 0, 3]
    assert np.allclose(r["edges"], edges)
    w = r["count"] / r["count"].sum()
    ours = np.nansum(w * np.abs(r["accuracy"] - r["confidence"]))
    assert ours == pytest.approx(_brute_ece(c, h, 10), abs=TOL)
    assert abs(ours - _tm_ce(c, h, 10)) > 1e-3  # documented difference
    # the same values nudged off the edges agree
    c2 = np.array([0.61, 0.61, 0.81, 0.999, 0.999, 0.95])
    r2 = M.reliability_bins(c2, h, 10)
    w2 = r2["count"] / r2["count"].sum()
    assert np.nansum(w2 * np.abs(r2["accuracy"] - r2["confidence"])) == pytest.approx(_tm_ce(c2, h, 10), abs=TOL)
    assert M.reliability_bins([0.0], [0], 4)["count"].tolist() == [1, 0, 0, 0]


def test_sce_matches_torchmetrics_per_class_and_brute_force():
    for rng, _n, c, y, p in _multiclass_draws():
        nb = int(rng.choice([5, 15]))
        per_class = [_tm_ce(p[:, k], y == k, nb) for k in range(c)]
        assert M.sce(y, p, nb) == pytest.approx(np.mean(per_class), abs=TOL)
        if rng.random() < 0.3:
            brute = np.mean([_brute_ece(p[:, k], (y == k).astype(float), nb) for k in range(c)])
            assert M.sce(y, p, nb) == pytest.approx(brute, abs=TOL)


def test_ace_brute_force():
    for rng, n, y, p in _draws():
        r = int(rng.choice([3, 10, 15, 20]))  # 15 and 20 > N=10 -> empty ranges
        p2 = np.stack([1 - p, p], 1)
        assert M.ace(y, p, r) == pytest.approx(_brute_ace(y, p2, r), abs=TOL)
        perm = rng.permutation(n)  # row order does not matter, ties included
        assert M.ace(y[perm], p[perm], r) == pytest.approx(M.ace(y, p, r), abs=TOL)
    for rng, n, _c, y, p in itertools.islice(_multiclass_draws(), 6):
        assert M.ace(y, p) == pytest.approx(_brute_ace(y, p, 15), abs=TOL)
    # Nixon et al.'s unweighted 1/(KR) form when R divides N
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    nixon = 0.0
    for k in range(3):
        for chunk in np.split(np.argsort(p[:, k]), 6):
            nixon += abs(np.mean(y[chunk] == k) - p[chunk, k].mean())
    assert M.ace(y, p, 6) == pytest.approx(nixon / 18, abs=TOL)


def test_brier_and_nll_match_sklearn():
    for _rng, _n, y, p in _draws():
        assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=TOL)
        assert M.brier(y, np.stack([1 - p, p], 1)) == pytest.approx(M.brier(y, p), abs=TOL)
        pc = np.clip(p, 1e-6, 1 - 1e-6)  # away from both clip levels
        assert M.nll(y, pc) == pytest.approx(skm.log_loss(y, pc, labels=[0, 1]), abs=TOL)
    for _rng, _n, c, y, p in _multiclass_draws():
        assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p, labels=list(range(c))), abs=TOL)
        if c > 2:
            assert M.brier(y, p) == pytest.approx(((p - np.eye(c)[y]) ** 2).sum(1).mean(), abs=TOL)
        pc = np.clip(p, 1e-6, 1.0)
        pc /= pc.sum(1, keepdims=True)
        assert M.nll(y, pc) == pytest.approx(skm.log_loss(y, pc, labels=list(range(c))), abs=TOL)


def test_calibration_degenerate_and_binary_forms():
    y = np.array([1, 0, 1])
    p = np.array([1.0, 1.0, 0.0])  # two confidently wrong
    assert M.nll(y, p) == pytest.approx(2 * -math.log(1e-12) / 3, abs=TOL)
    assert M.brier(y, p) == pytest.approx(2 / 3)
    assert M.ece(y, p) == pytest.approx(2 / 3) and M.mce(y, p) == pytest.approx(2 / 3)  # one bin at 1.0
    perfect = np.array([0.0, 1.0, 1.0, 0.0])
    yy = np.array([0, 1, 1, 0])
    rng = np.random.default_rng(3)
    pr = rng.random(200)
    yb = (rng.random(200) < pr).astype(int)
    for f in (M.ece, M.mce, M.sce, M.ace, M.brier, M.nll):
        assert f(yy, perfect) == pytest.approx(0.0, abs=1e-11)
        assert f(yy, perfect) == pytest.approx(f(yy, np.stack([1 - perfect, perfect], 1)), abs=TOL)
        assert f(yb, pr) == pytest.approx(f(yb, np.stack([1 - pr, pr], 1)), abs=TOL)
        assert isinstance(f(yb, pr), float)
    conf, pred = M.top_label(np.array([0.5, 0.7, 0.2]))
    assert pred.tolist() == [0, 1, 0] and conf.tolist() == pytest.approx([0.5, 0.7, 0.8])


def test_validation_errors():
    with pytest.raises(ValueError, match="empty"):
        M.accuracy([], [])
    with pytest.raises(ValueError, match="must match"):
        M.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="0..1"):
        M.mcc([0, 2], [0, 1])
    with pytest.raises(ValueError, match="logits"):
        M.ece([0, 1], [-0.3, 2.0])
    with pytest.raises(ValueError, match="sum to 1"):
        M.nll([0, 1], [[0.2, 0.2], [0.5, 0.5]])
    with pytest.raises(ValueError, match="0..2"):
        M.brier([0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="non-finite"):
        M.auroc([0, 1], [np.nan, 0.2])
    with pytest.raises(ValueError, match="n_bins"):
        M.ece([0, 1], [0.2, 0.3], n_bins=0)
    with pytest.raises(ValueError, match="coverage target"):
        M.risk_at_coverage([0.2, 0.3], [1, 0], 0.0)
    with pytest.raises(ValueError, match="membership"):
        M.set_average_size(np.array([True, False]))


# ----------------------------------------------------------------------------- selective
def _brute_rc(conf, correct):
    """Paper formula, one threshold at a time: accept conf >= t for each distinct t.

    Returns [(coverage, selective risk, generalized risk)] by decreasing t."""
    n = len(conf)
    pts = []
    for t in sorted(set(conf.tolist()), reverse=True):
        acc = conf >= t
        errors = int(np.sum(acc & (correct == 0)))
        pts.append((acc.sum() / n, errors / acc.sum(), errors / n))
    return pts


def _brute_aurc_augrc(pts):
    aurc = pts[0][0] * pts[0][1]  # selective risk held flat from coverage 0
    augrc = pts[0][0] * pts[0][2] / 2  # generalized risk starts at (0, 0)
    for (c0, r0, g0), (c1, r1, g1) in zip(pts, pts[1:], strict=False):
        aurc += (c1 - c0) * (r0 + r1) / 2
        augrc += (c1 - c0) * (g0 + g1) / 2
    return aurc, augrc


def _selective_draws():
    for rng, n, y, p in _draws():
        conf = np.maximum(p, 1 - p)
        correct = ((p >= 0.5).astype(int) == y).astype(int)
        if rng.random() < 0.1:
            correct = np.ones(n, int) if rng.random() < 0.5 else np.zeros(n, int)
        yield rng, n, conf, correct


def test_selective_metrics_brute_force():
    """RC curve, AURC, AUGRC and working points against the threshold loop."""
    for _rng, _n, conf, correct in _selective_draws():
        pts = _brute_rc(conf, correct)
        cov, risk, thr = M.risk_coverage_curve(conf, correct, return_thresholds=True)
        assert len(cov) == len(pts) == len(np.unique(conf))
        assert np.allclose(cov, [q[0] for q in pts], atol=TOL, rtol=0)
        assert np.allclose(risk, [q[1] for q in pts], atol=TOL, rtol=0)
        assert np.all(np.diff(thr) < 0) and cov[-1] == 1.0
        a, g = _brute_aurc_augrc(pts)
        assert M.aurc(conf, correct) == pytest.approx(a, abs=TOL)
        assert M.augrc(conf, correct) == pytest.approx(g, abs=TOL)
        for target in M.RISK_TARGETS:
            ok = [c for c, r, _ in pts if r <= target]
            assert M.coverage_at_risk(conf, correct, target) == pytest.approx(max(ok) if ok else 0.0, abs=TOL)
        for target in M.COVERAGE_TARGETS:
            ok = [r for c, r, _ in pts if c >= target]
            assert M.risk_at_coverage(conf, correct, target) == pytest.approx(min(ok), abs=TOL)


def test_augrc_auroc_identity():
    """Traub et al. 2024: AUGRC = (1 - AUROC_f) acc (1 - acc) + (1 - acc)^2 / 2, ties included
    (AUROC_f from sklearn: confidence ranking correct above wrong)."""
    for _rng, _n, conf, correct in _selective_draws():
        acc = correct.mean()
        if 0 < acc < 1:
            expected = (1 - skm.roc_auc_score(correct, conf)) * acc * (1 - acc) + 0.5 * (1 - acc) ** 2
        else:
            expected = 0.5 * (1 - acc) ** 2
        assert M.augrc(conf, correct) == pytest.approx(expected, abs=TOL)


def test_augrc_is_mean_over_random_tie_breaks():
    conf = np.array([0.9, 0.9, 0.9, 0.7, 0.7, 0.6])
    correct = np.array([1, 0, 1, 0, 1, 0])
    vals = []
    for perm in itertools.permutations(range(6)):
        eps = np.empty(6)
        eps[list(perm)] = np.arange(6) * 1e-6  # break ties in the permuted order
        vals.append(M.augrc(conf + eps, correct))
    assert M.augrc(conf, correct) == pytest.approx(np.mean(vals), abs=TOL)


def test_aurc_relation_to_geifman_without_ties():
    for _rng, n, conf, correct in _selective_draws():
        if len(np.unique(conf)) < n:
            continue
        e = 1 - correct[np.argsort(-conf)]
        r = np.cumsum(e) / np.arange(1, n + 1)  # risk of the k most confident
        assert M.aurc(conf, correct) == pytest.approx(r.mean() + (r[0] - r[-1]) / (2 * n), abs=TOL)


def test_selective_degenerate_cases():
    conf = np.array([0.9, 0.8, 0.8, 0.6])
    assert M.aurc(conf, np.ones(4)) == 0.0 and M.augrc(conf, np.ones(4)) == 0.0
    assert M.aurc(conf, np.zeros(4)) == 1.0 and M.augrc(conf, np.zeros(4)) == 0.5
    flat = np.full(5, 0.7)  # one tie group: a single point (1.0, risk)
    c = np.array([1, 0, 1, 1, 0])
    assert M.risk_coverage_curve(flat, c)[0].tolist() == [1.0]
    assert M.aurc(flat, c) == pytest.approx(0.4) and M.augrc(flat, c) == pytest.approx(0.2)
    assert M.coverage_at_risk(flat, c, 0.1) == 0.0
    assert M.risk_at_coverage(flat, c, 0.7) == pytest.approx(0.4)
    # exact-target boundaries: 1 error in the top 20 is risk 0.05 == target
    conf = np.linspace(1, 0, 40)
    correct = np.ones(40, int)
    correct[[5, 20, 39]] = 0
    assert M.coverage_at_risk(conf, correct, 0.05) == 0.5
    assert M.risk_at_coverage(conf, correct, 0.95) == pytest.approx(2 / 39)
    assert M.risk_at_coverage(conf, correct, 1.0) == pytest.approx(3 / 40)
    assert M.aurc([0.5], [1]) == 0.0 and M.augrc([0.5], [0]) == 0.5


# ----------------------------------------------------------------------------- sets
def test_prediction_set_metrics_brute_force():
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        n, c = int(rng.integers(1, 60)), int(rng.integers(2, 5))
        sets = rng.random((n, c)) < rng.uniform(0.1, 0.9)
        y = rng.integers(0, c, n)
        assert M.set_coverage(y, sets) == pytest.approx(sum(sets[i, y[i]] for i in range(n)) / n, abs=TOL)
        assert M.set_average_size(sets) == pytest.approx(sum(int(s.sum()) for s in sets) / n, abs=TOL)
        assert M.singleton_rate(sets) == pytest.approx(sum(int(s.sum()) == 1 for s in sets) / n, abs=TOL)
        assert M.empty_rate(sets) == pytest.approx(sum(int(s.sum()) == 0 for s in sets) / n, abs=TOL)
        assert M.set_coverage(y, sets.astype(int)) == M.set_coverage(y, sets)
    with pytest.raises(ValueError):
        M.set_coverage([0, 2], np.ones((2, 2), bool))


# ----------------------------------------------------------------------------- reports
def test_reports_are_json_and_consistent():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.5 * y + 0.5 * rng.random(300), 0, 1)
    cr = M.classification_report(y, p, threshold=0.6)
    pred = (p >= 0.6).astype(int)
    assert cr["mcc"] == M.mcc(y, pred) and cr["auroc"] == M.auroc(y, p) and cr["auprc"] == M.auprc(y, p)
    assert cr["tp"] + cr["fp"] + cr["tn"] + cr["fn"] == 300
    cal = M.calibration_report(y, p)
    assert cal["ece"] == M.ece(y, p) and cal["ace"] == M.ace(y, p) and cal["nll"] == M.nll(y, p)
    conf, pr = M.top_label(p)
    sel = M.selective_report(conf, pr == y)
    assert sel["aurc"] == M.aurc(conf, pr == y)
    assert sel["coverage_at_risk_0.05"] == M.coverage_at_risk(conf, pr == y, 0.05)
    assert sel["risk_at_coverage_0.9"] == M.risk_at_coverage(conf, pr == y, 0.9)
    assert {f"coverage_at_risk_{r:g}" for r in M.RISK_TARGETS} <= set(sel)
    for rep in (cr, cal, sel):
        json.dumps(rep, allow_nan=False)
        assert all(type(v) in (int, float, bool) or v is None for v in rep.values())
    single = M.classification_report(np.ones(4, int), np.array([0.2, 0.6, 0.7, 0.9]))
    assert single["auroc"] is None and single["mcc"] == 0.0
    json.dumps(single, allow_nan=False)
