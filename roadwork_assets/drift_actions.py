"""The drift sensor: reads each new ``drift_report`` materialization once and acts on it.

* **One cursor.** The last storage id handled lives in the instance's key-value store
  (:data:`CURSOR_KEY`), so the daemon's sensor and ``roadwork_assets.drift_demo`` share it; the
  sensor's own cursor mirrors it for the UI.
* **No replay.** On the first tick (no cursor anywhere) the reports written before the sensor
  was switched on (``last_sensor_start_time``; unknown = now) are history: skipped, audited once.
* **Only the champion.** A report about a model that is no longer the champion is audited as
  ``stale_report`` and not acted on (its retrain or rollback would hit another model).
* **What was launched.** The sensor audits what it decides not to launch (suppressed, stale,
  run key already used); the retrain and rollback runs record ``<action>_launched`` themselves
  when they start (:func:`roadwork_assets.audit.record_launch`), so the record holds runs that
  exist. The retrain cooldown counts launched ``retrain_job`` runs, not requests.
* **Escalation.** When the rules ask for an action that is impossible (no previous champion, a
  retrain in cooldown), :func:`roadwork_assets.escalation.escalate` raises a critical alert and
  puts serving into the stricter decision policy.
"""

from datetime import date

import dagster as dg

from roadwork_assets.audit import record_action
from roadwork_assets.escalation import escalate
from roadwork_assets.monitoring import DRIFT_REPORT, ROLLBACK_OPS, retrain_job, rollback_job
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource

CURSOR_KEY = "roadwork/drift_action_sensor/last_storage_id"
# rules that say the champion performs badly (labels), as opposed to inputs having moved: a
# retrain they ask for that the cooldown blocks is escalated; a blocked covariate-shift retrain
# (the reference stays VAL_CALIB, so a lasting shift asks every day) is only suppressed
PERFORMANCE_RULES = frozenset({"accuracy_retrain", "accuracy_rollback", "ece_increase", "accuracy_drop"})

ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def shared_cursor(instance: dg.DagsterInstance) -> int | None:
    """The last drift_report storage id the sensor handled (daemon and demo alike), or None."""
    value = instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY)
    return int(value) if value else None


def set_shared_cursor(instance: dg.DagsterInstance, storage_id: int) -> None:
    instance.run_storage.set_cursor_values({CURSOR_KEY: str(storage_id)})


def _webhook(url: str | None, payload: dict, log) -> None:
    import json
    import urllib.request

    if not url:
        return
    try:
        req = urllib.request.Request(
            url, data=json.dumps(payload, default=str).encode(), headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(req, timeout=5).close()
    except Exception as exc:  # noqa: BLE001 - an unreachable webhook must not stop the sensor
        log.warning(f"alert webhook {url} failed: {exc}")


def launched_retrain_days(instance: dg.DagsterInstance) -> list[date]:
    """Drift days of the retrain_job runs that exist (launched by the sensor or the demo)."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=retrain_job.name), limit=1000)
    return [date.fromisoformat(r.tags["roadwork/drift_day"]) for r in runs if r.tags.get("roadwork/drift_day")]


def _run_key_used(instance: dg.DagsterInstance, run_key: str) -> str | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return runs[0].run_id if runs else None


def decided_under(metadata, fallback: ProfileResource) -> ProfileResource:
    """The profile a drift_report materialization was decided under (its metadata records the
    source and overrides), or ``fallback`` for a report that carries none."""
    if "profile" not in metadata:
        return fallback
    overrides = metadata["profile_overrides"].value if "profile_overrides" in metadata else []
    return ProfileResource(profile=str(metadata["profile"].value), overrides=list(overrides))


def _reasons_text(value) -> str:
    if value is None:
        return ""
    v = value.value
    if isinstance(v, str):
        return v
    records = getattr(v, "records", None)
    if records is not None:  # a TableMetadataValue: one line per reason
        return "; ".join(str(r.data.get("message", r.data)) for r in records)
    return str(v)


def _within(day: str, days: list[date], cooldown: int) -> list[date]:
    """The ``days`` whose retrain still cools down on ``day``."""
    today = date.fromisoformat(day)
    return [d for d in days if 0 <= (today - d).days < cooldown]


def _meta(mat, key: str, default=None):
    return mat.metadata[key].value if key in mat.metadata else default


def _skip_history(context, store: ArtifactStore, records) -> tuple[list, int | None]:
    """First tick ever: drop the reports written before the sensor was switched on."""
    since = context.last_sensor_start_time
    old = [r for r in records if since is None or r.timestamp < since]
    if not old:
        return records, None
    last = old[-1].storage_id
    record_action(
        store,
        "sensor_switched_on",
        skipped_reports=len(old),
        skipped_days=sorted({r.asset_materialization.partition for r in old}),
        up_to_storage_id=last,
        why="reports written before the sensor was switched on are history: never replayed",
    )
    return [r for r in records if r.storage_id > last], last


@dg.sensor(jobs=[retrain_job, rollback_job], minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def drift_action_sensor(
    context: dg.SensorEvaluationContext, store: ArtifactStore, settings: ProfileResource, mlflow: MlflowTracking
):
    """Acts on each new drift report about the current champion (see the module notes): retrain →
    ``retrain_job``, rollback → ``rollback_job`` (run keys unique per day and decision), alerts to
    the log and the optional webhook, impossible actions escalated; every decision under the
    profile it was made with, which the launched run carries (run config + tags)."""
    instance = context.instance
    stored = shared_cursor(instance)
    mine = int(context.cursor) if context.cursor else None
    cursor = max((c for c in (stored, mine) if c is not None), default=None)
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(DRIFT_REPORT), after_storage_id=cursor), limit=100, ascending=True
    )
    records = list(result.records)
    if cursor is None:
        records, cursor = _skip_history(context, store, records)
    requests, pending, retrain_days = [], [], launched_retrain_days(instance)
    for rec in records:
        cursor = rec.storage_id
        mat = rec.asset_materialization
        day, decision = mat.partition, _meta(mat, "decision", "ok")
        if decision == "ok":
            continue
        decided = decided_under(mat.metadata, settings)
        resolved = decided.resolved()
        mon, name = resolved.profile.monitoring, resolved.profile.deploy.registered_model
        champion = mlflow.alias_version(name, "champion")
        payload = {
            "day": day,
            "decision": decision,
            "served_model": _meta(mat, "served_model"),
            "champion": f"{name}/{champion}",
            "reasons": _reasons_text(mat.metadata.get("reasons")),
            "storage_id": rec.storage_id,
            "profile_sha256": resolved.sha256,
        }
        served = payload["served_model"]
        if served is not None and served != payload["champion"]:
            record_action(
                store,
                "stale_report",
                why=f"the report judged {served}; the champion is now {name}/{champion}",
                **payload,
            )
            continue
        context.log.warning(f"drift {day}: {decision}")
        _webhook(mon.webhook_url, payload, context.log)
        if decision == "alert":
            record_action(store, "alert", **payload)
            continue
        job = retrain_job if decision == "retrain" else rollback_job
        run_key = f"{decision}-{day}"
        used = _run_key_used(instance, run_key)
        if used:
            record_action(
                store, f"{decision}_not_launched", why=f"run key {run_key} already used by run {used}", **payload
            )
            continue
        busy = instance.get_runs(filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE_STATUSES), limit=1)
        if busy:
            record_action(
                store, f"{decision}_suppressed", why=f"{job.name} run {busy[0].run_id} is still in flight", **payload
            )
            continue
        impossible = None
        if decision == "retrain":
            launching = _within(day, pending, mon.retrain_cooldown_days)
            if launching:
                record_action(
                    store, "retrain_suppressed", why=f"the retrain for {max(launching)} is being launched", **payload
                )
                continue
            cooling = _within(day, retrain_days, mon.retrain_cooldown_days)
            why = (
                f"cooldown: the last retrain was for {max(cooling)}, within {mon.retrain_cooldown_days} days"
                if cooling
                else ""
            )
            performance = set(str(_meta(mat, "reason_rules", "")).split(",")) & PERFORMANCE_RULES
            if cooling and not performance:
                record_action(
                    store, "retrain_suppressed", why=why + " (inputs moved; no labelled rule fired)", **payload
                )
                continue
            if cooling:
                impossible = f"retrain in {why}, and labelled rules fired: {', '.join(sorted(performance))}"
        elif mlflow.alias_version(name, "previous_champion") is None:
            impossible = (
                f"no previous champion to roll back to from {name}/{champion}"
                if champion
                else f"no champion of {name} in the registry"
            )
        if impossible:
            record_action(store, f"{decision}_impossible", why=impossible, **payload)
            entry = escalate(
                store,
                day=day,
                state=f"{decision} needed, impossible: {impossible}",
                scrc_alpha=mon.escalation_scrc_alpha,
                champion=payload["champion"],
                labelled_accuracy=_meta(mat, "labelled_accuracy"),
                reasons=payload["reasons"],
            )
            context.log.error(
                f"CRITICAL drift {day}: {entry['state']} — serving escalated to SCRC alpha {mon.escalation_scrc_alpha}"
            )
            _webhook(mon.webhook_url, {**payload, "severity": "critical", "escalation": entry["state"]}, context.log)
            continue
        if decision == "retrain":
            run_settings = ProfileResource(
                profile=resolved.source, overrides=[*resolved.overrides, *mon.retrain_overrides]
            )
            ops = {"phase1_checkpoint": {"config": {"include_production_labels": True, "init_from": "deployed"}}}
            pending.append(date.fromisoformat(day))
        else:
            run_settings, ops = decided, ROLLBACK_OPS
        run_profile = run_settings.resolved()
        run_config = {
            "ops": ops,
            "resources": {
                "settings": {"config": {"profile": run_profile.source, "overrides": list(run_profile.overrides)}}
            },
        }
        tags = {
            "roadwork/action": decision,
            "roadwork/drift_day": str(day),
            "roadwork/drift_storage_id": str(rec.storage_id),
            "roadwork/decided_under_profile_sha256": resolved.sha256,
            **run_profile.tags(),
        }
        requests.append(dg.RunRequest(run_key=run_key, job_name=job.name, run_config=run_config, tags=tags))
    if cursor is not None:
        set_shared_cursor(instance, cursor)
        context.update_cursor(str(cursor))
    if requests:
        return requests
    return dg.SkipReason("no new drift report about the champion asks for an action")
