"""The whole graph on a real Dagster instance with the tiny profile, one asset per run (so each
asset is also exercised alone, with its checks, on a temporary instance and store), run-level
profile overrides reaching the checks, declared artifact I/O, and the graph snapshot."""

from __future__ import annotations

import json
import os
from datetime import UTC
from pathlib import Path

import dagster as dg
import pytest

from roadwork_assets.definitions import build_definitions
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, resolve_profile
from roadwork_assets.selection import excluded_from_build
from roadwork_ml.config import SOURCE_NAMES

defs = build_definitions("tiny")
# run-level overrides of the whole graph run: the checks must judge against them too (the
# default tiny profile's active policy is scrc, so a check resolving the profile on its own fails)
RUN_OVERRIDES = ["policy.active={thresholds: false, gate: true, scrc: false}", "splits.class_share_tolerance=0.2"]
RUN_CONFIG = {"resources": {"settings": {"config": {"overrides": RUN_OVERRIDES}}}}

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"
DAILY = ("production_traffic", "drift_report")
# what `make demo` builds after the sources (roadwork_assets.selection): `splits+` minus the daily
# partitions and the recipe search the tiny profile does not use (tests/test_training_assets.py runs those)
NOT_IN_TAIL = tuple(excluded_from_build(resolve_profile("tiny", ()).profile))
UNPARTITIONED_TAIL = dg.AssetSelection.assets("splits").downstream() - dg.AssetSelection.assets(*NOT_IN_TAIL)


def graph_snapshot() -> dict:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pdef = node.partitions_def
        if isinstance(pdef, dg.TimeWindowPartitionsDefinition):  # keys grow every day: snapshot the definition
            partitions = f"{pdef.cron_schedule} from {pdef.start.date().isoformat()} ({pdef.timezone})"
        else:
            partitions = pdef.get_partition_keys() if pdef else None
        out[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "partitions": partitions,
            "group": node.group_name,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return out


def test_asset_graph_matches_snapshot():
    """Any change to keys, deps, partitions or checks must be deliberate: regenerate with
    ROADWORK_UPDATE_SNAPSHOTS=1 and review the diff."""
    current = graph_snapshot()
    if os.environ.get("ROADWORK_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_definitions_load_and_blocking_checks_exist():
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).check_keys, f"{key.to_user_string()} has no asset check"


def _topological(selection: dg.AssetSelection) -> list[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    keys = selection.resolve(graph)
    return [k for k in graph.toposorted_asset_keys if k in keys]


def _reads(home: Path, name: str) -> list[dict]:
    path = home / f"reads-{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """Each source partition, then every unpartitioned asset in its own run (with its checks),
    in dependency order, under the run-level overrides; each run's store logs its reads."""
    home = tmp_path_factory.mktemp("dagster_home")
    mlflow = MlflowTracking(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", artifact_root=str(home / "mlartifacts"))

    def resources(name: str) -> dict:
        return {
            "settings": ProfileResource.bound("tiny"),
            "store": ArtifactStore(root=str(home / "artifacts"), read_log=str(home / f"reads-{name}.jsonl")),
            "mlflow": mlflow,
        }

    everything = [*defs.assets, *defs.asset_checks]
    results = []
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for source in SOURCE_NAMES:
            results.append(
                dg.materialize(
                    everything,
                    selection=dg.AssetSelection.assets("source_images"),
                    partition_key=source,
                    resources=resources("source_images"),
                    instance=instance,
                    run_config=RUN_CONFIG,
                )
            )
        for key in _topological(UNPARTITIONED_TAIL):
            name = key.to_user_string()
            results.append(
                dg.materialize(
                    everything,
                    selection=dg.AssetSelection.assets(key),
                    resources=resources(name),
                    instance=instance,
                    run_config=RUN_CONFIG,
                )
            )
        yield home, results, resources("later"), instance


def test_whole_graph_materializes_and_every_check_passes(materialized):
    home, results, resources, instance = materialized
    assert all(r.success for r in results)
    evaluations = [e for r in results for e in r.get_asset_check_evaluations()]
    # The tiny model is trained for one epoch on ~200 images: whether a failure predictor can
    # beat its max-prob on ~50 VAL_CALIB rows is chance, so that one check must only report
    # truthfully here: a feature gate ships only above max-prob, else max-prob ships (passes).
    gate_eval = next(e for e in evaluations if e.check_name == "gate_beats_max_prob")
    meta = {k: v.value for k, v in gate_eval.metadata.items()}
    assert meta["ships"] in ("feature_gate", "max_prob") and meta["gate"].startswith("gate: ")
    assert gate_eval.passed == (meta["ships"] == "max_prob" or meta["gate_auroc_oof"] > meta["maxprob_auroc_oof"])
    # the model-in-service checks ran with their assets, before deployed_model judged the bundle:
    # they warn truthfully ("not registered" / "not in a bundle yet"); re-run after it, they pass
    status_checks = {"bundle_model_in_service", "evaluation_model_in_service", "calibrator_model_in_service"}
    early = [e for e in evaluations if e.check_name in status_checks]
    assert {e.check_name for e in early} == status_checks and all(
        not e.passed and e.severity == dg.AssetCheckSeverity.WARN and e.description.startswith("not ") for e in early
    ), [(e.check_name, e.description) for e in early]
    failed = [
        (e.asset_key.to_user_string(), e.check_name, e.metadata)
        for e in evaluations
        if not e.passed and e is not gate_eval and e.check_name not in status_checks
    ]
    assert failed == []
    now = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.checks(
            *[dg.AssetCheckKey(dg.AssetKey(e.asset_key.path), e.check_name) for e in early]
        ),
        resources=resources,
        instance=instance,
    )
    after = now.get_asset_check_evaluations()
    assert len(after) == 3 and all(e.passed and e.description.startswith("champion: ") for e in after), [
        (e.check_name, e.description) for e in after
    ]
    # without TensorRT and CUDA the engine is not built: nothing is materialized, its check is
    # skipped, and an observation carries the reason to the UI
    not_built = {"tensorrt_engine", *NOT_IN_TAIL}  # the daily assets are exercised below, per partition
    checked = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    expected = {
        (asset, check) for asset, node in graph_snapshot().items() for check in node["checks"] if asset not in not_built
    }
    assert checked == expected  # every declared check actually ran
    materialized_keys = {
        m.asset_key.to_user_string()
        for r in results
        for m in r.get_asset_materialization_events()
        for m in [m.event_specific_data.materialization]
    }
    assert materialized_keys == set(graph_snapshot()) - not_built
    observations = [
        e.event_specific_data.asset_observation
        for r in results
        for e in r.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    reasons = [o.metadata["reason"].value for o in observations if o.asset_key.to_user_string() == "tensorrt_engine"]
    assert reasons and "tensorrt" in reasons[0].lower()


def test_artifacts_on_disk_and_mlflow_run_recorded(materialized):
    home, results, resources, _ = materialized
    art = home / "artifacts"
    assert (art / "val_calib_logits" / "predictions.parquet").exists()
    assert not (art / "val_test_logits").exists() and not (art / "val_select_logits").exists()
    for source in SOURCE_NAMES:
        assert (art / "source_images" / source / "manifest.parquet").exists()
    assert (art / "phase1_checkpoint" / "model.safetensors").exists()
    client = resources["mlflow"].client()
    exp = client.get_experiment_by_name("roadwork")
    runs = {r.data.tags["roadwork.asset"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"phase1_checkpoint", "evaluation_report", "deployed_model"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert "val_select_mcc" in runs["phase1_checkpoint"].data.metrics
    assert any(a.path == "checkpoint" for a in client.list_artifacts(runs["phase1_checkpoint"].info.run_id))
    assert {"plots", "report"} <= {a.path for a in client.list_artifacts(runs["evaluation_report"].info.run_id)}
    # the registry: one version, champion alias on it, the bundle as its artifacts
    champion = client.get_model_version_by_alias("roadwork-classifier", "champion")
    assert str(champion.version) == "1" and champion.run_id == runs["deployed_model"].info.run_id
    assert "manifest.json" in {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(champion.run_id, "bundle")}
    bundle_manifest = json.loads((art / "bundle" / "manifest.json").read_text())
    assert (
        bundle_manifest["active_policy"] == "gate" and "model.onnx" in bundle_manifest["files"]
    )  # the run-level override
    report = json.loads((art / "evaluation_report" / "report.json").read_text())
    assert set(report["intervals"]["mcc"]) == {"percentile", "bca"} and "pooled" in report["streetvision"]
    assert len(list((art / "triton_repository").rglob("config.pbtxt"))) == 1


# --- monitoring: days of traffic, the schedule, the sensor, promotion and rollback -----------


def _day(offset: int) -> str:
    from datetime import date, timedelta

    from roadwork_ml.config import load_profile

    return (
        date.fromisoformat(load_profile("tiny").monitoring.scenario.start_date) + timedelta(days=offset)
    ).isoformat()


def _rewrite_bundle(store: ArtifactStore, degrade: bool) -> None:
    """Re-write the bundle from its own files: an *equivalent* model (head bias moved by 1e-6, so
    new content that answers the same), or, with ``degrade``, a deliberately broken one whose
    head always says roadwork. Written like any bundle (hashes, ONNX), so only its numbers are bad."""
    import torch
    from safetensors.torch import load_file

    from roadwork_ml.config import InferenceConfig, ModelConfig, load_profile
    from roadwork_ml.export.bundle import load_bundle, rebuild_model, write_bundle
    from roadwork_ml.export.onnx_export import export_onnx

    src = store.read("bundle")
    manifest, record, policy = load_bundle(src)
    mv = rebuild_model(record, load_file(str(src / "model.safetensors")))
    last = [m for m in mv.model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        if degrade:
            last.weight.zero_()
            last.bias.copy_(torch.tensor([0.0, 50.0]))
        else:  # the same answers, other content: promotion is keyed on content, not on the manifest
            last.bias.add_(1e-6)
    with store.staging("bundle", profile=resolve_profile("tiny", ())) as out:
        write_bundle(
            out,
            mv,
            ModelConfig.model_validate({**record["model"], "weights_path": None}),
            InferenceConfig.model_validate(record["inference"]),
            record["choice"],
            policy,
            profile=load_profile("tiny").model_dump(mode="json"),
            splits_fingerprint=manifest["splits_fingerprint"],
            metrics={"degraded": float(degrade)},
            onnx_export=lambda m, p, s: export_onnx(m, p, s).to_dict(),
        )


def _sensor(instance, resources, cursor):
    from roadwork_assets.drift_actions import drift_action_sensor

    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=defs, last_sensor_start_time=0.0
    )
    out = drift_action_sensor(ctx)
    return (out if isinstance(out, list) else []), ctx.cursor


def test_daily_schedule_asks_for_yesterday_and_catches_up_a_bounded_number_of_missed_days():
    from datetime import date, datetime

    from roadwork_assets.monitoring import days_to_request

    daily_drift_schedule = defs.resolve_schedule_def("daily_drift_schedule")
    at = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        reqs = daily_drift_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))
        assert [(r.partition_key, r.run_key) for r in reqs] == [
            ("2026-11-19", "drift-2026-11-19")
        ]  # nothing missed yet
        # the daemon was down after the 11-14 report: 11-15 .. 11-18 were missed
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=dg.AssetKey("drift_report"), partition="2026-11-14")
        )
        reqs = daily_drift_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))
    assert [r.partition_key for r in reqs] == ["2026-11-15", "2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19"]
    assert daily_drift_schedule.cron_schedule == "0 2 * * *" and daily_drift_schedule.execution_timezone == "UTC"
    # bounded: a month down catches up catchup_days days, never before the first day
    y, first = date(2026, 11, 19), date(2026, 11, 1)
    assert days_to_request(y, {"2026-10-01"}, 3, date(2026, 9, 1)) == [
        "2026-11-16",
        "2026-11-17",
        "2026-11-18",
        "2026-11-19",
    ]
    assert days_to_request(y, {"2026-11-02"}, 31, first) == [f"2026-11-{d:02d}" for d in range(3, 20)]
    assert days_to_request(y, {"2026-11-19"}, 7, first) == ["2026-11-19"]  # run key drift-<day> dedupes
    assert days_to_request(y, set(), 7, first) == ["2026-11-19"]


def test_code_location_reads_its_profile_when_it_loads_not_at_import(tmp_path, monkeypatch):
    """``-m roadwork_assets.definitions`` with ROADWORK_PROFILE=a YAML: that profile's cron and
    partition start; importing the module reads no environment."""
    import subprocess
    import sys

    from roadwork_assets.definitions import defs as lazy

    profile = tmp_path / "ops.yaml"
    profile.write_text(
        "extends: tiny\nname: ops\nmonitoring: {schedule_cron: '30 5 * * *', scenario: {start_date: '2025-01-07'}}\n"
    )
    monkeypatch.setenv("ROADWORK_PROFILE", str(profile))
    loaded = lazy()
    assert loaded.resolve_schedule_def("daily_drift_schedule").cron_schedule == "30 5 * * *"
    assert loaded.resolve_assets_def("production_traffic").partitions_def.start.date().isoformat() == "2025-01-07"
    env = {**__import__("os").environ, "ROADWORK_PROFILE": str(tmp_path / "missing.yaml")}
    code = "import roadwork_assets.definitions as d\ntry:\n    d.defs()\nexcept FileNotFoundError as e:\n    print('LOAD-ERROR', e)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert proc.returncode == 0 and "LOAD-ERROR" in proc.stdout and "missing.yaml" in proc.stdout, (
        proc.stdout + proc.stderr
    )


def test_days_drift_promotion_gate_and_rollback_by_the_sensor(materialized):
    """Two days through the champion; an equivalent bundle passes the promotion gate; a broken
    one is forced to champion; its day's drift report asks for a rollback; the sensor issues
    exactly one rollback run (unique run key, advancing cursor), which restores the previous
    champion and marks the broken version so it is never promoted again."""
    from roadwork_assets.audit import read_actions
    from roadwork_ml.monitoring.inference_log import read_log

    home, _, resources, instance = materialized
    art = home / "artifacts"
    everything = [*defs.assets, *defs.asset_checks]
    daily = dg.AssetSelection.assets(*DAILY)
    mlflow = resources["mlflow"]
    for offset in (0, 1):
        r = dg.materialize(
            everything, selection=daily, partition_key=_day(offset), resources=resources, instance=instance
        )
        assert r.success and all(e.passed for e in r.get_asset_check_evaluations())
    log0 = read_log(art / "production_traffic" / _day(0) / "log.parquet")
    assert len(log0) == 40 and log0["model_version"].iloc[0] == "roadwork-classifier/1" and log0["image_id"].is_unique
    # a re-run of a day replaces it: no row lost or counted twice
    dg.materialize(everything, selection=daily, partition_key=_day(0), resources=resources, instance=instance)
    again = read_log(art / "production_traffic" / _day(0) / "log.parquet")
    assert len(again) == 40 and set(again["image_id"]) == set(log0["image_id"])
    reports = [json.loads((art / "drift_report" / _day(i) / "report.json").read_text()) for i in (0, 1)]
    assert all(r["decision"] in ("ok", "alert", "retrain", "rollback") and r["n_rows"] == 40 for r in reports)
    assert (art / "drift_report" / _day(0) / "evidently.html").stat().st_size > 10_000
    requests, cursor = _sensor(instance, resources, None)
    assert cursor is not None

    # an equivalent bundle (same weights, new manifest) passes the promotion gate: difference 0
    tail = dg.AssetSelection.assets("evaluation_report", "deployed_model", "reference_profile")
    _rewrite_bundle(resources["store"], degrade=False)
    same = dg.materialize(everything, selection=tail, resources=resources, instance=instance)
    deployed = json.loads((art / "deployed_model" / "deployed.json").read_text())
    assert same.success and deployed["decision"] == "promoted" and deployed["comparison"]["diff"] == 0.0, deployed[
        "reason"
    ]
    assert (
        mlflow.alias_version("roadwork-classifier", "champion") == "2"
        and mlflow.alias_version("roadwork-classifier", "previous_champion") == "1"
    )
    # a broken bundle forced through with a margin of 2 MCC (anything goes) becomes champion
    _rewrite_bundle(resources["store"], degrade=True)
    forced = dg.materialize(
        everything,
        selection=tail,
        resources=resources,
        instance=instance,
        run_config={"resources": {"settings": {"config": {"overrides": ["deploy.promotion.margin=2.0"]}}}},
    )
    assert (
        forced.success
        and mlflow.alias_version("roadwork-classifier", "champion") == "3"
        and mlflow.alias_version("roadwork-classifier", "previous_champion") == "2"
    )

    r = dg.materialize(everything, selection=daily, partition_key=_day(2), resources=resources, instance=instance)
    assert r.success
    bad_day = json.loads((art / "drift_report" / _day(2) / "report.json").read_text())
    assert bad_day["decision"] == "rollback", bad_day["reasons"]
    requests, cursor2 = _sensor(instance, resources, cursor)
    assert [q.run_key for q in requests] == [f"rollback-{_day(2)}"] and int(cursor2) > int(cursor)
    # the rollback run carries the profile its decision was made under (the daily runs': plain tiny)
    decided = resolve_profile("tiny", ())
    assert requests[0].run_config["resources"]["settings"]["config"] == {"profile": "tiny", "overrides": []}
    assert (
        requests[0].tags["roadwork/profile_sha256"]
        == requests[0].tags["roadwork/decided_under_profile_sha256"]
        == decided.sha256
    )
    job = defs.resolve_job_def(requests[0].job_name)
    rolled = job.execute_in_process(
        instance=instance, resources=resources, run_config=requests[0].run_config, tags=requests[0].tags
    )
    assert rolled.success
    deployed_manifest = json.loads((art / "deployed_model" / "MANIFEST.json").read_text())
    assert deployed_manifest["profile"]["sha256"] == decided.sha256
    assert (
        mlflow.alias_version("roadwork-classifier", "champion") == "2"
        and mlflow.alias_version("roadwork-classifier", "previous_champion") == "1"
    )
    assert mlflow.version_tags("roadwork-classifier", "3")["roadwork.rolled_back"] == "true"
    deployed = json.loads((art / "deployed_model" / "deployed.json").read_text())
    assert deployed["decision"] == "rolled_back" and deployed["champion"] == "2"
    # issue 16 item 6: the demoted model's bundle page is told by an observation
    on_bundle = [
        o for o in rolled.asset_observations_for_node("deployed_model") if o.asset_key == dg.AssetKey("bundle")
    ]
    assert on_bundle and on_bundle[-1].metadata["model_status"].value.startswith("**rolled back**")
    assert on_bundle[-1].metadata["model_version"].value == "3"
    # ... and by the model-in-service checks the rollback run re-evaluates (what the page's
    # status and Checks tab show): the demoted bundle, its evaluation and its calibrator warn
    status = {e.check_name: e for e in rolled.get_asset_check_evaluations()}
    for check in ("bundle_model_in_service", "evaluation_model_in_service", "calibrator_model_in_service"):
        assert not status[check].passed and status[check].severity == dg.AssetCheckSeverity.WARN
        assert status[check].description.startswith("rolled back: model version 3"), status[check].description
    # the rolled-back version is never promoted again, whatever the margin
    again = dg.materialize(
        everything,
        selection=dg.AssetSelection.assets("deployed_model"),
        resources=resources,
        instance=instance,
        run_config={"resources": {"settings": {"config": {"overrides": ["deploy.promotion.margin=2.0"]}}}},
    )
    assert again.success and json.loads((art / "deployed_model" / "deployed.json").read_text())["decision"] == "refused"
    judged = again.asset_materializations_for_node("deployed_model")[0].metadata
    assert judged["judged_status"].value.startswith("**rolled back**")
    assert judged["model_version"].value == "2" and judged["model_status"].value.startswith("**champion**")
    refused_record = json.loads((art / "deployed_model" / "deployed.json").read_text())
    assert (
        refused_record["bundle_manifest_sha256"]
        == mlflow.version_tags("roadwork-classifier", "2")["roadwork.bundle_manifest_sha256"]
    )  # the record names the bundle beside it (v2), the refused v3 as judged_manifest_sha256
    assert mlflow.alias_version("roadwork-classifier", "champion") == "2"
    # the cursor moved past every report: nothing is requested twice
    assert _sensor(instance, resources, cursor2)[0] == []
    actions = [a["action"] for a in read_actions(resources["store"])]
    assert (
        "rollback_launched" in actions
        and "rollback" in actions
        and actions.index("rollback_launched") < actions.index("rollback")
    )


def _content_parts(mlflow, name: str, versions) -> dict:
    """The content parts in which the versions differ (for a failure message)."""
    import tempfile

    from roadwork_ml.export.content_identity import content_id

    parts = {}
    for v in versions:
        with tempfile.TemporaryDirectory() as tmp:
            parts[v] = content_id(mlflow.download_version(name, v, tmp)).parts
    keys = set().union(*(p.keys() for p in parts.values()))
    return {
        k: [parts[v].get(k, "-")[:12] for v in versions] for k in keys if len({parts[v].get(k) for v in versions}) > 1
    }


def test_retrain_then_rollback_then_bundle_plus_keeps_the_rollback(materialized):
    """The issue's sequence with real runs: a drift retrain is promoted, the drift rollback
    demotes it, and CI's routine ``bundle+`` re-bundles the same weights under a new version
    number — refused as a challenger by content (even with a permissive gate), the champion and
    its reference untouched; only a forced promotion (audited) gets it through, and then the
    stale reference makes the next drift day refuse to run, naming both versions."""
    from roadwork_assets.audit import read_actions

    home, _, resources, instance = materialized
    art, mlflow, name = home / "artifacts", resources["mlflow"], "roadwork-classifier"
    everything = [*defs.assets, *defs.asset_checks]
    permissive = ["deploy.promotion.margin=2.0"]
    before = mlflow.alias_version(name, "champion")
    retrain = defs.resolve_job_def("retrain_job").execute_in_process(
        instance=instance,
        resources=resources,
        run_config={
            "ops": {"phase1_checkpoint": {"config": {"include_production_labels": True, "init_from": "deployed"}}},
            "resources": {"settings": {"config": {"profile": "tiny", "overrides": [*permissive, "train.epochs=1"]}}},
        },
        tags={"roadwork/action": "retrain", "roadwork/drift_day": _day(3), "dagster/run_key": f"retrain-{_day(3)}"},
    )
    assert retrain.success
    retrained = mlflow.alias_version(name, "champion")
    assert retrained != before and mlflow.alias_version(name, "previous_champion") == before
    launched = [a for a in read_actions(resources["store"]) if a["action"] == "retrain_launched"]
    assert [a["run_id"] for a in launched] == [retrain.run_id]  # the record names the run that exists
    # the retrain run rebuilt the reference for its champion in the same run
    assert json.loads((art / "reference_profile" / "champion.json").read_text())["champion"] == retrained

    rollback = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance,
        resources=resources,
        run_config={"ops": {"deployed_model": {"config": {"mode": "rollback"}}}},
        tags={"roadwork/action": "rollback", "roadwork/drift_day": _day(4)},
    )
    assert rollback.success and mlflow.alias_version(name, "champion") == before
    rolled = next(a for a in reversed(read_actions(resources["store"])) if a["action"] == "rollback")
    retrained_content = mlflow.version_tags(name, retrained)["roadwork.content_id"]
    assert rolled["from_version"] == retrained and rolled["from_content_id"] == retrained_content

    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    bundle_plus = dg.AssetSelection.assets("bundle").downstream(depth=1)
    ci = dg.materialize(
        everything,
        selection=bundle_plus,
        resources=resources,
        instance=instance,
        run_config={"resources": {"settings": {"config": {"overrides": permissive}}}},
    )
    assert ci.success
    record = json.loads((art / "deployed_model" / "deployed.json").read_text())
    rebundled = record["version"]
    assert rebundled not in (retrained, before) and record["decision"] == "refused", _content_parts(
        mlflow, name, (retrained, rebundled)
    )
    assert record["content_id"] == retrained_content and record["content_verdict"]["blocked_by"] == retrained
    assert f"version {retrained}, which was rolled back" in record["reason"]
    assert mlflow.alias_version(name, "champion") == before and mlflow.alias_version(name, "challenger") == rebundled
    refused = [a for a in read_actions(resources["store"]) if a["action"] == "promotion_refused"]
    assert refused[-1]["version"] == rebundled and "rolled back" in refused[-1]["reason"]
    # deployed_model changed: the reference's eager condition asks for a rebuild (the daemon's
    # reference_follows_champion sensor runs it)
    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=auto.cursor)
    assert auto.get_num_requested(dg.AssetKey("reference_profile")) == 1

    forced = dg.materialize(
        everything,
        selection=dg.AssetSelection.assets("deployed_model"),
        resources=resources,
        instance=instance,
        run_config={"ops": {"deployed_model": {"config": {"force": True, "force_reason": "test: a human decided"}}}},
    )
    assert forced.success and mlflow.alias_version(name, "champion") == rebundled
    assert mlflow.version_tags(name, retrained)["roadwork.rolled_back"].startswith("lifted")
    assert [a for a in read_actions(resources["store"]) if a["action"] == "promotion_forced"][-1][
        "version"
    ] == rebundled
    # the reference still describes the model before: the next day refuses, naming both
    day = dg.materialize(
        everything,
        selection=dg.AssetSelection.assets(*DAILY),
        partition_key=_day(5),
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    failure = next(e for e in day.all_events if e.event_type_value == "STEP_FAILURE")
    text = str(failure.event_specific_data.error)
    assert f"built for {name}/{before}" in text and f"served by {name}/{rebundled}" in text, text
    assert dg.materialize(
        everything, selection=dg.AssetSelection.assets("reference_profile"), resources=resources, instance=instance
    ).success
    assert dg.materialize(
        everything,
        selection=dg.AssetSelection.assets(*DAILY),
        partition_key=_day(5),
        resources=resources,
        instance=instance,
    ).success


# --- one profile per run, declared artifact I/O, VAL_TEST readers -------------------------------


def test_run_level_overrides_reach_the_checks_of_the_same_run(materialized):
    """The graph ran with policy.active=gate: the bundle ships the gate policy and
    exactly_one_policy, judging against the run's profile, passed. A check-only run with a
    class-share tolerance override is judged against that tolerance (it fails at 1e-4)."""
    home, results, resources, instance = materialized
    evaluations = {
        (e.asset_key.to_user_string(), e.check_name): e for r in results for e in r.get_asset_check_evaluations()
    }
    one_policy = evaluations[("bundle", "exactly_one_policy")]
    assert one_policy.passed and one_policy.metadata["profile"].value == one_policy.metadata["policy"].value == "gate"
    assert evaluations[("thresholds", "thresholds_meet_targets")].metadata["active_policy"].value == "gate"
    manifest = json.loads((home / "artifacts" / "splits" / "MANIFEST.json").read_text())
    assert (
        manifest["profile"]["overrides"] == RUN_OVERRIDES
        and manifest["profile"]["sha256"] == resolve_profile("tiny", tuple(RUN_OVERRIDES)).sha256
    )

    everything = [*defs.assets, *defs.asset_checks]
    checks = dg.AssetSelection.checks_for_assets("splits")
    outcome = {}
    for tol in (1e-4, 0.9):
        r = dg.materialize(
            everything,
            selection=checks,
            resources=resources,
            instance=instance,
            raise_on_error=False,
            run_config={"resources": {"settings": {"config": {"overrides": [f"splits.class_share_tolerance={tol}"]}}}},
        )
        assert not r.get_asset_materialization_events()  # the checks ran alone
        e = next(e for e in r.get_asset_check_evaluations() if e.check_name == "class_share_within_tolerance")
        assert e.metadata["tolerance"].value == tol
        outcome[tol] = e.passed
    assert outcome == {1e-4: False, 0.9: True}


def _declared_reads(key: dg.AssetKey) -> set[str]:
    """What an asset may read: its deps, itself (its checks judge it; deployed_model refreshes
    its own record) and the reads its metadata declares (feedback loop, optional engine)."""
    node = defs.resolve_asset_graph().get(key)
    meta = node.metadata or {}
    extra = {
        x.strip()
        for field in ("roadwork/feedback_reads", "roadwork/optional_reads")
        for x in str(meta.get(field, "")).split(",")
        if x.strip()
    }
    return {p.to_user_string() for p in node.parent_keys} | {key.to_user_string()} | extra


def undeclared_reads(reads_by_asset: dict[str, list[dict]]) -> dict[str, set[str]]:
    out = {}
    for name, reads in reads_by_asset.items():
        extra = {r["key"] for r in reads} - _declared_reads(dg.AssetKey(name))
        if extra:
            out[name] = extra
    return out


def test_every_read_is_a_declared_dependency(materialized):
    home, *_ = materialized
    reads = {k.to_user_string(): _reads(home, k.to_user_string()) for k in _topological(UNPARTITIONED_TAIL)}
    assert all(
        v for k, v in reads.items() if k != "tensorrt_engine"
    )  # every built asset read through the store (no TensorRT here: the engine reads nothing)
    assert undeclared_reads(reads) == {}
    # the comparison can fail: phase1_checkpoint reading the bundle would be undeclared
    assert undeclared_reads({"phase1_checkpoint": [{"key": "bundle"}]}) == {"phase1_checkpoint": {"bundle"}}
    # splits read exactly the profile's configured source partitions
    assert sorted(r["partition"] for r in _reads(home, "splits") if r["key"] == "source_images") == sorted(SOURCE_NAMES)


def test_only_the_final_evaluation_reads_val_test(materialized):
    home, *_ = materialized
    readers = {
        k.to_user_string()
        for k in _topological(UNPARTITIONED_TAIL)
        if any(r["split"] == "val_test" for r in _reads(home, k.to_user_string()))
    }
    assert readers == {"evaluation_report"}  # deployed_model too, but only when it compares with a champion
    # and in the code: VAL_TEST is named only where the evaluation and the promotion comparison live
    pkg = Path(__file__).resolve().parents[1] / "roadwork_assets"
    naming = {p.name for p in pkg.glob("*.py") if "Split.VAL_TEST" in p.read_text()}
    assert naming == {"evaluation.py", "deployment.py"}


def test_splits_names_a_missing_source_partition(tmp_path):
    from roadwork_assets.data import splits

    with dg.instance_for_test() as instance:
        r = dg.materialize(
            [splits],
            resources={"settings": ProfileResource.bound("tiny"), "store": ArtifactStore(root=str(tmp_path))},
            instance=instance,
            raise_on_error=False,
        )
    assert not r.success
    err = next(e for e in r.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error.to_string()
    assert "['mapillary', 'natix', 'roadwork']" in err and "not materialized" in err
