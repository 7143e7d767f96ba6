"""Phase 1: train the classifier on TRAIN with early stopping on VAL_SELECT."""

from typing import Literal

import dagster as dg
import torch
from safetensors.torch import load_file, save_file

from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, load_split_tensors
from roadwork_assets.metadata import flatten, image_md, profile_md, table
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource
from roadwork_assets.run_tags import GPU_OP_TAGS
from roadwork_ml.artifacts import atomic_write_json, verify_dir, write_manifest
from roadwork_ml.contracts import Split
from roadwork_ml.evaluation.plots import training_curves
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.training.checkpoint import load_checkpoint, save_checkpoint
from roadwork_ml.training.trainer import TensorSplit, evaluate, predict_logits, train_classifier

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
    deps=[SPLITS, SOURCE_IMAGES],
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
    """Train the timm backbone + head (AdamW, warmup + cosine, early stopping on VAL_SELECT MCC).

    Writes ``model.safetensors`` + ``config.json`` + training curves; the run is tracked in MLflow.
    """
    from roadwork_assets.deployment import load_deployed_classifier_state
    from roadwork_assets.monitoring import load_labelled_production

    resolved = settings.resolved()
    profile = resolved.profile
    size = profile.model.img_size
    train_rows = load_split_rows(store, Split.TRAIN)
    if profile.train.max_train_images:
        train_rows = train_rows.sample(
            n=min(len(train_rows), profile.train.max_train_images), random_state=profile.train.seed
        ).sort_values("record_id")
    train = load_split_tensors(store, train_rows, Split.TRAIN, size)
    n_production = 0
    if config.include_production_labels:
        extra, extra_labels, days = load_labelled_production(store, size)
        n_production = len(extra_labels)
        train = TensorSplit(torch.cat([train.images, extra]), torch.cat([train.labels, extra_labels]), Split.TRAIN)
        context.log.info(f"{n_production} labelled production images from {len(days)} day(s) added to TRAIN")
    val_rows = load_split_rows(store, Split.VAL_SELECT)
    val = load_split_tensors(store, val_rows, Split.VAL_SELECT, size)
    context.log.info(f"TRAIN {len(train.labels)} images, VAL_SELECT {len(val.labels)} images at {size}px")

    torch.manual_seed(profile.train.seed)
    model = build_classifier(profile.model)
    if config.init_from == "deployed":
        model.load_state_dict(load_deployed_classifier_state(store), strict=True)
        context.log.info("fine-tuning the deployed champion's weights")
    mlflow_tags = {
        "dagster.run_id": context.run_id,
        "roadwork.profile": profile.name,
        "roadwork.profile_sha256": resolved.sha256,
        "roadwork.asset": PHASE1,
    }
    with mlflow.run(profile.tracking.experiment, run_name=f"phase1-{context.run_id[:8]}", tags=mlflow_tags) as tracked:
        tracked.log_params(
            flatten({"model": profile.model.model_dump(mode="json"), "train": profile.train.model_dump(mode="json")})
        )
        tracked.log_params(
            {
                "n_train": len(train.labels),
                "n_val_select": len(val.labels),
                "profile": profile.name,
                "n_production_labelled": n_production,
                "init_from": config.init_from,
            }
        )

        def on_epoch(s) -> None:
            tracked.log_metrics(
                {
                    "train_loss": s.train_loss,
                    "val_select_accuracy": s.val_accuracy,
                    "val_select_mcc": s.val_mcc,
                    "val_select_auroc": s.val_auroc,
                    "lr": s.lr,
                },
                step=s.epoch,
            )

        result = train_classifier(model, train, val, profile.train, on_epoch=on_epoch, log=context.log.info)
        best = result.best
        with store.staging(PHASE1, profile=resolved) as out:
            history = [vars(h) for h in result.history]
            save_checkpoint(
                model.cpu(),
                profile.model,
                out,
                info={
                    "profile": profile.name,
                    "best_epoch": result.best_epoch,
                    "val_select": {"accuracy": best.val_accuracy, "mcc": best.val_mcc, "auroc": best.val_auroc},
                    "mcc_floor": profile.train.mcc_floor,
                    "dagster_run_id": context.run_id,
                    "mlflow_run_id": tracked.run_id,
                },
            )
            atomic_write_json(out / "history.json", {"epochs": history, "step_losses": result.step_losses})
            probe = val.images[:PROBE_SIZE]
            save_file(
                {
                    "images": probe.contiguous(),
                    "logits": predict_logits(model.cpu(), probe, batch_size=PROBE_SIZE).contiguous(),
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
        tracked.log_metrics({"best_val_select_mcc": best.val_mcc, "best_epoch": result.best_epoch})
        tracked.log_artifacts(ckpt_dir, "checkpoint")

    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(ckpt_dir)),
            "weights_sha256": manifest["files"]["model.safetensors"]["sha256"],
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "production_images_added": n_production,
            "init_from": config.init_from,
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
    directory, model, _ = load_phase1(store)
    probe = load_file(str(directory / "probe.safetensors"))
    again = predict_logits(model, probe["images"], batch_size=PROBE_SIZE)
    diff = float((again - probe["logits"]).abs().max()) if len(again) else 0.0
    return dg.AssetCheckResult(passed=diff == 0.0, metadata={"max_abs_logit_diff": diff, "probe_images": len(again)})


@dg.asset_check(
    asset=phase1_checkpoint, name=FINITE, blocking=True, description="every tensor in model.safetensors is finite"
)
def weights_finite(store: ArtifactStore) -> dg.AssetCheckResult:
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
    _, model, meta = load_phase1(store)
    profile = settings.load()
    rows = load_split_rows(store, Split.VAL_SELECT)
    val = load_split_tensors(store, rows, Split.VAL_SELECT, meta["model"]["img_size"])
    metrics = evaluate(model, val, batch_size=profile.inference.batch_size)
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
