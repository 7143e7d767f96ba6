"""Per-split model outputs in one validated Parquet file.

One row per image, in the split manifest's order: ``record_id``, ``label``, logits ``[C]``,
softmax probabilities ``[C]``, the pooled embedding ``[D]`` and the slice metadata. The
split name is stored in the file's schema metadata, so whoever loads the file also
loads the split tag that the leakage contract checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from roadwork_ml.artifacts import atomic_path
from roadwork_ml.contracts import ContractError, Split, validate_logits
from roadwork_ml.numerics import softmax

SLICE_COLUMNS = ("source", "hour", "time_of_day", "weather", "camera_id", "sequence_id", "group_id")


@dataclass
class Predictions:
    """Arrays of one split. ``logits``/``probs``: [N, C]; ``embeddings``: [N, D];
    ``features``: [N, 7] uncertainty features; ``view_logits``: [N, V, C]."""

    split: Split
    record_ids: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    logits: np.ndarray
    probs: np.ndarray
    embeddings: np.ndarray
    features: np.ndarray
    view_logits: np.ndarray
    meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self.record_ids)


def _fixed_list(arr: np.ndarray) -> pa.Array:
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])


def write_predictions(
    path: str | Path,
    split: Split,
    split_rows: pd.DataFrame,
    logits: np.ndarray,
    embeddings: np.ndarray,
    features: np.ndarray,
    view_logits: np.ndarray,
) -> Path:
    """Validate and write; ``split_rows`` are the split manifest rows in the order the model saw them."""
    labels = split_rows["label"].to_numpy().astype(np.int64)
    validate_logits(logits, labels, num_classes=logits.shape[1] if logits.ndim == 2 else 2)
    if embeddings.shape[0] != logits.shape[0] or not np.isfinite(embeddings).all():
        raise ContractError(f"embeddings must be [{logits.shape[0]}, D] and finite, got {list(embeddings.shape)}")
    if features.shape != (logits.shape[0], 7) or not np.isfinite(features).all():
        raise ContractError(f"features must be [{logits.shape[0]}, 7] and finite, got {list(features.shape)}")
    if view_logits.ndim != 3 or view_logits.shape[0] != logits.shape[0] or not np.isfinite(view_logits).all():
        raise ContractError(f"view_logits must be [{logits.shape[0]}, V, C] and finite, got {list(view_logits.shape)}")
    columns = {
        "record_id": pa.array(split_rows["record_id"].astype(str).to_numpy()),
        "label": pa.array(labels.astype(np.int8)),
        "true_label": pa.array(split_rows["true_label"].to_numpy().astype(np.int8)),
        "logits": _fixed_list(logits),
        "probs": _fixed_list(softmax(logits.astype(np.float64))),
        "embedding": _fixed_list(embeddings),
        "features": _fixed_list(features),
        "view_logits": _fixed_list(view_logits.reshape(len(view_logits), -1)),
    }
    for col in SLICE_COLUMNS:
        columns[col] = pa.array(split_rows[col].to_numpy())
    table = pa.table(columns).replace_schema_metadata(
        {
            "roadwork.schema": "predictions/1",
            "roadwork.split": Split(split).value,
            "roadwork.views": str(view_logits.shape[1]),
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_predictions(
    path: str | Path, expected_split: Split | None = None, expected_ids: np.ndarray | None = None
) -> Predictions:
    """Load and validate: shapes agree, values finite, split tag and row order as expected."""
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    if meta.get(b"roadwork.schema") != b"predictions/1":
        raise ContractError(f"{path} is not a roadwork predictions file")
    split = Split(meta[b"roadwork.split"].decode())
    if expected_split is not None and split != Split(expected_split):
        raise ContractError(f"{path} holds {split.value} predictions, expected {Split(expected_split).value}")

    def matrix(name: str) -> np.ndarray:
        col = table.column(name).combine_chunks()
        width = col.type.list_size
        return (
            col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
            if len(col)
            else np.zeros((0, width), np.float32)
        )

    logits, probs, emb, feats = matrix("logits"), matrix("probs"), matrix("embedding"), matrix("features")
    n_views = int(meta[b"roadwork.views"])
    view_logits = matrix("view_logits").reshape(len(logits), n_views, -1)
    labels = table.column("label").to_numpy().astype(np.int64)
    validate_logits(logits, labels, num_classes=logits.shape[1])
    if not (
        np.isfinite(probs).all()
        and np.isfinite(emb).all()
        and np.isfinite(feats).all()
        and np.isfinite(view_logits).all()
    ):
        raise ContractError(f"{path}: probabilities or embeddings hold non-finite values")
    if not (len(probs) == len(emb) == len(labels) == len(feats)):
        raise ContractError(
            f"{path}: row counts disagree (logits {len(logits)}, probs {len(probs)}, embeddings {len(emb)}, features {len(feats)})"
        )
    ids = table.column("record_id").to_numpy(zero_copy_only=False)
    if expected_ids is not None and (len(ids) != len(expected_ids) or (ids != np.asarray(expected_ids)).any()):
        raise ContractError(f"{path}: row order does not match the split manifest")
    return Predictions(
        split=split,
        record_ids=ids,
        labels=labels,
        true_labels=table.column("true_label").to_numpy().astype(np.int64),
        logits=logits,
        probs=probs,
        embeddings=emb,
        features=feats,
        view_logits=view_logits,
        meta=table.select(list(SLICE_COLUMNS)).to_pandas(),
    )
