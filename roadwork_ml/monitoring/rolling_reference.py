"""A rolling drift reference: the last ``rolling_days`` of *accepted* production traffic.

An option beside the fixed reference (the champion's VAL_CALIB outputs): it follows slow,
accepted change (seasons) so only the new is flagged. Its leakage rules
(:class:`~roadwork_ml.contracts.Purpose` ``MONITOR_ROLLING_REFERENCE``, which no dataset split
may serve) are enforced by :func:`select_rolling_rows`, each with the count of rows it removed:

1. **window**: only days ``day - rolling_days .. day - 1``: never the day under test, nothing later;
2. **accepted**: only days whose drift decision was ``ok``; a drifted day never becomes "normal"
   (else a persistent shift would be absorbed within a week and never acted on);
3. **same model**: only rows scored by ``model_version`` (the champion that serves the day): a
   reference describes one model's outputs;
4. **not trained on**: no image id the model was fitted or calibrated on (a drift retrain adds
   labelled production images to TRAIN; their outputs are in-sample and over-confident);
5. **enough**: at least ``min_rows`` rows and ``min_days`` accepted days, else the caller keeps
   the fixed reference and says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import pandas as pd

from roadwork_ml.contracts import LeakageError, Purpose
from roadwork_ml.monitoring.inference_log import embedding_matrix
from roadwork_ml.monitoring.projection import PCAProjection
from roadwork_ml.monitoring.reference import SLICE_COLUMNS, ReferenceProfile
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

__all__ = ["RollingSelection", "assert_rolling_reference_clean", "build_rolling_profile", "select_rolling_rows"]

PURPOSE = Purpose.MONITOR_ROLLING_REFERENCE


@dataclass
class RollingSelection:
    """Rows kept for the rolling reference and what each rule removed (for the report)."""

    rows: pd.DataFrame
    days_used: list[str]
    removed: dict[str, int] = field(default_factory=dict)
    usable: bool = False
    reason: str = ""

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        d["n_rows"] = len(self.rows)
        return d


def select_rolling_rows(
    log: pd.DataFrame,
    day: date,
    decisions: Mapping[str, str],
    model_version: str,
    trained_ids: Iterable[str] = (),
    rolling_days: int = 7,
    min_rows: int = 200,
    min_days: int = 3,
) -> RollingSelection:
    """Apply the module's rules to ``log`` (inference-log rows of past days with a ``day`` column,
    ISO dates) for testing ``day``; ``decisions``: ISO day -> drift decision of that day."""
    if rolling_days < 1:
        raise ValueError(f"rolling_days must be >= 1, got {rolling_days}")
    if "day" not in log.columns:
        raise ValueError("log needs a 'day' column (ISO date of each row)")
    removed: dict[str, int] = {}
    start = (day - timedelta(days=rolling_days)).isoformat()
    in_window = (log["day"] >= start) & (log["day"] < day.isoformat())
    removed["outside_window"] = int((~in_window).sum())
    rows = log[in_window]
    accepted = rows["day"].map(lambda d: decisions.get(d) == "ok")
    removed["day_not_accepted"] = int((~accepted).sum())
    rows = rows[accepted]
    same = rows["model_version"].astype(str) == str(model_version)
    removed["other_model_version"] = int((~same).sum())
    rows = rows[same]
    trained = rows["image_id"].astype(str).isin(set(map(str, trained_ids)))
    removed["trained_on"] = int(trained.sum())
    rows = rows[~trained].reset_index(drop=True)
    days_used = sorted(rows["day"].unique().tolist())
    sel = RollingSelection(rows=rows, days_used=days_used, removed=removed)
    if len(rows) < min_rows or len(days_used) < min_days:
        sel.reason = f"{len(rows)} rows over {len(days_used)} accepted days (need {min_rows} rows, {min_days} days): keep the fixed reference"
        return sel
    sel.usable, sel.reason = (
        True,
        f"{len(rows)} rows of {len(days_used)} accepted days before {day.isoformat()}, model {model_version}",
    )
    assert_rolling_reference_clean(rows, day, decisions, model_version, trained_ids)
    return sel


def assert_rolling_reference_clean(
    rows: pd.DataFrame, day: date, decisions: Mapping[str, str], model_version: str, trained_ids: Iterable[str] = ()
) -> None:
    """Raise :class:`LeakageError` if ``rows`` break any rule (e.g. a reference built elsewhere)."""
    bad = []
    if (rows["day"] >= day.isoformat()).any():
        bad.append(
            f"rows from {sorted(rows.loc[rows['day'] >= day.isoformat(), 'day'].unique())[:3]} (not before {day})"
        )
    not_ok = sorted({d for d in rows["day"].unique() if decisions.get(d) != "ok"})
    if not_ok:
        bad.append(f"days not accepted: {not_ok[:3]}")
    if (rows["model_version"].astype(str) != str(model_version)).any():
        bad.append(f"rows of other model versions than {model_version}")
    leaked = rows["image_id"].astype(str).isin(set(map(str, trained_ids)))
    if leaked.any():
        bad.append(f"{int(leaked.sum())} images the model was trained on")
    if bad:
        raise LeakageError(f"{PURPOSE.value}: " + "; ".join(bad))


def build_rolling_profile(
    selection: RollingSelection,
    projection: PCAProjection | None,
    bins: int = 10,
    max_samples: int = 5000,
    mmd_samples: int = 1000,
    seed: int = 0,
) -> ReferenceProfile:
    """The :class:`ReferenceProfile` of a usable selection (its logged probabilities, features,
    projected embeddings, slice metadata, sequence ids and arrived labels)."""
    if not selection.usable:
        raise ValueError(f"rolling reference not usable: {selection.reason}")
    rows = selection.rows
    labels = pd.Series(rows["label"]).astype("Float64").fillna(-1).astype(int).to_numpy()
    meta = rows[list(SLICE_COLUMNS)].copy()
    if "sequence_id" in rows.columns:
        meta["sequence_id"] = rows["sequence_id"]
    return ReferenceProfile.build(
        rows["prob"].to_numpy(),
        rows[list(FEATURE_NAMES)].to_numpy(),
        embedding_matrix(rows),
        meta,
        bins=bins,
        max_samples=max_samples,
        mmd_samples=mmd_samples,
        seed=seed,
        labels=labels,
        projection=projection,
    )
