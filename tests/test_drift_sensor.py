"""The drift sensor on a real instance, fed with drift_report materializations: run requests
with unique keys, one always-advancing cursor shared with the demo, no replay on switch-on,
stale reports about a former champion, the retrain cooldown, escalation when no action is
possible, the audit record, and alerts POSTed to a webhook."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from roadwork_assets.audit import read_actions
from roadwork_assets.definitions import build_definitions
from roadwork_assets.drift_actions import drift_action_sensor, shared_cursor
from roadwork_assets.escalation import escalation_state
from roadwork_assets.monitoring import DRIFT_REPORT
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, resolve_profile

defs = build_definitions("tiny")


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", _Hook.received
    server.shutdown()


def _report(instance, day: str, decision: str, profile: dict | None = None) -> None:
    """A drift_report materialization; ``profile``: the metadata an asset run records about the
    profile the decision was made under (roadwork_assets.metadata.profile_md)."""
    meta = {"decision": decision, "reasons": f"test: {decision}", **(profile or {})}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=dg.AssetKey(DRIFT_REPORT), partition=day, metadata=meta)
    )


SWITCHED_ON = 0.0  # the sensor was switched on before any report of these tests


def _tick(instance, resources, cursor, switched_on: float | None = SWITCHED_ON):
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, definitions=defs, last_sensor_start_time=switched_on
    )
    out = drift_action_sensor(ctx)
    return (out if isinstance(out, list) else []), ctx.cursor


def test_sensor_requests_suppresses_audits_and_alerts(tmp_path, webhook):
    url, received = webhook
    profile = tmp_path / "p.yaml"
    profile.write_text(
        f"extends: tiny\nname: tiny_hook\nmonitoring: {{webhook_url: '{url}', retrain_cooldown_days: 3}}\n"
    )
    resources = {
        "settings": ProfileResource.bound(str(profile)),
        "store": ArtifactStore(root=str(tmp_path / "art")),
        "mlflow": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "mlartifacts")
        ),
    }
    with dg.instance_for_test() as instance:
        _report(instance, "2026-11-01", "ok")
        _report(instance, "2026-11-02", "alert")
        _report(instance, "2026-11-03", "retrain")
        _report(instance, "2026-11-04", "retrain")  # within the 3-day cooldown of 11-03, whose run is pending
        _report(instance, "2026-11-05", "rollback")  # no previous champion in the registry: escalate
        requests, cursor = _tick(instance, resources, None)
        assert [r.run_key for r in requests] == ["retrain-2026-11-03"]
        assert requests[0].job_name == "retrain_job" and requests[0].tags["roadwork/drift_day"] == "2026-11-03"
        cfg = requests[0].run_config["ops"]["phase1_checkpoint"]["config"]
        assert cfg["include_production_labels"] is True and cfg["init_from"] == "deployed"
        # nothing new: no request, the cursor stays
        again, cursor2 = _tick(instance, resources, cursor)
        assert again == [] and cursor2 == cursor
        # a later retrain outside the cooldown is requested; the cursor only moves forward
        _report(instance, "2026-11-07", "retrain")
        later, cursor3 = _tick(instance, resources, cursor2)
        assert [r.run_key for r in later] == ["retrain-2026-11-07"] and int(cursor3) > int(cursor2)
        assert shared_cursor(instance) == int(cursor3)  # the one cursor the demo reads too
    # nothing was launched (these tests run no job): the record holds decisions not to act, and
    # the impossible rollback escalated
    actions = [(a["action"], a.get("day")) for a in read_actions(resources["store"])]
    assert actions == [
        ("alert", "2026-11-02"),
        ("retrain_suppressed", "2026-11-04"),
        ("rollback_impossible", "2026-11-05"),
        ("escalation", "2026-11-05"),
    ]
    state = escalation_state(resources["store"])
    assert (
        state["since"] == "2026-11-05"
        and state["scrc_alpha"] == resources["settings"].load().monitoring.escalation_scrc_alpha
        and "impossible" in state["state"]
    )
    assert [(r["day"], r["decision"], r.get("severity")) for r in received] == [
        ("2026-11-02", "alert", None),
        ("2026-11-03", "retrain", None),
        ("2026-11-04", "retrain", None),
        ("2026-11-05", "rollback", None),
        ("2026-11-05", "rollback", "critical"),
        ("2026-11-07", "retrain", None),
    ]


def test_a_sensor_launched_retrain_carries_the_profile_it_was_decided_under(tmp_path):
    """The drift report of a run with overrides asks for a retrain: the request carries that
    profile (source + overrides, plus the profile's retrain overrides) in run config and tags,
    the run config is valid for retrain_job, and the cooldown used is the decision profile's."""
    decided_overrides = [
        "monitoring.retrain_cooldown_days=1",
        "policy.active={thresholds: false, gate: true, scrc: false}",
    ]
    decided = resolve_profile("tiny", tuple(decided_overrides))
    meta = {
        "profile": "tiny",
        "profile_sha256": decided.sha256,
        "profile_overrides": dg.MetadataValue.json(decided_overrides),
    }
    resources = {
        "settings": ProfileResource.bound("tiny"),
        "store": ArtifactStore(root=str(tmp_path / "art")),
        "mlflow": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "mlartifacts")
        ),
    }
    with dg.instance_for_test() as instance:
        _report(instance, "2026-11-03", "retrain", meta)
        _report(instance, "2026-11-04", "retrain", meta)  # cooldown 1 day under the decision profile (tiny's own: 10)
        requests, _ = _tick(instance, resources, None)
    assert [r.run_key for r in requests] == ["retrain-2026-11-03", "retrain-2026-11-04"]
    req = requests[0]
    run_overrides = [*decided_overrides, *decided.profile.monitoring.retrain_overrides]
    assert req.run_config["resources"]["settings"]["config"] == {"profile": "tiny", "overrides": run_overrides}
    assert req.tags["roadwork/decided_under_profile_sha256"] == decided.sha256
    assert req.tags["roadwork/profile_sha256"] == resolve_profile("tiny", tuple(run_overrides)).sha256
    job = defs.resolve_job_def("retrain_job")
    assert dg.validate_run_config(job, req.run_config)  # the launched run accepts it
    # the retrain job runs under the decided profile: its resource resolves the same parameters
    assert ProfileResource(**req.run_config["resources"]["settings"]["config"]).load().policy.active_kind == "gate"


def _resources(tmp_path) -> dict:
    return {
        "settings": ProfileResource.bound("tiny"),
        "store": ArtifactStore(root=str(tmp_path / "art")),
        "mlflow": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "mlartifacts")
        ),
    }


def _registry(resources, tmp_path, versions: int = 3) -> None:
    """``versions`` registered versions; champion = the last, previous_champion = the one before."""
    mlflow = resources["mlflow"]
    (tmp_path / "bundle").mkdir(exist_ok=True)
    (tmp_path / "bundle" / "x.txt").write_text("x")
    with mlflow.run("t", run_name="register") as tracked:
        tracked.log_artifacts(tmp_path / "bundle", "bundle")
        run_id = tracked.run_id
    for _ in range(versions):
        mlflow.register_version("roadwork-classifier", run_id, "bundle")
    mlflow.set_alias("roadwork-classifier", "champion", str(versions))
    mlflow.set_alias("roadwork-classifier", "previous_champion", str(versions - 1))


def test_switching_the_sensor_on_never_replays_history(tmp_path):
    """The issue's daemon run: 12 old reports (one asking for a rollback) were written before the
    sensor was switched on; its first tick acts on none of them and audits the skip once; a report
    written after the switch-on is acted on."""
    resources = _resources(tmp_path)
    _registry(resources, tmp_path)
    with dg.instance_for_test() as instance:
        for i in range(12):
            _report(instance, f"2026-11-{i + 1:02d}", "rollback" if i == 10 else "alert")
        time.sleep(0.05)
        switched_on = time.time()
        time.sleep(0.05)
        requests, cursor = _tick(instance, resources, None, switched_on=switched_on)
        assert requests == [] and cursor is not None
        _report(instance, "2026-11-13", "retrain")
        requests, _ = _tick(instance, resources, None, switched_on=switched_on)  # a fresh context: the shared cursor
        assert [r.run_key for r in requests] == ["retrain-2026-11-13"]
    actions = read_actions(resources["store"])
    assert [a["action"] for a in actions] == ["sensor_switched_on"]
    assert actions[0]["skipped_reports"] == 12 and "2026-11-11" in actions[0]["skipped_days"]
    # the naive sensor (an empty cursor replays everything) asks for the old rollback
    with dg.instance_for_test() as instance:
        for i in range(12):
            _report(instance, f"2026-11-{i + 1:02d}", "rollback" if i == 10 else "alert")
        naive = {**resources, "store": ArtifactStore(root=str(tmp_path / "naive"))}
        replayed, _ = _tick(instance, naive, None, switched_on=0.0)
    assert [r.run_key for r in replayed] == ["rollback-2026-11-11"]


def test_a_report_about_a_former_champion_is_audited_as_stale_not_acted_on(tmp_path):
    """A rollback asked by a report about v1, read when v3 is champion, would demote v3: refused."""
    resources = _resources(tmp_path)
    _registry(resources, tmp_path)
    with dg.instance_for_test() as instance:
        meta = {"served_model": "roadwork-classifier/1"}
        _report(instance, "2026-11-11", "rollback", meta)
        _report(instance, "2026-11-12", "rollback", {"served_model": "roadwork-classifier/3"})
        requests, _ = _tick(instance, resources, None)
    assert [r.run_key for r in requests] == ["rollback-2026-11-12"]
    stale = [a for a in read_actions(resources["store"]) if a["action"] == "stale_report"]
    assert len(stale) == 1 and stale[0]["day"] == "2026-11-11" and "roadwork-classifier/3" in stale[0]["why"]


def test_a_retrain_the_cooldown_blocks_escalates_only_when_labels_say_the_model_is_bad(tmp_path):
    """A retrain ran for 11-05; on 11-08 (cooldown 7 days) a report asks again. Inputs moved only
    (covariate shift): suppressed. Labelled accuracy below the floor: nothing can be done, so a
    critical escalation, with the stricter decision policy recorded."""
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    resources = _resources(tmp_path)
    with dg.instance_for_test() as instance:
        instance.add_run(
            DagsterRun(
                job_name="retrain_job",
                run_id="0" * 36,
                status=DagsterRunStatus.SUCCESS,
                tags={"roadwork/drift_day": "2026-11-05"},
            )
        )
        _report(instance, "2026-11-08", "retrain", {"reason_rules": "covariate_shift,mmd,psi_alert"})
        assert _tick(instance, resources, None)[0] == []
        assert escalation_state(resources["store"]) is None
        _report(instance, "2026-11-09", "retrain", {"reason_rules": "accuracy_retrain,mmd", "labelled_accuracy": 0.7})
        assert _tick(instance, resources, None)[0] == []
    actions = [(a["action"], a["day"]) for a in read_actions(resources["store"])]
    assert actions == [
        ("retrain_suppressed", "2026-11-08"),
        ("retrain_impossible", "2026-11-09"),
        ("escalation", "2026-11-09"),
    ]
    state = escalation_state(resources["store"])
    assert state["since"] == "2026-11-09" and state["labelled_accuracy"] == 0.7 and "accuracy_retrain" in state["state"]
