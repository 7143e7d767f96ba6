"""How views are combined: the choice (roadwork_ml.models.view_selection) made on VAL_SELECT,
saved for every consumer, and the loader that gives them the served multi-view model."""

import json

import dagster as dg
import numpy as np

from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, load_split_tensors
from roadwork_assets.metadata import humane, profile_md, table
from roadwork_assets.resources import ArtifactStore, ProfileResource
from roadwork_assets.training import PHASE1, load_phase1
from roadwork_ml.artifacts import verify_dir, write_manifest
from roadwork_ml.config import ModelConfig
from roadwork_ml.contracts import Split

VIEW_AGGREGATOR = "view_aggregator"
VAL_FILE = "val_select_views.safetensors"


@dg.asset(deps=[PHASE1, SPLITS, SOURCE_IMAGES], group_name="training", kinds={"pytorch"})
def view_aggregator(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """One batched multi-view pass over VAL_SELECT and a TRAIN sample; the attention aggregator
    trained on the TRAIN view outputs (backbone frozen); single-view vs multi-view and mean /
    global / top-K / attention compared by VAL_SELECT MCC; the profile's choice kept. A
    single-view profile with ``inference.compare_multi_view`` false runs the single view alone."""
    from safetensors.numpy import save_file

    from roadwork_ml.models.aggregator import save_choice
    from roadwork_ml.models.inference import predict_views, view_spec
    from roadwork_ml.models.multiview import MultiViewClassifier
    from roadwork_ml.models.view_selection import select_aggregator
    from roadwork_ml.policy.uncertainty import softmax

    resolved = settings.resolved()
    inf = resolved.profile.inference
    _, model, meta = load_phase1(store)
    multi = inf.multi_view or inf.compare_multi_view
    spec = view_spec(ModelConfig.model_validate(meta["model"]), inf, multi_view=multi)
    full = MultiViewClassifier(model, spec, "mean").eval()
    train_rows = load_split_rows(store, Split.TRAIN)
    if len(train_rows) > inf.aggregator_train_images:
        train_rows = train_rows.sample(n=inf.aggregator_train_images, random_state=inf.attention.seed).sort_values(
            "record_id"
        )
    val_rows = load_split_rows(store, Split.VAL_SELECT)
    context.log.info(
        f"{spec.n_views} views per image over {len(train_rows)} TRAIN and {len(val_rows)} VAL_SELECT images"
    )
    train = load_split_tensors(store, train_rows, Split.TRAIN, inf.input_size)
    val = load_split_tensors(store, val_rows, Split.VAL_SELECT, inf.input_size)
    out_tr = predict_views(
        full, train.images, inf.batch_size, keep_view_embeddings=True, channels_last=inf.channels_last
    )
    out_val = predict_views(
        full, val.images, inf.batch_size, keep_view_embeddings=True, channels_last=inf.channels_last
    )
    probs_val = softmax(out_val.view_logits)
    y_val = val.labels.numpy()
    sel = select_aggregator(
        out_tr.view_embeddings,
        softmax(out_tr.view_logits),
        train.labels.numpy(),
        probs_val,
        out_val.view_embeddings,
        y_val,
        spec,
        inf,
    )
    rows = [c.to_dict() for c in sel.candidates]
    with store.staging(VIEW_AGGREGATOR, profile=resolved) as out:
        save_choice(out, sel.choice, sel.attention)
        (out / "candidates.json").write_text(
            json.dumps({"candidates": rows, "attention_losses": {str(k): v for k, v in sel.losses.items()}}, indent=2)
        )
        save_file(
            {"view_probs": probs_val, "labels": y_val.astype(np.int64), "attention_weights": sel.val_weights},
            str(out / VAL_FILE),
        )
        write_manifest(out, extra={"kind": VIEW_AGGREGATOR})
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(VIEW_AGGREGATOR))),
                "chosen": sel.chosen.name,
                "chosen_val_select_mcc": sel.chosen.mcc,
                "single_view_best": f"{sel.best[False].name}: MCC {sel.best[False].mcc:.3f}",
                "multi_view_best": f"{sel.best[True].name}: MCC {sel.best[True].mcc:.3f}"
                if True in sel.best
                else "not scored (inference.compare_multi_view: false)",
                "single_view_mcc": sel.best[False].mcc,
                "multi_view_mcc": sel.best[True].mcc if True in sel.best else None,
                "views_served": sel.choice["n_views"],
                "candidates": table(rows),
                "n_train_images": len(train_rows),
                "n_val_select": len(val_rows),
                **profile_md(resolved),
            }
        )
    )


def load_aggregator(store: ArtifactStore):
    """(version directory, choice record, attention module or None), hash-verified."""
    from roadwork_ml.models.aggregator import load_choice

    directory = store.read(VIEW_AGGREGATOR)
    verify_dir(directory)
    choice, attention = load_choice(directory)
    return directory, choice, attention


@dg.asset_check(
    asset=view_aggregator,
    blocking=True,
    description="the saved choice re-measures to the recorded VAL_SELECT MCC from the saved view outputs, and is the best candidate the profile allows",
)
def aggregator_choice_reproduces(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from safetensors.numpy import load_file

    from roadwork_ml.models.view_selection import remeasure_choice

    directory, choice, _ = load_aggregator(store)
    arrays = load_file(str(directory / VAL_FILE))
    candidates = json.loads((directory / "candidates.json").read_text())["candidates"]
    r = remeasure_choice(
        choice,
        candidates,
        arrays["view_probs"],
        arrays["labels"],
        arrays["attention_weights"],
        flip=bool(settings.load().inference.flip_tta),
    )
    return dg.AssetCheckResult(
        passed=r["reproduces"],
        metadata=humane(
            {
                "recorded_mcc": choice["val_select_mcc"],
                "remeasured_mcc": r["measured_mcc"],
                "best_allowed": r["best_allowed"],
                "chosen": choice["candidate"],
                "views_cached": int(arrays["view_probs"].shape[1]),
            }
        ),
    )


def load_served_model(store: ArtifactStore, inference_cfg):
    """The phase-1 checkpoint wrapped in the view setting and aggregator view_aggregator chose,
    hash-verified: the model every inference consumer runs. Reads phase1_checkpoint and
    view_aggregator."""
    from roadwork_ml.models.inference import multiview_model

    _, model, meta = load_phase1(store)
    _, choice, attention = load_aggregator(store)
    model_cfg = ModelConfig.model_validate(meta["model"])
    return multiview_model(model, model_cfg, inference_cfg, choice, attention), choice, model_cfg
