"""One day's drift report and the decision it implies: ok, alert, retrain or rollback.

:func:`drift_report` compares a day of the inference log with the :class:`ReferenceProfile`
through one family of *group-permutation* tests (:mod:`.drift_family`): whole sequences
(the grouping key, :func:`.group_tests.grouping_key`) of the reference and of the day are
permuted together, B = ``rules.permutations`` times, with permutations drawn afresh for
each day from :func:`.group_tests.day_seed` (reproducible, never one fixed set). The family:

* per model column (``prob`` + the 7 uncertainty features): PSI and KS (block-permutation
  KS: the KS distance, its null from permuting sequences);
* per slice column (``time_of_day``, ``weather``, ``source``): PSI of the category shares;
* MMD² on the PCA embeddings (fixed reference bandwidth; whole day sequences subsampled to
  ``max_mmd_rows``);
* with ``min_labels_for_accuracy`` labelled rows on both sides: the relative accuracy drop
  and the ECE increase against the reference's labelled rows.

Holm's correction over *all* of them gives ``p_holm``; a test is significant when
``p_holm <= family_alpha``, so a stable day raises anything with probability <= family_alpha
(the family-wise error of the decision). Effect-size rules fire only with significance:

==========  ======================================================================
alert       significant KS or MMD; significant PSI > psi_alert (model or slice column);
            significant relative labelled-accuracy drop > accuracy_drop_alert
retrain     significant PSI of a model column > psi_retrain; significant ECE increase >
            ece_increase_retrain; labelled accuracy < accuracy_retrain; *covariate shift*:
            significant MMD on the embeddings together with a significant PSI > psi_retrain of
            a slice column's shares (the model sees conditions its reference did not hold in
            that proportion, and its representation moved — the first winter day, before any
            label says so)
rollback    labelled accuracy < accuracy_rollback
==========  ======================================================================

The absolute accuracy floors are policy limits, not tests against the reference, and stay
outside the family. Slice statistics (per time of day, weather, source) are *reported* with
descriptive i.i.d. KS flags and labelled accuracy; they do not change the decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roadwork_ml.artifacts import atomic_write_bytes, atomic_write_json
from roadwork_ml.evaluation.display import format_pvalue
from roadwork_ml.monitoring.cbpe import cbpe, cbpe_reliability
from roadwork_ml.monitoring.drift_family import DriftSample, drift_family, subsample_groups
from roadwork_ml.monitoring.drift_stats import bin_shares, embedding_shift, ks, psi, psi_from_shares
from roadwork_ml.monitoring.group_tests import circular_blocks, day_seed, grouping_key
from roadwork_ml.monitoring.inference_log import embedding_matrix
from roadwork_ml.monitoring.performance import estimate_accuracy, labelled_performance
from roadwork_ml.monitoring.reference import MODEL_COLUMNS, ReferenceProfile
from roadwork_ml.monitoring.settings import DriftRules

__all__ = ["DECISION_LEVELS", "DriftReport", "decide", "drift_report", "evidently_html", "reference_frame"]

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
    family: dict[str, Any] | None = None

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


def _column_stats(
    ref_values: np.ndarray, cur_values: np.ndarray, rules: DriftRules, reference: ReferenceProfile | None
) -> dict[str, dict[str, float]]:
    """PSI + i.i.d. KS per model column (descriptive; the decision uses :func:`drift_family`);
    ``reference`` given = use its full-reference quantile bins."""
    out: dict[str, dict[str, float]] = {}
    for j, col in enumerate(MODEL_COLUMNS):
        r, c = ref_values[:, j], cur_values[:, j]
        if rules.psi_mode == "quantile" and reference is not None and reference.bins == rules.psi_bins:
            value = psi_from_shares(reference.shares[col], bin_shares(c, reference.edges[col]))
        else:
            value = psi(r, c, bins=rules.psi_bins, mode=rules.psi_mode)
        k = ks(r, c)
        out[col] = {
            "psi": value,
            "ks_statistic": k.statistic,
            "ks_p": k.p_value,
            "ks_p_bonferroni": min(1.0, k.p_value * len(MODEL_COLUMNS)),
        }
    return out


def _category_psi(ref_shares: dict[str, float], cur: pd.Series) -> dict[str, Any]:
    cur_shares = cur.astype(str).value_counts(normalize=True).to_dict()
    keys = sorted(set(ref_shares) | set(cur_shares))
    value = psi_from_shares([ref_shares.get(k, 0.0) for k in keys], [cur_shares.get(k, 0.0) for k in keys])
    return {
        "psi": value,
        "new": [k for k in keys if ref_shares.get(k, 0.0) == 0.0],
        "shares": {k: float(cur_shares.get(k, 0.0)) for k in keys},
        "reference_shares": {k: float(ref_shares.get(k, 0.0)) for k in keys},
    }


def _reason(
    level: str, rule: str, value: float, threshold: float, message: str, column: str | None = None
) -> dict[str, Any]:
    return {
        "level": level,
        "rule": rule,
        "column": column,
        "value": float(value),
        "threshold": float(threshold),
        "message": message,
    }


def decide(
    columns: dict[str, dict[str, Any]],
    categories: dict[str, dict[str, Any]],
    mmd: dict[str, Any] | None,
    labelled: dict[str, Any] | None,
    rules: DriftRules,
) -> tuple[str, list[dict[str, Any]]]:
    """Apply the rules of the module table; return (decision, reasons).

    ``columns[col]``: ``psi``, ``psi_p_holm``, ``ks_statistic``, ``ks_p_holm``; ``categories[col]``:
    ``psi``, ``p_holm``; ``mmd``: ``p_value``, ``p_holm``; ``labelled``: ``accuracy``, ``n`` and, when
    tested, ``accuracy_drop`` / ``accuracy_drop_p_holm`` / ``ece_increase`` / ``ece_increase_p_holm``.
    A missing ``*_p_holm`` counts as not significant.
    """
    a = rules.family_alpha
    sig = lambda d, k: d.get(k) is not None and d[k] <= a
    reasons: list[dict[str, Any]] = []
    for col, s in columns.items():
        if sig(s, "psi_p_holm"):
            if s["psi"] > rules.psi_retrain:
                reasons.append(
                    _reason(
                        "retrain",
                        "psi_retrain",
                        s["psi"],
                        rules.psi_retrain,
                        f"PSI of {col} {s['psi']:.3f} > {rules.psi_retrain} (Holm p {format_pvalue(s['psi_p_holm'])})",
                        col,
                    )
                )
            elif s["psi"] > rules.psi_alert:
                reasons.append(
                    _reason(
                        "alert",
                        "psi_alert",
                        s["psi"],
                        rules.psi_alert,
                        f"PSI of {col} {s['psi']:.3f} > {rules.psi_alert} (Holm p {format_pvalue(s['psi_p_holm'])})",
                        col,
                    )
                )
        if sig(s, "ks_p_holm"):
            reasons.append(
                _reason(
                    "alert",
                    "ks",
                    s["ks_p_holm"],
                    a,
                    f"KS of {col}: Holm p {format_pvalue(s['ks_p_holm'])} <= {a} (D = {s['ks_statistic']:.3f}, sequences permuted)",
                    col,
                )
            )
    for col, s in categories.items():
        if s["psi"] > rules.psi_alert and sig(s, "p_holm"):
            new = f"; new: {s['new']}" if s["new"] else ""
            reasons.append(
                _reason(
                    "alert",
                    "psi_alert",
                    s["psi"],
                    rules.psi_alert,
                    f"PSI of {col} shares {s['psi']:.3f} > {rules.psi_alert} (Holm p {format_pvalue(s['p_holm'])}){new}",
                    col,
                )
            )
    if mmd is not None and sig(mmd, "p_holm"):
        for col, s in categories.items():
            if s["psi"] > rules.psi_retrain and sig(s, "p_holm"):
                reasons.append(
                    _reason(
                        "retrain",
                        "covariate_shift",
                        s["psi"],
                        rules.psi_retrain,
                        f"covariate shift: {col} shares PSI {s['psi']:.3f} > {rules.psi_retrain} (Holm p {format_pvalue(s['p_holm'])}) "
                        f"and the embeddings moved (MMD Holm p {format_pvalue(mmd['p_holm'])})",
                        col,
                    )
                )
        reasons.append(
            _reason(
                "alert",
                "mmd",
                mmd["p_holm"],
                a,
                f"MMD on embeddings: Holm p {format_pvalue(mmd['p_holm'])} <= {a} (sequences permuted)",
                "embedding",
            )
        )
    if labelled is not None and labelled["n"] >= rules.min_labels_for_accuracy:
        acc = labelled["accuracy"]
        if acc < rules.accuracy_rollback:
            reasons.append(
                _reason(
                    "rollback",
                    "accuracy_rollback",
                    acc,
                    rules.accuracy_rollback,
                    f"labelled accuracy {acc:.3f} < {rules.accuracy_rollback} (n = {labelled['n']})",
                    "label",
                )
            )
        elif acc < rules.accuracy_retrain:
            reasons.append(
                _reason(
                    "retrain",
                    "accuracy_retrain",
                    acc,
                    rules.accuracy_retrain,
                    f"labelled accuracy {acc:.3f} < {rules.accuracy_retrain} (n = {labelled['n']})",
                    "label",
                )
            )
        if (
            labelled.get("ece_increase") is not None
            and labelled["ece_increase"] > rules.ece_increase_retrain
            and sig(labelled, "ece_increase_p_holm")
        ):
            reasons.append(
                _reason(
                    "retrain",
                    "ece_increase",
                    labelled["ece_increase"],
                    rules.ece_increase_retrain,
                    f"labelled ECE {labelled['ece']:.3f} is {labelled['ece_increase']:.3f} above the reference's (> {rules.ece_increase_retrain}, Holm p {format_pvalue(labelled['ece_increase_p_holm'])})",
                    "label",
                )
            )
        if (
            labelled.get("accuracy_drop") is not None
            and labelled["accuracy_drop"] > rules.accuracy_drop_alert
            and sig(labelled, "accuracy_drop_p_holm")
        ):
            reasons.append(
                _reason(
                    "alert",
                    "accuracy_drop",
                    labelled["accuracy_drop"],
                    rules.accuracy_drop_alert,
                    f"labelled accuracy {acc:.3f} is {100 * labelled['accuracy_drop']:.1f} % below the reference's (> {100 * rules.accuracy_drop_alert:.0f} %, Holm p {format_pvalue(labelled['accuracy_drop_p_holm'])})",
                    "label",
                )
            )
    decision = max((r["level"] for r in reasons), key=_SEVERITY.__getitem__, default="ok")
    return decision, reasons


def _slice_stats(
    reference: ReferenceProfile,
    cur_values: np.ndarray,
    labels: np.ndarray,
    cur_meta: pd.DataFrame,
    rules: DriftRules,
    slice_columns: Sequence[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
                flags += [f"ks:{c}" for c, s in entry["columns"].items() if s["ks_p_bonferroni"] < rules.family_alpha]
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


def reference_sample(reference: ReferenceProfile, slice_columns: Sequence[str]) -> DriftSample:
    """The reference side of the family; a profile without groups (reference_profile/1) gets
    circular blocks of its kept rows (the rows were kept in their original order)."""
    groups = (
        reference.groups
        if reference.groups is not None
        else circular_blocks(len(reference.values), reference.seed).astype(str)
    )
    emb_groups = reference.embedding_groups
    if emb_groups is None:
        emb_groups = (
            "emb-" + pd.Series(circular_blocks(len(reference.embeddings), reference.seed)).astype(str)
        ).to_numpy(dtype=object)
    cats = {c: reference.meta[c].astype(str).to_numpy() for c in slice_columns if c in reference.meta.columns}
    return DriftSample(
        values=reference.values,
        groups=np.asarray(groups, dtype=object),
        embeddings=np.asarray(reference.embeddings, dtype=np.float64),
        embedding_groups=np.asarray(emb_groups, dtype=object),
        categories=cats,
        labels=None if reference.labels is None else reference.labels.astype(np.float64),
    )


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

    The permutations are seeded by :func:`day_seed` ``(seed, day)``: same day, same report;
    another day, other permutations. On days with more than ``max_mmd_rows`` rows the MMD
    sees a seeded subsample of whole day sequences (its kernel is ``(S_mmd + rows)²`` entries).
    ``device`` is accepted for compatibility and unused (the family runs on group sums in numpy).
    """
    del device
    missing = [c for c in (*MODEL_COLUMNS, "embedding", "label", *slice_columns) if c not in log_df.columns]
    if missing:
        raise ValueError(f"log_df lacks columns {missing}")
    n = len(log_df)
    if n < 2:
        raise ValueError(f"drift_report needs at least 2 rows of traffic, got {n}")
    cur_values = log_df[list(MODEL_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(cur_values).all():
        raise ValueError(
            "log_df holds non-finite probabilities or features; validate it with inference_log.validate_log"
        )
    labels = _labels(log_df)
    rseed = day_seed(day, seed)
    groups, group_kind = grouping_key(
        log_df.reset_index(drop=True), seed=rseed, window_minutes=rules.group_window_minutes
    )

    emb = embedding_matrix(log_df)
    if emb.shape[1] != reference.embeddings.shape[1]:
        raise ValueError(
            f"log embeddings are {emb.shape[1]}-d, the reference's are {reference.embeddings.shape[1]}-d: "
            "project with the reference's PCAProjection"
        )
    mmd_rows = subsample_groups(groups, max_mmd_rows, rseed)
    present = [c for c in slice_columns if c in reference.category_shares]
    day_sample = DriftSample(
        values=cur_values,
        groups=groups,
        embeddings=emb[mmd_rows].astype(np.float64),
        embedding_groups=groups[mmd_rows],
        categories={c: log_df[c].astype(str).to_numpy() for c in present},
        labels=labels,
    )
    fam = drift_family(
        reference_sample(reference, present),
        day_sample,
        MODEL_COLUMNS,
        reference.edges,
        reference.mmd_sigma,
        rules.permutations,
        rseed,
        rules.family_alpha,
        min_labels=rules.min_labels_for_accuracy,
    )
    t = fam.tests

    columns = _column_stats(reference.values, cur_values, rules, reference)
    for col, s in columns.items():
        s.pop("ks_p_bonferroni")
        s["ks_p_iid"] = s.pop("ks_p")  # scipy's i.i.d. p, descriptive only: rows of a sequence are not independent
        s.update(
            {
                "ks_p": t[f"ks:{col}"]["p_value"],
                "ks_p_holm": t[f"ks:{col}"]["p_holm"],
                "psi_p": t[f"psi:{col}"]["p_value"],
                "psi_p_holm": t[f"psi:{col}"]["p_holm"],
            }
        )
    categories = {c: _category_psi(reference.category_shares[c], log_df[c]) for c in present}
    for c, s in categories.items():
        test = t.get(f"psi:{c}")
        s["p"], s["p_holm"] = (test["p_value"], test["p_holm"]) if test else (None, None)
    mmd = None
    if "mmd" in t:
        mmd = {
            "statistic": t["mmd"]["statistic"],
            "p_value": t["mmd"]["p_value"],
            "p_holm": t["mmd"]["p_holm"],
            "sigma": reference.mmd_sigma,
            "n_permutations": rules.permutations,
            "rows": len(mmd_rows),
        }
    shift = embedding_shift(reference.embeddings, emb).to_dict()

    estimated = estimate_accuracy(cur_values[:, 0]).to_dict()
    estimated["reference_accuracy"] = reference.estimated_accuracy
    # CBPE (accuracy, F1, MCC + sampling interval); its reliability flag is reported, not a rule:
    # it is a test outside the Holm family (the family's ECE-increase test carries the decision).
    est = cbpe(cur_values[:, 0], n_draws=200, seed=rseed)
    estimated["cbpe"] = cbpe_reliability(
        est, cur_values[:, 0], labels, min_labels=rules.min_labels_for_accuracy, seed=rseed
    ).to_dict()
    lab = labelled_performance(cur_values[:, 0], labels)
    labelled = None if lab is None else {**lab.to_dict(), "enough": lab.n >= rules.min_labels_for_accuracy}
    if labelled is not None:
        ref_lab = (
            None
            if reference.labels is None
            else labelled_performance(reference.values[:, 0], reference.labels.astype(np.float64))
        )
        labelled["reference_accuracy"] = None if ref_lab is None else ref_lab.accuracy
        labelled["reference_ece"] = None if ref_lab is None else ref_lab.ece
        for k in ("accuracy_drop", "ece_increase"):
            labelled[k] = t[k]["statistic"] if k in t else None
            labelled[f"{k}_p_holm"] = t[k]["p_holm"] if k in t else None

    slices, skipped = _slice_stats(reference, cur_values, labels, log_df, rules, slice_columns)
    decision, reasons = decide(columns, categories, mmd, labelled, rules)
    family = {**fam.to_dict(), "grouping": {"day": group_kind, "reference": reference.group_kind or "circular_block"}}
    return DriftReport(
        day=day,
        n_rows=n,
        n_labelled=0 if lab is None else lab.n,
        columns=columns,
        categories=categories,
        mmd=mmd,
        embedding_shift=shift,
        estimated=estimated,
        labelled=labelled,
        slices=slices,
        decision=decision,
        reasons=reasons,
        rules=rules.model_dump(),
        skipped_slices=skipped,
        family=family,
    )


def reference_frame(reference: ReferenceProfile) -> pd.DataFrame:
    """The reference sample as a frame (model columns + slice metadata), e.g. for :func:`evidently_html`."""
    df = pd.DataFrame(reference.values, columns=list(reference.columns))
    for c in reference.meta.columns:
        df[c] = reference.meta[c].to_numpy()
    return df


def _snap_float_noise(
    reference_df: pd.DataFrame, current_df: pd.DataFrame, digits: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames with every float column rounded to ``digits`` significant digits of the
    column's largest magnitude (over both frames), index reset.

    Evidently histograms each column into 10 bins over its range; a column whose values differ
    only in the last bits (a saturated probability: 1.0 and 1.0 + 2e-16) has a range too small
    for 10 finite bins, and numpy refuses. Differences below float32's precision carry no drift,
    so they are rounded away: the column becomes constant, which Evidently handles."""
    ref, cur = reference_df.reset_index(drop=True).copy(), current_df.reset_index(drop=True).copy()
    for c in ref.columns:
        if not (pd.api.types.is_float_dtype(ref[c]) and pd.api.types.is_float_dtype(cur[c])):
            continue
        scale = np.nanmax(np.abs(np.r_[ref[c].to_numpy(), cur[c].to_numpy()]), initial=0.0)
        if np.isfinite(scale) and scale > 0:
            unit = 10.0 ** (np.floor(np.log10(scale)) - digits + 1)
            ref[c], cur[c] = (ref[c] / unit).round() * unit, (cur[c] / unit).round() * unit
    return ref, cur


def evidently_html(
    reference_df: pd.DataFrame, current_df: pd.DataFrame, path: str | Path, columns: Sequence[str] | None = None
) -> Path:
    """Write evidently 0.7's ``DataDriftPreset`` report of ``current_df`` vs ``reference_df`` as one HTML file, atomically.

    ``columns`` default: the columns both frames share, minus list-valued ones (``embedding``).
    """
    from evidently import Report
    from evidently.presets import DataDriftPreset

    if columns is None:
        columns = [
            c
            for c in reference_df.columns
            if c in current_df.columns
            and not (len(current_df) and isinstance(current_df[c].iloc[0], (list, np.ndarray)))
        ]
    cols = list(columns)
    ref, cur = _snap_float_noise(reference_df[cols], current_df[cols])
    snapshot = Report([DataDriftPreset(columns=cols)]).run(current_data=cur, reference_data=ref)
    html = snapshot.get_html_str(as_iframe=False)
    atomic_write_bytes(path, html.encode("utf-8"))
    return Path(path)
