"""How views are combined: every aggregator measured on VAL_SELECT, the attention aggregator
trained on TRAIN with the backbone frozen, and the profile's choice saved for every consumer."""


import json

import dagster as dg
import numpy as np
import torch

from roadwork_assets.loaders import AGGREGATOR_DIR, CHECKPOINT_DIR, load_split_tensors, load_splits, split_rows
from roadwork_assets.metadata import table_md
from roadwork_assets.resources import ArtifactStore, ProfileResource, RunOverrides
from roadwork_ml.artifacts import verify_dir, write_manifest
from roadwork_ml.config import ModelConfig
from roadwork_ml.contracts import Split
from roadwork_ml.models.aggregator import aggregate, choose, compare_aggregators, fit_attention, save_choice, single_view_indices
from roadwork_ml.models.inference import predict_views, view_spec
from roadwork_ml.models.multiview import MultiViewClassifier
from roadwork_ml.policy.uncertainty import softmax
from roadwork_ml.training.checkpoint import load_checkpoint

VAL_FILE = "val_select_views.safetensors"


@dg.asset(deps=["phase1_checkpoint", "splits"], group_name="training", kinds={"pytorch"})
def view_aggregator(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """One batched multi-view pass over VAL_SELECT and a TRAIN sample; trains the attention
    aggregator on the TRAIN view outputs (backbone frozen), measures single-view vs multi-view
    and mean / global / top-K (K on VAL_SELECT) / attention by VAL_SELECT MCC, and keeps the
    profile's choice (``inference.aggregator``; ``auto`` = the best allowed)."""
    from safetensors.numpy import save_file

    profile = settings.load(config.overrides)
    inf = profile.inference
    model, meta = load_checkpoint(store.require(CHECKPOINT_DIR))
    spec = view_spec(ModelConfig.model_validate(meta["model"]), inf, multi_view=True)
    full = MultiViewClassifier(model, spec, "mean").eval()
    df = load_splits(store)
    train_rows = split_rows(df, Split.TRAIN)
    if len(train_rows) > inf.aggregator_train_images:
        train_rows = train_rows.sample(n=inf.aggregator_train_images, random_state=inf.attention.seed).sort_values("record_id")
    val_rows = split_rows(df, Split.VAL_SELECT)
    context.log.info(f"{spec.n_views} views per image over {len(train_rows)} TRAIN and {len(val_rows)} VAL_SELECT images")
    train = load_split_tensors(store, train_rows, Split.TRAIN, inf.input_size)
    val = load_split_tensors(store, val_rows, Split.VAL_SELECT, inf.input_size)
    out_tr = predict_views(full, train.images, inf.batch_size, keep_view_embeddings=True)
    out_val = predict_views(full, val.images, inf.batch_size, keep_view_embeddings=True)
    probs_tr, probs_val = softmax(out_tr.view_logits), softmax(out_val.view_logits)
    y_tr, y_val = train.labels.numpy(), val.labels.numpy()

    a = inf.attention
    single = single_view_indices(spec)
    modules, weights, losses = {}, {}, {}
    for multi in (True, False):
        views = slice(None) if multi else single
        if not multi and len(single) < 2:
            continue
        fit = fit_attention(out_tr.view_embeddings[:, views], probs_tr[:, views], y_tr, Split.TRAIN, epochs=a.epochs, lr=a.lr, weight_decay=a.weight_decay, batch_size=a.batch_size, dropout=a.dropout, seed=a.seed)
        modules[multi], losses[multi] = fit.module, fit.losses
        with torch.no_grad():
            weights[multi] = fit.module(torch.from_numpy(out_val.view_embeddings[:, views])).double().numpy()
    candidates = compare_aggregators(probs_val, y_val, Split.VAL_SELECT, spec, inf.top_k_candidates, weights)
    chosen = choose(candidates, inf.multi_view, inf.aggregator)
    table = [c.to_dict() for c in candidates]
    best = {m: max((c for c in candidates if c.multi_view == m), key=lambda c: c.mcc) for m in (False, True)}
    choice = {"multi_view": chosen.multi_view, "aggregator": chosen.aggregator, "top_k": chosen.top_k, "candidate": chosen.name, "val_select_mcc": chosen.mcc, "profile_aggregator": inf.aggregator, "profile_multi_view": inf.multi_view, "n_views": spec.n_views if chosen.multi_view else len(single)}
    with store.staging(AGGREGATOR_DIR) as out:
        save_choice(out, choice, modules.get(chosen.multi_view) if chosen.aggregator == "attention" else None)
        (out / "candidates.json").write_text(json.dumps({"candidates": table, "attention_losses": {str(k): v for k, v in losses.items()}}, indent=2))
        w = weights.get(chosen.multi_view, np.zeros((len(y_val), 1)))
        save_file({"view_probs": probs_val, "labels": y_val.astype(np.int64), "attention_weights": np.ascontiguousarray(w)}, str(out / VAL_FILE))
        write_manifest(out, extra={"kind": "view_aggregator"})
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path(AGGREGATOR_DIR))),
            "chosen": chosen.name,
            "chosen_val_select_mcc": chosen.mcc,
            "single_view_best": f"{best[False].name}: MCC {best[False].mcc:.3f}",
            "multi_view_best": f"{best[True].name}: MCC {best[True].mcc:.3f}",
            "single_view_mcc": best[False].mcc,
            "multi_view_mcc": best[True].mcc,
            "views_served": choice["n_views"],
            "candidates": table_md(table),
            "n_train_images": len(train_rows),
            "n_val_select": len(val_rows),
        }
    )


@dg.asset_check(asset=view_aggregator, blocking=True, description="the saved choice re-measures to the recorded VAL_SELECT MCC from the saved view outputs, and is the best candidate the profile allows")
def aggregator_choice_reproduces(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from safetensors.numpy import load_file

    from roadwork_ml.evaluation.metrics import mcc
    from roadwork_ml.models.aggregator import Candidate, load_choice
    from roadwork_ml.models.multiview import ViewSpec

    directory = store.require(AGGREGATOR_DIR)
    verify_dir(directory)
    choice, _ = load_choice(directory)
    arrays = load_file(str(directory / VAL_FILE))
    probs, y = arrays["view_probs"], arrays["labels"]
    n_views = probs.shape[1]
    flip = bool(settings.load().inference.flip_tta)
    views = None if choice["multi_view"] else single_view_indices(ViewSpec(size=1, flip=flip))
    agg = aggregate(choice["aggregator"], probs, k=choice["top_k"], weights=arrays["attention_weights"], views=views)
    measured = mcc(y, (agg[:, 1] > 0.5).astype(int))
    table = json.loads((directory / "candidates.json").read_text())["candidates"]
    cands = [Candidate(r["candidate"], r["multi_view"], r["aggregator"], r["top_k"], r["val_select_mcc"], r["val_select_accuracy"]) for r in table]
    best = choose(cands, choice["profile_multi_view"], choice["profile_aggregator"])
    passed = bool(abs(measured - choice["val_select_mcc"]) < 1e-9 and best.name == choice["candidate"])
    return dg.AssetCheckResult(passed=passed, metadata={"recorded_mcc": choice["val_select_mcc"], "remeasured_mcc": measured, "best_allowed": best.name, "chosen": choice["candidate"], "views_cached": n_views})
