"""One day's drift report and the decision it implies: ok, alert, retrain or rollback.

:func:`drift_report` compares a day of the inference log with the :class:`ReferenceProfile`:

* per model column (``prob`` + the 7 uncertainty features): PSI (``rules.psi_mode``) and a
  two-sample KS test. The 8 KS p-values are Bonferroni-corrected (``p_adj = min(1, 8 p)``),
  so the probability that *any* column alarms on a stable day is at most ``ks_alpha``;
* per slice column (``time_of_day``, ``weather``, ``source``): PSI of the category shares
  (a category unseen in the reference counts with share 1e-4 there);
* MMD permutation test on the PCA embeddings (fixed reference bandwidth) and the mean
  embedding shift;
* label-free estimated accuracy; labelled accuracy + ECE when ``min_labels_for_accuracy``
  labels have arrived;
* the same statistics per slice value with at least ``min_slice_rows`` rows today (values
  unseen in the reference sample are marked ``new``). Slice statistics are *reported*, with
  flags from the Bonferroni KS and labelled accuracy, but do not change the decision: with
  ~10 slices × 8 columns a per-slice rule would multiply the false alarms, and a shift big
  enough to matter moves the global statistics too.

Rules (most severe wins; every triggered rule is listed in ``reasons`` with its value):

==========  ======================================================================
alert       PSI > psi_alert (model or slice column), or any Bonferroni KS p < ks_alpha,
            or MMD p < mmd_alpha
retrain     PSI of a model column > psi_retrain, or labelled accuracy < accuracy_retrain
rollback    labelled accuracy < accuracy_rollback
==========  ======================================================================
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from roadwork_ml.artifacts import atomic_write_bytes, atomic_write_json
from roadwork_ml.monitoring.drift_stats import bin_shares, embedding_shift, ks, mmd_permutation_test, psi, psi_from_shares
from roadwork_ml.monitoring.inference_log import embedding_matrix
from roadwork_ml.monitoring.performance import estimate_accuracy, labelled_performance
from roadwork_ml.monitoring.reference import MODEL_COLUMNS, ReferenceProfile
from roadwork_ml.monitoring.settings import DriftRules

__all__ = ["DECISION_LEVELS", "DriftReport", "drift_report", "decide", "reference_frame", "evidently_html"]

DECISION_LEVELS = ("ok", "alert", "retrain", "rollback")
_SEVERITY = {name: i for i, name in enumerate(DECISION_LEVELS)}


@dataclass
class DriftReport:
    """Everything measured on one day; ``decision`` in :data:`DECISION_LEVELS`."""

    day: str | None
    n_rows: int
    n_labelled: int
    columns: dict[str, dict[str, float]]
    categories: dict[str, dict[str, Any]]
    mmd: dict[str, Any] | None
    embedding_shift: dict[str, float] | None
    estimated: dict[str, Any]
    labelled: dict[str, Any] | None
    slices: list[dict[str, Any]]
    decision: str
    reasons: list[dict[str, Any]]
    rules: dict[str, Any]
    skipped_slices: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def save_json(self, path: str | Path) -> str:
        """Write :meth:`to_dict` atomically; return its sha256."""
        return atomic_write_json(path, self.to_dict())


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def _labels(log_df: pd.DataFrame) -> np.ndarray:
    return pd.Series(log_df["label"]).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _column_stats(ref_values: np.ndarray, cur_values: np.ndarray, rules: DriftRules, reference: ReferenceProfile | None) -> dict[str, dict[str, float]]:
    """PSI + KS per model column; ``reference`` given = use its full-reference quantile bins."""
    out: dict[str, dict[str, float]] = {}
    for j, col in enumerate(MODEL_COLUMNS):
        r, c = ref_values[:, j], cur_values[:, j]
        if rules.psi_mode == "quantile" and reference is not None and reference.bins == rules.psi_bins:
            value = psi_from_shares(reference.shares[col], bin_shares(c, reference.edges[col]))
        else:
            value = psi(r, c, bins=rules.psi_bins, mode=rules.psi_mode)
        k = ks(r, c)
        out[col] = {"psi": value, "ks_statistic": k.statistic, "ks_p": k.p_value,
                    "ks_p_bonferroni": min(1.0, k.p_value * len(MODEL_COLUMNS))}
    return out


def _category_psi(ref_shares: dict[str, float], cur: pd.Series) -> dict[str, Any]:
    cur_shares = cur.astype(str).value_counts(normalize=True).to_dict()
    keys = sorted(set(ref_shares) | set(cur_shares))
    value = psi_from_shares([ref_shares.get(k, 0.0) for k in keys], [cur_shares.get(k, 0.0) for k in keys])
    return {"psi": value, "new": [k for k in keys if ref_shares.get(k, 0.0) == 0.0],
            "shares": {k: float(cur_shares.get(k, 0.0)) for k in keys}, "reference_shares": {k: float(ref_shares.get(k, 0.0)) for k in keys}}


def _reason(level: str, rule: str, value: float, threshold: float, message: str, column: str | None = None) -> dict[str, Any]:
    return {"level": level, "rule": rule, "column": column, "value": float(value), "threshold": float(threshold), "message": message}


def decide(columns: dict[str, dict[str, float]], categories: dict[str, dict[str, Any]], mmd_p: float | None,
           labelled: dict[str, Any] | None, rules: DriftRules) -> tuple[str, list[dict[str, Any]]]:
    """Apply the rules of the module table; return (decision, reasons)."""
    reasons: list[dict[str, Any]] = []
    for col, s in columns.items():
        if s["psi"] > rules.psi_retrain:
            reasons.append(_reason("retrain", "psi_retrain", s["psi"], rules.psi_retrain, f"PSI of {col} {s['psi']:.3f} > {rules.psi_retrain}", col))
        elif s["psi"] > rules.psi_alert:
            reasons.append(_reason("alert", "psi_alert", s["psi"], rules.psi_alert, f"PSI of {col} {s['psi']:.3f} > {rules.psi_alert}", col))
        if s["ks_p_bonferroni"] < rules.ks_alpha:
            reasons.append(_reason("alert", "ks_alpha", s["ks_p_bonferroni"], rules.ks_alpha,
                                   f"KS of {col}: Bonferroni p {s['ks_p_bonferroni']:.2e} < {rules.ks_alpha} (D = {s['ks_statistic']:.3f})", col))
    for col, s in categories.items():
        if s["psi"] > rules.psi_alert:
            new = f"; new: {s['new']}" if s["new"] else ""
            reasons.append(_reason("alert", "psi_alert", s["psi"], rules.psi_alert, f"PSI of {col} shares {s['psi']:.3f} > {rules.psi_alert}{new}", col))
    if mmd_p is not None and mmd_p < rules.mmd_alpha:
        reasons.append(_reason("alert", "mmd_alpha", mmd_p, rules.mmd_alpha, f"MMD on embeddings: p {mmd_p:.4f} < {rules.mmd_alpha}", "embedding"))
    if labelled is not None and labelled["n"] >= rules.min_labels_for_accuracy:
        acc = labelled["accuracy"]
        if acc < rules.accuracy_rollback:
            reasons.append(_reason("rollback", "accuracy_rollback", acc, rules.accuracy_rollback,
                                   f"labelled accuracy {acc:.3f} < {rules.accuracy_rollback} (n = {labelled['n']})", "label"))
        elif acc < rules.accuracy_retrain:
            reasons.append(_reason("retrain", "accuracy_retrain", acc, rules.accuracy_retrain,
                                   f"labelled accuracy {acc:.3f} < {rules.accuracy_retrain} (n = {labelled['n']})", "label"))
    decision = max((r["level"] for r in reasons), key=_SEVERITY.__getitem__, default="ok")
    return decision, reasons


def _slice_stats(reference: ReferenceProfile, cur_values: np.ndarray, labels: np.ndarray, cur_meta: pd.DataFrame,
                 rules: DriftRules, slice_columns: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, skipped = [], []
    for col in slice_columns:
        if col not in cur_meta.columns:
            raise ValueError(f"slice column {col!r} is not in the inference log")
        ref_col = reference.meta[col].astype(str).to_numpy() if col in reference.meta.columns else None
        cur_col = cur_meta[col].astype(str).to_numpy()
        for value in sorted(set(cur_col.tolist())):
            m = cur_col == value
            if m.sum() < rules.min_slice_rows:
                skipped.append({"column": col, "value": value, "rows": int(m.sum())})
                continue
            entry: dict[str, Any] = {"column": col, "value": value, "rows": int(m.sum())}
            probs = cur_values[m, 0]
            entry["estimated"] = estimate_accuracy(probs).to_dict()
            lab = labelled_performance(probs, labels[m])
            entry["labelled"] = lab.to_dict() if lab is not None and lab.n >= rules.min_labels_for_accuracy else None
            ref_m = (ref_col == value) if ref_col is not None else np.zeros(0, dtype=bool)
            entry["reference_rows"] = int(ref_m.sum())
            entry["new"] = bool(ref_m.sum() == 0)
            flags = []
            if ref_m.sum() >= rules.min_slice_rows:
                entry["columns"] = _column_stats(reference.values[ref_m], cur_values[m], rules, None)
                flags += [f"ks:{c}" for c, s in entry["columns"].items() if s["ks_p_bonferroni"] < rules.ks_alpha]
            else:
                entry["columns"] = None
            if entry["labelled"] is not None:
                if entry["labelled"]["accuracy"] < rules.accuracy_rollback:
                    flags.append("accuracy_rollback")
                elif entry["labelled"]["accuracy"] < rules.accuracy_retrain:
                    flags.append("accuracy_retrain")
            entry["flags"] = flags
            rows.append(entry)
    return rows, skipped


def drift_report(
    reference: ReferenceProfile,
    log_df: pd.DataFrame,
    rules: DriftRules,
    slice_columns: Sequence[str] = ("time_of_day", "weather", "source"),
    seed: int = 0,
    day: str | None = None,
    device: str | None = None,
    max_mmd_rows: int = 5000,
) -> DriftReport:
    """Compare ``log_df`` (one day of :mod:`.inference_log` rows, or any window) with ``reference``.

    ``seed`` drives the MMD permutations and, on days with more than ``max_mmd_rows`` rows,
    the seeded subsample of current embeddings the MMD test sees (its kernel is
    ``(S_mmd + rows)²`` entries); same seed, same report. ``device``: torch device of the
    MMD test (None = CUDA when available).
    """
    missing = [c for c in (*MODEL_COLUMNS, "embedding", "label", *slice_columns) if c not in log_df.columns]
    if missing:
        raise ValueError(f"log_df lacks columns {missing}")
    n = len(log_df)
    if n < 2:
        raise ValueError(f"drift_report needs at least 2 rows of traffic, got {n}")
    cur_values = log_df[list(MODEL_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(cur_values).all():
        raise ValueError("log_df holds non-finite probabilities or features; validate it with inference_log.validate_log")
    labels = _labels(log_df)

    columns = _column_stats(reference.values, cur_values, rules, reference)
    categories = {c: _category_psi(reference.category_shares[c], log_df[c]) for c in slice_columns if c in reference.category_shares}

    emb = embedding_matrix(log_df)
    if emb.shape[1] != reference.embeddings.shape[1]:
        raise ValueError(f"log embeddings are {emb.shape[1]}-d, the reference's are {reference.embeddings.shape[1]}-d: "
                         "project with the reference's PCAProjection")
    emb_mmd = emb if len(emb) <= max_mmd_rows else emb[np.sort(np.random.default_rng(seed).choice(len(emb), max_mmd_rows, replace=False))]
    mmd = mmd_permutation_test(reference.embeddings, emb_mmd, n_permutations=rules.mmd_permutations, sigma=reference.mmd_sigma,
                               seed=seed, device=device).to_dict()
    mmd["rows"] = int(len(emb_mmd))
    shift = embedding_shift(reference.embeddings, emb).to_dict()

    estimated = estimate_accuracy(cur_values[:, 0]).to_dict()
    estimated["reference_accuracy"] = reference.estimated_accuracy
    lab = labelled_performance(cur_values[:, 0], labels)
    labelled = None if lab is None else {**lab.to_dict(), "enough": lab.n >= rules.min_labels_for_accuracy}

    slices, skipped = _slice_stats(reference, cur_values, labels, log_df, rules, slice_columns)
    decision, reasons = decide(columns, categories, mmd["p_value"], labelled, rules)
    return DriftReport(
        day=day, n_rows=n, n_labelled=0 if lab is None else lab.n, columns=columns, categories=categories, mmd=mmd,
        embedding_shift=shift, estimated=estimated, labelled=labelled, slices=slices, decision=decision, reasons=reasons,
        rules=rules.model_dump(), skipped_slices=skipped,
    )


def reference_frame(reference: ReferenceProfile) -> pd.DataFrame:
    """The reference sample as a frame (model columns + slice metadata), e.g. for :func:`evidently_html`."""
    df = pd.DataFrame(reference.values, columns=list(reference.columns))
    for c in reference.meta.columns:
        df[c] = reference.meta[c].to_numpy()
    return df


def evidently_html(reference_df: pd.DataFrame, current_df: pd.DataFrame, path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """Write evidently 0.7's ``DataDriftPreset`` report of ``current_df`` vs ``reference_df`` as one HTML file, atomically.

    ``columns`` default: the columns both frames share, minus list-valued ones (``embedding``).
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if columns is None:
        columns = [c for c in reference_df.columns if c in current_df.columns
                   and not (len(current_df) and isinstance(current_df[c].iloc[0], (list, np.ndarray)))]
    cols = list(columns)
    snapshot = Report([DataDriftPreset(columns=cols)]).run(current_data=current_df[cols].reset_index(drop=True),
                                                          reference_data=reference_df[cols].reset_index(drop=True))
    html = snapshot.get_html_str(as_iframe=False)
    atomic_write_bytes(path, html.encode("utf-8"))
    return Path(path)
