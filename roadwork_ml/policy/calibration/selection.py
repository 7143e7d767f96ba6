"""Cross-fitted choice of a calibrator on VAL_CALIB, and the private metrics it ranks by."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.policy.calibration._fitting import _PROB_FLOOR, _as_labels, _as_logits, _as_slices, _jsonable
from roadwork_ml.policy.calibration.calibrators import CALIBRATORS, Calibrator, SliceTemperature

# --- metrics used for selection -----------------------------------------------------------


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the true class; probabilities floored at 1e-15."""
    p = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p, _PROB_FLOOR, 1.0))))


def _ece_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label confidence binned into ``n_bins`` equal-width bins ``(k/n, (k+1)/n]`` (0 goes to bin 0).

    Returns per-bin count, mean confidence and accuracy (NaN where a bin is empty).
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return count, mean_conf, acc


def _ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error: Σ_bins (n_b / N) · |accuracy_b − confidence_b|."""
    count, conf, acc = _ece_bins(probs, labels, n_bins)
    nonempty = count > 0
    return float(np.sum(count[nonempty] / count.sum() * np.abs(acc[nonempty] - conf[nonempty])))


def _brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score. C = 2: mean (p1 − y)² (sklearn's ``brier_score_loss``); C > 2: mean Σ_c (p_c − 1[y=c])²."""
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - labels) ** 2))
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def _scores(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    return {"oof_nll": _nll(probs, labels), "oof_ece": _ece(probs, labels, n_bins), "oof_brier": _brier(probs, labels)}


# --- cross-fitted selection -------------------------------------------------------------


@dataclass
class SelectionResult:
    """What :func:`select_calibrator` found.

    ``calibrator``: the winner refitted on all rows. ``table``: one row per method (in the
    order asked) with ``method, oof_nll, oof_ece, oof_brier``. ``uncalibrated``: the same row
    for the identity. ``oof_proba``: out-of-fold probabilities ``[N, C]`` per method (and
    ``"identity"``), e.g. for a reliability diagram of the winner that it did not fit.
    """

    method: str
    calibrator: Calibrator
    table: list[dict]
    uncalibrated: dict
    n_folds: int
    seed: int
    n: int
    oof_proba: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """JSON-safe summary (no arrays): the winner, its parameters, the comparison table."""
        return {
            "kind": "calibrator_selection",
            "method": self.method,
            "calibrator": self.calibrator.to_dict(),
            "table": _jsonable(self.table),
            "uncalibrated": _jsonable(self.uncalibrated),
            "n_folds": int(self.n_folds),
            "seed": int(self.seed),
            "n": int(self.n),
        }


def _make(method: str, min_samples_per_slice: int) -> Calibrator:
    if method not in CALIBRATORS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {sorted(CALIBRATORS)}")
    cls = CALIBRATORS[method]
    return cls(min_samples_per_slice=min_samples_per_slice) if cls is SliceTemperature else cls()


def _fit_predict(
    cal: Calibrator,
    z_fit: np.ndarray,
    y_fit: np.ndarray,
    z_pred: np.ndarray,
    s_fit: np.ndarray | None,
    s_pred: np.ndarray | None,
    split: Split | str,
) -> np.ndarray:
    if cal.uses_slices:
        cal.fit(z_fit, y_fit, split=split, slices=s_fit)
        return cal.predict_proba(z_pred, slices=s_pred)
    cal.fit(z_fit, y_fit, split=split)
    return cal.predict_proba(z_pred)


def _pick_winner(table: list[dict], rel_tol: float = 1e-4) -> str:
    """Lowest ``oof_nll``; rows within ``rel_tol`` (relative) of it tie and the lowest ``oof_ece`` wins, then the first."""
    best_nll = min(r["oof_nll"] for r in table)
    tied = [r for r in table if r["oof_nll"] <= best_nll + rel_tol * abs(best_nll)]
    return min(tied, key=lambda r: r["oof_ece"])["method"]  # min() keeps the first among equal ECEs


def select_calibrator(
    logits: np.ndarray,
    labels: np.ndarray,
    methods: Iterable[str],
    n_folds: int = 5,
    seed: int = 0,
    slices: Any = None,
    min_samples_per_slice: int = 100,
    *,
    split: Split | str,
    n_bins: int = 15,
    ece_guard: bool = True,
) -> SelectionResult:
    """Pick a calibrator by K-fold cross-fitting on VAL_CALIB and refit it on all rows.

    For each method the rows are split by a seeded :class:`~sklearn.model_selection.StratifiedKFold`
    (stratified on the label, shuffled with ``seed``, the same folds for every method); each
    fold is predicted by a calibrator fitted on the other folds only. On those out-of-fold
    probabilities we compute NLL, top-label ECE (``n_bins`` equal-width bins) and Brier. The
    winner has the lowest OOF NLL; methods within 1e-4 (relative) of it are tied and the lowest
    OOF ECE among them wins (then the earlier one in ``methods``). With ``ece_guard`` only
    methods whose OOF ECE is not above the uncalibrated one compete, and the identity wins when
    none qualifies. ``split`` is the split tag of the data and must be VAL_CALIB
    (:class:`LeakageError` otherwise).
    """
    require_split(Purpose.FIT_POLICY, split)
    from sklearn.model_selection import StratifiedKFold

    methods = list(methods)
    if not methods:
        raise ValueError("select_calibrator: methods is empty; pass e.g. ['temperature', 'beta', 'isotonic']")
    for m in methods:
        _make(m, min_samples_per_slice)  # fail on an unknown name before any fitting
    if len(set(methods)) != len(methods):
        raise ValueError(f"select_calibrator: methods has duplicates: {methods}")
    z = _as_logits(logits, "select_calibrator")
    y = _as_labels(labels, len(z), z.shape[1], "select_calibrator")
    s = None if slices is None else _as_slices(slices, len(y), "select_calibrator")
    if s is None and any(CALIBRATORS[m].uses_slices for m in methods):
        raise ValueError("select_calibrator: 'slice_temperature' needs slices=<array of N slice labels>")
    n_folds = int(n_folds)
    classes, class_counts = np.unique(y, return_counts=True)
    if n_folds < 2:
        raise ValueError(f"select_calibrator: n_folds must be >= 2, got {n_folds}")
    if class_counts.min() < n_folds:
        raise ValueError(
            f"select_calibrator: class {classes[class_counts.argmin()]} has {class_counts.min()} rows, "
            f"fewer than n_folds={n_folds}; lower n_folds or collect more VAL_CALIB data"
        )
    folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(seed)).split(np.zeros(len(y)), y))

    oof: dict[str, np.ndarray] = {}
    for m in ["identity", *[m for m in methods if m != "identity"]]:
        probs = np.full(z.shape, np.nan)
        for fit_idx, pred_idx in folds:
            cal = _make(m, min_samples_per_slice)
            probs[pred_idx] = _fit_predict(
                cal,
                z[fit_idx],
                y[fit_idx],
                z[pred_idx],
                None if s is None else s[fit_idx],
                None if s is None else s[pred_idx],
                split,
            )
        assert np.isfinite(probs).all(), f"{m}: some rows got no out-of-fold prediction"
        oof[m] = probs

    table = [{"method": m, **_scores(oof[m], y, n_bins)} for m in methods]
    uncalibrated = {"method": "identity", **_scores(oof["identity"], y, n_bins)}
    # Never ship a calibrator that makes out-of-fold ECE worse: candidates must keep ECE at or
    # below the uncalibrated model's; the identity always qualifies (an already calibrated model).
    eligible = [r for r in table if r["oof_ece"] <= uncalibrated["oof_ece"]] if ece_guard else table
    winner = _pick_winner(eligible or [uncalibrated])

    final = _make(winner, min_samples_per_slice)
    if final.uses_slices:
        final.fit(z, y, split=split, slices=s)
    else:
        final.fit(z, y, split=split)
    return SelectionResult(
        method=winner,
        calibrator=final,
        table=table,
        uncalibrated=uncalibrated,
        n_folds=n_folds,
        seed=int(seed),
        n=len(y),
        oof_proba=oof,
    )
