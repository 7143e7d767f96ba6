"""Read upstream artifacts back from the store, verifying their hashes."""


import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from roadwork_assets.resources import ArtifactStore
from roadwork_ml.artifacts import IntegrityError, sha256_file, verify_dir
from roadwork_ml.contracts import Split
from roadwork_ml.data.records import SPLITS_SCHEMA, validate_table
from roadwork_ml.data.transforms import load_image_batch
from roadwork_ml.models.predictions import Predictions, read_predictions
from roadwork_ml.training.trainer import TensorSplit

SPLITS_DIR = "splits"
CHECKPOINT_DIR = "phase1_checkpoint"
AGGREGATOR_DIR = "view_aggregator"


def load_splits(store: ArtifactStore) -> pd.DataFrame:
    """The splits table (one row per kept image, with its split), hash-verified."""
    directory = store.require(SPLITS_DIR)
    verify_dir(directory)
    table = pq.read_table(directory / "splits.parquet")
    validate_table(table, SPLITS_SCHEMA)
    return table.to_pandas()


def split_rows(df: pd.DataFrame, split: Split) -> pd.DataFrame:
    """Rows of one split in their canonical order (by record_id)."""
    return df[df["split"] == Split(split).value].sort_values("record_id", kind="stable").reset_index(drop=True)


def load_split_tensors(store: ArtifactStore, rows: pd.DataFrame, split: Split, size: int, verify: bool = True, progress: bool = False) -> TensorSplit:
    """Decode the images of ``rows`` to ``[N, 3, size, size]`` uint8, checking each file's sha256 first."""
    paths = [store.path(m, p) for m, p in zip(rows["manifest_dir"], rows["path"])]
    if verify:
        for path, digest in zip(paths, rows["sha256"]):
            if sha256_file(path) != digest:
                raise IntegrityError(f"{path} changed since source_images wrote it (sha256 mismatch): re-materialize source_images")
    images = load_image_batch(paths, size, progress=progress)
    labels = torch.from_numpy(rows["label"].to_numpy().astype(np.int64))
    return TensorSplit(images, labels, Split(split))


def predictions_dir(split: Split) -> str:
    return f"predictions/{Split(split).value}"


def load_predictions(store: ArtifactStore, split: Split) -> Predictions:
    directory = store.require(*predictions_dir(split).split("/"))
    verify_dir(directory)
    return read_predictions(directory / "predictions.parquet", expected_split=split)


def load_served_model(store: ArtifactStore, inference_cfg):
    """The phase-1 checkpoint wrapped in the view setting and aggregator the view_aggregator
    asset chose, hash-verified: the model every inference consumer runs."""
    from roadwork_ml.config import ModelConfig
    from roadwork_ml.models.aggregator import load_choice
    from roadwork_ml.models.inference import multiview_model
    from roadwork_ml.training.checkpoint import load_checkpoint

    model, meta = load_checkpoint(store.require(CHECKPOINT_DIR))
    directory = store.require(AGGREGATOR_DIR)
    verify_dir(directory)
    choice, attention = load_choice(directory)
    model_cfg = ModelConfig.model_validate(meta["model"])
    return multiview_model(model, model_cfg, inference_cfg, choice, attention), choice, model_cfg
