"""Production monitoring: the reference profile, a day of traffic through the champion, the
daily drift report, and the jobs, schedule and sensor that act on it."""


import json
import urllib.request
from datetime import date, timedelta, timezone

import dagster as dg
import numpy as np
import torch

from roadwork_assets.audit import record_action
from roadwork_assets.deployment import DEPLOYED_DIR
from roadwork_assets.loaders import load_split_tensors, load_splits, split_rows
from roadwork_assets.executors import retrain_executor
from roadwork_assets.metadata import table_md
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, RunOverrides
from roadwork_assets.run_tags import DRIFT_RUN_TAGS, ROLLBACK_RUN_TAGS, TRAINING_RUN_TAGS
from roadwork_ml.artifacts import atomic_write_bytes, verify_dir, write_manifest
from roadwork_ml.config import load_profile
from roadwork_ml.contracts import Purpose, Split, require_split

REFERENCE_DIR = "reference_profile"
PRODUCTION_DIR = "production"
DRIFT_DIR = "drift"
SLICE_COLUMNS = ("time_of_day", "weather", "source")


def _scenario_start() -> str:
    """Partitions start on the scenario's day 0 of the profile this code location loads."""
    return load_profile(None).monitoring.scenario.start_date


daily = dg.DailyPartitionsDefinition(start_date=_scenario_start(), timezone="UTC")


def _deployed_predictor(store: ArtifactStore):
    from roadwork_ml.serving.predictor import BundlePredictor

    d = store.require(DEPLOYED_DIR)
    verify_dir(d)
    deployed = json.loads((d / "deployed.json").read_text())
    return BundlePredictor(d / "bundle", backend="onnx"), deployed


@dg.asset(deps=["deployed_model", "splits"], group_name="monitoring", kinds={"numpy"})
def reference_profile(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """What normal looks like for the deployed champion: its calibrated probabilities,
    uncertainty features and embeddings (PCA-projected) on VAL_CALIB, with quantile bins,
    slice shares and reference samples for KS / MMD."""
    from roadwork_ml.monitoring.projection import PCAProjection
    from roadwork_ml.monitoring.reference import ReferenceProfile

    profile = settings.load(config.overrides)
    mon = profile.monitoring
    require_split(Purpose.MONITOR_REFERENCE, Split.VAL_CALIB)
    predictor, deployed = _deployed_predictor(store)
    rows = split_rows(load_splits(store), Split.VAL_CALIB)
    images = load_split_tensors(store, rows, Split.VAL_CALIB, predictor.input_size).images
    out = predictor.predict_tensor(images, batch_size=profile.inference.batch_size)
    projection = PCAProjection.fit(out.embeddings, mon.embedding_dim, seed=mon.scenario.seed)
    ref = ReferenceProfile.build(out.decisions.calibrated[:, 1], out.features, projection.transform(out.embeddings), rows, max_samples=mon.reference_max_samples, mmd_samples=mon.mmd_reference_size, seed=mon.scenario.seed, labels=rows["label"].to_numpy(), slice_columns=SLICE_COLUMNS, projection=projection)
    with store.staging(REFERENCE_DIR) as out_dir:
        (out_dir / "champion.json").write_text(json.dumps({"champion": deployed.get("champion"), "bundle_manifest_sha256": deployed.get("bundle_manifest_sha256")}))
        ref.save(out_dir)  # hashes every file of the directory, champion.json included
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(store.path(REFERENCE_DIR))),
        "champion": str(deployed.get("champion")),
        "n_reference": len(rows),
        "embedding_dim": projection.dim,
        "estimated_accuracy": float(ref.estimated_accuracy),
        "labelled_accuracy": float(ref.labelled_accuracy) if ref.labelled_accuracy is not None else float("nan"),
        "mmd_sigma": float(ref.mmd_sigma),
    })


@dg.asset_check(asset=reference_profile, blocking=True, description="the saved profile verifies, reloads, belongs to the deployed champion, and its bin edges are increasing with shares summing to 1")
def reference_reloads(store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.monitoring.reference import ReferenceProfile

    d = store.require(REFERENCE_DIR)
    verify_dir(d)
    ref = ReferenceProfile.load(d)
    deployed = json.loads(store.path(DEPLOYED_DIR, "deployed.json").read_text())
    mine = json.loads((d / "champion.json").read_text())
    edges_ok = all(bool(np.all(np.diff(e) > 0)) for e in ref.edges.values())
    shares_ok = all(abs(float(np.sum(s)) - 1) < 1e-9 for s in ref.shares.values())
    same = mine["bundle_manifest_sha256"] == deployed.get("bundle_manifest_sha256")
    return dg.AssetCheckResult(passed=bool(edges_ok and shares_ok and same), metadata={"edges_increasing": edges_ok, "shares_sum_to_1": shares_ok, "matches_deployed_champion": same, "n_reference": int(ref.n_reference)})


def _read_serving_log(mon, day: date):
    from roadwork_ml.monitoring.inference_log import day_path, read_log

    path = day_path(mon.serving_log_dir, day)
    if not path.exists():
        raise dg.Failure(description=f"no serving log for {day}: expected {path} (written by BundlePredictor's inference-log writer)")
    return read_log(path)


@dg.asset(partitions_def=daily, deps=["deployed_model", reference_profile], group_name="monitoring", kinds={"parquet"})
def production_traffic(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """One day of the inference log. With ``monitoring.serving_log_dir`` set, the serving side's
    log of that day is validated and taken in; otherwise the profile's drift scenario generates
    the day's street traffic and the deployed champion predicts it. Labels arrive for a fixed
    share of images; their images are kept so a retrain can add them to TRAIN. Re-running a day
    replaces it whole (no row is lost or counted twice)."""
    from roadwork_ml.monitoring.inference_log import validate_log, write_log
    from roadwork_ml.monitoring.reference import ReferenceProfile
    from roadwork_ml.monitoring.scenario import generate_day, label_arrives, record_timestamp

    profile = settings.load(config.overrides)
    mon = profile.monitoring
    day = date.fromisoformat(context.partition_key)
    part = f"day={day.isoformat()}"
    quarantined: list[dict] = []
    if mon.serving_log_dir:
        df = _read_serving_log(mon, day)
        images_kept = 0
    else:
        predictor, deployed = _deployed_predictor(store)
        projection = ReferenceProfile.load(store.require(REFERENCE_DIR)).projection
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
        df = predictor.inference_log(out, [r.record_id for r in kept], projection, model_version=version, timestamps=[record_timestamp(day, r) for r in kept],
                                     sources=[r.source for r in kept], camera_ids=[r.camera_id for r in kept], hours=[r.hour for r in kept], weathers=[r.weather for r in kept], labels=labels)
        images_kept = int(labelled.sum())
    validate_log(df)
    with store.staging(PRODUCTION_DIR, part) as out_dir:
        write_log(out_dir / "log.parquet", df)
        if not mon.serving_log_dir:
            (out_dir / "images").mkdir()
            for rec, keep in zip(kept, labelled):
                if keep:  # the labelled images are what a retrain adds to TRAIN
                    atomic_write_bytes(out_dir / "images" / f"{rec.record_id.replace(':', '_')}.jpg", rec.image_bytes)
        if quarantined:
            (out_dir / "quarantine.json").write_text(json.dumps(quarantined, indent=1))
        write_manifest(out_dir, extra={"kind": "production_traffic", "day": day.isoformat()})
    n_lab = int((df["label"].fillna(-1).astype(int) >= 0).sum())
    decisions = df["decision"].value_counts().to_dict()
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(store.path(PRODUCTION_DIR, part, "log.parquet"))),
        "rows": len(df),
        "labelled": n_lab,
        "images_kept_for_training": images_kept,
        "quarantined": len(quarantined),
        "model_version": str(df["model_version"].iloc[0]),
        "decisions": json.dumps({str(k): int(v) for k, v in decisions.items()}),
        "night_share": float((df["time_of_day"] == "night").mean()),
        "snow_share": float((df["weather"] == "snow").mean()),
        "mean_probability": float(df["prob"].mean()),
    })


@dg.asset_check(asset=production_traffic, blocking=True, description="the day's log verifies, matches the declared schema, has unique image ids all on that day, and every kept image belongs to a labelled row")
def traffic_log_valid(context: dg.AssetCheckExecutionContext, store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.monitoring.inference_log import read_log, validate_log

    part = f"day={context.partition_key}" if context.has_partition_key else None
    if part is None:
        return dg.AssetCheckResult(passed=False, metadata={"error": "run this check with a partition"})
    d = store.require(PRODUCTION_DIR, part)
    verify_dir(d)
    df = read_log(d / "log.parquet")
    validate_log(df)
    days = set(df["timestamp"].dt.date.astype(str))
    images = {p.stem for p in (d / "images").glob("*.jpg")} if (d / "images").exists() else set()
    labelled = {i.replace(":", "_") for i in df.loc[df["label"].fillna(-1).astype(int) >= 0, "image_id"]}
    passed = df["image_id"].is_unique and days <= {context.partition_key} and images <= labelled
    return dg.AssetCheckResult(passed=bool(passed), metadata={"rows": len(df), "unique_ids": bool(df["image_id"].is_unique), "days_in_log": ", ".join(sorted(days)), "kept_images": len(images)})


@dg.asset(partitions_def=daily, deps=[production_traffic, reference_profile], group_name="monitoring", kinds={"evidently"})
def drift_report(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """PSI, KS (Bonferroni across columns), MMD on embeddings, embedding shift, the label-free
    accuracy estimate and, where labels arrived, accuracy and ECE — overall and per slice —
    and the decision: ok / alert / retrain / rollback. An evidently HTML report is saved."""
    from roadwork_ml.monitoring.decisions import drift_report as compute, evidently_html, reference_frame
    from roadwork_ml.monitoring.inference_log import read_log
    from roadwork_ml.monitoring.reference import ReferenceProfile

    profile = settings.load(config.overrides)
    mon = profile.monitoring
    part = f"day={context.partition_key}"
    log_dir = store.require(PRODUCTION_DIR, part)
    verify_dir(log_dir)
    df = read_log(log_dir / "log.parquet")
    ref_dir = store.require(REFERENCE_DIR)
    verify_dir(ref_dir)
    reference = ReferenceProfile.load(ref_dir)
    report = compute(reference, df, mon.rules, slice_columns=SLICE_COLUMNS, seed=mon.scenario.seed, day=context.partition_key, device="cuda" if torch.cuda.is_available() else None)
    with store.staging(DRIFT_DIR, part) as out_dir:
        report.save_json(out_dir / "report.json")
        evidently_html(reference_frame(reference), _current_frame(df), out_dir / "evidently.html")
        write_manifest(out_dir, extra={"kind": "drift_report", "day": context.partition_key, "decision": report.decision})
    if report.decision != "ok":
        context.log.warning(f"drift {context.partition_key}: {report.decision} — " + "; ".join(r["message"] for r in report.reasons))
    cols = [{"column": c, **{k: float(v) for k, v in s.items() if isinstance(v, (int, float))}} for c, s in report.columns.items()]
    lab = report.labelled or {}
    return dg.MaterializeResult(metadata={
        "decision": report.decision,
        "reasons": table_md(report.reasons) if report.reasons else "none",
        "rows": report.n_rows,
        "labelled_rows": report.n_labelled,
        "estimated_accuracy": float(report.estimated.get("accuracy", float("nan"))),
        "labelled_accuracy": float(lab.get("accuracy", float("nan"))) if lab else float("nan"),
        "labelled_ece": float(lab.get("ece", float("nan"))) if lab else float("nan"),
        "max_psi": max((float(s.get("psi", 0.0)) for s in report.columns.values()), default=0.0),
        "min_ks_p_bonferroni": min((float(s.get("ks_p_bonferroni", 1.0)) for s in report.columns.values()), default=1.0),
        "mmd_p_value": float((report.mmd or {}).get("p_value", float("nan"))),
        "columns": table_md(cols),
        "slices": table_md([{k: v for k, v in s.items() if not isinstance(v, (dict, list))} for s in report.slices]) if report.slices else "none",
        "evidently_html": dg.MetadataValue.path(str(store.path(DRIFT_DIR, part, "evidently.html"))),
        "report": dg.MetadataValue.path(str(store.path(DRIFT_DIR, part, "report.json"))),
    })


def _current_frame(df):
    from roadwork_ml.policy.uncertainty import FEATURE_NAMES

    out = df[["prob", *FEATURE_NAMES]].copy()
    return out


@dg.asset_check(asset=drift_report, blocking=False, description="statistics are well formed (PSI ≥ 0, p-values in [0, 1]) and the decision is what the rules give for the saved statistics")
def drift_statistics_valid(context: dg.AssetCheckExecutionContext, store: ArtifactStore, settings: ProfileResource) -> dg.AssetCheckResult:
    from roadwork_ml.monitoring.decisions import decide

    d = store.require(DRIFT_DIR, f"day={context.partition_key}")
    verify_dir(d)
    r = json.loads((d / "report.json").read_text())
    psis = [s["psi"] for s in r["columns"].values()]
    ps = [s[k] for s in r["columns"].values() for k in ("ks_p", "ks_p_bonferroni") if k in s and s[k] is not None]
    if r.get("mmd"):
        ps.append(r["mmd"]["p_value"])
    well_formed = all(np.isfinite(psis)) and min(psis) >= 0 and all(0 <= p <= 1 for p in ps)
    rules = settings.load().monitoring.rules
    decision, _ = decide(r["columns"], r["categories"], (r.get("mmd") or {}).get("p_value"), r.get("labelled"), rules)
    return dg.AssetCheckResult(passed=bool(well_formed and decision == r["decision"]), metadata={"decision": r["decision"], "recomputed": decision, "well_formed": bool(well_formed)})


# --- jobs, schedule, sensor ------------------------------------------------------------------

daily_drift_job = dg.define_asset_job("daily_drift_job", selection=dg.AssetSelection.assets(production_traffic, drift_report), partitions_def=daily, tags=DRIFT_RUN_TAGS, description="a day of traffic through the champion, then its drift report")
retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets("phase1_checkpoint").downstream() - dg.AssetSelection.assets(production_traffic, drift_report),
    tags=TRAINING_RUN_TAGS,
    executor_def=retrain_executor(),
    description="retrain with the labelled production images added to TRAIN, then rebuild, re-evaluate and (if the promotion gate agrees) redeploy",
)
rollback_job = dg.define_asset_job(
    "rollback_job",
    selection=dg.AssetSelection.assets("deployed_model", reference_profile),
    config={"ops": {"deployed_model": {"config": {"mode": "rollback"}}}},
    tags=ROLLBACK_RUN_TAGS,
    description="move the champion alias back to the previous version, redeploy it and rebuild the reference profile",
)


@dg.schedule(job=daily_drift_job, cron_schedule=load_profile(None).monitoring.schedule_cron, execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED)
def daily_drift_schedule(context: dg.ScheduleEvaluationContext):
    """Every day (02:00 UTC by default): yesterday's traffic and drift report."""
    yesterday = (context.scheduled_execution_time.astimezone(timezone.utc) - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"drift-{yesterday}", partition_key=yesterday)


ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _webhook(url: str | None, payload: dict, log) -> None:
    if not url:
        return
    try:
        req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - an unreachable webhook must not stop the sensor
        log.warning(f"alert webhook {url} failed: {exc}")


def _last_retrain_day(store: ArtifactStore, pending: list) -> date | None:
    """Drift day of the newest retrain request: from this tick, or from the audit record."""
    from roadwork_assets.audit import read_actions

    days = [date.fromisoformat(r.tags["roadwork/drift_day"]) for r in pending if r.tags.get("roadwork/action") == "retrain"]
    days += [date.fromisoformat(a["day"]) for a in read_actions(store) if a.get("action") == "retrain_requested" and a.get("day")]
    return max(days) if days else None


@dg.sensor(jobs=[retrain_job, rollback_job], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def drift_action_sensor(context: dg.SensorEvaluationContext, store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking):
    """Reads every new drift_report materialization in order (the cursor is the last storage id
    seen and always advances); retrain → ``retrain_job``, rollback → ``rollback_job`` (run keys
    unique per day and decision); alerts go to the log and the optional webhook; each action,
    and each suppressed one (a run still in flight, the retrain cooldown, no previous champion
    to roll back to), is written to the audit record."""
    profile = settings.load()
    mon = profile.monitoring
    cursor = int(context.cursor) if context.cursor else None
    result = context.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=drift_report.key, after_storage_id=cursor), limit=100, ascending=True)
    requests = []
    for rec in result.records:
        mat = rec.asset_materialization
        day = mat.partition
        decision = mat.metadata["decision"].value if "decision" in mat.metadata else "ok"
        cursor = rec.storage_id
        if decision == "ok":
            continue
        reasons = mat.metadata.get("reasons")
        payload = {"day": day, "decision": decision, "reasons": reasons.value if reasons is not None else "", "storage_id": rec.storage_id}
        context.log.warning(f"drift {day}: {decision}")
        _webhook(mon.webhook_url, payload, context.log)
        if decision == "alert":
            record_action(store, "alert", **payload)
            continue
        job = retrain_job if decision == "retrain" else rollback_job
        busy = context.instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE_STATUSES), limit=1)
        if busy:
            record_action(store, f"{decision}_suppressed", why=f"{job.name} run {busy[0].run_id} is still in flight", **payload)
            continue
        if decision == "retrain":
            last = _last_retrain_day(store, requests)
            if last is not None and 0 <= (date.fromisoformat(day) - last).days < mon.retrain_cooldown_days:
                record_action(store, "retrain_suppressed", why=f"cooldown: last retrain was for {last.isoformat()}, within {mon.retrain_cooldown_days} days", **payload)
                continue
        if decision == "rollback" and mlflow.alias_version(profile.deploy.registered_model, "previous_champion") is None:
            record_action(store, "rollback_unavailable", why="no previous champion to roll back to", **payload)
            continue
        run_key = f"{decision}-{day}"
        tags = {"roadwork/action": decision, "roadwork/drift_day": str(day), "roadwork/drift_storage_id": str(rec.storage_id)}
        run_config = {}
        if decision == "retrain":
            run_config = {"ops": {"phase1_checkpoint": {"config": {"overrides": list(mon.retrain_overrides), "include_production_labels": True, "init_from": "deployed"}}}}
        requests.append(dg.RunRequest(run_key=run_key, job_name=job.name, run_config=run_config, tags=tags))
        record_action(store, f"{decision}_requested", run_key=run_key, job=job.name, **payload)
    if cursor is not None:
        context.update_cursor(str(cursor))
    if requests:
        return requests
    return dg.SkipReason("no new drift report asks for an action")
