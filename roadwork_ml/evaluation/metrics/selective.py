"""Selective prediction (risk-coverage: AURC, AUGRC, coverage at risk, risk at coverage) and prediction-set metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from roadwork_ml.evaluation.metrics._checks import _correct_conf, _int_labels, _same_length


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
