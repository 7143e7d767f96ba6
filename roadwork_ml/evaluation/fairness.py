"""Group fairness gaps between two slices (e.g. day vs night) of a binary classifier.

All rates are fractions in [0, 1]; gaps are absolute differences in [0, 1]:

- demographic parity difference ``|P(yhat=1 | a) - P(yhat=1 | b)|``;
- equal opportunity difference ``|TPR_a - TPR_b|`` (TPR = recall on label 1);
- equalized odds difference ``max(|TPR_a - TPR_b|, |FPR_a - FPR_b|)``
  (as ``fairlearn.metrics.equalized_odds_difference`` restricted to two groups).

A gap that cannot be computed (a group without rows, without positives for the TPR,
without negatives for the FPR) is nan with ``passed=False`` and a ``reason``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["fairness_report"]


def _rate(num: int, den: int) -> float:
    return num / den if den > 0 else float("nan")


def _group_stats(y: np.ndarray, yhat: np.ndarray) -> dict[str, Any]:
    pos, neg = y == 1, y == 0
    return {
        "n": int(y.shape[0]),
        "n_positive": int(pos.sum()),
        "n_negative": int(neg.sum()),
        "positive_rate": _rate(int(yhat.sum()), int(y.shape[0])),
        "tpr": _rate(int(yhat[pos].sum()), int(pos.sum())),
        "fpr": _rate(int(yhat[neg].sum()), int(neg.sum())),
    }


def _missing(stats: dict[str, dict[str, Any]], need: tuple[str, ...]) -> str | None:
    words = {"n": "no samples", "n_positive": "no positive labels", "n_negative": "no negative labels"}
    for g, s in stats.items():
        for key in need:
            if s[key] == 0:
                return f"group {g!r} has {words[key]}"
    return None


def _gap(value: float, threshold: float, reason: str | None, **rates: float) -> dict[str, Any]:
    ok = reason is None and math.isfinite(value)
    # 1e-12: rate differences like 1/2 - 1/6 round just above an equal threshold
    return {
        "value": value if ok else float("nan"),
        "passed": bool(ok and value <= threshold + 1e-12),
        "reason": reason,
        **rates,
    }


def fairness_report(
    labels: Any, preds: Any, groups: Any, group_a: str = "day", group_b: str = "night", threshold: float = 0.05
) -> dict[str, Any]:
    """Demographic parity, equal opportunity and equalized odds gaps between two groups.

    Args:
        labels: int ``[N]`` in {0, 1}. preds: int/bool ``[N]`` hard predictions in {0, 1}.
        groups: ``[N]`` group name per row (e.g. time of day); rows of other groups are ignored.
        group_a, group_b: the two groups compared. threshold: largest gap that passes.

    Returns:
        ``{"group_a", "group_b", "threshold", "groups": {name: {n, n_positive,
        n_negative, positive_rate, tpr, fpr}}, "demographic_parity_difference",
        "equal_opportunity_difference", "equalized_odds_difference", "passed"}``; each
        difference is ``{value, passed, reason, ...per-group rates...}`` (nan value,
        ``passed=False`` and a reason string where undefined; ``reason`` None otherwise).
    """
    y = np.asarray(labels)
    yhat = np.asarray(preds)
    g = np.asarray(groups).astype(str)
    if not (y.ndim == yhat.ndim == g.ndim == 1) or not (y.shape[0] == yhat.shape[0] == g.shape[0]):
        raise ValueError(
            f"labels, preds and groups must be [N] of equal length; got {y.shape}, {yhat.shape}, {g.shape}"
        )
    for name, a in (("labels", y), ("preds", yhat)):
        if not np.all(np.isin(a, (0, 1))):
            raise ValueError(f"{name} must hold 0/1 values")
    if group_a == group_b:
        raise ValueError(f"group_a and group_b must differ, both are {group_a!r}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    y, yhat = y.astype(np.int64), yhat.astype(np.int64)
    stats = {name: _group_stats(y[g == name], yhat[g == name]) for name in (group_a, group_b)}
    sa, sb = stats[group_a], stats[group_b]

    dp = _gap(
        abs(sa["positive_rate"] - sb["positive_rate"]),
        threshold,
        _missing(stats, ("n",)),
        rate_a=sa["positive_rate"],
        rate_b=sb["positive_rate"],
    )
    eo_reason = _missing(stats, ("n", "n_positive"))
    tpr_gap = abs(sa["tpr"] - sb["tpr"])
    eo = _gap(tpr_gap, threshold, eo_reason, tpr_a=sa["tpr"], tpr_b=sb["tpr"])
    fpr_gap = abs(sa["fpr"] - sb["fpr"])
    eodds = _gap(
        max(tpr_gap, fpr_gap),
        threshold,
        _missing(stats, ("n", "n_positive", "n_negative")),
        tpr_gap=tpr_gap,
        fpr_gap=fpr_gap,
        tpr_a=sa["tpr"],
        tpr_b=sb["tpr"],
        fpr_a=sa["fpr"],
        fpr_b=sb["fpr"],
    )
    return {
        "group_a": group_a,
        "group_b": group_b,
        "threshold": float(threshold),
        "groups": stats,
        "demographic_parity_difference": dp,
        "equal_opportunity_difference": eo,
        "equalized_odds_difference": eodds,
        "passed": bool(dp["passed"] and eo["passed"] and eodds["passed"]),
    }
