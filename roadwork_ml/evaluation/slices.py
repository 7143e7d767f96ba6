"""Metrics per slice of the evaluation set: time of day, weather, source, confidence.

``meta`` is a manifest-like DataFrame with one row per sample, aligned with
``labels [N]`` and ``probs1 [N]`` (P(class 1)); the columns used are ``time_of_day``
(or ``hour`` 0..23, mapped with :func:`roadwork_ml.data.records.time_of_day`),
``weather`` and ``source``. Missing values read as "unknown". Hard predictions are
``probs1 > 0.5``; confidence is ``max(p, 1 - p)`` in [0.5, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from roadwork_ml.data.records import TIMES_OF_DAY, UNKNOWN, WEATHERS, time_of_day
from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.bootstrap import _check_binary, hard_predictions

__all__ = [
    "SLICE_FAMILIES",
    "CONFIDENCE_EDGES",
    "slice_metrics",
    "worst_slice",
    "time_weather_accuracy",
    "slice_labels",
]

SLICE_FAMILIES = ("time_of_day", "weather", "source", "confidence")
CONFIDENCE_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LOWER_IS_BETTER = frozenset({"ece"})
COLUMNS = ["family", "slice", "n", "n_positive", "reliable", "accuracy", "precision", "recall", "f1", "ece", "auroc"]


def _column(meta: pd.DataFrame, col: str) -> np.ndarray:
    return meta[col].astype(object).where(meta[col].notna(), UNKNOWN).astype(str).to_numpy()


def _time_of_day(meta: pd.DataFrame) -> np.ndarray:
    if "time_of_day" in meta.columns:
        return _column(meta, "time_of_day")
    if "hour" in meta.columns:
        hours = pd.to_numeric(meta["hour"], errors="coerce")
        return np.array([time_of_day(None if pd.isna(h) else int(h)) for h in hours], dtype=object).astype(str)
    raise ValueError(
        "slice family 'time_of_day' needs a 'time_of_day' or an 'hour' column in meta; "
        "pass families=... without it to skip"
    )


def _confidence_bins(conf: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.shape[0] < 2 or np.any(np.diff(e) <= 0):
        raise ValueError(f"confidence_edges must be increasing with at least 2 values, got {tuple(edges)}")
    names = [f"[{lo:g},{hi:g})" for lo, hi in zip(e[:-1], e[1:], strict=False)]
    names[-1] = names[-1][:-1] + "]"
    # bins [e_k, e_{k+1}), the last one closed; values outside the edges are "outside"
    k = np.searchsorted(e, conf, side="right") - 1
    k = np.where(conf == e[-1], e.shape[0] - 2, k)
    out = np.array(["outside"] * conf.shape[0], dtype=object)
    inside = (k >= 0) & (k < e.shape[0] - 1)
    out[inside] = np.asarray(names, dtype=object)[k[inside]]
    return out.astype(str)


def slice_labels(
    meta: pd.DataFrame, probs1: Any, family: str, confidence_edges: Sequence[float] = CONFIDENCE_EDGES
) -> np.ndarray:
    """The slice name of every row (str ``[N]``) for one family of :data:`SLICE_FAMILIES`."""
    if family == "time_of_day":
        return _time_of_day(meta)
    if family == "confidence":
        p = np.asarray(probs1, dtype=np.float64)
        return _confidence_bins(np.maximum(p, 1.0 - p), confidence_edges)
    if family in ("weather", "source"):
        if family not in meta.columns:
            raise ValueError(f"slice family {family!r} needs a {family!r} column in meta; pass families=... to skip it")
        return _column(meta, family)
    raise ValueError(f"unknown slice family {family!r}; choose from {SLICE_FAMILIES}")


def _order(family: str, values: np.ndarray) -> list[str]:
    present = list(dict.fromkeys(np.sort(values)))
    canon = {"time_of_day": TIMES_OF_DAY, "weather": WEATHERS}.get(family, ())
    return [v for v in canon if v in present] + [v for v in present if v not in canon]


def _row_metrics(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, float]:
    pred = hard_predictions(p)
    return {
        "accuracy": M.accuracy(y, pred),
        "precision": M.precision(y, pred),
        "recall": M.recall(y, pred),
        "f1": M.f1(y, pred),
        "ece": M.ece(y, p, n_bins),
        "auroc": M.auroc(y, p),
    }


def slice_metrics(
    meta: pd.DataFrame,
    labels: Any,
    probs1: Any,
    families: Sequence[str] = SLICE_FAMILIES,
    confidence_edges: Sequence[float] = CONFIDENCE_EDGES,
    n_bins: int = 15,
    min_count: int = 20,
) -> pd.DataFrame:
    """One row per non-empty slice: metrics of the rows in it.

    Args:
        meta: DataFrame with N rows aligned with ``labels`` / ``probs1``.
        labels: int ``[N]`` in {0, 1}. probs1: float ``[N]`` P(class 1).
        families: subset of :data:`SLICE_FAMILIES`.
        confidence_edges: bin edges of ``max(p, 1 - p)``; bins ``[e_k, e_k+1)``, the
            last closed.
        n_bins: ECE bins. min_count: slices with fewer rows get ``reliable=False``.

    Returns:
        DataFrame with columns ``family, slice, n, n_positive, reliable, accuracy,
        precision, recall, f1, ece, auroc`` (fractions in [0, 1]; auroc nan when the
        slice holds one class). Precision/recall/F1 follow metrics.py's zero-division
        rules (0.0).
    """
    y, p = _check_binary(labels, probs1)
    if len(meta) != y.shape[0]:
        raise ValueError(f"meta has {len(meta)} rows but labels has {y.shape[0]}; they must be aligned")
    rows: list[dict[str, Any]] = []
    for family in families:
        names = slice_labels(meta, p, family, confidence_edges)
        for name in _order(family, names):
            mask = names == name
            n = int(mask.sum())
            rows.append(
                {
                    "family": family,
                    "slice": name,
                    "n": n,
                    "n_positive": int(y[mask].sum()),
                    "reliable": n >= min_count,
                    **_row_metrics(y[mask], p[mask], n_bins),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def worst_slice(table: pd.DataFrame, metric: str = "accuracy", min_count: int = 20) -> dict[str, Any]:
    """The slice with the worst ``metric`` among those with ``n >= min_count`` (nan ignored).

    Worst = lowest, except for ece (highest). Returns ``{family, slice, value, n}``;
    family/slice None and value nan when no slice qualifies.
    """
    if metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not a column of the slice table {list(table.columns)}")
    t = table[(table["n"] >= min_count) & table[metric].notna()]
    if t.empty:
        return {"family": None, "slice": None, "value": float("nan"), "n": 0}
    vals = t[metric].to_numpy(dtype=np.float64)
    i = int(np.argmax(vals) if metric in LOWER_IS_BETTER else np.argmin(vals))
    r = t.iloc[i]
    return {"family": str(r["family"]), "slice": str(r["slice"]), "value": float(r[metric]), "n": int(r["n"])}


def time_weather_accuracy(meta: pd.DataFrame, labels: Any, probs1: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Accuracy and row count per (time of day, weather) cell.

    Returns:
        ``(accuracy, count)``: DataFrames indexed by time of day (rows:
        :data:`TIMES_OF_DAY`, then any other value seen, e.g. "unknown") with weather
        columns (:data:`WEATHERS`, then others seen); accuracy is nan where a cell is empty.
    """
    y, p = _check_binary(labels, probs1)
    if len(meta) != y.shape[0]:
        raise ValueError(f"meta has {len(meta)} rows but labels has {y.shape[0]}; they must be aligned")
    tod = slice_labels(meta, p, "time_of_day")
    wx = slice_labels(meta, p, "weather")
    times = list(TIMES_OF_DAY) + [v for v in _order("time_of_day", tod) if v not in TIMES_OF_DAY]
    weathers = list(WEATHERS) + [v for v in _order("weather", wx) if v not in WEATHERS]
    correct = hard_predictions(p) == y
    acc = pd.DataFrame(math.nan, index=pd.Index(times, name="time_of_day"), columns=pd.Index(weathers, name="weather"))
    cnt = pd.DataFrame(0, index=acc.index.copy(), columns=acc.columns.copy(), dtype=np.int64)
    for t in times:
        for w in weathers:
            mask = (tod == t) & (wx == w)
            n = int(mask.sum())
            cnt.loc[t, w] = n
            if n:
                acc.loc[t, w] = float(correct[mask].mean())
    return acc, cnt
