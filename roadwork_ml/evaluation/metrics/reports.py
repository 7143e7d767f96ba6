"""Report builders: the classification, calibration and selective sections of the evaluation report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from roadwork_ml.evaluation.metrics._checks import (
    COVERAGE_TARGETS,
    DEFAULT_N_BINS,
    RISK_TARGETS,
    _correct_conf,
    _finite_scores,
    _int_labels,
    _probs_2d,
    _same_length,
)
from roadwork_ml.evaluation.metrics.calibration import _check_bins, ace, brier, ece, mce, nll, sce, top_label
from roadwork_ml.evaluation.metrics.classification import _counts, accuracy, auprc, auroc, f1, mcc, precision, recall
from roadwork_ml.evaluation.metrics.selective import augrc, aurc, coverage_at_risk, risk_at_coverage


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
