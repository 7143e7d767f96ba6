"""What a drift report shows a person: whether the labelled-accuracy rule could be applied
(and how many more labels it needs), and the per-slice table with the labelled counts the log
has even where they are too few for the accuracy rule.

Pure functions over a ``DriftReport``'s fields and the day's inference log; no statistics are
recomputed here beyond counting labels and, for slices with enough of them, their accuracy
as the report itself recorded it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def labelled_mask(log_df: pd.DataFrame) -> np.ndarray:
    """[N] bool: rows of the inference log that carry a label (``label`` >= 0; -1 / NaN = none)."""
    if "label" not in log_df.columns:
        return np.zeros(len(log_df), dtype=bool)
    return log_df["label"].fillna(-1).astype(int).to_numpy() >= 0


def accuracy_rule_note(n_labelled: int, min_labels: int, labelled: Mapping[str, Any] | None) -> str:
    """One sentence: was the labelled-accuracy rule applied today, and if not, why and what
    it needs (``12 labelled rows, the rule needs 50: 38 more``)."""
    if n_labelled >= min_labels and labelled is not None:
        return f"applied: labelled accuracy {float(labelled['accuracy']):.3f} on {n_labelled} labelled rows (needs ≥ {min_labels})"
    if n_labelled == 0:
        return f"not applied: no labelled rows today; the rule needs {min_labels}"
    return (
        f"not applied: {n_labelled} labelled row{'s' if n_labelled != 1 else ''} today, "
        f"the rule needs {min_labels} ({min_labels - n_labelled} more)"
    )


SLICE_COLUMNS_ORDER = (
    "slice",
    "value",
    "rows",
    "reference_rows",
    "labelled_rows",
    "labels_needed",
    "labelled_accuracy",
    "estimated_accuracy",
    "new",
    "flags",
)


def slice_table(slices: Sequence[Mapping[str, Any]], log_df: pd.DataFrame, min_labels: int) -> list[dict[str, Any]]:
    """One row per reported slice, columns in :data:`SLICE_COLUMNS_ORDER`: its labelled count
    from the log (always filled), ``labels_needed`` (0 once the accuracy rule applies to the
    slice), labelled accuracy where the report computed it (None = too few labels), the
    label-free estimate and the slice's flags."""
    has_label = labelled_mask(log_df)
    rows = []
    for s in slices:
        column, value = str(s["column"]), str(s["value"])
        if column in log_df.columns:
            n_lab = int((has_label & (log_df[column].astype(str).to_numpy() == value)).sum())
        else:
            n_lab = 0
        lab = s.get("labelled")
        est = s.get("estimated") or {}
        rows.append(
            {
                "slice": column,
                "value": value,
                "rows": int(s.get("rows", 0)),
                "reference_rows": s.get("reference_rows"),
                "labelled_rows": n_lab,
                "labels_needed": max(0, min_labels - n_lab),
                "labelled_accuracy": float(lab["accuracy"]) if lab else None,
                "estimated_accuracy": float(est["accuracy"]) if "accuracy" in est else None,
                "new": bool(s.get("new", False)),
                "flags": ", ".join(s.get("flags") or []) or "none",
            }
        )
    return rows
