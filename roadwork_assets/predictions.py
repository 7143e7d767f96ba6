"""Model outputs per evaluation split: logits, probabilities, embeddings, labels, slices."""


import dagster as dg
import numpy as np

from roadwork_assets.loaders import load_served_model, load_split_tensors, load_splits, predictions_dir, split_rows
from roadwork_assets.resources import ArtifactStore, ProfileResource, RunOverrides
from roadwork_ml.artifacts import verify_dir, write_manifest
from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.models.predictions import read_predictions, softmax, write_predictions
from roadwork_ml.models.inference import predict_views

PREDICTED_SPLITS = (Split.VAL_SELECT, Split.VAL_CALIB, Split.VAL_TEST)


def asset_name(split: Split) -> str:
    return f"{split.value}_logits"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(asset_name(s), deps=["view_aggregator", "splits"], group_name="predictions", kinds={"pytorch", "parquet"}, description=f"{s.value.upper()} logits, probabilities, pooled embeddings, labels and slice metadata in one validated Parquet file")
        for s in PREDICTED_SPLITS
    ],
    can_subset=True,
)
def split_logits(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore):
    """Run the phase-1 checkpoint over each selected split, in the split manifest's row order."""
    profile = settings.load(config.overrides)
    mv, choice, _ = load_served_model(store, profile.inference)
    context.log.info(f"{mv.spec.n_views} views per image ({choice['candidate']})")
    df = load_splits(store)
    for split in PREDICTED_SPLITS:
        key = dg.AssetKey(asset_name(split))
        if key not in context.selected_asset_keys:
            continue
        rows = split_rows(df, split)
        data = load_split_tensors(store, rows, split, profile.inference.input_size)
        outputs = predict_views(mv, data.images, profile.inference.batch_size)
        logits, emb = outputs.logits, outputs.embeddings
        with store.staging(*predictions_dir(split).split("/")) as out:
            write_predictions(out / "predictions.parquet", split, rows, logits, emb, outputs.features, outputs.view_logits)
            manifest = write_manifest(out, extra={"kind": "predictions", "split": split.value})
        probs = softmax(logits)[:, 1]
        acc = float(((probs > 0.5).astype(int) == rows["label"].to_numpy()).mean()) if len(rows) else float("nan")
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "path": dg.MetadataValue.path(str(store.path(*predictions_dir(split).split("/"), "predictions.parquet"))),
                "sha256": manifest["files"]["predictions.parquet"]["sha256"],
                "rows": len(rows),
                "embedding_dim": int(emb.shape[1]),
                "views_per_image": int(outputs.view_logits.shape[1]),
                "positive_share": float(rows["label"].mean()) if len(rows) else 0.0,
                "accuracy_at_0.5": acc,
            },
        )


def _check_predictions(store: ArtifactStore, split: Split) -> dg.AssetCheckResult:
    rows = split_rows(load_splits(store), split)
    directory = store.require(*predictions_dir(split).split("/"))
    try:
        verify_dir(directory)
        preds = read_predictions(directory / "predictions.parquet", expected_split=split, expected_ids=rows["record_id"].to_numpy())
    except ContractError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    labels_match = bool((preds.labels == rows["label"].to_numpy()).all())
    row_sums = np.abs(preds.probs.sum(1) - 1).max() if len(preds) else 0.0
    return dg.AssetCheckResult(
        passed=bool(labels_match and row_sums < 1e-5),
        metadata={"rows": len(preds), "logits_shape": str(list(preds.logits.shape)), "embeddings_shape": str(list(preds.embeddings.shape)), "labels_match_manifest": labels_match, "max_prob_row_sum_error": float(row_sums)},
    )


def _make_check(split: Split) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset_name(split), name="valid_and_aligned", blocking=True, description="shapes agree, values finite, split tag right, row order and labels match the split manifest")
    def _check(store: ArtifactStore) -> dg.AssetCheckResult:
        return _check_predictions(store, split)

    return _check


prediction_checks = [_make_check(s) for s in PREDICTED_SPLITS]
