"""Phase 1: train the classifier on TRAIN with early stopping on VAL_SELECT."""

from typing import Literal

import dagster as dg
import numpy as np

from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_dataset, load_split_rows, load_split_tensors
from roadwork_assets.explora import EXPLORA
from roadwork_assets.metadata import flatten, image_md, profile_md, table
from roadwork_assets.recipe import (
    HARD_NEGATIVES,
    HPO_STUDY,
    explora_init,
    load_hard_negative_weights,
    load_hpo_best,
    phase1_datasets,
    selection_scorer,
    train_object_boxes,
)
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource
from roadwork_assets.run_tags import GPU_OP_TAGS
from roadwork_ml.artifacts import atomic_write_json, verify_dir, write_manifest
from roadwork_ml.contracts import Split

PHASE1 = "phase1_checkpoint"
PROBE_SIZE = 16
RELOAD = "reloads_identically"
FINITE = "weights_finite"
MCC_FLOOR = "val_select_mcc_at_floor"


class TrainRunConfig(dg.Config):
    """Phase-1 run options (profile parameters come from the run's ``settings`` resource). A
    drift-triggered retrain sets ``include_production_labels`` (labelled production images join
    TRAIN) and ``init_from="deployed"`` (fine-tune the champion instead of starting from scratch);
    those two read production_traffic and deployed_model, the loop's declared feedback reads."""

    include_production_labels: bool = False
    init_from: Literal["scratch", "deployed"] = "scratch"


@dg.asset(
    deps=[SPLITS, SOURCE_IMAGES, EXPLORA, HARD_NEGATIVES, HPO_STUDY],
    group_name="training",
    kinds={"pytorch", "mlflow"},
    # a retrain closes the loop production -> training; the graph has no cycles, so these reads
    # are declared here (the declared-I/O test holds every asset to deps + these)
    metadata={"roadwork/feedback_reads": "production_traffic, deployed_model"},
    op_tags=GPU_OP_TAGS,
)
def phase1_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainRunConfig,
    settings: ProfileResource,
    store: ArtifactStore,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    """Train the timm backbone + head with the profile's recipe (``train.finetune`` full /
    linear probe / LoRA / DoRA, timm optimizer, warmup + cosine, EMA, early stopping on
    VAL_SELECT MCC), streaming TRAIN and VAL_SELECT from the stored images. Starts from
    ``explora_checkpoint`` when ``model.init_from`` says so, takes ``hpo_study``'s best
    parameters when ``hpo.apply_best`` and ``hard_negatives``' loss weights when
    ``hard_negatives.use_in_training``. Adapters are merged before saving, so the checkpoint is a
    plain classifier. Writes ``model.safetensors`` + ``config.json`` + training curves; tracked in MLflow.
    """
    import torch
    from safetensors.torch import save_file

    from roadwork_assets.audit import record_launch
    from roadwork_assets.deployment import load_deployed_classifier_state
    from roadwork_assets.monitoring import load_labelled_production
    from roadwork_ml.augment.policy import photo_styles
    from roadwork_ml.evaluation.plots import training_curves
    from roadwork_ml.training.checkpoint import save_checkpoint
    from roadwork_ml.training.dataset import TensorImageDataset
    from roadwork_ml.training.hard_negatives import false_positive_rate, hard_negative_slice
    from roadwork_ml.training.hpo import apply_params
    from roadwork_ml.training.phase1 import train_phase1
    from roadwork_ml.training.trainer import predict_dataset, predict_logits

    record_launch(context, store)  # a sensor-launched retrain: the audit record names this run
    resolved = settings.resolved()
    profile = resolved.profile
    size = profile.model.img_size
    train_cfg = profile.train
    hpo_best = load_hpo_best(store) if profile.hpo.apply_best else None
    if hpo_best is not None:
        train_cfg = apply_params(train_cfg, hpo_best["best_params"])
        context.log.info(f"hpo_study's best parameters applied: {hpo_best['best_params']}")
    train_rows, train, val_rows, val = phase1_datasets(store, profile)
    weights = load_hard_negative_weights(store, train_rows) if profile.hard_negatives.use_in_training else None
    n_production = 0
    if config.include_production_labels:
        extra, extra_labels, days = load_labelled_production(store, size)
        n_production = len(extra_labels)
        # TRAIN in memory (decoded once already when it fit), the production images appended
        images = train.images if isinstance(train, TensorImageDataset) else None
        if images is None:
            images = load_split_tensors(store, train_rows, Split.TRAIN, size).images
        train = TensorImageDataset(
            torch.cat([images, extra]),
            torch.cat([torch.as_tensor(train.labels), extra_labels]),
            Split.TRAIN,
            sources=[*train_rows["source"], *["production"] * n_production],
        )
        if weights is not None:
            weights = np.concatenate([weights, np.ones(n_production, dtype=np.float32)])
        context.log.info(f"{n_production} labelled production images from {len(days)} day(s) added to TRAIN")
    context.log.info(f"TRAIN {len(train)} images, VAL_SELECT {len(val)} images at {size}px")

    init_state = load_deployed_classifier_state(store) if config.init_from == "deployed" else None
    if init_state is not None:
        context.log.info("fine-tuning the deployed champion's weights")
    explora_dir = explora_init(store, profile) if init_state is None else None
    mlflow_tags = {
        "dagster.run_id": context.run_id,
        "roadwork.profile": profile.name,
        "roadwork.profile_sha256": resolved.sha256,
        "roadwork.asset": PHASE1,
    }
    with mlflow.run(profile.tracking.experiment, run_name=f"phase1-{context.run_id[:8]}", tags=mlflow_tags) as tracked:
        tracked.log_params(
            flatten({"model": profile.model.model_dump(mode="json"), "train": train_cfg.model_dump(mode="json")})
        )
        tracked.log_params(
            {
                "n_train": len(train),
                "n_val_select": len(val),
                "profile": profile.name,
                "n_production_labelled": n_production,
                "init_from": config.init_from,
                "hpo_best_applied": hpo_best is not None,
                "hard_negative_weights": weights is not None,
            }
        )

        def on_epoch(s) -> None:
            metrics = {
                "train_loss": s.train_loss,
                "val_select_accuracy": s.val_accuracy,
                "val_select_mcc": s.val_mcc,
                "val_select_auroc": s.val_auroc,
                "lr": s.lr,
            }
            if s.val_mcc_ema is not None:
                metrics["val_select_mcc_ema"] = s.val_mcc_ema
            if s.select_score is not None:
                metrics["val_select_streetvision_reward"] = s.select_score
            tracked.log_metrics(metrics, step=s.epoch)

        run = train_phase1(
            profile.model,
            train_cfg,
            train,
            val,
            loader=profile.data.loader,
            sample_weights=weights,
            styles=photo_styles(profile),
            object_boxes=train_object_boxes(train_rows, train_cfg, context.log.info, extra_rows=n_production),
            init_state=init_state,
            explora_dir=explora_dir,
            measure_steps=3,
            on_epoch=on_epoch,
            select_score=selection_scorer(store, profile, train_cfg, val_rows, context.log.info),
            log=context.log.info,
        )
        model, result = run.model.cpu(), run.result
        best = result.best
        p_val = torch.softmax(predict_dataset(model, val, profile.inference.batch_size, profile.data.loader), 1)[:, 1]
        in_slice = hard_negative_slice(val_rows["tags"].tolist())
        hn_fpr = false_positive_rate(p_val.numpy(), val.labels, in_slice)
        step = {k: run.step[k] for k in ("step_seconds", "peak_memory_bytes", "peak_memory_kind", "batch_size")}
        ema = {
            "ema_enabled": train_cfg.ema.enabled,
            "best_is_ema": result.best_is_ema,
            "best_val_select_mcc_ema": best.val_mcc_ema,
        }
        with store.staging(PHASE1, profile=resolved) as out:
            history = [vars(h) for h in result.history]
            save_checkpoint(
                model,
                profile.model,
                out,
                info={
                    "profile": profile.name,
                    "best_epoch": result.best_epoch,
                    "selection": {"metric": train_cfg.selection.metric, "best_score": result.best_score},
                    "val_select": {"accuracy": best.val_accuracy, "mcc": best.val_mcc, "auroc": best.val_auroc},
                    "mcc_floor": train_cfg.mcc_floor,
                    "finetune": train_cfg.finetune,
                    "merged_adapters": train_cfg.finetune in ("lora", "dora"),
                    "trained_params": run.params,
                    "train_step": step,
                    "ema": ema,
                    "init_from": "deployed" if init_state is not None else profile.model.init_from,
                    "hpo_best_params": hpo_best["best_params"] if hpo_best else None,
                    "hard_negative_weighted_rows": int((weights > 1).sum()) if weights is not None else 0,
                    "dagster_run_id": context.run_id,
                    "mlflow_run_id": tracked.run_id,
                },
            )
            atomic_write_json(out / "history.json", {"epochs": history, "step_losses": result.step_losses})
            probe = torch.stack([val[i][0] for i in range(min(PROBE_SIZE, len(val)))])
            save_file(
                {
                    "images": probe.contiguous(),
                    "logits": predict_logits(model, probe, batch_size=PROBE_SIZE).contiguous(),
                },
                str(out / "probe.safetensors"),
            )
            training_curves(
                result.step_losses,
                [h.epoch for h in result.history],
                [h.val_mcc for h in result.history],
                [h.val_auroc for h in result.history],
                out / "training_curves.png",
            )
            manifest = write_manifest(out, extra={"kind": "classifier-checkpoint"})
        ckpt_dir = store.location(PHASE1)
        tracked.log_metrics(
            {
                "best_val_select_mcc": best.val_mcc,
                "best_epoch": result.best_epoch,
                "trainable_params": run.params["trainable_params"],
                "step_seconds": step["step_seconds"],
                "peak_memory_bytes": step["peak_memory_bytes"],
            }
        )
        tracked.log_artifacts(ckpt_dir, "checkpoint")

    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(ckpt_dir)),
            "weights_sha256": manifest["files"]["model.safetensors"]["sha256"],
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "finetune": train_cfg.finetune,
            "trainable_params": int(run.params["trainable_params"]),
            "trainable_share": float(run.params["trainable_share"]),
            "step_seconds": float(step["step_seconds"]),
            "peak_memory_bytes": int(step["peak_memory_bytes"]),
            "peak_memory_kind": step["peak_memory_kind"],
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "selection_metric": train_cfg.selection.metric,
            "best_selection_score": float(result.best_score),
            "stopped_early": result.stopped_early,
            "production_images_added": n_production,
            "init_from": config.init_from if init_state is not None else profile.model.init_from,
            "hpo_best_applied": hpo_best is not None,
            "hard_negative_weighted_rows": int((weights > 1).sum()) if weights is not None else 0,
            "val_select_hard_negative_fpr": float(hn_fpr),
            "val_select_hard_negatives": int((in_slice & (val.labels == 0)).sum()),
            **{k: v for k, v in ema.items() if v is not None},
            "val_select_accuracy": float(best.val_accuracy),
            "val_select_mcc": float(best.val_mcc),
            "val_select_auroc": float(best.val_auroc),
            "train_seconds": float(sum(h.seconds for h in result.history)),
            "mlflow_run_id": tracked.run_id,
            "history": table(history),
            "training_curves": image_md(ckpt_dir / "training_curves.png", "training curves"),
            **profile_md(resolved),
        }
    )


def load_phase1(store: ArtifactStore):
    """(version directory, model, meta) of the phase-1 checkpoint; every sha256 verified."""
    from roadwork_ml.training.checkpoint import load_checkpoint

    directory = store.read(PHASE1)
    model, meta = load_checkpoint(directory)
    return directory, model, meta


@dg.asset_check(
    asset=phase1_checkpoint,
    name=RELOAD,
    blocking=True,
    description="the checkpoint reloaded from disk gives bit-identical logits on the probe images recorded at training time",
)
def reloads_identically(store: ArtifactStore) -> dg.AssetCheckResult:
    from safetensors.torch import load_file

    from roadwork_ml.training.trainer import predict_logits

    directory, model, _ = load_phase1(store)
    probe = load_file(str(directory / "probe.safetensors"))
    again = predict_logits(model, probe["images"], batch_size=PROBE_SIZE)
    diff = float((again - probe["logits"]).abs().max()) if len(again) else 0.0
    return dg.AssetCheckResult(passed=diff == 0.0, metadata={"max_abs_logit_diff": diff, "probe_images": len(again)})


@dg.asset_check(
    asset=phase1_checkpoint, name=FINITE, blocking=True, description="every tensor in model.safetensors is finite"
)
def weights_finite(store: ArtifactStore) -> dg.AssetCheckResult:
    import torch
    from safetensors.torch import load_file

    directory = store.read(PHASE1)
    verify_dir(directory)
    state = load_file(str(directory / "model.safetensors"))
    bad = [k for k, v in state.items() if not torch.isfinite(v.float()).all()]
    n = int(sum(v.numel() for v in state.values()))
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"tensors": len(state), "values": n, "non_finite_tensors": ", ".join(bad[:10]) or "none"},
    )


@dg.asset_check(
    asset=phase1_checkpoint,
    name=MCC_FLOOR,
    blocking=True,
    description="VAL_SELECT MCC, recomputed from the saved checkpoint, is at least train.mcc_floor",
)
def val_select_mcc_at_floor(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from roadwork_ml.training.trainer import evaluate

    _, model, meta = load_phase1(store)
    profile = settings.load()
    rows = load_split_rows(store, Split.VAL_SELECT)
    val = load_split_dataset(store, rows, Split.VAL_SELECT, meta["model"]["img_size"], profile)
    metrics = evaluate(model, val, batch_size=profile.inference.batch_size, loader=profile.data.loader)
    floor = float(meta["info"].get("mcc_floor", profile.train.mcc_floor))
    return dg.AssetCheckResult(
        passed=bool(metrics["mcc"] >= floor),
        metadata={
            "val_select_mcc": metrics["mcc"],
            "floor": floor,
            "val_select_accuracy": metrics["accuracy"],
            "val_select_auroc": metrics["auroc"],
            "n": len(rows),
        },
    )
