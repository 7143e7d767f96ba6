"""The drift sensor on a real instance, fed with drift_report materializations: run requests
with unique keys, an always-advancing cursor, the retrain cooldown, suppressed rollbacks, the
audit record, and alerts POSTed to a webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from roadwork_assets.audit import read_actions
from roadwork_assets.definitions import build_definitions
from roadwork_assets.monitoring import DRIFT_REPORT, drift_action_sensor
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


def _tick(instance, resources, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
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
        _report(instance, "2026-11-04", "retrain")  # within the 3-day cooldown of 11-03
        _report(instance, "2026-11-05", "rollback")  # no champion in the registry: nothing to roll back to
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
    actions = [(a["action"], a.get("day")) for a in read_actions(resources["store"])]
    assert actions == [
        ("alert", "2026-11-02"),
        ("retrain_requested", "2026-11-03"),
        ("retrain_suppressed", "2026-11-04"),
        ("rollback_unavailable", "2026-11-05"),
        ("retrain_requested", "2026-11-07"),
    ]
    assert [(r["day"], r["decision"]) for r in received] == [
        ("2026-11-02", "alert"),
        ("2026-11-03", "retrain"),
        ("2026-11-04", "retrain"),
        ("2026-11-05", "rollback"),
        ("2026-11-07", "retrain"),
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
