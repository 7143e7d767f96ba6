"""Classification metrics on hard predictions and ranking scores: confusion, accuracy, precision, recall, F1, MCC, AUROC, AUPRC."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from roadwork_ml.evaluation.metrics._checks import _binary_pair, _finite_scores, _int_labels, _same_length


def confusion(labels: Any, preds: Any) -> np.ndarray:
    """Binary confusion matrix, int64 ``[2, 2]`` in sklearn's layout.

    Rows are the true class, columns the predicted class:
    ``[[TN, FP], [FN, TP]]`` (equal to ``sklearn.metrics.confusion_matrix(labels,
    preds, labels=[0, 1])``).

    Args:
        labels: int ``[N]`` in {0, 1}.
        preds: int/bool ``[N]`` in {0, 1}.
    """
    y, p = _binary_pair(labels, preds)
    return np.bincount(2 * y + p, minlength=4).reshape(2, 2).astype(np.int64)


def _counts(labels: Any, preds: Any) -> tuple[int, int, int, int]:
    (tn, fp), (fn, tp) = confusion(labels, preds).tolist()
    return tn, fp, fn, tp


def accuracy(labels: Any, preds: Any) -> float:
    """Fraction of ``preds`` equal to ``labels`` (``[N]`` each, {0, 1}); in [0, 1]."""
    tn, fp, fn, tp = _counts(labels, preds)
    return (tp + tn) / (tn + fp + fn + tp)


def precision(labels: Any, preds: Any) -> float:
    """TP / (TP + FP) for class 1; 0.0 when nothing is predicted positive (sklearn)."""
    tn, fp, fn, tp = _counts(labels, preds)
    return tp / (tp + fp) if tp + fp > 0 else 0.0


def recall(labels: Any, preds: Any) -> float:
    """TP / (TP + FN) for class 1 (sensitivity); 0.0 when no label is positive (sklearn)."""
    tn, fp, fn, tp = _counts(labels, preds)
    return tp / (tp + fn) if tp + fn > 0 else 0.0


def f1(labels: Any, preds: Any) -> float:
    """F1 of class 1 = 2TP / (2TP + FP + FN); 0.0 when that denominator is 0 (sklearn)."""
    tn, fp, fn, tp = _counts(labels, preds)
    den = 2 * tp + fp + fn
    return 2 * tp / den if den > 0 else 0.0


def mcc(labels: Any, preds: Any) -> float:
    """Matthews correlation coefficient in [-1, 1].

    ``(TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``; 0.0 when any factor
    of the denominator is 0, i.e. labels or preds hold a single class (sklearn,
    even when every prediction is right). Computed in float64 from exact integer
    counts.
    """
    tn, fp, fn, tp = _counts(labels, preds)
    den = float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)
    if den == 0.0:
        return 0.0
    return (float(tp) * float(tn) - float(fp) * float(fn)) / math.sqrt(den)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given the mean of their ranks."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = xs.shape[0]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], n]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of (start+1 .. end)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve in [0, 1], rank-based (Mann–Whitney U form).

    ``AUROC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0)`` with ``R_1`` the sum of the
    average ranks of the positive scores, i.e. P(score_pos > score_neg) + 1/2
    P(tie). Equal to ``sklearn.metrics.roc_auc_score`` (trapezoidal ROC) and to
    ``scipy.stats.mannwhitneyu(pos, neg).statistic / (n_1 n_0)``.

    Args:
        labels: int ``[N]`` in {0, 1}.
        scores: float ``[N]``, higher = more likely class 1 (probabilities or logits).

    Returns:
        nan when ``labels`` holds a single class (sklearn raises instead).
    """
    y = _int_labels(labels, "labels")
    s = _finite_scores(scores, "scores")
    _same_length(y, s, "labels", "scores")
    n1 = int(y.sum())
    n0 = y.shape[0] - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r1 = float(_average_ranks(s)[y == 1].sum())
    return (r1 - n1 * (n1 + 1) / 2.0) / (float(n1) * float(n0))


def auprc(labels: Any, scores: Any) -> float:
    """Average precision in [0, 1] (sklearn's step-wise area under the PR curve).

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in
    decreasing order (all samples with score >= threshold are predicted positive),
    with ``R_0 = 0``; no interpolation. Equal to
    ``sklearn.metrics.average_precision_score``.

    Args:
        labels: int ``[N]`` in {0, 1}.
        scores: float ``[N]``, higher = more likely class 1.

    Returns:
        nan when no label is positive (*differs*: sklearn returns 0.0 with a
        warning); 1.0 when every label is positive.
    """
    y = _int_labels(labels, "labels")
    s = _finite_scores(scores, "scores")
    _same_length(y, s, "labels", "scores")
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # last index of each tie group
    tp = np.cumsum(ys)[last].astype(np.float64)
    n_acc = (np.flatnonzero(last) + 1).astype(np.float64)
    prec = tp / n_acc
    d_recall = np.diff(np.r_[0.0, tp]) / n_pos
    return float(np.sum(d_recall * prec))
