"""Recipe search around phase 1, not part of ``make demo``: ``hard_negatives`` (out-of-fold
TRAIN scores → loss weights of confident false positives) and ``hpo_study`` (an Optuna study
over the phase-1 recipe in an RDB that survives a crash). ``phase1_checkpoint`` takes either
artifact when the profile says so (``hard_negatives.use_in_training``, ``hpo.apply_best``).
Only TRAIN and VAL_SELECT are read."""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import pandas as pd

from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_dataset, load_split_rows, load_train_rows
from roadwork_assets.explora import EXPLORA, load_explora_dir
from roadwork_assets.metadata import image_md, profile_md, table
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, dagster_home
from roadwork_ml.artifacts import atomic_write_json, verify_dir, write_manifest
from roadwork_ml.contracts import Split

if TYPE_CHECKING:
    import torch

HARD_NEGATIVES = "hard_negatives"
HPO_STUDY = "hpo_study"
WEIGHTS_FILE = "weights.parquet"
BEST_FILE = "best_params.json"


def phase1_datasets(store: ArtifactStore, profile):
    """(TRAIN rows, TRAIN dataset, VAL_SELECT rows, VAL_SELECT dataset), streamed at the model's input size."""
    from roadwork_ml.training.trainer import train_cache_side

    size = profile.model.img_size
    train_rows = load_train_rows(store, profile)
    val_rows = load_split_rows(store, Split.VAL_SELECT)
    return (
        train_rows,
        load_split_dataset(
            store, train_rows, Split.TRAIN, size, profile, train_cache_side(profile.model, profile.train)
        ),
        val_rows,
        load_split_dataset(store, val_rows, Split.VAL_SELECT, size, profile),
    )


def selection_scorer(store: ArtifactStore, profile, train_cfg, val_rows: pd.DataFrame, log):
    """The trainer's ``select_score`` for ``train.selection`` (None for ``val_mcc``): VAL_SELECT
    streamed at the StreetVision size, each image drawn at every selection level once and kept at
    the served input side (:mod:`roadwork_ml.training.selection`)."""
    import time

    from roadwork_ml.training.dataset import build_loader, iterate_batches
    from roadwork_ml.training.selection import selection_rows, streetvision_views

    sel = train_cfg.selection
    if sel.metric == "val_mcc":
        return None
    rows = selection_rows(val_rows, sel).reset_index(drop=True)
    sv, inf = profile.evaluation.streetvision, profile.inference
    data = load_split_dataset(store, rows, Split.VAL_SELECT, max(inf.input_size, sv.size), profile)
    loader = build_loader(data, profile.data.loader, inf.batch_size, shuffle=False)
    t0 = time.perf_counter()
    views = streetvision_views(
        ((b.images, b.labels.numpy()) for b in iterate_batches(loader)), sel.levels, sel.seed, inf.input_size, sv.size
    )
    log(
        f"checkpoint selection on the StreetVision reward: {len(rows)} VAL_SELECT images x levels {sel.levels} "
        f"({views.views.numel() / 1e6:.0f} MB at {views.views.shape[-1]} px, {time.perf_counter() - t0:.1f}s)"
    )
    return views.scorer(profile.model, inf)


def train_object_boxes(train_rows: pd.DataFrame, train_cfg, log, extra_rows: int = 0) -> "torch.Tensor | None":
    """TRAIN rows' roadwork boxes ``[N + extra_rows, K, 4]`` (from the records' tags; appended rows
    unknown) when ``train.augmentation.lost_object_weight`` < 1, else None. Malformed rows count as
    unknown and are logged, never fatal."""
    import torch

    from roadwork_ml.training.object_boxes import boxes_from_tags

    if train_cfg.augmentation.lost_object_weight >= 1:
        return None
    boxes, bad = boxes_from_tags(train_rows["tags"].tolist())
    if boxes is None:
        log(
            "train.augmentation.lost_object_weight is set but no TRAIN record carries roadwork boxes: weights unchanged"
        )
        return None
    if bad:
        log(f"{len(bad)} TRAIN rows have malformed roadwork boxes and count as unknown, e.g. row {bad[0]}")
    if extra_rows:
        boxes = torch.cat([boxes, torch.full((extra_rows, *boxes.shape[1:]), float("nan"))])
    known = int((~torch.isnan(boxes).any(-1)).any(-1).sum())
    log(f"lost-object weighting: {known} of {len(boxes)} TRAIN rows carry roadwork boxes")
    return boxes


def explora_init(store: ArtifactStore, profile):
    """The explora_checkpoint directory when ``model.init_from: explora_checkpoint``, else None."""
    return load_explora_dir(store) if profile.model.init_from == "explora_checkpoint" else None


def _p_roadwork(model, data, profile) -> np.ndarray:
    import torch

    from roadwork_ml.training.trainer import predict_dataset

    logits = predict_dataset(model, data, profile.inference.batch_size, profile.data.loader)
    return torch.softmax(logits, dim=1)[:, 1].numpy()


# --- hard negatives -----------------------------------------------------------------------------


@dg.asset(deps=[SPLITS, SOURCE_IMAGES, EXPLORA], group_name="training", kinds={"pytorch", "parquet"})
def hard_negatives(context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore):
    """Score every TRAIN image with a phase-1 model trained on the other folds (grouped,
    label-stratified), mine the negatives scored at or above ``hard_negatives.min_score`` and
    write per-row loss weights. Metadata: false-positive rate on the hard-negative slice (the
    scenes with orange non-roadwork objects) and on all TRAIN negatives, out of fold."""
    from roadwork_ml.augment.policy import photo_styles
    from roadwork_ml.training.hard_negatives import (
        false_positive_rate,
        hard_negative_slice,
        mine_hard_negatives,
        out_of_fold_scores,
    )
    from roadwork_ml.training.phase1 import train_phase1

    resolved = settings.resolved()
    profile = resolved.profile
    hn = profile.hard_negatives
    rows, train, val_rows, val = phase1_datasets(store, profile)
    fold_cfg = profile.train.model_copy(update={"epochs": hn.epochs or profile.train.epochs})
    explora_dir = explora_init(store, profile)
    boxes = train_object_boxes(rows, fold_cfg, context.log.info)
    select_score = selection_scorer(store, profile, fold_cfg, val_rows, context.log.info)

    def fit_predict(fit_idx: np.ndarray, score_idx: np.ndarray) -> np.ndarray:
        context.log.info(f"fold model: {len(fit_idx)} TRAIN rows fit, {len(score_idx)} scored")
        run = train_phase1(
            profile.model,
            fold_cfg,
            train.subset(fit_idx),
            val,
            loader=profile.data.loader,
            styles=photo_styles(profile),
            object_boxes=boxes[fit_idx] if boxes is not None else None,
            explora_dir=explora_dir,
            select_score=select_score,
            log=context.log.info,
            progress=False,
        )
        return _p_roadwork(run.model, train.subset(score_idx), profile)

    labels = rows["label"].to_numpy()
    scores = out_of_fold_scores(fit_predict, labels, rows["group_id"].to_numpy(), hn.n_folds, profile.train.seed)
    mined = mine_hard_negatives(scores, labels, hn.min_score, hn.max_fraction, hn.weight)
    in_slice = hard_negative_slice(rows["tags"].tolist())
    fpr_slice = false_positive_rate(scores, labels, in_slice, hn.min_score)
    fpr_all = false_positive_rate(scores, labels, None, hn.min_score)
    out_df = pd.DataFrame(
        {
            "record_id": rows["record_id"],
            "label": labels,
            "oof_score": scores,
            "weight": mined.weights,
            "hard_negative_slice": in_slice,
        }
    )
    with store.staging(HARD_NEGATIVES, profile=resolved) as out:
        out_df.to_parquet(out / WEIGHTS_FILE, index=False)
        summary = {
            "n_train": len(rows),
            "mined": len(mined.indices),
            "min_score": hn.min_score,
            "max_fraction": hn.max_fraction,
            "weight": hn.weight,
            "oof_fpr_hard_negative_slice": fpr_slice,
            "oof_fpr_all_negatives": fpr_all,
            "slice_negatives": int((in_slice & (labels == 0)).sum()),
        }
        atomic_write_json(out / "summary.json", summary)
        write_manifest(out, extra={"kind": "hard-negatives"})
    top = out_df.iloc[mined.indices[:20]]
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.location(HARD_NEGATIVES))),
            **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in summary.items()},
            "most_confident": table(top[["record_id", "oof_score", "hard_negative_slice"]].to_dict("records")),
            **profile_md(resolved),
        }
    )


def load_hard_negative_weights(store: ArtifactStore, rows: pd.DataFrame) -> np.ndarray:
    """Loss weights ``[len(rows)]`` for TRAIN ``rows`` by record_id (1 for a row the miner did not see)."""
    directory = store.read(HARD_NEGATIVES)
    verify_dir(directory)
    df = pd.read_parquet(directory / WEIGHTS_FILE)
    by_id = dict(zip(df["record_id"], df["weight"], strict=True))
    return np.array([float(by_id.get(r, 1.0)) for r in rows["record_id"]], dtype=np.float32)


@dg.asset_check(
    asset=HARD_NEGATIVES,
    name="hard_negative_weights_valid",
    blocking=True,
    description="weights are 1 or the profile's weight, only TRAIN negatives at or above min_score are up-weighted, at most max_fraction of them",
)
def hard_negative_weights_valid(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    hn = settings.load().hard_negatives
    directory = store.read(HARD_NEGATIVES)
    verify_dir(directory)
    df = pd.read_parquet(directory / WEIGHTS_FILE)
    train_ids = set(load_split_rows(store, Split.TRAIN)["record_id"])
    up = df[df["weight"] > 1.0]
    negatives = int((df["label"] == 0).sum())
    problems = []
    if not set(df["weight"].unique()) <= {1.0, float(hn.weight)}:
        problems.append(f"weights {sorted(df['weight'].unique())[:5]}")
    if (up["label"] != 0).any():
        problems.append(f"{int((up['label'] != 0).sum())} positives up-weighted")
    if (up["oof_score"] < hn.min_score).any():
        problems.append("an up-weighted row scored below min_score")
    if len(up) > int(np.floor(hn.max_fraction * negatives)):
        problems.append(f"{len(up)} mined > max_fraction of {negatives} negatives")
    if not set(df["record_id"]) <= train_ids:
        problems.append("rows outside TRAIN")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none", "mined": len(up), "train_negatives": negatives},
    )


# --- hyper-parameter search ---------------------------------------------------------------------


def hpo_storage_url(profile) -> str:
    """$ROADWORK_HPO_STORAGE_URL (e.g. the deployed Postgres, password kept out of the repo),
    else ``hpo.storage_url``, else SQLite under DAGSTER_HOME."""
    return (
        os.environ.get("ROADWORK_HPO_STORAGE_URL")
        or profile.hpo.storage_url
        or f"sqlite:///{dagster_home() / 'hpo.db'}"
    )


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@dg.asset(deps=[SPLITS, SOURCE_IMAGES, EXPLORA], group_name="training", kinds={"optuna", "mlflow"})
def hpo_study(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    """Optuna (TPE, median / Hyperband pruner on each epoch's VAL_SELECT MCC, or on
    ``train.selection``'s StreetVision reward when the profile selects on it) over
    ``hpo.search_space``; the study lives in an RDB (SQLite under DAGSTER_HOME or Postgres) and a
    re-run resumes it, running only the trials still missing. Each trial is an MLflow child run.
    Writes the best parameters (``best_params.json``) and Optuna's history / importance plots."""
    import optuna

    from roadwork_ml.augment.policy import photo_styles
    from roadwork_ml.training.hpo import build_study, check_search_space, phase1_objective, run_study, study_plots
    from roadwork_ml.training.phase1 import train_phase1

    resolved = settings.resolved()
    profile = resolved.profile
    hpo = profile.hpo
    check_search_space(profile.train, hpo.search_space)  # before the splits are read
    rows, train, val_rows, val = phase1_datasets(store, profile)
    explora_dir = explora_init(store, profile)
    select_score = selection_scorer(store, profile, profile.train, val_rows, context.log.info)
    url = hpo_storage_url(profile)
    study = build_study(url, hpo, profile.train.epochs)
    tags = {"dagster.run_id": context.run_id, "roadwork.asset": HPO_STUDY, "roadwork.profile_sha256": resolved.sha256}
    with mlflow.run(profile.tracking.experiment, run_name=f"hpo-{hpo.study_name}", tags=tags) as parent:
        parent.log_params({"study_name": hpo.study_name, "storage": _redact(url), "n_trials": hpo.n_trials})

        def train_fn(cfg, report) -> float:
            child_tags = {**tags, "mlflow.parentRunId": parent.run_id}
            pruned: optuna.TrialPruned | None = None
            with mlflow.run(
                profile.tracking.experiment, run_name=f"hpo-{hpo.study_name}-trial", tags=child_tags
            ) as child:
                child.log_params({p.key: _dotted(cfg, p.key) for p in hpo.search_space})

                def on_epoch(s) -> None:
                    metrics = {"val_select_mcc": s.val_mcc, "train_loss": s.train_loss}
                    if s.select_score is not None:
                        metrics["val_select_streetvision_reward"] = s.select_score
                    child.log_metrics(metrics, step=s.epoch)
                    report(s.epoch, s.select_score if s.select_score is not None else s.val_mcc)

                try:
                    run = train_phase1(
                        profile.model,
                        cfg,
                        train,
                        val,
                        loader=profile.data.loader,
                        styles=photo_styles(profile),
                        object_boxes=train_object_boxes(rows, cfg, context.log.info),
                        explora_dir=explora_dir,
                        on_epoch=on_epoch,
                        select_score=select_score,
                        log=context.log.info,
                        progress=False,
                    )
                except optuna.TrialPruned as exc:  # a pruned trial is a finished run, not a failed one
                    child.client.set_tag(child.run_id, "optuna.state", "PRUNED")
                    pruned = exc
                else:
                    child.client.set_tag(child.run_id, "optuna.state", "COMPLETE")
                    child.log_metrics({"best_val_select_mcc": run.result.best_mcc, "best_score": run.result.best_score})
            if pruned is not None:
                raise pruned
            return run.result.best_score  # the selection score: VAL_SELECT MCC unless train.selection says otherwise

        run_study(study, phase1_objective(train_fn, profile.train, hpo.search_space), hpo)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise dg.Failure(description=f"study {hpo.study_name!r}: no trial completed ({len(study.trials)} tried)")
        best = study.best_trial
        parent.log_metrics({"best_val_select_mcc": best.value})
        trials = [{"number": t.number, "state": t.state.name, "value": t.value, **t.params} for t in study.trials]
        with store.staging(HPO_STUDY, profile=resolved) as out:
            atomic_write_json(
                out / BEST_FILE,
                {
                    "study_name": hpo.study_name,
                    "storage": _redact(url),
                    "best_trial": best.number,
                    "best_value": best.value,
                    "best_params": best.params,
                    "trials": trials,
                    "mlflow_parent_run_id": parent.run_id,
                },
            )
            plots = study_plots(study, out)
            write_manifest(out, extra={"kind": "hpo-study"})
    location = store.location(HPO_STUDY)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(location)),
            "storage": _redact(url),
            "study_name": hpo.study_name,
            "trials": len(study.trials),
            "complete": len(complete),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "best_value_val_select_mcc": float(best.value),
            "best_params": dg.MetadataValue.json(best.params),
            "trial_table": table(trials),
            "mlflow_parent_run_id": parent.run_id,
            **{f"plot_{k}": image_md(location / Path(v).name, f"optuna {k}") for k, v in plots.items()},
            **profile_md(resolved),
        }
    )


def _dotted(cfg, key: str):
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def load_hpo_best(store: ArtifactStore) -> dict:
    """The hpo_study artifact's ``best_params.json`` (hash-verified)."""
    directory = store.read(HPO_STUDY)
    verify_dir(directory)
    return json.loads((directory / BEST_FILE).read_text())


@dg.asset_check(
    asset=HPO_STUDY,
    name="best_params_match_study",
    blocking=True,
    description="the written best parameters are the RDB study's best trial and give a valid train section",
)
def best_params_match_study(store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    import optuna

    from roadwork_ml.training.hpo import apply_params

    profile = settings.load()
    best = load_hpo_best(store)
    study = optuna.load_study(study_name=best["study_name"], storage=hpo_storage_url(profile))
    problems = []
    if study.best_trial.number != best["best_trial"] or study.best_trial.params != best["best_params"]:
        problems.append(f"RDB best trial {study.best_trial.number} != written {best['best_trial']}")
    try:
        apply_params(profile.train, best["best_params"])
    except (KeyError, ValueError) as exc:
        problems.append(f"invalid: {exc}")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"problems": "; ".join(problems) or "none", "best_value": float(best["best_value"])},
    )
