"""The production inference log: one validated Parquet file per day.

Layout: ``<root>/day=YYYY-MM-DD/log.parquet`` (:func:`day_path`). A day's file is written
whole and atomically (temp file + rename), so rerunning a day *replaces* it: a row is
never appended twice. Reading a date range (:func:`read_log_range`) de-duplicates by
``image_id`` (the row from the latest day wins) and reports what it read and dropped.

Columns (:func:`log_schema`; one row per served image):

==========================  ===================================  =============================================
column                      arrow type                           meaning
==========================  ===================================  =============================================
timestamp                   timestamp[us, tz=UTC], not null      when the image was scored
image_id                    string, not null, unique per file    stable id of the image
source, camera_id           string, not null                     where the image came from
model_version               string, not null                     bundle that scored it
prob                        float64, not null                    calibrated P(roadwork) in [0, 1]
decision                    string, not null                     "roadwork" | "no_roadwork" | "defer"
<7 uncertainty features>    float64, not null                    :data:`~roadwork_ml.policy.uncertainty.FEATURE_NAMES`
embedding                   fixed_size_list<float32>[k]          PCA-projected embedding (:mod:`.projection`)
hour                        int8, not null                       0..23, -1 unknown
time_of_day, weather        string, not null                     slice metadata (records.time_of_day, WEATHERS)
label                       int8, nullable                       0 / 1 once the label arrives, else null
sequence_id                 string, nullable                     drive / burst the frame belongs to (grouping key
                                                                 of the drift tests); null = unknown
==========================  ===================================  =============================================

Schema ``inference_log/2`` added ``sequence_id``; files of ``inference_log/1`` still read
(their ``sequence_id`` is null) and a frame without the column is written with nulls.

In pandas (what :func:`read_log` returns and :func:`write_log` takes) ``timestamp`` is
``datetime64[ns, UTC]``, ``label`` is nullable ``Int8`` (``-1`` is accepted on write and
stored as null) and ``embedding`` holds one float32 ``[k]`` array per row
(:func:`embedding_matrix` stacks them to ``[N, k]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from roadwork_ml.artifacts import atomic_path
from roadwork_ml.data.records import validate_table
from roadwork_ml.policy.uncertainty import FEATURE_NAMES, NUM_FEATURES

__all__ = [
    "DECISIONS",
    "LOG_SCHEMA_NAME",
    "LogValidationError",
    "LogRangeStats",
    "log_schema",
    "build_log",
    "validate_log",
    "write_log",
    "read_log",
    "day_path",
    "read_log_range",
    "merge_labels",
    "embedding_matrix",
    "log_columns",
]

DECISIONS = ("roadwork", "no_roadwork", "defer")
LOG_SCHEMA_NAME = "inference_log/2"
_READABLE_SCHEMAS = ("inference_log/1", LOG_SCHEMA_NAME)
_STRING_COLUMNS = ("image_id", "source", "camera_id", "model_version", "decision", "time_of_day", "weather")


class LogValidationError(ValueError):
    """An inference-log frame or file breaks the schema; the message names the column and rows."""


def log_columns() -> list[str]:
    """Column names in schema order."""
    return (
        ["timestamp", "image_id", "source", "camera_id", "model_version", "prob", "decision"]
        + list(FEATURE_NAMES)
        + ["embedding", "hour", "time_of_day", "weather", "label", "sequence_id"]
    )


def log_schema(embedding_dim: int) -> pa.Schema:
    """The declared arrow schema of a day's log with ``embedding_dim``-wide embeddings."""
    if embedding_dim < 1:
        raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
    fields = [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("camera_id", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("prob", pa.float64(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        *[pa.field(name, pa.float64(), nullable=False) for name in FEATURE_NAMES],
        pa.field("embedding", pa.list_(pa.float32(), embedding_dim), nullable=False),
        pa.field("hour", pa.int8(), nullable=False),
        pa.field("time_of_day", pa.string(), nullable=False),
        pa.field("weather", pa.string(), nullable=False),
        pa.field("label", pa.int8(), nullable=True),
        pa.field("sequence_id", pa.string(), nullable=True),
    ]
    return pa.schema(
        fields, metadata={"roadwork.schema": LOG_SCHEMA_NAME, "roadwork.embedding_dim": str(embedding_dim)}
    )


def build_log(
    timestamps: Any,
    image_ids: Sequence[str],
    sources: Sequence[str],
    camera_ids: Sequence[str],
    model_version: str,
    probs: Any,
    decisions: Sequence[str],
    features: Any,
    embeddings: Any,
    hours: Any,
    times_of_day: Sequence[str],
    weathers: Sequence[str],
    labels: Any = None,
    sequence_ids: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """Assemble a log frame from arrays: ``probs`` [N], ``features`` [N, 7], ``embeddings`` [N, k];
    ``labels`` [N] with -1 for "not yet" (or None = no labels); ``sequence_ids`` [N] (None = unknown)."""
    feats = np.asarray(features, dtype=np.float64)
    emb = np.asarray(embeddings, dtype=np.float32)
    n = len(image_ids)
    if feats.shape != (n, NUM_FEATURES):
        raise LogValidationError(f"features must be [{n}, {NUM_FEATURES}], got {list(feats.shape)}")
    if emb.ndim != 2 or emb.shape[0] != n:
        raise LogValidationError(f"embeddings must be [{n}, k], got {list(emb.shape)}")
    df = pd.DataFrame(
        {
            "timestamp": _utc(pd.Series(pd.to_datetime(timestamps, utc=True))),
            "image_id": list(image_ids),
            "source": list(sources),
            "camera_id": list(camera_ids),
            "model_version": [model_version] * n,
            "prob": np.asarray(probs, dtype=np.float64),
            "decision": list(decisions),
        }
    )
    for j, name in enumerate(FEATURE_NAMES):
        df[name] = feats[:, j]
    df["embedding"] = list(emb)
    df["hour"] = np.asarray(hours, dtype=np.int64)
    df["time_of_day"] = list(times_of_day)
    df["weather"] = list(weathers)
    lab = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    df["label"] = _nullable_labels(lab.astype(np.float64))
    if sequence_ids is not None and len(sequence_ids) != n:
        raise LogValidationError(f"sequence_ids must have {n} entries, got {len(sequence_ids)}")
    df["sequence_id"] = pd.array(
        [None] * n if sequence_ids is None else [None if v is None else str(v) for v in sequence_ids], dtype="string"
    )
    return df


def _utc(ts: pd.Series) -> pd.Series:
    """One timestamp dtype everywhere (``datetime64[ns, UTC]``, stdlib UTC), so frames concatenate."""
    return ts.dt.tz_convert(UTC).dt.as_unit("ns")


def _nullable_labels(values: np.ndarray) -> pd.arrays.IntegerArray:
    """float ``[N]`` with 0 / 1 / -1 / NaN → nullable Int8 (-1 and NaN become <NA>)."""
    missing = np.isnan(values) | (values == -1)
    bad = ~missing & ~np.isin(values, (0.0, 1.0))
    if bad.any():
        raise LogValidationError(
            f"label must be 0, 1, -1 or null; {int(bad.sum())} rows hold {sorted(set(values[bad].tolist()))[:5]}"
        )
    return pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int8), missing)


def _label_array(col: pd.Series) -> pa.Array:
    try:
        values = pd.Series(col).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise LogValidationError(f"label must be 0, 1, -1 or null: {err}") from None
    return pa.array(_nullable_labels(values), type=pa.int8())


def _to_table(df: pd.DataFrame) -> pa.Table:
    """Validate ``df`` and convert it to an arrow table of :func:`log_schema`."""
    if "sequence_id" not in df.columns:  # frames built before inference_log/2
        df = df.assign(sequence_id=pd.array([None] * len(df), dtype="string"))
    missing = [c for c in log_columns() if c not in df.columns]
    extra = [c for c in df.columns if c not in log_columns()]
    if missing or extra:
        raise LogValidationError(
            f"inference log columns: missing {missing}, unexpected {extra}; expected {log_columns()}"
        )
    n = len(df)
    if n == 0:
        raise LogValidationError("inference log frame is empty: a day without traffic writes no file")
    for c in _STRING_COLUMNS:
        nulls = int(df[c].isna().sum())
        if nulls:
            raise LogValidationError(f"column {c!r} has {nulls} nulls")
    ids = df["image_id"].astype(str)
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        raise LogValidationError(
            f"image_id must be unique within a day; {dup.nunique()} ids repeat, e.g. {sorted(dup.unique())[:3]}"
        )
    prob = pd.to_numeric(df["prob"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(prob) | (prob < 0) | (prob > 1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise LogValidationError(
            f"prob must be finite and in [0, 1]; {int(bad.sum())} rows are not (rows {rows}, values {prob[rows].tolist()})"
        )
    dec = df["decision"].astype(str)
    bad_dec = ~dec.isin(DECISIONS)
    if bad_dec.any():
        raise LogValidationError(
            f"decision must be one of {DECISIONS}; got {sorted(dec[bad_dec].unique())[:5]} in {int(bad_dec.sum())} rows"
        )
    feats = {}
    for name in FEATURE_NAMES:
        v = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(v).all():
            raise LogValidationError(f"feature column {name!r} holds {int((~np.isfinite(v)).sum())} non-finite values")
        feats[name] = v
    try:
        emb = np.stack([np.asarray(e, dtype=np.float32) for e in df["embedding"]])
    except ValueError as err:
        raise LogValidationError(f"embedding rows must all have the same length: {err}") from None
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise LogValidationError(f"embedding must be one [k] vector per row, got stacked shape {list(emb.shape)}")
    if not np.isfinite(emb).all():
        raise LogValidationError(
            f"embedding holds non-finite values in {int((~np.isfinite(emb)).any(axis=1).sum())} rows"
        )
    ts = df["timestamp"]
    if ts.dtype == object and len(ts) and all(isinstance(t, pd.Timestamp) and t.tzinfo is not None for t in ts):
        ts = pd.to_datetime(ts, utc=True)  # tz-aware Timestamps whose zones differ (e.g. after a concat)
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise LogValidationError(
            f"timestamp must be timezone-aware (UTC), got dtype {ts.dtype}; use pd.to_datetime(..., utc=True)"
        )
    if ts.isna().any():
        raise LogValidationError(f"timestamp has {int(ts.isna().sum())} nulls")
    hour = pd.to_numeric(df["hour"], errors="coerce")
    if hour.isna().any() or ((hour < -1) | (hour > 23)).any():
        raise LogValidationError("hour must be an integer in 0..23 (or -1 for unknown)")
    schema = log_schema(emb.shape[1])
    cols = {
        "timestamp": pa.array(ts.dt.tz_convert("UTC"), type=pa.timestamp("us", tz="UTC")),
        "image_id": pa.array(ids.to_numpy(), type=pa.string()),
        "source": pa.array(df["source"].astype(str).to_numpy(), type=pa.string()),
        "camera_id": pa.array(df["camera_id"].astype(str).to_numpy(), type=pa.string()),
        "model_version": pa.array(df["model_version"].astype(str).to_numpy(), type=pa.string()),
        "prob": pa.array(prob, type=pa.float64()),
        "decision": pa.array(dec.to_numpy(), type=pa.string()),
        **{name: pa.array(v, type=pa.float64()) for name, v in feats.items()},
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), emb.shape[1]),
        "hour": pa.array(hour.to_numpy(dtype=np.int64).astype(np.int8), type=pa.int8()),
        "time_of_day": pa.array(df["time_of_day"].astype(str).to_numpy(), type=pa.string()),
        "weather": pa.array(df["weather"].astype(str).to_numpy(), type=pa.string()),
        "label": _label_array(df["label"]),
        "sequence_id": pa.array(
            pd.Series(df["sequence_id"], dtype="string").to_numpy(dtype=object, na_value=None), type=pa.string()
        ),
    }
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


def validate_log(df: pd.DataFrame) -> None:
    """Raise :class:`LogValidationError` if ``df`` does not fit :func:`log_schema` (see module notes)."""
    _to_table(df)


def write_log(path: str | Path, df: pd.DataFrame) -> Path:
    """Validate ``df`` and write it atomically to ``path``, replacing a previous file of that day."""
    table = _to_table(df)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_log(path: str | Path) -> pd.DataFrame:
    """Read and re-validate one day's log; see module notes for the pandas dtypes."""
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if meta.get(b"roadwork.schema", b"").decode() not in _READABLE_SCHEMAS:
        raise LogValidationError(f"{path} is not a roadwork inference log (schema {meta.get(b'roadwork.schema')!r})")
    k = int(meta[b"roadwork.embedding_dim"])
    if "sequence_id" not in table.column_names:  # inference_log/1
        table = table.append_column(
            pa.field("sequence_id", pa.string(), nullable=True), pa.nulls(table.num_rows, pa.string())
        )
    try:
        validate_table(table, log_schema(k))
    except ValueError as err:
        raise LogValidationError(f"{path}: {err}") from None
    emb_col = table.column("embedding").combine_chunks()
    emb = emb_col.flatten().to_numpy(zero_copy_only=False).reshape(-1, k).astype(np.float32, copy=False)
    df = table.drop_columns(["embedding", "label"]).to_pandas()
    df.insert(log_columns().index("embedding"), "embedding", list(emb))
    df["label"] = pd.array(table.column("label").to_pandas(), dtype="Int8")
    df["sequence_id"] = pd.array(table.column("sequence_id").to_pylist(), dtype="string")
    df["hour"] = df["hour"].astype(np.int64)
    df["timestamp"] = _utc(df["timestamp"])
    return df[log_columns()]


def day_path(root: str | Path, day: date) -> Path:
    """``<root>/day=YYYY-MM-DD/log.parquet``: the one file of that day."""
    return Path(root) / f"day={day.isoformat()}" / "log.parquet"


@dataclass
class LogRangeStats:
    """What :func:`read_log_range` read: days found / missing, rows before and after de-duplication."""

    days_read: list[str] = field(default_factory=list)
    days_missing: list[str] = field(default_factory=list)
    rows_read: int = 0
    duplicates_dropped: int = 0
    rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_log_range(root: str | Path, start: date, end: date) -> tuple[pd.DataFrame, LogRangeStats]:
    """All rows of days ``start..end`` (inclusive), one row per ``image_id`` (latest day wins)."""
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    stats = LogRangeStats()
    frames = []
    day = start
    while day <= end:
        p = day_path(root, day)
        if p.exists():
            f = read_log(p)
            f["_day"] = day.isoformat()
            frames.append(f)
            stats.days_read.append(day.isoformat())
            stats.rows_read += len(f)
        else:
            stats.days_missing.append(day.isoformat())
        day += timedelta(days=1)
    if not frames:
        return pd.DataFrame(columns=log_columns()), stats
    df = pd.concat(frames, ignore_index=True)
    keep = ~df["image_id"].duplicated(keep="last")
    stats.duplicates_dropped = int((~keep).sum())
    df = df[keep].drop(columns="_day").reset_index(drop=True)
    stats.rows = len(df)
    return df, stats


def merge_labels(log_df: pd.DataFrame, labels_df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``log_df`` with ``label`` filled from ``labels_df`` [image_id, label (0/1)].

    A label that arrives overrides the stored one. Labels of ids not in the log are ignored.
    Counts land in ``result.attrs["merge_labels"]``: matched, unknown, changed, labelled.
    Conflicting duplicate labels for one id raise :class:`LogValidationError`.
    """
    if not {"image_id", "label"} <= set(labels_df.columns):
        raise LogValidationError(f"labels_df needs columns image_id and label, got {list(labels_df.columns)}")
    lab = labels_df[["image_id", "label"]].copy()
    lab["label"] = pd.to_numeric(lab["label"], errors="coerce")
    if lab["label"].isna().any() or not lab["label"].isin([0, 1]).all():
        raise LogValidationError("labels_df.label must be 0 or 1 for every row")
    conflicts = lab.groupby("image_id")["label"].nunique()
    if (conflicts > 1).any():
        raise LogValidationError(
            f"labels_df gives different labels to {int((conflicts > 1).sum())} ids, e.g. {conflicts[conflicts > 1].index[:3].tolist()}"
        )
    mapping = lab.drop_duplicates("image_id").set_index("image_id")["label"].astype(int)
    out = log_df.copy()
    old = pd.Series(out["label"]).astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    new = out["image_id"].map(mapping).to_numpy(dtype=np.float64)  # NaN where no label arrived
    matched = ~np.isnan(new)
    changed = int((matched & ~np.isnan(old) & (old != new)).sum())
    out["label"] = _nullable_labels(np.where(matched, new, old))
    out.attrs["merge_labels"] = {
        "matched": int(matched.sum()),
        "unknown": int(len(mapping) - mapping.index.isin(out["image_id"]).sum()),
        "changed": changed,
        "labelled": int(out["label"].notna().sum()),
    }
    return out


def embedding_matrix(df: pd.DataFrame) -> np.ndarray:
    """Stack the ``embedding`` column to float32 ``[N, k]``."""
    if len(df) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(e, dtype=np.float32) for e in df["embedding"]])
