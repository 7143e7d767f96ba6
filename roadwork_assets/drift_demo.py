"""Backfill simulated production days on the real instance ($DAGSTER_HOME), one day after
another, and let the drift sensor act between days — what the daemon does with the daily
schedule and the sensor, compressed into one process so ``make demo`` needs no daemon.

    python -m roadwork_assets.drift_demo [--days N] [--start YYYY-MM-DD]

Every run (daily_drift_job per day, retrain_job / rollback_job from the sensor) is a real
Dagster run in the runs list, tagged like the daemon tags them. The sensor's cursor is the one
the daemon uses (the instance's key-value store, roadwork_assets.drift_actions), so a second
invocation — or the daemon switched on afterwards — continues where this one stopped, and the
demo counts as switching the sensor on when it starts (nothing older is replayed).
"""

import argparse
import json
import time
from datetime import date, timedelta

import dagster as dg

from roadwork_assets.audit import read_actions
from roadwork_assets.definitions import build_definitions
from roadwork_assets.drift_actions import drift_action_sensor
from roadwork_assets.escalation import escalation_state
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, profile_source
from roadwork_ml.evaluation.display import format_value


def _resources(source: str) -> dict:
    return {"settings": ProfileResource.bound(source), "store": ArtifactStore(), "mlflow": MlflowTracking()}


def _already_ran(instance: dg.DagsterInstance, run_key: str) -> bool:
    return bool(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1))


def run_days(days: list[str], source: str) -> list[dict]:
    instance = dg.DagsterInstance.get()
    defs = build_definitions(source)
    resources = _resources(source)
    store: ArtifactStore = resources["store"]
    switched_on = time.time()
    daily = defs.resolve_job_def("daily_drift_job")
    summary = []
    for day in days:
        t0 = time.time()
        result = daily.execute_in_process(
            partition_key=day,
            instance=instance,
            tags={"dagster/run_key": f"drift-{day}", "roadwork/backfill": "drift_demo"},
            raise_on_error=False,
        )
        meta = {}
        for ev in result.get_asset_materialization_events():
            m = ev.event_specific_data.materialization
            if m.asset_key.to_user_string() == "drift_report":
                meta = {k: v.value for k, v in m.metadata.items()}
        ctx = dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, last_sensor_start_time=switched_on
        )
        out = drift_action_sensor(ctx)
        actions = []
        for req in out if isinstance(out, list) else []:
            if _already_ran(instance, req.run_key):
                actions.append(f"{req.run_key} (already ran)")
                continue
            tags = {**req.tags, "dagster/run_key": req.run_key, "dagster/sensor_name": drift_action_sensor.name}
            run = defs.resolve_job_def(req.job_name).execute_in_process(
                run_config=req.run_config, instance=instance, tags=tags, raise_on_error=False
            )
            actions.append(f"{req.job_name} {'ok' if run.success else 'FAILED'}")
        champion = resources["mlflow"].alias_version(resources["settings"].load().deploy.registered_model, "champion")
        row = {
            "day": day,
            "ok": result.success,
            "decision": meta.get("decision", "?"),
            "labelled_accuracy": meta.get("labelled_accuracy"),
            "estimated_accuracy": meta.get("estimated_accuracy"),
            "max_psi": meta.get("max_psi"),
            "actions": "; ".join(actions) or "-",
            "champion": champion,
            "escalated": bool(escalation_state(store)),
            "seconds": round(time.time() - t0, 1),
        }
        summary.append(row)
        print(
            f"{day}  {row['decision']:<8} acc {format_value(row['labelled_accuracy'])} (est {format_value(row['estimated_accuracy'])})"
            f"  max PSI {format_value(row['max_psi'])}  champion v{champion}{'  ESCALATED' if row['escalated'] else ''}"
            f"  {row['actions']}  [{row['seconds']} s]",
            flush=True,
        )
    return summary


def main() -> None:
    source = profile_source(None)
    profile = ProfileResource(profile=source).load()
    scenario = profile.monitoring.scenario
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=scenario.n_days)
    parser.add_argument("--start", default=scenario.start_date)
    args = parser.parse_args()
    start = date.fromisoformat(args.start)
    summary = run_days([(start + timedelta(days=i)).isoformat() for i in range(args.days)], source)
    actions = read_actions(ArtifactStore())
    print(
        f"\n{len(summary)} days: "
        + ", ".join(f"{k} {sum(r['decision'] == k for r in summary)}" for k in ("ok", "alert", "retrain", "rollback"))
    )
    print("audit record (" + str(ArtifactStore().path("audit", "actions.jsonl")) + "):")
    for a in actions:
        print(
            "  "
            + json.dumps(
                {
                    k: a[k]
                    for k in a
                    if k
                    in (
                        "time",
                        "action",
                        "day",
                        "decision",
                        "run_key",
                        "from_version",
                        "to_version",
                        "version",
                        "why",
                        "reason",
                        "state",
                        "run_id",
                    )
                }
            )[:300]
        )
    if not all(r["ok"] for r in summary):
        raise SystemExit("some simulated days failed: see the runs in the Dagster UI")


if __name__ == "__main__":
    main()
