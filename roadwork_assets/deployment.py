"""The model registry and the deployed champion.

Each new bundle becomes a registered MLflow model version (params, metrics, the bundle and the
evaluation plots as artifacts). ``deployed_model`` promotes it to the ``champion`` alias unless
its VAL_TEST evaluation is significantly worse than the current champion's on the same images
(paired bootstrap, one-sided, with a margin); a refused bundle gets the ``challenger`` alias.
The previous champion is kept as ``previous_champion`` for rollback, and the champion's bundle
is copied to the artifact store, where serving (and production_traffic) reads it.
"""


import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np

from roadwork_assets.audit import record_action
from roadwork_assets.bundle import BUNDLE_DIR
from roadwork_assets.metadata import flatten
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, RunOverrides
from roadwork_ml.artifacts import atomic_write_json, sha256_file, verify_dir, write_manifest
from roadwork_ml.contracts import Split

DEPLOYED_DIR = "deployed_model"
EVAL_DIR = "evaluation_report"
EVAL_ARRAYS = "val_test_outputs.safetensors"
TAG_MANIFEST = "roadwork.bundle_manifest_sha256"
TAG_PREVIOUS = "roadwork.previous_champion"
TAG_ROLLED_BACK = "roadwork.rolled_back"


class DeployConfig(RunOverrides):
    """``promote`` (default): register the bundle and run the promotion gate. ``sync``: deploy
    whatever the ``champion`` alias points at. ``rollback``: move ``champion`` back to
    ``previous_champion`` (the demoted version is never promoted again), then sync."""

    mode: Literal["promote", "sync", "rollback"] = "promote"


def _find_version(mlflow: MlflowTracking, name: str, manifest_sha: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow.client().search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get(TAG_MANIFEST) == manifest_sha:
            return str(v.version)
    return None


def _val_test_images(store: ArtifactStore, profile, record_ids: np.ndarray):
    from roadwork_assets.loaders import load_split_tensors, load_splits, split_rows

    rows = split_rows(load_splits(store), Split.VAL_TEST)
    if not np.array_equal(rows["record_id"].to_numpy(), record_ids):
        raise ValueError("evaluation_report's VAL_TEST rows differ from the current splits: re-materialize evaluation_report")
    return load_split_tensors(store, rows, Split.VAL_TEST, profile.inference.input_size).images


def _register(context, profile, store: ArtifactStore, mlflow: MlflowTracking, bundle_dir: Path, manifest_sha: str, eval_summary: dict) -> str:
    name = profile.deploy.registered_model
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    with mlflow.run(profile.tracking.experiment, run_name=f"bundle-{context.run_id[:8]}", tags={"dagster.run_id": context.run_id, "roadwork.asset": "deployed_model", "roadwork.profile": profile.name}) as tracked:
        tracked.log_params(flatten({"model": profile.model.model_dump(mode="json"), "inference": profile.inference.model_dump(mode="json"), "policy.active": manifest["active_policy"]}))
        tracked.log_metrics({k: float(v) for k, v in {**manifest["metrics"], **eval_summary}.items() if isinstance(v, (int, float))})
        tracked.log_artifacts(bundle_dir, "bundle")
        plots = store.path(EVAL_DIR, "plots")
        if plots.exists():
            tracked.log_artifacts(plots, "evaluation")
        run_id = tracked.run_id
    return mlflow.register_version(name, run_id, "bundle", tags={TAG_MANIFEST: manifest_sha, "roadwork.splits_fingerprint": manifest["splits_fingerprint"], "dagster.run_id": context.run_id})


def _deploy_copy(store: ArtifactStore, source_bundle: Path, record: dict) -> Path:
    from roadwork_ml.export.bundle import verify_bundle

    verify_bundle(source_bundle)
    with store.staging(DEPLOYED_DIR) as out:
        shutil.copytree(source_bundle, out / "bundle")
        atomic_write_json(out / "deployed.json", record)
        write_manifest(out, extra={"kind": "deployed_model"})
    return store.path(DEPLOYED_DIR)


def compare_with_champion(store: ArtifactStore, mlflow: MlflowTracking, profile, champion: str, labels: np.ndarray, new_probs: np.ndarray, record_ids: np.ndarray):
    """Run the champion's registered bundle on the same VAL_TEST images and apply the
    promotion gate; returns the PromotionDecision."""
    from roadwork_ml.evaluation.promotion import promotion_decision
    from roadwork_ml.serving.predictor import BundlePredictor

    p = profile.deploy.promotion
    with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
        champ_dir = mlflow.download_version(profile.deploy.registered_model, champion, tmp)
        predictor = BundlePredictor(champ_dir, backend="onnx")
        images = _val_test_images(store, profile, record_ids)
        champ_probs = predictor.predict_tensor(images, batch_size=profile.inference.batch_size).decisions.streetvision
    return promotion_decision(labels, new_probs, champ_probs, metric=p.metric, margin=p.margin, alpha=p.alpha, n_resamples=p.n_resamples, seed=p.seed)


@dg.asset(deps=[BUNDLE_DIR, EVAL_DIR], group_name="deployment", kinds={"mlflow"})
def deployed_model(context: dg.AssetExecutionContext, config: DeployConfig, settings: ProfileResource, store: ArtifactStore, mlflow: MlflowTracking) -> dg.MaterializeResult:
    """Register the bundle in MLflow and promote it to ``champion`` unless it is significantly
    worse than the current champion on VAL_TEST; the champion's bundle is deployed locally."""
    from safetensors.numpy import load_file

    from roadwork_ml.export.bundle import verify_bundle

    profile = settings.load(config.overrides)
    name = profile.deploy.registered_model
    if config.mode == "rollback":
        why = f"drift report of {context.run.tags.get('roadwork/drift_day', 'an unknown day')} asked for a rollback" if context.run.tags.get("roadwork/action") == "rollback" else "rollback requested by hand"
        rollback_champion(store, mlflow, name, reason=why, run_id=context.run_id)
    champion = mlflow.alias_version(name, "champion")
    if config.mode in ("sync", "rollback"):
        if champion is None:
            raise dg.Failure(description=f"no 'champion' alias on registered model {name!r}: nothing to deploy")
        with tempfile.TemporaryDirectory(prefix="sync-") as tmp:
            src = mlflow.download_version(name, champion, tmp)
            record = {"registered_model": name, "champion": champion, "decision": "rolled_back" if config.mode == "rollback" else "synced", "reason": "deployed the version the champion alias points at" + (" after a rollback" if config.mode == "rollback" else ""), "previous_champion": mlflow.alias_version(name, "previous_champion"), "bundle_manifest_sha256": sha256_file(src / "manifest.json")}
            _deploy_copy(store, src, record)
        record_action(store, f"deploy_{config.mode}", run_id=context.run_id, **record)
        return dg.MaterializeResult(metadata={**{k: str(v) for k, v in record.items()}, "path": dg.MetadataValue.path(str(store.path(DEPLOYED_DIR, "bundle")))})

    bundle_dir = store.require(BUNDLE_DIR)
    verify_bundle(bundle_dir)
    manifest_sha = sha256_file(bundle_dir / "manifest.json")
    eval_dir = store.require(EVAL_DIR)
    verify_dir(eval_dir)
    evaluation = json.loads((eval_dir / "report.json").read_text())
    if evaluation.get("bundle_manifest_sha256") != manifest_sha:
        raise dg.Failure(description="evaluation_report was computed for another bundle: re-materialize evaluation_report")
    arrays = load_file(str(eval_dir / EVAL_ARRAYS))
    labels, new_probs, ids = arrays["labels"], arrays["streetvision"], np.array(evaluation["record_ids"])

    version = _find_version(mlflow, name, manifest_sha)
    reused = version is not None
    if version is None:
        version = _register(context, profile, store, mlflow, bundle_dir, manifest_sha, evaluation.get("summary", {}))
    tags = mlflow.version_tags(name, version)
    comparison = None
    if tags.get(TAG_ROLLED_BACK) == "true":
        decision, reason = "refused", f"version {version} was rolled back earlier; it is not promoted again"
    elif champion is None:
        decision, reason = "promoted", "no champion yet"
    elif champion == version:
        decision, reason = "unchanged", f"version {version} is already the champion"
    else:
        gate = compare_with_champion(store, mlflow, profile, champion, labels, new_probs, ids)
        comparison = gate.comparison
        decision, reason = ("promoted" if gate.promote else "refused"), gate.reason

    previous = mlflow.alias_version(name, "previous_champion")
    if decision == "promoted":
        if champion is not None:
            mlflow.set_alias(name, "previous_champion", champion)
            mlflow.set_version_tag(name, version, TAG_PREVIOUS, champion)
            previous = champion
        mlflow.set_alias(name, "champion", version)
        champion = version
    elif decision == "refused":
        mlflow.set_alias(name, "challenger", version)

    record = {"registered_model": name, "version": version, "champion": champion, "previous_champion": previous, "decision": decision, "reason": reason, "bundle_manifest_sha256": manifest_sha, "reused_registration": reused, "comparison": comparison.to_dict() if comparison is not None else None}
    deployed = store.path(DEPLOYED_DIR, "bundle")
    if decision == "promoted" or not deployed.exists():
        if champion == version:
            _deploy_copy(store, bundle_dir, record)
        else:
            with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
                _deploy_copy(store, mlflow.download_version(name, champion, tmp), record)
    else:  # same champion: refresh the record around the deployed copy
        _deploy_copy(store, deployed, record)
    record_action(store, f"promotion_{decision}", run_id=context.run_id, **{k: v for k, v in record.items() if k != "comparison"})
    context.log.info(f"deployed_model: {decision} — {reason}")
    meta = {
        "decision": decision,
        "reason": reason,
        "registered_model": name,
        "version": version,
        "champion": str(champion),
        "previous_champion": str(previous),
        "path": dg.MetadataValue.path(str(store.path(DEPLOYED_DIR, "bundle"))),
        "mlflow_uri": mlflow.uri(),
    }
    if comparison is not None:
        meta.update({"metric_new": comparison.new, "metric_champion": comparison.ref, "difference": comparison.diff, "difference_low": comparison.interval.low, "difference_high": comparison.interval.high, "p_value": comparison.p_value})
    return dg.MaterializeResult(metadata=meta)


@dg.asset_check(asset=deployed_model, blocking=True, description="the deployed copy verifies, and it is the bundle the registry's champion alias points at")
def deployed_is_champion(store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking) -> dg.AssetCheckResult:
    from roadwork_ml.export.bundle import verify_bundle

    d = store.require(DEPLOYED_DIR)
    verify_dir(d)
    verify_bundle(d / "bundle")
    name = settings.load().deploy.registered_model
    champion = mlflow.alias_version(name, "champion")
    if champion is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "no champion alias"})
    expected = mlflow.version_tags(name, champion).get(TAG_MANIFEST)
    deployed = sha256_file(d / "bundle" / "manifest.json")
    return dg.AssetCheckResult(passed=bool(expected == deployed), metadata={"champion": champion, "champion_manifest": str(expected)[:16], "deployed_manifest": deployed[:16]})


def rollback_champion(store: ArtifactStore, mlflow: MlflowTracking, name: str, reason: str, run_id: str) -> dict:
    """Move ``champion`` back to ``previous_champion``; the demoted version is tagged rolled
    back (never promoted again) and the chain of previous champions moves one step back."""
    current = mlflow.alias_version(name, "champion")
    previous = mlflow.alias_version(name, "previous_champion")
    if current is None or previous is None:
        entry = record_action(store, "rollback_impossible", run_id=run_id, registered_model=name, champion=current, previous_champion=previous, reason=reason)
        raise dg.Failure(description=f"cannot roll back {name!r}: champion={current}, previous_champion={previous}", metadata={"audit": json.dumps(entry)})
    mlflow.set_version_tag(name, current, TAG_ROLLED_BACK, "true")
    mlflow.set_alias(name, "champion", previous)
    older = mlflow.version_tags(name, previous).get(TAG_PREVIOUS)
    if older:
        mlflow.set_alias(name, "previous_champion", older)
    else:
        mlflow.delete_alias(name, "previous_champion")
    return record_action(store, "rollback", run_id=run_id, registered_model=name, from_version=current, to_version=previous, reason=reason)
