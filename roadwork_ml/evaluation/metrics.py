"""Metrics for the binary "roadwork present?" classifier: pure numpy functions.

Conventions (all functions)
---------------------------
- ``labels``: int array ``[N]``. Values in {0, 1} (1 = roadwork present) for the
  binary functions; in ``0..C-1`` where ``probs`` is ``[N, C]``.
- ``preds``: int or bool array ``[N]``, hard predictions in {0, 1}.
- ``scores``: float array ``[N]``, any real ranking score (higher = more positive);
  only the order matters.
- ``probs``: either ``[N]`` = probability of class 1, or ``[N, C]`` = class
  probabilities (rows sum to 1 within 1e-3). ``[N]`` is treated as ``[N, 2]`` =
  ``[1 - p, p]``, so every calibration metric gives the same number for both forms
  (Brier included, see :func:`brier`).
- ``confidence``: float ``[N]``, higher = more confident; ``correct``: bool/int
  ``[N]``, 1 where the prediction was right.
- Metrics in [0, 1] are fractions, not percent. Every function returns a Python
  ``float`` (or an ndarray where stated). Empty inputs, length mismatches,
  non-finite values, out-of-range labels or probabilities raise ``ValueError``.

Degenerate cases (same value as scikit-learn 1.9 unless marked *differs*)
--------------------------------------------------------------------------
- precision with no predicted positive, recall with no actual positive, F1 when
  ``2TP + FP + FN == 0``: 0.0 (sklearn ``zero_division="warn"`` returns 0.0).
- MCC when any marginal of the confusion matrix is zero (single class in labels or
  in preds, even if every prediction is right): 0.0 (sklearn).
- AUROC with a single class in ``labels``: nan (sklearn raises ``ValueError``).
- AUPRC with no positive label: *differs* — nan, because recall is undefined;
  sklearn returns 0.0 with an ``UndefinedMetricWarning``. A slice with no roadwork
  would otherwise read as "worst possible ranking". With only positives: 1.0 (sklearn).
- Selective metrics with no error anywhere: risks 0, AURC = AUGRC = 0.

Where our definitions differ from library X and why
---------------------------------------------------
- **torchmetrics ``BinaryCalibrationError``** bins ``p(class 1)`` against the
  label (a positive-class reliability error, although its docstring says
  "top-label"). Our :func:`ece` / :func:`mce` are *top-label* for binary input too:
  confidence ``max(p, 1 - p)``, hit = (argmax == label). This equals torchmetrics
  ``MulticlassCalibrationError`` on ``[1 - p, p]``. The positive-class view is part of
  :func:`sce` (which averages the class-0 and class-1 reliability errors).
- **Bin edges (torchmetrics)**: torchmetrics uses ``torch.bucketize(right=True)``,
  i.e. left-closed bins ``[k/B, (k+1)/B)`` plus an extra bin that holds exactly 1.0.
  We use B right-closed bins ``(k/B, (k+1)/B]`` with the first bin closed
  ``[0, 1/B]`` (edges ``np.linspace(0, 1, B + 1)``), the convention of Guo et al.
  2017's reference code and of ``sklearn.calibration.calibration_curve``; every value
  in [0, 1] falls in exactly one of B bins and a saturated confidence 1.0 shares the
  top bin. The two agree whenever no confidence lies exactly on an edge or at 1.0;
  quantized outputs (fp16, histogram calibrators, saturated sigmoids) can differ.
  torchmetrics' multiclass path also casts confidences to float32; we stay float64.
- **ACE (Nixon et al. 2019)** is defined with R ranges of equal size and weight
  1/(K R). When N is not divisible by R we use ``np.array_split`` (sizes differ by at
  most one) and weight each range by its share of samples (= 1/R when divisible;
  empty ranges, possible when N < R, get weight 0). Ties in a class probability are
  ordered by the class indicator (0 first) so the result does not depend on the
  order of the rows.
- **Brier**: binary (``[N]`` or ``[N, 2]``) = ``mean((p1 - y)^2)`` (sklearn,
  range [0, 1]); C > 2 = ``mean(sum_k (p_k - 1[y=k])^2)`` (original Brier 1950,
  range [0, 2]). This is sklearn's ``scale_by_half="auto"``.
- **NLL**: the probability of the true class is clipped below at 1e-12; sklearn's
  ``log_loss`` clips every probability to ``[eps, 1 - eps]`` (float64 eps ~2.2e-16),
  so the two agree unless a true-class probability is below 1e-12 or above 1 - eps.
  The mean is in nats. Neither renormalises rows (sklearn warns when rows do not sum
  to 1; we raise beyond 1e-3).
- **AURC / AUGRC** follow Traub et al. 2024 (NeurIPS, "Overcoming Common Flaws in
  the Evaluation of Selective Classification Systems") and their reference code
  (``fd_shifts.analysis.rc_stats``): the risk-coverage curve has one point per
  *distinct* confidence value (a tie group is accepted or rejected as a whole), and
  the area is the trapezoid rule over those points. AUGRC closes the curve at
  (coverage 0, risk 0); AURC extends the selective risk of the smallest accepted set
  flat to coverage 0. AUGRC equals
  ``(1 - AUROC_f) * acc * (1 - acc) + (1 - acc)^2 / 2`` exactly, ties included
  (AUROC_f: confidence separating correct from wrong, ties counted 1/2). Geifman & El-Yaniv's per-sample AURC ``mean_k risk(top k)`` depends on
  the row order under ties; without ties ours = that + ``(risk_1 - risk_N) / (2N)``
  (risk_k: selective risk of the k most confident samples).
- **Working points** are read off the same curve: ``coverage_at_risk`` = largest
  coverage with selective risk <= target (0.0 if none); ``risk_at_coverage`` = lowest
  selective risk among thresholds with coverage >= target, as fd-shifts'
  ``get_working_point``; a tie group is never split, so no interpolation.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    # classification
    "confusion",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "auroc",
    "auprc",
    # calibration
    "top_label",
    "reliability_bins",
    "ece",
    "mce",
    "sce",
    "ace",
    "brier",
    "nll",
    # selective
    "risk_coverage_curve",
    "aurc",
    "augrc",
    "coverage_at_risk",
    "risk_at_coverage",
    # prediction sets
    "set_coverage",
    "set_average_size",
    "singleton_rate",
    "empty_rate",
    # reports
    "classification_report",
    "calibration_report",
    "selective_report",
    "DEFAULT_N_BINS",
    "NLL_EPS",
    "RISK_TARGETS",
    "COVERAGE_TARGETS",
]

DEFAULT_N_BINS = 15
NLL_EPS = 1e-12
RISK_TARGETS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)
COVERAGE_TARGETS: tuple[float, ...] = (0.70, 0.80, 0.90, 0.95)
_ROW_SUM_ATOL = 1e-3


# --------------------------------------------------------------------------- validation
def _as_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of shape [N], got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: metrics need at least one sample")
    return a


def _int_labels(labels: Any, name: str = "labels", n_classes: int = 2) -> np.ndarray:
    y = _as_1d(labels, name)
    if y.dtype == bool:
        return y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{name} must be numeric class indices, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class indices; got non-integer values")
    yi = y.astype(np.int64)
    bad = (yi < 0) | (yi >= n_classes)
    if np.any(bad):
        raise ValueError(
            f"{name} must be in 0..{n_classes - 1}; found {np.unique(yi[bad])[:5].tolist()} "
            f"(first offending row {int(np.flatnonzero(bad)[0])})"
        )
    return yi


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{na} has {a.shape[0]} rows but {nb} has {b.shape[0]}; they must match")


def _finite_scores(x: Any, name: str) -> np.ndarray:
    s = _as_1d(x, name).astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(s)))} non-finite values (nan/inf)")
    return s


def _binary_pair(labels: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _int_labels(labels, "labels")
    p = _int_labels(preds, "preds")
    _same_length(y, p, "labels", "preds")
    return y, p


def _probs_2d(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (labels [N] int64, probs [N, C] float64); [N] -> [1 - p, p]."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        if p.shape[0] == 0:
            raise ValueError("probs is empty: metrics need at least one sample")
        p = np.stack([1.0 - p, p], axis=1)
        one_d = True
    elif p.ndim == 2:
        if p.shape[0] == 0:
            raise ValueError("probs is empty: metrics need at least one sample")
        if p.shape[1] < 2:
            raise ValueError(f"probs [N, C] needs C >= 2 columns, got shape {p.shape}; pass [N] for P(class 1)")
        one_d = False
    else:
        raise ValueError(f"probs must be [N] (P(class 1)) or [N, C], got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains non-finite values (nan/inf)")
    if np.any(p < 0.0) or np.any(p > 1.0):
        raise ValueError(
            f"probs must lie in [0, 1] (got min {p.min():.4g}, max {p.max():.4g}); "
            "pass probabilities, not logits (apply sigmoid/softmax first)"
        )
    if not one_d:
        dev = np.abs(p.sum(axis=1) - 1.0)
        if np.any(dev > _ROW_SUM_ATOL):
            i = int(np.argmax(dev))
            raise ValueError(
                f"rows of probs must sum to 1 (row {i} sums to {p[i].sum():.6g}); "
                "pass softmax probabilities, not logits or scores"
            )
    y = _int_labels(labels, "labels", n_classes=p.shape[1])
    _same_length(y, p, "labels", "probs")
    return y, p


def _correct_conf(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    c = _finite_scores(confidence, "confidence")
    ok = _int_labels(correct, "correct")
    _same_length(c, ok, "confidence", "correct")
    return c, ok


# --------------------------------------------------------------------------- classification
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


# --------------------------------------------------------------------------- calibration
def top_label(probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence and predicted class.

    Args:
        probs: ``[N]`` P(class 1) or ``[N, C]`` class probabilities.

    Returns:
        ``(confidence [N] float64, pred [N] int64)``: the max probability and its
        argmax. Exact ties go to the lowest class index (numpy/torch argmax), so a
        binary ``p = 0.5`` predicts class 0 here; :func:`classification_report`
        thresholds with ``p >= threshold`` instead.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probs must be [N] or [N, C], got shape {p.shape}")
    pred = np.argmax(p, axis=1).astype(np.int64)
    return p[np.arange(p.shape[0]), pred], pred


def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each value in [0, 1]: right-closed, first bin [0, 1/B]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], values, side="left")


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def reliability_bins(confidence: Any, hits: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, np.ndarray]:
    """Equal-width reliability statistics (for ECE/MCE and reliability diagrams).

    Args:
        confidence: float ``[N]`` in [0, 1] (e.g. top-label confidence).
        hits: bool/int ``[N]`` in {0, 1} (e.g. prediction correct).
        n_bins: number of bins B over [0, 1]; right-closed, first bin ``[0, 1/B]``.

    Returns:
        dict of ndarrays: ``edges [B+1]``, ``count [B]`` (int64), ``confidence [B]``
        (mean confidence per bin) and ``accuracy [B]`` (mean hit per bin); the means
        are nan for empty bins.
    """
    b = _check_bins(n_bins)
    c = _finite_scores(confidence, "confidence")
    h = _int_labels(hits, "hits")
    _same_length(c, h, "confidence", "hits")
    if np.any(c < 0) or np.any(c > 1):
        raise ValueError("confidence must lie in [0, 1]")
    idx = _bin_index(c, b)
    count = np.bincount(idx, minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_c = np.bincount(idx, weights=c, minlength=b) / count
        mean_h = np.bincount(idx, weights=h.astype(np.float64), minlength=b) / count
    return {"edges": np.linspace(0.0, 1.0, b + 1), "count": count.astype(np.int64), "confidence": mean_c, "accuracy": mean_h}


def _binned_gaps(conf: np.ndarray, hits: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights n_b / N, |acc_b - conf_b|) over non-empty equal-width bins."""
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    sum_c = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_h = np.bincount(idx, weights=hits.astype(np.float64), minlength=n_bins)
    nz = count > 0
    gap = np.abs(sum_h[nz] / count[nz] - sum_c[nz] / count[nz])
    return count[nz] / conf.shape[0], gap


def ece(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Expected calibration error (top-label, equal-width bins), in [0, 1].

    ``ECE = sum_b (n_b / N) |acc_b - conf_b|`` over the B bins of top-label
    confidence (see module notes for bin edges), where ``acc_b`` is the fraction of
    correct argmax predictions in bin b and ``conf_b`` their mean confidence.
    Binary ``[N]`` input uses ``max(p, 1 - p)`` (Guo et al. 2017). Equals
    torchmetrics ``MulticlassCalibrationError(norm="l1")`` away from bin edges.

    Args:
        labels: int ``[N]``; probs: ``[N]`` P(class 1) or ``[N, C]``; n_bins: B.
    """
    b = _check_bins(n_bins)
    y, p = _probs_2d(labels, probs)
    conf, pred = top_label(p)
    w, gap = _binned_gaps(conf, pred == y, b)
    return float(np.sum(w * gap))


def mce(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Maximum calibration error: ``max_b |acc_b - conf_b|`` over non-empty top-label bins.

    Same bins as :func:`ece`; in [0, 1]. Equals torchmetrics
    ``MulticlassCalibrationError(norm="max")`` away from bin edges.
    """
    b = _check_bins(n_bins)
    y, p = _probs_2d(labels, probs)
    conf, pred = top_label(p)
    _, gap = _binned_gaps(conf, pred == y, b)
    return float(np.max(gap))


def sce(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Static calibration error (Nixon et al. 2019), in [0, 1].

    ``SCE = (1/K) sum_k sum_b (n_bk / N) |acc_bk - conf_bk|``: for every class k the
    probabilities ``p_k`` of all N samples are binned in B equal-width bins (same
    edges as :func:`ece`), ``acc_bk`` is the fraction of samples in the bin whose
    label is k and ``conf_bk`` the mean ``p_k``. Binary ``[N]`` input uses K = 2
    classes ``[1 - p, p]``; for each k the term equals torchmetrics
    ``BinaryCalibrationError(p_k, labels == k)`` away from bin edges.
    """
    b = _check_bins(n_bins)
    y, p = _probs_2d(labels, probs)
    k = p.shape[1]
    total = 0.0
    for j in range(k):
        w, gap = _binned_gaps(p[:, j], y == j, b)
        total += float(np.sum(w * gap))
    return total / k


def ace(labels: Any, probs: Any, n_ranges: int = DEFAULT_N_BINS) -> float:
    """Adaptive calibration error (Nixon et al. 2019), equal-mass ranges, in [0, 1].

    For every class k, sort the N values ``p_k`` (ties: label-indicator 0 first),
    split them into R consecutive ranges of (nearly) equal size with
    ``np.array_split``, and average ``|acc_rk - conf_rk|`` weighted by range size:
    ``ACE = (1/K) sum_k sum_r (n_rk / N) |acc_rk - conf_rk|``. When R divides N this
    is Nixon's ``1/(KR) sum |acc - conf|``. Binary ``[N]`` input uses K = 2.

    Args:
        labels: int ``[N]``; probs: ``[N]`` or ``[N, C]``; n_ranges: R.
    """
    r = _check_bins(n_ranges)
    y, p = _probs_2d(labels, probs)
    n, k = p.shape
    total = 0.0
    for j in range(k):
        hit = (y == j).astype(np.float64)
        order = np.lexsort((hit, p[:, j]))
        pj, hj = p[order, j], hit[order]
        for chunk_p, chunk_h in zip(np.array_split(pj, r), np.array_split(hj, r)):
            if chunk_p.shape[0]:
                total += chunk_p.shape[0] / n * abs(chunk_h.mean() - chunk_p.mean())
    return total / k


def brier(labels: Any, probs: Any) -> float:
    """Brier score (lower is better).

    - Binary (``[N]`` P(class 1), or ``[N, 2]``): ``mean((p1 - y)^2)``, in [0, 1]
      (sklearn ``brier_score_loss``).
    - C > 2 classes ``[N, C]``: ``mean_i sum_k (p_ik - 1[y_i = k])^2``, in [0, 2]
      (Brier 1950; sklearn ``brier_score_loss(..., scale_by_half="auto")``).
    """
    y, p = _probs_2d(labels, probs)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    per_row = np.sum((p - onehot) ** 2, axis=1)
    if p.shape[1] == 2:
        per_row = per_row / 2.0  # (1-p - (1-y))^2 == (p - y)^2
    return float(np.mean(per_row))


def nll(labels: Any, probs: Any, eps: float = NLL_EPS) -> float:
    """Mean negative log-likelihood of the true class, in nats (>= 0).

    ``NLL = -mean_i log(max(p_{i, y_i}, eps))`` with ``eps = 1e-12`` (so one
    confidently wrong sample costs at most ~27.6 nats). Binary ``[N]`` input uses
    ``p_{i,1} = p_i`` and ``p_{i,0} = 1 - p_i`` (binary cross-entropy).
    """
    y, p = _probs_2d(labels, probs)
    pt = np.maximum(p[np.arange(p.shape[0]), y], eps)
    return float(-np.mean(np.log(pt)))


# --------------------------------------------------------------------------- selective
def _rc_points(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per distinct threshold t (descending): accepted counts, error counts, t; and N."""
    c, ok = _correct_conf(confidence, correct)
    order = np.argsort(-c, kind="mergesort")
    cs = c[order]
    err = 1 - ok[order]
    last = np.r_[cs[1:] != cs[:-1], True]
    n_acc = np.flatnonzero(last) + 1
    n_err = np.cumsum(err)[last]
    return n_acc, n_err, cs[last], c.shape[0]


def risk_coverage_curve(confidence: Any, correct: Any, return_thresholds: bool = False):
    """Selective risk-coverage curve, one point per distinct confidence value.

    Thresholds ``t`` run over the distinct values of ``confidence`` in decreasing
    order; at each, every sample with ``confidence >= t`` is accepted (a tie group is
    never split, as in Geifman & El-Yaniv 2017 / Traub et al. 2024).

    Args:
        confidence: float ``[N]``, higher = more confident.
        correct: bool/int ``[N]``, 1 where the prediction is right.
        return_thresholds: also return the thresholds.

    Returns:
        ``(coverages, risks)`` (or ``(coverages, risks, thresholds)``), float64 arrays
        of length = number of distinct confidences, coverage increasing to 1.0:
        coverage = accepted / N, risk = errors among accepted / accepted (selective
        risk, in [0, 1]). Coverage 0 is not included (risk undefined there). The
        generalized risk of Traub et al. is ``risks * coverages``.
    """
    n_acc, n_err, thr, n = _rc_points(confidence, correct)
    cov = n_acc / n
    risk = n_err / n_acc
    return (cov, risk, thr) if return_thresholds else (cov, risk)


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the selective risk-coverage curve, in [0, 1] (lower is better).

    Trapezoid rule over the points of :func:`risk_coverage_curve`, with the
    selective risk of the smallest accepted set extended flat to coverage 0
    (Traub et al. 2024 reference code). Tie-aware: tie groups are single points.
    """
    n_acc, n_err, _, n = _rc_points(confidence, correct)
    cov = n_acc / n
    risk = n_err / n_acc
    return float(cov[0] * risk[0] + np.sum(np.diff(cov) * (risk[1:] + risk[:-1]) / 2.0))


def augrc(confidence: Any, correct: Any) -> float:
    """Area under the generalized risk-coverage curve (Traub et al. 2024), in [0, 0.5].

    Generalized risk at threshold t = P(wrong and accepted) = errors among accepted
    / N. AUGRC integrates it over coverage with the trapezoid rule over one point
    per distinct confidence, starting at (coverage 0, risk 0). Linear interpolation
    inside a tie group is the expectation over random tie-breaking, which makes
    ``AUGRC = (1 - AUROC_f) acc (1 - acc) + (1 - acc)^2 / 2`` exact with ties
    (AUROC_f: confidence ranking correct above wrong, ties 1/2). Lower is better.
    """
    n_acc, n_err, _, n = _rc_points(confidence, correct)
    cov = np.r_[0.0, n_acc / n]
    gr = np.r_[0.0, n_err / n]
    return float(np.sum(np.diff(cov) * (gr[1:] + gr[:-1]) / 2.0))


def coverage_at_risk(confidence: Any, correct: Any, risk: float) -> float:
    """Largest coverage whose selective risk is <= ``risk``, in [0, 1].

    Searches the points of :func:`risk_coverage_curve` (thresholds at distinct
    confidences). Returns 0.0 when no threshold reaches the target (accepting
    nothing). Typical targets: :data:`RISK_TARGETS` = (0.01, 0.02, 0.05, 0.10).
    """
    if not (0.0 <= float(risk) <= 1.0):
        raise ValueError(f"risk target must be in [0, 1], got {risk}")
    cov, rk = risk_coverage_curve(confidence, correct)
    ok = rk <= float(risk)
    return float(cov[ok].max()) if np.any(ok) else 0.0


def risk_at_coverage(confidence: Any, correct: Any, coverage: float) -> float:
    """Lowest selective risk over thresholds with coverage >= ``coverage``, in [0, 1].

    This is the risk of the best working point that still accepts at least the
    requested fraction (fd-shifts ``get_working_point(target_cov=...)``); a tie group
    is never split, so the reached coverage may exceed the target. Typical targets:
    :data:`COVERAGE_TARGETS` = (0.70, 0.80, 0.90, 0.95).
    """
    if not (0.0 < float(coverage) <= 1.0):
        raise ValueError(f"coverage target must be in (0, 1], got {coverage}")
    cov, rk = risk_coverage_curve(confidence, correct)
    return float(rk[cov >= float(coverage)].min())


# --------------------------------------------------------------------------- prediction sets
def _sets(sets: Any) -> np.ndarray:
    s = np.asarray(sets)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"sets must be a boolean membership matrix [N, C], got shape {s.shape}")
    if s.dtype != bool:
        if not np.all((s == 0) | (s == 1)):
            raise ValueError("sets must be boolean (or 0/1) membership [N, C]")
        s = s.astype(bool)
    return s


def set_coverage(labels: Any, sets: Any) -> float:
    """Fraction of samples whose true label is in its prediction set, in [0, 1].

    Args:
        labels: int ``[N]`` in 0..C-1.
        sets: bool ``[N, C]``, ``sets[i, k]`` = class k is in the set of sample i.
    """
    s = _sets(sets)
    y = _int_labels(labels, "labels", n_classes=s.shape[1])
    _same_length(y, s, "labels", "sets")
    return float(np.mean(s[np.arange(s.shape[0]), y]))


def set_average_size(sets: Any) -> float:
    """Mean number of classes per prediction set (``[N, C]`` bool), in [0, C]."""
    return float(np.mean(_sets(sets).sum(axis=1)))


def singleton_rate(sets: Any) -> float:
    """Fraction of prediction sets (``[N, C]`` bool) with exactly one class."""
    return float(np.mean(_sets(sets).sum(axis=1) == 1))


def empty_rate(sets: Any) -> float:
    """Fraction of prediction sets (``[N, C]`` bool) with no class (abstentions)."""
    return float(np.mean(_sets(sets).sum(axis=1) == 0))


# --------------------------------------------------------------------------- reports
def _clean(v: Any) -> Any:
    """Plain Python number; nan -> None so ``json.dumps(allow_nan=False)`` works."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    return None if math.isnan(f) else f


def classification_report(labels: Any, probs1: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Threshold and ranking metrics for binary P(class 1) ``probs1 [N]``.

    ``preds = probs1 >= threshold``. Returns plain ``int``/``float`` values (``None``
    where a metric is undefined, e.g. AUROC with one class): ``n``, ``n_positive``,
    ``prevalence``, ``threshold``, ``tp``, ``fp``, ``tn``, ``fn``, ``accuracy``,
    ``precision``, ``recall``, ``f1``, ``mcc``, ``auroc``, ``auprc``.
    """
    y = _int_labels(labels, "labels")
    p = _finite_scores(probs1, "probs1")
    _same_length(y, p, "labels", "probs1")
    if np.any(p < 0) or np.any(p > 1):
        raise ValueError("probs1 must be probabilities in [0, 1]; apply a sigmoid to logits first")
    preds = (p >= float(threshold)).astype(np.int64)
    tn, fp, fn, tp = _counts(y, preds)
    out = {
        "n": y.shape[0],
        "n_positive": int(y.sum()),
        "prevalence": float(y.mean()),
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": accuracy(y, preds),
        "precision": precision(y, preds),
        "recall": recall(y, preds),
        "f1": f1(y, preds),
        "mcc": mcc(y, preds),
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
    }
    return {k: _clean(v) for k, v in out.items()}


def calibration_report(labels: Any, probs: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """Calibration metrics for ``probs`` (``[N]`` P(class 1) or ``[N, C]``).

    Keys: ``n``, ``n_bins``, ``accuracy`` (top-label), ``mean_confidence``
    (top-label), ``ece``, ``mce``, ``sce``, ``ace`` (R = n_bins ranges), ``brier``,
    ``nll``; plain Python numbers.
    """
    y, p = _probs_2d(labels, probs)
    conf, pred = top_label(p)
    out = {
        "n": y.shape[0],
        "n_bins": _check_bins(n_bins),
        "accuracy": float(np.mean(pred == y)),
        "mean_confidence": float(np.mean(conf)),
        "ece": ece(y, p, n_bins),
        "mce": mce(y, p, n_bins),
        "sce": sce(y, p, n_bins),
        "ace": ace(y, p, n_bins),
        "brier": brier(y, p),
        "nll": nll(y, p),
    }
    return {k: _clean(v) for k, v in out.items()}


def selective_report(
    confidence: Any,
    correct: Any,
    risk_targets: Sequence[float] = RISK_TARGETS,
    coverage_targets: Sequence[float] = COVERAGE_TARGETS,
) -> dict[str, Any]:
    """Selective-classification summary of ``confidence [N]`` vs ``correct [N]``.

    Keys: ``n``, ``accuracy`` and ``risk`` at full coverage, ``aurc``, ``augrc``,
    ``coverage_at_risk_{r:g}`` for each risk target (e.g. ``coverage_at_risk_0.05``)
    and ``risk_at_coverage_{c:g}`` for each coverage target (e.g.
    ``risk_at_coverage_0.9``); plain Python floats.
    """
    c, ok = _correct_conf(confidence, correct)
    out: dict[str, Any] = {
        "n": c.shape[0],
        "accuracy": float(ok.mean()),
        "risk": float((ok.shape[0] - ok.sum()) / ok.shape[0]),
        "aurc": aurc(c, ok),
        "augrc": augrc(c, ok),
    }
    for r in risk_targets:
        out[f"coverage_at_risk_{float(r):g}"] = coverage_at_risk(c, ok, r)
    for cv in coverage_targets:
        out[f"risk_at_coverage_{float(cv):g}"] = risk_at_coverage(c, ok, cv)
    return {k: _clean(v) for k, v in out.items()}
