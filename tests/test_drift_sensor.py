"""The drift sensor on a real instance, fed with drift_report materializations: run requests
with unique keys, an always-advancing cursor, the retrain cooldown, suppressed rollbacks, the
audit record, and alerts POSTed to a webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from roadwork_assets.audit import read_actions
from roadwork_assets.definitions import defs
from roadwork_assets.monitoring import drift_action_sensor, drift_report
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
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


def _report(instance, day: str, decision: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=drift_report.key, partition=day, metadata={"decision": decision, "reasons": f"test: {decision}"}))


def _tick(instance, resources, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
    out = drift_action_sensor(ctx)
    return (out if isinstance(out, list) else []), ctx.cursor


def test_sensor_requests_suppresses_audits_and_alerts(tmp_path, webhook):
    url, received = webhook
    profile = tmp_path / "p.yaml"
    profile.write_text(f"extends: tiny\nname: tiny_hook\nmonitoring: {{webhook_url: '{url}', retrain_cooldown_days: 3}}\n")
    resources = {"settings": ProfileResource(profile=str(profile)), "store": ArtifactStore(root=str(tmp_path / "art")),
                 "mlflow": MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "mlartifacts"))}
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
    assert actions == [("alert", "2026-11-02"), ("retrain_requested", "2026-11-03"), ("retrain_suppressed", "2026-11-04"),
                       ("rollback_unavailable", "2026-11-05"), ("retrain_requested", "2026-11-07")]
    assert [(r["day"], r["decision"]) for r in received] == [("2026-11-02", "alert"), ("2026-11-03", "retrain"), ("2026-11-04", "retrain"), ("2026-11-05", "rollback"), ("2026-11-07", "retrain")]
