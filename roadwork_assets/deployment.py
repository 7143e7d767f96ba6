"""The model registry and the deployed champion.

Each new bundle becomes a registered MLflow model version (params, metrics, the bundle and the
evaluation plots as artifacts). ``deployed_model`` promotes it to the ``champion`` alias unless
its VAL_TEST evaluation is significantly worse than the current champion's on the same images
(paired bootstrap, one-sided, with a margin); a refused bundle gets the ``challenger`` alias.
The previous champion is kept as ``previous_champion`` for rollback, and the champion's bundle
is copied to the artifact store, where serving (and production_traffic) reads it. The state
machine is roadwork_ml.evaluation.champion; this module applies its plans.
"""

import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np

from roadwork_assets.audit import record_action, record_launch
from roadwork_assets.bundle import BUNDLE, load_bundle_dir
from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows
from roadwork_assets.escalation import clear_escalation
from roadwork_assets.evaluation import EVALUATION_REPORT, load_evaluation, load_val_test_inputs
from roadwork_assets.metadata import flatten, humane, identity_md, profile_md
from roadwork_assets.policies import CALIBRATOR
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, ResolvedProfile
from roadwork_ml.artifacts import atomic_write_json, sha256_file, verify_dir, write_manifest
from roadwork_ml.contracts import Split
from roadwork_ml.evaluation.display import format_float
from roadwork_ml.export.content_identity import PromotionEvent, content_id, promotion_verdict

DEPLOYED_MODEL = "deployed_model"
TAG_MANIFEST = "roadwork.bundle_manifest_sha256"


class DeployConfig(dg.Config):
    """``promote`` (default): register the bundle and run the promotion gate. ``sync``: deploy
    whatever the ``champion`` alias points at. ``rollback``: move ``champion`` back to
    ``previous_champion`` (the demoted content is not promoted again), then sync.
    ``force`` (with ``force_reason``, audited): promote even content that was rolled back or
    that the statistical gate refuses."""

    mode: Literal["promote", "sync", "rollback"] = "promote"
    force: bool = False
    force_reason: str = ""


def _val_test_images(store: ArtifactStore, profile, record_ids: np.ndarray):
    rows = load_split_rows(store, Split.VAL_TEST)
    if not np.array_equal(rows["record_id"].to_numpy(), record_ids):
        raise ValueError(
            "evaluation_report's VAL_TEST rows differ from the current splits: re-materialize evaluation_report"
        )
    return load_val_test_inputs(store, profile, rows)[1]


def _register(
    context,
    resolved: ResolvedProfile,
    store: ArtifactStore,
    mlflow: MlflowTracking,
    bundle_dir: Path,
    manifest_sha: str,
    eval_summary: dict,
    content: str,
) -> str:
    from roadwork_ml.evaluation.champion import TAG_CONTENT

    profile = resolved.profile
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    tags = {
        "dagster.run_id": context.run_id,
        "roadwork.asset": DEPLOYED_MODEL,
        "roadwork.profile": profile.name,
        "roadwork.profile_sha256": resolved.sha256,
    }
    with mlflow.run(profile.tracking.experiment, run_name=f"bundle-{context.run_id[:8]}", tags=tags) as tracked:
        tracked.log_params(
            flatten(
                {
                    "model": profile.model.model_dump(mode="json"),
                    "inference": profile.inference.model_dump(mode="json"),
                    "policy.active": manifest["active_policy"],
                }
            )
        )
        tracked.log_metrics(
            {k: float(v) for k, v in {**manifest["metrics"], **eval_summary}.items() if isinstance(v, (int, float))}
        )
        tracked.log_artifacts(bundle_dir, "bundle")
        plots = store.read(EVALUATION_REPORT) / "plots"
        if plots.exists():
            tracked.log_artifacts(plots, "evaluation")
        run_id = tracked.run_id
    return mlflow.register_version(
        profile.deploy.registered_model,
        run_id,
        "bundle",
        tags={
            TAG_MANIFEST: manifest_sha,
            TAG_CONTENT: content,
            "roadwork.splits_fingerprint": manifest["splits_fingerprint"],
            "dagster.run_id": context.run_id,
        },
    )


def version_content(mlflow: MlflowTracking, name: str, version: str, tags: dict[str, str] | None = None) -> str:
    """The content id of a registered version: its tag, or (versions registered before the tag
    existed) computed from its downloaded bundle and then tagged."""
    from roadwork_ml.evaluation.champion import TAG_CONTENT

    tags = mlflow.version_tags(name, version) if tags is None else tags
    if TAG_CONTENT in tags:
        return tags[TAG_CONTENT]
    with tempfile.TemporaryDirectory(prefix="content-") as tmp:
        cid = content_id(mlflow.download_version(name, version, tmp)).sha256
    mlflow.set_version_tag(name, version, TAG_CONTENT, cid)
    return cid


def champion_history(mlflow: MlflowTracking, name: str) -> list[PromotionEvent]:
    """The registry as a champion history for :func:`promotion_verdict`: one rollback event per
    version whose content is blocked (tagged rolled back), then the current champion."""
    from roadwork_ml.evaluation.champion import TAG_ROLLED_BACK

    versions = mlflow.versions(name)
    champion = mlflow.alias_version(name, "champion")
    champ_cid = version_content(mlflow, name, champion, versions.get(champion)) if champion else ""
    events = [
        PromotionEvent(
            "rollback",
            champion or "?",
            champ_cid,
            from_version=v,
            from_content_id=version_content(mlflow, name, v, tags),
        )
        for v, tags in sorted(versions.items(), key=lambda kv: int(kv[0]))
        if tags.get(TAG_ROLLED_BACK) == "true"
    ]
    if champion:
        events.append(PromotionEvent("promote", champion, champ_cid))
    return events


def observe_status(context, mlflow: MlflowTracking, name: str, content_hash: str, assets: tuple[str, ...]) -> None:
    """Record on each of ``assets`` (the pages of the model-derived assets) an observation with
    the registry status of the model ``content_hash`` *now*, so a page whose latest
    materialization is a refused or rolled-back model says so, not only the deployed_model page."""
    md = identity_md(mlflow, name, content_hash, when=f"run {context.run_id[:8]} of deployed_model")
    for key in assets:
        context.log_event(dg.AssetObservation(asset_key=key, metadata=humane(md)))


def _champion_recorded_metric(mlflow: MlflowTracking, name: str, champion: str | None, metric: str) -> str:
    """The champion's VAL_TEST ``metric`` exactly as its MLflow version run recorded it."""
    if champion is None:
        return ""
    value = mlflow.version_metric(name, champion, f"val_test_{metric}")
    if value is None:
        return ""
    return (
        f"; champion v{champion} val_test_{metric} as recorded in MLflow: {format_float(value)}"
        f" (the comparison re-scores it on today's VAL_TEST through the StreetVision output)"
    )


def _deploy_copy(store: ArtifactStore, source_bundle: Path, record: dict, resolved: ResolvedProfile) -> Path:
    from roadwork_ml.export.bundle import verify_bundle

    verify_bundle(source_bundle)
    # the record names the bundle it sits beside (what the CLI and reference_profile identify);
    # a refused candidate deployed around the champion's copy is kept as judged_manifest_sha256
    deployed_hash = sha256_file(source_bundle / "manifest.json")
    if record.get("bundle_manifest_sha256", deployed_hash) != deployed_hash:
        record = {
            **record,
            "judged_manifest_sha256": record["bundle_manifest_sha256"],
            "bundle_manifest_sha256": deployed_hash,
        }
    with store.staging(DEPLOYED_MODEL, profile=resolved) as out:
        shutil.copytree(source_bundle, out / "bundle")
        atomic_write_json(out / "deployed.json", record)
        write_manifest(out, extra={"kind": DEPLOYED_MODEL})
    return store.location(DEPLOYED_MODEL)


def compare_with_champion(
    store: ArtifactStore,
    mlflow: MlflowTracking,
    profile,
    champion: str,
    labels: np.ndarray,
    new_probs: np.ndarray,
    record_ids: np.ndarray,
):
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
    return promotion_decision(
        labels,
        new_probs,
        champ_probs,
        metric=p.metric,
        margin=p.margin,
        alpha=p.alpha,
        n_resamples=p.n_resamples,
        seed=p.seed,
    )


def _sync(
    context, config: DeployConfig, resolved: ResolvedProfile, store: ArtifactStore, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    name = resolved.profile.deploy.registered_model
    if config.mode == "rollback":
        record_launch(context, store)
        tags = context.run.tags
        why = (
            f"drift report of {tags.get('roadwork/drift_day', 'an unknown day')} asked for a rollback"
            if tags.get("roadwork/action") == "rollback"
            else "rollback requested by hand"
        )
        rolled = rollback_champion(store, mlflow, name, reason=why, run_id=context.run_id)
        demoted = mlflow.version_tags(name, rolled["from_version"]).get(TAG_MANIFEST)
        if demoted:
            observe_status(context, mlflow, name, demoted, (BUNDLE, EVALUATION_REPORT))
    champion = mlflow.alias_version(name, "champion")
    if champion is None:
        raise dg.Failure(description=f"no 'champion' alias on registered model {name!r}: nothing to deploy")
    with tempfile.TemporaryDirectory(prefix="sync-") as tmp:
        src = mlflow.download_version(name, champion, tmp)
        record = {
            "registered_model": name,
            "champion": champion,
            "decision": "rolled_back" if config.mode == "rollback" else "synced",
            "reason": "deployed the version the champion alias points at"
            + (" after a rollback" if config.mode == "rollback" else ""),
            "previous_champion": mlflow.alias_version(name, "previous_champion"),
            "bundle_manifest_sha256": sha256_file(src / "manifest.json"),
        }
        _deploy_copy(store, src, record, resolved)
    record_action(store, f"deploy_{config.mode}", run_id=context.run_id, **record)
    return dg.MaterializeResult(
        metadata=humane(
            {
                **{k: str(v) for k, v in record.items()},
                "path": dg.MetadataValue.path(str(store.location(DEPLOYED_MODEL) / "bundle")),
                **profile_md(resolved),
            }
        )
    )


# reads VAL_TEST (with evaluation_report, its only readers): the champion runs on the same images
@dg.asset(deps=[BUNDLE, EVALUATION_REPORT, SPLITS, SOURCE_IMAGES], group_name="deployment", kinds={"mlflow"})
def deployed_model(
    context: dg.AssetExecutionContext,
    config: DeployConfig,
    settings: ProfileResource,
    store: ArtifactStore,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    """Register the bundle in MLflow and promote it to ``champion`` unless it is significantly
    worse than the current champion on VAL_TEST; the champion's bundle is deployed locally."""
    from roadwork_ml.evaluation.champion import plan_promotion
    from roadwork_ml.policy.gate.feature_gate import describe_gate

    resolved = settings.resolved()
    profile = resolved.profile
    name = profile.deploy.registered_model
    if config.mode in ("sync", "rollback"):
        return _sync(context, config, resolved, store, mlflow)

    bundle_dir = load_bundle_dir(store)
    manifest_sha = sha256_file(bundle_dir / "manifest.json")
    evaluation, arrays = load_evaluation(store)
    if evaluation.get("bundle_manifest_sha256") != manifest_sha:
        raise dg.Failure(
            description="evaluation_report was computed for another bundle: re-materialize evaluation_report"
        )
    labels, new_probs, ids = arrays["labels"], arrays["streetvision"], np.array(evaluation["record_ids"])

    if config.force and not config.force_reason.strip():
        raise dg.Failure(description="force: true needs a force_reason (it goes to the audit log)")
    champion = mlflow.alias_version(name, "champion")
    content = content_id(bundle_dir).sha256
    history = champion_history(mlflow, name)  # before registering: the candidate is not its own history
    verdict = promotion_verdict(content, history, force=config.force, force_reason=config.force_reason or None)
    version = mlflow.find_version(name, TAG_MANIFEST, manifest_sha)
    reused = version is not None
    if version is None:
        version = _register(
            context, resolved, store, mlflow, bundle_dir, manifest_sha, evaluation.get("summary", {}), content
        )
    plan = plan_promotion(
        version,
        champion,
        mlflow.alias_version(name, "previous_champion"),
        verdict,
        store.exists(DEPLOYED_MODEL),
        compare=lambda champ: compare_with_champion(store, mlflow, profile, champ, labels, new_probs, ids),
    )
    for v, tags in plan.version_tags.items():
        for k, val in tags.items():
            mlflow.set_version_tag(name, v, k, val)
    for alias in ("previous_champion", "champion", "challenger"):  # previous first: champion moves last
        if alias in plan.aliases:
            mlflow.set_alias(name, alias, plan.aliases[alias])

    comparison = plan.comparison
    reason = plan.reason + (
        _champion_recorded_metric(mlflow, name, champion, profile.deploy.promotion.metric) if comparison else ""
    )
    record = {
        "registered_model": name,
        "version": version,
        "champion": plan.champion,
        "previous_champion": plan.previous_champion,
        "decision": plan.decision,
        "reason": reason,
        "bundle_manifest_sha256": manifest_sha,
        "content_id": content,
        "content_verdict": verdict.to_dict(),
        "reused_registration": reused,
        "comparison": comparison.to_dict() if comparison is not None else None,
    }
    if plan.deploy_from == "candidate":
        _deploy_copy(store, bundle_dir, record, resolved)
    elif plan.deploy_from == "champion":
        with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
            _deploy_copy(store, mlflow.download_version(name, plan.champion, tmp), record, resolved)
    else:  # same champion: refresh the record around the deployed copy
        _deploy_copy(store, store.read(DEPLOYED_MODEL) / "bundle", record, resolved)
    if plan.decision == "promoted":  # a new champion ends an escalation (audited)
        clear_escalation(store, by=f"promotion of version {version}", reason=reason)
    record_action(
        store,
        f"promotion_{'forced' if verdict.forced and plan.decision == 'promoted' else plan.decision}",
        run_id=context.run_id,
        **{k: v for k, v in record.items() if k != "comparison"},
    )
    context.log.info(f"deployed_model: {plan.decision} — {reason}")
    # the judged bundle's pages (bundle, its evaluation, its calibrator) get its new status
    observe_status(context, mlflow, name, manifest_sha, (BUNDLE, EVALUATION_REPORT, CALIBRATOR))
    deployed_sha = json.loads((store.read(DEPLOYED_MODEL) / "deployed.json").read_text())["bundle_manifest_sha256"]
    meta = {
        "decision": plan.decision,
        "reason": reason,
        "judged": identity_md(mlflow, name, manifest_sha)["model"],
        "judged_content_id": content,
        "content_rule": verdict.reason,
        "judged_status": identity_md(mlflow, name, manifest_sha, when="materialization")["model_status"],
        **identity_md(mlflow, name, deployed_sha, when="materialization"),
        "registered_model": name,
        "gate": describe_gate(store.read(DEPLOYED_MODEL) / "bundle"),
        "version": version,
        "champion": str(plan.champion),
        "previous_champion": str(plan.previous_champion),
        "path": dg.MetadataValue.path(str(store.location(DEPLOYED_MODEL) / "bundle")),
        "mlflow_uri": mlflow.uri(),
        **profile_md(resolved),
    }
    if comparison is not None:
        meta.update(
            {
                "metric_new": comparison.new,
                "metric_champion": comparison.ref,
                "difference": comparison.diff,
                "difference_low": comparison.interval.low,
                "difference_high": comparison.interval.high,
                "p_value": comparison.p_value,
            }
        )
    return dg.MaterializeResult(metadata=humane(meta))


def load_deployed(store: ArtifactStore) -> tuple[Path, dict]:
    """(bundle directory, deployment record) of the deployed champion, every hash verified."""
    from roadwork_ml.export.bundle import verify_bundle

    d = store.read(DEPLOYED_MODEL)
    verify_dir(d)
    verify_bundle(d / "bundle")
    return d / "bundle", json.loads((d / "deployed.json").read_text())


def load_deployed_classifier_state(store: ArtifactStore) -> dict:
    """The deployed champion's classifier weights (backbone + head), for a fine-tuning retrain."""
    from safetensors.torch import load_file

    bundle_dir, _ = load_deployed(store)
    state = load_file(str(bundle_dir / "model.safetensors"))
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


@dg.asset_check(
    asset=deployed_model,
    blocking=True,
    description="the deployed copy verifies, and it is the bundle the registry's champion alias points at",
)
def deployed_is_champion(
    store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking
) -> dg.AssetCheckResult:
    bundle_dir, _ = load_deployed(store)
    name = settings.load().deploy.registered_model
    champion = mlflow.alias_version(name, "champion")
    if champion is None:
        return dg.AssetCheckResult(passed=False, metadata=humane({"error": "no champion alias"}))
    expected = mlflow.version_tags(name, champion).get(TAG_MANIFEST)
    deployed = sha256_file(bundle_dir / "manifest.json")
    return dg.AssetCheckResult(
        passed=bool(expected == deployed),
        metadata=humane(
            {"champion": champion, "champion_manifest": str(expected)[:16], "deployed_manifest": deployed[:16]}
        ),
    )


def rollback_champion(store: ArtifactStore, mlflow: MlflowTracking, name: str, reason: str, run_id: str) -> dict:
    """Apply :func:`~roadwork_ml.evaluation.champion.plan_rollback` to the registry and audit it."""
    from roadwork_ml.evaluation.champion import TAG_PREVIOUS, plan_rollback

    current = mlflow.alias_version(name, "champion")
    previous = mlflow.alias_version(name, "previous_champion")
    older = mlflow.version_tags(name, previous).get(TAG_PREVIOUS) if previous is not None else None
    plan = plan_rollback(current, previous, older)
    if not plan.possible:
        entry = record_action(
            store,
            "rollback_impossible",
            run_id=run_id,
            registered_model=name,
            champion=current,
            previous_champion=previous,
            reason=reason,
        )
        raise dg.Failure(
            description=f"cannot roll back {name!r}: champion={current}, previous_champion={previous}",
            metadata={"audit": dg.MetadataValue.json(entry)},
        )
    for v, tags in plan.version_tags.items():
        for k, val in tags.items():
            mlflow.set_version_tag(name, v, k, val)
    mlflow.set_alias(name, "champion", plan.to_version)
    if plan.new_previous:
        mlflow.set_alias(name, "previous_champion", plan.new_previous)
    else:
        mlflow.delete_alias(name, "previous_champion")
    return record_action(
        store,
        "rollback",
        run_id=run_id,
        registered_model=name,
        from_version=plan.from_version,
        to_version=plan.to_version,
        # the content this rollback blocks from routine re-promotion (deployed_model's content rule)
        from_content_id=version_content(mlflow, name, plan.from_version),
        to_content_id=version_content(mlflow, name, plan.to_version),
        reason=reason,
    )


def _model_in_service(asset_key: str, manifest_sha: str, mlflow: MlflowTracking, name: str) -> dg.AssetCheckResult:
    known = mlflow.identity(name, manifest_sha)
    md = identity_md(mlflow, name, manifest_sha, when="this check", known=known)
    status, version = known["status"], md["model_version"]
    return dg.AssetCheckResult(
        asset_key=asset_key,
        passed=status == "champion",
        severity=dg.AssetCheckSeverity.WARN,  # not a defect of the asset: it says whether it is served
        description=f"{status}: model version {version} of {name} is "
        + ("the deployed champion" if status == "champion" else f"{status}, not the deployed model"),
        metadata=humane(md),
    )


# Runs after deployed_model in every run that judges, promotes or rolls back a model (its
# additional dep), so the Overview page of the bundle states what the registry says of it *now*.
@dg.asset_check(
    asset=BUNDLE,
    additional_deps=[DEPLOYED_MODEL],
    description="the model in this bundle is the deployed champion (WARN otherwise: challenger, rolled back, superseded)",
)
def bundle_model_in_service(store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking):
    sha = sha256_file(load_bundle_dir(store) / "manifest.json")
    return _model_in_service(BUNDLE, sha, mlflow, settings.load().deploy.registered_model)


@dg.asset_check(
    asset=EVALUATION_REPORT,
    additional_deps=[DEPLOYED_MODEL],
    description="the evaluated model is the deployed champion (WARN otherwise: challenger, rolled back, superseded)",
)
def evaluation_model_in_service(store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking):
    evaluation, _ = load_evaluation(store)
    return _model_in_service(
        EVALUATION_REPORT, str(evaluation["bundle_manifest_sha256"]), mlflow, settings.load().deploy.registered_model
    )


@dg.asset_check(
    asset=CALIBRATOR,
    additional_deps=[DEPLOYED_MODEL],
    description="the calibrator is the one in the deployed champion's bundle (WARN otherwise: it belongs to a challenger, a rolled-back or an unjudged bundle)",
)
def calibrator_model_in_service(store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking):
    name = settings.load().deploy.registered_model
    mine = json.loads((store.read(CALIBRATOR) / "calibrator.json").read_text())
    mine.pop("slice_key", None)
    bundle_dir = load_bundle_dir(store) if store.exists(BUNDLE) else None
    in_bundle = json.loads((bundle_dir / "calibrator.json").read_text()) if bundle_dir else None
    if mine != in_bundle:  # fitted after the current bundle was built: no bundle carries it yet
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="not in a bundle yet: no deployed model uses this calibrator",
        )
    return _model_in_service(CALIBRATOR, sha256_file(bundle_dir / "manifest.json"), mlflow, name)
