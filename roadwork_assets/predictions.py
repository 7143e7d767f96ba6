"""VAL_CALIB model outputs: logits, probabilities, embeddings, uncertainty features, labels and
slice metadata, the one input every policy is fitted on.

Only VAL_CALIB gets an asset: VAL_SELECT outputs are computed (and saved) where selection
happens, in view_aggregator, and VAL_TEST is read by evaluation_report alone.
"""

from typing import TYPE_CHECKING

import dagster as dg
import numpy as np

from roadwork_assets.aggregation import VIEW_AGGREGATOR, load_served_model
from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, load_split_tensors
from roadwork_assets.metadata import humane, profile_md
from roadwork_assets.resources import ArtifactStore, ProfileResource
from roadwork_assets.training import PHASE1
from roadwork_ml.artifacts import verify_dir, write_manifest
from roadwork_ml.contracts import ContractError, Split

if TYPE_CHECKING:
    from roadwork_ml.models.predictions import Predictions

VAL_CALIB_LOGITS = "val_calib_logits"
STREETVISION_FILE = "streetvision_p1.safetensors"


@dg.asset(deps=[VIEW_AGGREGATOR, PHASE1, SPLITS, SOURCE_IMAGES], group_name="predictions", kinds={"pytorch", "parquet"})
def val_calib_logits(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """The served multi-view model over VAL_CALIB, in the split manifest's row order, in one
    validated Parquet file."""
    import torch
    from safetensors.torch import save_file

    from roadwork_ml.models.inference import predict_views
    from roadwork_ml.models.predictions import softmax, write_predictions

    resolved = settings.resolved()
    inf = resolved.profile.inference
    mv, choice, _ = load_served_model(store, inf)
    context.log.info(f"{mv.spec.n_views} views per image ({choice['candidate']})")
    rows = load_split_rows(store, Split.VAL_CALIB)
    data = load_split_tensors(store, rows, Split.VAL_CALIB, inf.input_size)
    outputs = predict_views(mv, data.images, inf.batch_size, channels_last=inf.channels_last)
    emulated = None
    if resolved.profile.thresholds.decision_cut == "validator_reward":
        emulated = val_calib_streetvision(mv, store, rows, resolved.profile)
    with store.staging(VAL_CALIB_LOGITS, profile=resolved) as out:
        if emulated is not None:
            save_file(
                {"p1": torch.from_numpy(emulated[1]), "levels": torch.as_tensor(emulated[0], dtype=torch.int64)},
                str(out / STREETVISION_FILE),
            )
        write_predictions(
            out / "predictions.parquet",
            Split.VAL_CALIB,
            rows,
            outputs.logits,
            outputs.embeddings,
            outputs.features,
            outputs.view_logits,
        )
        manifest = write_manifest(out, extra={"kind": "predictions", "split": Split.VAL_CALIB.value})
    probs = softmax(outputs.logits)[:, 1]
    acc = float(((probs > 0.5).astype(int) == rows["label"].to_numpy()).mean()) if len(rows) else float("nan")
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(VAL_CALIB_LOGITS) / "predictions.parquet")),
                "sha256": manifest["files"]["predictions.parquet"]["sha256"],
                "rows": len(rows),
                "embedding_dim": int(outputs.embeddings.shape[1]),
                "views_per_image": int(outputs.view_logits.shape[1]),
                "positive_share": float(rows["label"].mean()) if len(rows) else 0.0,
                "accuracy_at_0.5": acc,
                "streetvision_levels": list(emulated[0])
                if emulated is not None
                else "not computed (decision_cut: clean_mcc)",
                **profile_md(resolved),
            }
        ),
    )


def val_calib_streetvision(mv, store: ArtifactStore, rows, profile) -> tuple[list[int], np.ndarray]:
    """P(roadwork) of the served model on VAL_CALIB as the validator would send it:
    (levels, float64 ``[L, N]``), the evaluation's emulation settings, one batch in memory at a time."""
    import torch

    from roadwork_ml.evaluation.report import resize_images
    from roadwork_ml.evaluation.streetvision import emulated_outputs
    from roadwork_ml.models.device import memory_layout
    from roadwork_ml.models.inference import predict_views
    from roadwork_ml.models.predictions import softmax

    inf, sv = profile.inference, profile.evaluation.streetvision
    native = load_split_tensors(store, rows, Split.VAL_CALIB, max(inf.input_size, sv.size))

    def predict(batch: torch.Tensor) -> np.ndarray:
        out = predict_views(mv, resize_images(batch, inf.input_size), inf.batch_size, channels_last=inf.channels_last)
        return softmax(out.logits)[:, 1]

    with memory_layout(mv, inf.channels_last):  # once for every batch the emulation sends
        outs = emulated_outputs(predict, native.images, sv.levels, sv.seed, inf.batch_size, sv.size)
    return list(outs), np.stack([outs[lv] for lv in outs])


def load_val_calib_streetvision(store: ArtifactStore) -> tuple[list[int], np.ndarray] | None:
    """(levels, P(roadwork) ``[L, N]``) of VAL_CALIB through the StreetVision emulation, hash-verified;
    None when the artifact was built without it (``thresholds.decision_cut: clean_mcc``)."""
    from safetensors.torch import load_file

    directory = store.read(VAL_CALIB_LOGITS)
    verify_dir(directory)
    if not (directory / STREETVISION_FILE).exists():
        return None
    t = load_file(str(directory / STREETVISION_FILE))
    return [int(v) for v in t["levels"].tolist()], t["p1"].double().numpy()


def load_val_calib_predictions(store: ArtifactStore, expected_ids: np.ndarray | None = None) -> "Predictions":
    """The VAL_CALIB predictions, hash-verified and contract-checked (split tag, row order)."""
    from roadwork_ml.models.predictions import read_predictions

    directory = store.read(VAL_CALIB_LOGITS)
    verify_dir(directory)
    return read_predictions(
        directory / "predictions.parquet", expected_split=Split.VAL_CALIB, expected_ids=expected_ids
    )


@dg.asset_check(
    asset=val_calib_logits,
    name="valid_and_aligned",
    blocking=True,
    description="shapes agree, values finite, split tag right, row order and labels match the split manifest",
)
def predictions_valid(store: ArtifactStore) -> dg.AssetCheckResult:
    rows = load_split_rows(store, Split.VAL_CALIB)
    try:
        preds = load_val_calib_predictions(store, expected_ids=rows["record_id"].to_numpy())
    except ContractError as exc:
        return dg.AssetCheckResult(passed=False, metadata=humane({"error": str(exc)}))
    labels_match = bool((preds.labels == rows["label"].to_numpy()).all())
    row_sums = np.abs(preds.probs.sum(1) - 1).max() if len(preds) else 0.0
    return dg.AssetCheckResult(
        passed=bool(labels_match and row_sums < 1e-5),
        metadata=humane(
            {
                "rows": len(preds),
                "logits_shape": str(list(preds.logits.shape)),
                "embeddings_shape": str(list(preds.embeddings.shape)),
                "labels_match_manifest": labels_match,
                "max_prob_row_sum_error": float(row_sums),
            }
        ),
    )


def train_embeddings(store: ArtifactStore, inf, max_images: int, seed: int, chunk: int = 512):
    """(embeddings [M, D], observed labels [M]) of the served model over a seeded sample of at
    most ``max_images`` TRAIN images (all of TRAIN when smaller), decoded ``chunk`` images at a
    time so TRAIN is never held in memory: what the gate's distance features are fitted on."""
    from roadwork_ml.models.inference import predict_views

    mv, _, _ = load_served_model(store, inf)
    rows = load_split_rows(store, Split.TRAIN)
    if len(rows) > max_images:
        rows = rows.sample(n=max_images, random_state=seed).sort_values("record_id")
    parts = []
    for start in range(0, len(rows), chunk):
        data = load_split_tensors(store, rows.iloc[start : start + chunk], Split.TRAIN, inf.input_size)
        parts.append(predict_views(mv, data.images, inf.batch_size, channels_last=inf.channels_last).embeddings)
    return np.concatenate(parts), rows["label"].to_numpy().astype(np.int64)


def load_val_calib_images(store: ArtifactStore, preds: "Predictions", size: int, rows=None):
    """The VAL_CALIB images uint8 [N, 3, size, size] in the predictions' row order (``rows``: a
    subset of the split rows, e.g. one chunk)."""
    split_rows = load_split_rows(store, Split.VAL_CALIB)
    if not np.array_equal(split_rows["record_id"].to_numpy(), preds.record_ids):
        raise ContractError("VAL_CALIB split rows and val_calib_logits rows differ: re-materialize val_calib_logits")
    return load_split_tensors(
        store, split_rows if rows is None else split_rows.iloc[rows], Split.VAL_CALIB, size
    ).images


def val_calib_image_quality(store: ArtifactStore, preds: "Predictions", size: int, chunk: int = 256) -> np.ndarray:
    """Image-quality features [N, 3] of the VAL_CALIB images as the served model sees them
    (decoded at ``size``), ``chunk`` images at a time so the split is never held in memory."""
    from roadwork_ml.policy.failure_features import image_quality

    parts = [
        image_quality(load_val_calib_images(store, preds, size, slice(s, s + chunk)).numpy())
        for s in range(0, len(preds), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 3))
