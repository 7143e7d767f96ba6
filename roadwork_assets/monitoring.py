"""Production monitoring: the reference profile, a day of traffic through the champion, the
daily drift report, the retrain / rollback jobs and the daily schedule (the sensor that acts on
the reports is :mod:`roadwork_assets.drift_actions`).

The daily partitions and the schedule's cron come from the profile the code location loads, so
the partitioned assets, their job and the schedule are built by :func:`build_monitoring`.

Longer than the other asset modules (~610 lines): the three assets, their checks and the jobs
share one set of keys, tags and run-config shapes, and the reference-identity rule that the
traffic, the report and its blocking check all apply.
"""

import json
from dataclasses import dataclass
from datetime import UTC, date, timedelta

import dagster as dg
import numpy as np

from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, load_split_tensors
from roadwork_assets.deployment import (
    DEPLOYED_MODEL,
    bundle_model_in_service,
    calibrator_model_in_service,
    evaluation_model_in_service,
    load_deployed,
)
from roadwork_assets.escalation import escalation_state
from roadwork_assets.executors import retrain_executor
from roadwork_assets.metadata import humane, profile_md, table
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource
from roadwork_assets.run_tags import DRIFT_RUN_TAGS, ROLLBACK_RUN_TAGS, TRAINING_RUN_TAGS
from roadwork_ml.artifacts import atomic_write_bytes, atomic_write_json, verify_dir, write_manifest
from roadwork_ml.config import Profile
from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.export.identity import identity_from_record
from roadwork_ml.monitoring.explain import SLICE_COLUMNS_ORDER, accuracy_rule_note, slice_table

REFERENCE_PROFILE = "reference_profile"
PRODUCTION_TRAFFIC = "production_traffic"
DRIFT_REPORT = "drift_report"
SLICE_COLUMNS = ("time_of_day", "weather", "source")


def reference_model(reference_champion: dict, registered_model: str) -> str:
    """The model a reference profile was built for, as the inference log names models (``name/version``)."""
    return f"{reference_champion.get('registered_model') or registered_model}/{reference_champion.get('champion')}"


def reference_mismatch(served: set[str], reference_champion: dict, registered_model: str) -> str | None:
    """None when every model in ``served`` (inference-log ``model_version`` values: ``name/version``
    or ``sha256:<manifest hash prefix>``) is the one the reference was built for; else why not,
    naming both."""
    mine = reference_model(reference_champion, registered_model)
    manifest = str(reference_champion.get("bundle_manifest_sha256") or "")

    def same(model: str) -> bool:
        return model == mine or (
            model.startswith("sha256:") and len(model) > 7 and bool(manifest) and manifest.startswith(model[7:])
        )

    others = sorted(m for m in served if not same(m))
    if not others:
        return None
    return (
        f"the reference profile was built for {mine}, but the day was served by {', '.join(others)}: "
        "rebuild reference_profile for the model that served the day (the reference_follows_champion "
        "automation does this after every change of champion) before comparing them"
    )


def _deployed_predictor(store: ArtifactStore):
    from roadwork_ml.serving.predictor import BundlePredictor

    bundle_dir, deployed = load_deployed(store)
    return BundlePredictor(bundle_dir, backend="onnx"), deployed


def load_reference(store: ArtifactStore):
    """The reference profile (hash-verified) and the champion record it was built for."""
    from roadwork_ml.monitoring.reference import ReferenceProfile

    d = store.read(REFERENCE_PROFILE)
    ref = ReferenceProfile.load(d)  # verifies every sha256
    return ref, json.loads((d / "champion.json").read_text())


# Eager: every change of champion (promotion, rollback, forced promotion) materializes
# deployed_model, and the reference_follows_champion sensor then rebuilds the reference; the
# retrain and rollback jobs rebuild it in the same run.
@dg.asset(
    deps=[DEPLOYED_MODEL, SPLITS, SOURCE_IMAGES],
    group_name="monitoring",
    kinds={"numpy"},
    automation_condition=dg.AutomationCondition.eager(),
)
def reference_profile(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """What normal looks like for the deployed champion: its calibrated probabilities,
    uncertainty features and embeddings (PCA-projected) on VAL_CALIB, with quantile bins,
    slice shares and reference samples for KS / MMD."""
    from roadwork_ml.monitoring.projection import PCAProjection
    from roadwork_ml.monitoring.reference import ReferenceProfile

    resolved = settings.resolved()
    profile = resolved.profile
    mon = profile.monitoring
    require_split(Purpose.MONITOR_REFERENCE, Split.VAL_CALIB)
    predictor, deployed = _deployed_predictor(store)
    rows = load_split_rows(store, Split.VAL_CALIB)
    images = load_split_tensors(store, rows, Split.VAL_CALIB, predictor.input_size).images
    out = predictor.predict_tensor(images, batch_size=profile.inference.batch_size)
    projection = PCAProjection.fit(out.embeddings, mon.embedding_dim, seed=mon.scenario.seed)
    ref = ReferenceProfile.build(
        out.decisions.calibrated[:, 1],
        out.features,
        projection.transform(out.embeddings),
        rows,
        max_samples=mon.reference_max_samples,
        mmd_samples=mon.mmd_reference_size,
        seed=mon.scenario.seed,
        labels=rows["label"].to_numpy(),
        slice_columns=SLICE_COLUMNS,
        projection=projection,
    )
    with store.staging(REFERENCE_PROFILE, profile=resolved) as out_dir:
        (out_dir / "champion.json").write_text(
            json.dumps(
                {
                    "registered_model": deployed.get("registered_model"),
                    "champion": deployed.get("champion"),
                    "bundle_manifest_sha256": deployed.get("bundle_manifest_sha256"),
                }
            )
        )
        ref.save(out_dir)  # hashes every file of the directory, champion.json included
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(REFERENCE_PROFILE))),
                "champion": str(deployed.get("champion")),
                # the deployed copy's record names its registry version: the same identity the CLI prints
                "model": identity_from_record(str(deployed.get("bundle_manifest_sha256")), deployed).label,
                "model_sha256": str(deployed.get("bundle_manifest_sha256")),
                "model_status": "champion at materialization (profile of the deployed model)",
                "n_reference": len(rows),
                "embedding_dim": projection.dim,
                "estimated_accuracy": float(ref.estimated_accuracy),
                "labelled_accuracy": float(ref.labelled_accuracy)
                if ref.labelled_accuracy is not None
                else float("nan"),
                "mmd_sigma": float(ref.mmd_sigma),
                **profile_md(resolved),
            }
        )
    )


@dg.asset_check(
    asset=reference_profile,
    blocking=True,
    description="the saved profile verifies, reloads, belongs to the deployed champion, and its bin edges are increasing with shares summing to 1",
)
def reference_reloads(store: ArtifactStore) -> dg.AssetCheckResult:
    ref, mine = load_reference(store)
    _, deployed = load_deployed(store)
    edges_ok = all(bool(np.all(np.diff(e) > 0)) for e in ref.edges.values())
    shares_ok = all(abs(float(np.sum(s)) - 1) < 1e-9 for s in ref.shares.values())
    same = mine["bundle_manifest_sha256"] == deployed.get("bundle_manifest_sha256")
    return dg.AssetCheckResult(
        passed=bool(edges_ok and shares_ok and same),
        metadata=humane(
            {
                "edges_increasing": edges_ok,
                "shares_sum_to_1": shares_ok,
                "matches_deployed_champion": same,
                "n_reference": int(ref.n_reference),
            }
        ),
    )


def _read_serving_log(mon, day: date):
    from roadwork_ml.monitoring.inference_log import day_path, read_log

    path = day_path(mon.serving_log_dir, day)
    if not path.exists():
        raise dg.Failure(
            description=f"no serving log for {day}: expected {path} (written by BundlePredictor's inference-log writer)"
        )
    return read_log(path)


def production_traffic(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """One day of the inference log. With ``monitoring.serving_log_dir`` set, the serving side's
    log of that day is validated and taken in; otherwise the profile's drift scenario generates
    the day's street traffic and the deployed champion predicts it. Labels arrive for a fixed
    share of images; their images are kept so a retrain can add them to TRAIN. Re-running a day
    replaces it whole (no row is lost or counted twice)."""
    import torch

    from roadwork_ml.monitoring.inference_log import validate_log, write_log
    from roadwork_ml.monitoring.scenario import generate_day, label_arrives, record_timestamp

    resolved = settings.resolved()
    profile = resolved.profile
    mon = profile.monitoring
    day = date.fromisoformat(context.partition_key)
    part = context.partition_key
    quarantined: list[dict] = []
    escalated = None
    if mon.serving_log_dir:
        df = _read_serving_log(mon, day)
        images_kept = 0
    else:
        predictor, deployed = _deployed_predictor(store)
        reference, built_for = load_reference(store)
        why = reference_mismatch(
            {f"{deployed['registered_model']}/{deployed['champion']}"}, built_for, profile.deploy.registered_model
        )
        if why:  # its PCA projection belongs to another model's embeddings
            raise dg.Failure(description=f"{day}: {why}")
        projection = reference.projection
        escalated = escalation_state(store)
        predictor.policy.escalated = escalated is not None  # SCRC at the stricter risk: defers more
        styles = {name: src.synthetic for name, src in profile.data.sources.items()}
        kept, tensors = [], []
        for rec in generate_day(styles, mon.scenario, day, profile.data.image_size):
            try:
                tensors.append(predictor.load_image(rec.image_bytes))
                kept.append(rec)
            except Exception as exc:  # noqa: BLE001 - one bad image never fails the day
                quarantined.append({"image_id": rec.record_id, "reason": f"{type(exc).__name__}: {exc}"})
        if not kept:
            raise dg.Failure(description=f"{day}: no readable image ({len(quarantined)} quarantined)")
        out = predictor.predict_tensor(torch.stack(tensors), batch_size=profile.inference.batch_size)
        labelled = np.array([label_arrives(mon.scenario, r.record_id) for r in kept])
        labels = np.where(labelled, [r.label for r in kept], -1)
        version = f"{deployed['registered_model']}/{deployed['champion']}"
        df = predictor.inference_log(
            out,
            [r.record_id for r in kept],
            projection,
            model_version=version,
            timestamps=[record_timestamp(day, r) for r in kept],
            sources=[r.source for r in kept],
            camera_ids=[r.camera_id for r in kept],
            hours=[r.hour for r in kept],
            weathers=[r.weather for r in kept],
            labels=labels,
            sequence_ids=[r.sequence_id for r in kept],
        )
        images_kept = int(labelled.sum())
    validate_log(df)
    with store.staging(PRODUCTION_TRAFFIC, part, profile=resolved) as out_dir:
        write_log(out_dir / "log.parquet", df)
        if not mon.serving_log_dir:
            (out_dir / "images").mkdir()
            for rec, keep in zip(kept, labelled, strict=False):
                if keep:  # the labelled images are what a retrain adds to TRAIN
                    atomic_write_bytes(out_dir / "images" / f"{rec.record_id.replace(':', '_')}.jpg", rec.image_bytes)
        if quarantined:
            (out_dir / "quarantine.json").write_text(json.dumps(quarantined, indent=1))
        write_manifest(out_dir, extra={"kind": "production_traffic", "day": day.isoformat()})
    n_lab = int((df["label"].fillna(-1).astype(int) >= 0).sum())
    decisions = df["decision"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(PRODUCTION_TRAFFIC, part) / "log.parquet")),
                "rows": len(df),
                "labelled": n_lab,
                "images_kept_for_training": images_kept,
                "quarantined": len(quarantined),
                "model_version": str(df["model_version"].iloc[0]),
                "decisions": table([{"decision": str(k), "images": int(v)} for k, v in decisions.items()]),
                "defer_share": float((df["decision"] == "defer").mean()),
                "decision_policy": (
                    f"ESCALATED since {escalated['since']}: SCRC at selective risk {escalated['scrc_alpha']} (defers more) — {escalated['state']}"
                    if escalated
                    else "normal"
                ),
                "night_share": float((df["time_of_day"] == "night").mean()),
                "snow_share": float((df["weather"] == "snow").mean()),
                "mean_probability": float(df["prob"].mean()),
                **profile_md(resolved),
            }
        )
    )


@dg.asset_check(
    asset=PRODUCTION_TRAFFIC,
    blocking=True,
    description="the day's log verifies, matches the declared schema, has unique image ids all on that day, and every kept image belongs to a labelled row",
)
def traffic_log_valid(context: dg.AssetCheckExecutionContext, store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.monitoring.inference_log import read_log, validate_log

    if not context.has_partition_key:
        return dg.AssetCheckResult(passed=False, metadata=humane({"error": "run this check with a partition"}))
    d = store.read(PRODUCTION_TRAFFIC, context.partition_key)
    verify_dir(d)
    df = read_log(d / "log.parquet")
    validate_log(df)
    days = set(df["timestamp"].dt.date.astype(str))
    images = {p.stem for p in (d / "images").glob("*.jpg")} if (d / "images").exists() else set()
    labelled = {i.replace(":", "_") for i in df.loc[df["label"].fillna(-1).astype(int) >= 0, "image_id"]}
    passed = df["image_id"].is_unique and days <= {context.partition_key} and images <= labelled
    return dg.AssetCheckResult(
        passed=bool(passed),
        metadata=humane(
            {
                "rows": len(df),
                "unique_ids": bool(df["image_id"].is_unique),
                "days_in_log": ", ".join(sorted(days)),
                "kept_images": len(images),
            }
        ),
    )


def drift_report(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    """PSI, KS (Bonferroni across columns), MMD on embeddings, embedding shift, the label-free
    accuracy estimate and, where labels arrived, accuracy and ECE — overall and per slice —
    and the decision: ok / alert / retrain / rollback. An evidently HTML report is saved."""
    import torch

    from roadwork_ml.monitoring.decisions import drift_report as compute
    from roadwork_ml.monitoring.decisions import evidently_html, reference_frame
    from roadwork_ml.monitoring.inference_log import read_log

    resolved = settings.resolved()
    mon = resolved.profile.monitoring
    part = context.partition_key
    log_dir = store.read(PRODUCTION_TRAFFIC, part)
    verify_dir(log_dir)
    df = read_log(log_dir / "log.parquet")
    reference, built_for = load_reference(store)
    registered = resolved.profile.deploy.registered_model
    served = sorted(set(df["model_version"].astype(str)))
    why = reference_mismatch(set(served), built_for, registered)
    if why:
        raise dg.Failure(description=f"drift_report {part} refused: {why}")
    report = compute(
        reference,
        df,
        mon.rules,
        slice_columns=SLICE_COLUMNS,
        seed=mon.scenario.seed,
        day=context.partition_key,
        device="cuda" if torch.cuda.is_available() else None,
    )
    with store.staging(DRIFT_REPORT, part, profile=resolved) as out_dir:
        report.save_json(out_dir / "report.json")
        atomic_write_json(
            out_dir / "models.json",
            {
                "served": served,
                "reference": reference_model(built_for, registered),
                "registered_model": registered,
                "reference_built_for": built_for,  # the reference's champion.json, as its check re-reads it
            },
        )
        evidently_html(reference_frame(reference), _current_frame(df), out_dir / "evidently.html")
        write_manifest(
            out_dir, extra={"kind": "drift_report", "day": context.partition_key, "decision": report.decision}
        )
    if report.decision != "ok":
        context.log.warning(
            f"drift {context.partition_key}: {report.decision} — " + "; ".join(r["message"] for r in report.reasons)
        )
    cols = [
        {"column": c, **{k: float(v) for k, v in s.items() if isinstance(v, (int, float))}}
        for c, s in report.columns.items()
    ]
    lab = report.labelled or {}
    saved = store.read(DRIFT_REPORT, part)
    evidently_uri, mlflow_run = _log_drift_to_mlflow(context, mlflow, resolved, part, saved, report.decision)
    return dg.MaterializeResult(
        metadata=humane(
            {
                "decision": report.decision,
                # the sensor acts only on reports about the model that is champion when it reads them
                "served_model": ", ".join(served),
                "reference_model": reference_model(built_for, registered),
                "reasons": table(report.reasons) if report.reasons else "none",
                "reason_rules": ",".join(sorted({r["rule"] for r in report.reasons})),
                "rows": report.n_rows,
                "labelled_rows": report.n_labelled,
                "accuracy_rule": accuracy_rule_note(
                    report.n_labelled, mon.rules.min_labels_for_accuracy, report.labelled
                ),
                "labels_needed": max(0, mon.rules.min_labels_for_accuracy - report.n_labelled),
                "estimated_accuracy": float(report.estimated.get("accuracy", float("nan"))),
                "labelled_accuracy": float(lab.get("accuracy", float("nan"))) if lab else float("nan"),
                "labelled_ece": float(lab.get("ece", float("nan"))) if lab else float("nan"),
                "max_psi": max((float(s.get("psi", 0.0)) for s in report.columns.values()), default=0.0),
                "min_ks_p_holm": min((float(s.get("ks_p_holm", 1.0)) for s in report.columns.values()), default=1.0),
                "mmd_p_value": float((report.mmd or {}).get("p_value", float("nan"))),
                "mmd_p_holm": float((report.mmd or {}).get("p_holm", float("nan"))),
                "grouping": str((report.family or {}).get("grouping")),
                "columns": table(cols),
                "slices": table(
                    slice_table(report.slices, df, mon.rules.min_labels_for_accuracy), columns=SLICE_COLUMNS_ORDER
                )
                if report.slices
                else "none",
                "evidently_html": dg.MetadataValue.path(str(store.location(DRIFT_REPORT, part) / "evidently.html")),
                "evidently_mlflow": dg.MetadataValue.url(evidently_uri),
                "mlflow_run": f"{mlflow_run} (experiment {resolved.profile.tracking.experiment}, run drift-{part}, artifacts drift_report/)",
                "report": dg.MetadataValue.path(str(store.location(DRIFT_REPORT, part) / "report.json")),
                **profile_md(resolved),  # the sensor launches a retrain under the profile this decision was made with
            }
        )
    )


def _log_drift_to_mlflow(context, mlflow: MlflowTracking, resolved, day: str, saved, decision: str) -> tuple[str, str]:
    """Log the day's report.json and evidently HTML to MLflow (run ``drift-<day>``, artifact
    folder ``drift_report``) so the UI can reach them; returns (the HTML's artifact URI, run id)."""
    with mlflow.run(
        resolved.profile.tracking.experiment,
        run_name=f"drift-{day}",
        tags={
            "dagster.run_id": context.run_id,
            "roadwork.asset": DRIFT_REPORT,
            "roadwork.drift_day": day,
            "roadwork.drift_decision": decision,
            "roadwork.profile_sha256": resolved.sha256,
        },
    ) as tracked:
        tracked.log_artifacts(saved, DRIFT_REPORT)
        run = tracked.client.get_run(tracked.run_id)
    return f"{run.info.artifact_uri}/{DRIFT_REPORT}/evidently.html", tracked.run_id


def _current_frame(df):
    from roadwork_ml.policy.uncertainty import FEATURE_NAMES

    out = df[["prob", *FEATURE_NAMES]].copy()
    return out


@dg.asset_check(
    asset=DRIFT_REPORT,
    blocking=False,
    description="statistics are well formed (PSI ≥ 0, p-values in [0, 1]) and the decision is what the rules give for the saved statistics",
)
def drift_statistics_valid(
    context: dg.AssetCheckExecutionContext, store: ArtifactStore, settings: ProfileResource
) -> dg.AssetCheckResult:
    from roadwork_ml.monitoring.decisions import decide

    d = store.read(DRIFT_REPORT, context.partition_key)
    verify_dir(d)
    r = json.loads((d / "report.json").read_text())
    psis = [s["psi"] for s in r["columns"].values()]
    ps = [
        s[k]
        for s in r["columns"].values()
        for k in ("ks_p", "ks_p_holm", "psi_p", "psi_p_holm")
        if k in s and s[k] is not None
    ]
    if r.get("mmd"):
        ps += [r["mmd"]["p_value"], r["mmd"]["p_holm"]]
    well_formed = all(np.isfinite(psis)) and min(psis) >= 0 and all(0 <= p <= 1 for p in ps)
    rules = settings.load().monitoring.rules
    decision, _ = decide(r["columns"], r["categories"], r.get("mmd"), r.get("labelled"), rules)
    return dg.AssetCheckResult(
        passed=bool(well_formed and decision == r["decision"]),
        metadata=humane({"decision": r["decision"], "recomputed": decision, "well_formed": bool(well_formed)}),
    )


@dg.asset_check(
    asset=DRIFT_REPORT,
    blocking=True,
    description="the reference the day was compared with was built for the model that served the day (names both)",
)
def reference_matches_served_model(context: dg.AssetCheckExecutionContext, store: ArtifactStore) -> dg.AssetCheckResult:
    d = store.read(DRIFT_REPORT, context.partition_key)
    verify_dir(d)
    models = json.loads((d / "models.json").read_text())
    ref = str(models["reference"])
    why = reference_mismatch(set(models["served"]), models["reference_built_for"], models["registered_model"])
    return dg.AssetCheckResult(
        passed=why is None,
        metadata=humane(
            {"served_model": ", ".join(models["served"]), "reference_model": ref, "mismatch": why or "none"}
        ),
    )


def load_labelled_production(store: ArtifactStore, size: int):
    """Labelled production images kept by production_traffic, every day hash-verified: (uint8
    images ``[N, 3, size, size]``, labels ``[N]``, days used). A retrain's feedback read."""
    import torch

    from roadwork_ml.data.transforms import load_image_batch
    from roadwork_ml.monitoring.inference_log import read_log

    paths, labels, days = [], [], []
    for day in store.partitions(PRODUCTION_TRAFFIC):
        d = store.read(PRODUCTION_TRAFFIC, day)
        verify_dir(d)
        df = read_log(d / "log.parquet")
        lab = df[df["label"].fillna(-1).astype(int) >= 0]
        for image_id, label in zip(lab["image_id"], lab["label"].astype(int), strict=False):
            p = d / "images" / f"{image_id.replace(':', '_')}.jpg"
            if p.exists():
                paths.append(p)
                labels.append(label)
        days.append(day)
    images = load_image_batch(paths, size) if paths else torch.empty((0, 3, size, size), dtype=torch.uint8)
    return images, torch.tensor(labels, dtype=torch.int64), days


# --- jobs, schedule, sensor ------------------------------------------------------------------

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets("phase1_checkpoint").downstream()
    - dg.AssetSelection.assets(PRODUCTION_TRAFFIC, DRIFT_REPORT),
    tags=TRAINING_RUN_TAGS,
    executor_def=retrain_executor(),
    description="retrain with the labelled production images added to TRAIN, then rebuild, re-evaluate and (if the promotion gate agrees) redeploy",
)
ROLLBACK_OPS = {"deployed_model": {"config": {"mode": "rollback"}}}
rollback_job = dg.define_asset_job(
    "rollback_job",
    # the model-status checks of bundle and evaluation_report run after the rollback, so their
    # pages say "rolled back" (issue: the Overview showed the status at materialization)
    selection=dg.AssetSelection.assets("deployed_model", reference_profile)
    | dg.AssetSelection.checks(bundle_model_in_service, evaluation_model_in_service, calibrator_model_in_service),
    config={"ops": ROLLBACK_OPS},
    tags=ROLLBACK_RUN_TAGS,
    description="move the champion alias back to the previous version, redeploy it and rebuild the reference profile",
)


def days_to_request(yesterday: date, reported: set[str], catchup_days: int, first_day: date) -> list[str]:
    """Yesterday, plus the days after the newest reported day that have no report yet, at most
    ``catchup_days`` of them and none before ``first_day``; ISO strings, oldest first. With no
    report at all there is nothing "missed": yesterday only (switching monitoring on never
    backfills history)."""
    newest = max((date.fromisoformat(d) for d in reported), default=None)
    days = [yesterday]
    if newest is not None:
        start = max(newest + timedelta(days=1), yesterday - timedelta(days=catchup_days), first_day)
        days = [start + timedelta(days=i) for i in range((yesterday - start).days + 1)] or [yesterday]
    keep = [d for d in days if d >= first_day and (d == yesterday or d.isoformat() not in reported)]
    return [d.isoformat() for d in keep]


@dataclass
class MonitoringDefinitions:
    """What the daily partitions (start date from the profile) and the schedule (cron from the
    profile) make profile-dependent."""

    assets: list
    jobs: list
    schedules: list


def build_monitoring(profile: Profile) -> MonitoringDefinitions:
    """The daily partitioned assets, their job and the daily schedule for ``profile``."""
    mon = profile.monitoring
    daily = dg.DailyPartitionsDefinition(start_date=mon.scenario.start_date, timezone="UTC")
    traffic = dg.asset(
        name=PRODUCTION_TRAFFIC,
        partitions_def=daily,
        deps=[DEPLOYED_MODEL, REFERENCE_PROFILE],
        group_name="monitoring",
        kinds={"parquet"},
    )(production_traffic)
    drift = dg.asset(
        name=DRIFT_REPORT,
        partitions_def=daily,
        deps=[PRODUCTION_TRAFFIC, REFERENCE_PROFILE],
        group_name="monitoring",
        kinds={"evidently"},
    )(drift_report)
    job = dg.define_asset_job(
        "daily_drift_job",
        selection=dg.AssetSelection.assets(PRODUCTION_TRAFFIC, DRIFT_REPORT),
        partitions_def=daily,
        tags=DRIFT_RUN_TAGS,
        description="a day of traffic through the champion, then its drift report",
    )

    @dg.schedule(
        name="daily_drift_schedule",
        job=job,
        cron_schedule=mon.schedule_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
    def daily_drift_schedule(context: dg.ScheduleEvaluationContext):
        """Every day (the profile's monitoring.schedule_cron): yesterday's traffic and drift
        report, and the days missed since the last report (at most ``monitoring.catchup_days``,
        oldest first; run keys ``drift-<day>`` keep a day from running twice)."""
        yesterday = (context.scheduled_execution_time.astimezone(UTC) - timedelta(days=1)).date()
        done = context.instance.get_materialized_partitions(dg.AssetKey(DRIFT_REPORT))
        days = days_to_request(yesterday, done, mon.catchup_days, mon.scenario.start)
        return [dg.RunRequest(run_key=f"drift-{d}", partition_key=d) for d in days]

    return MonitoringDefinitions(assets=[traffic, drift], jobs=[job], schedules=[daily_drift_schedule])
