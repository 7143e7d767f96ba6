"""The monitoring loop closed through the server: a day of street images goes through
``roadwork serve`` (tritonclient, per-image metadata), the server writes the inference log
where ``monitoring.serving_log_dir`` points (parts while running, the day's log.parquet on
a clean shutdown, no row lost), and ``production_traffic[day]`` and ``drift_report[day]``
are materialized from that log on a real Dagster instance."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from tests.fixtures_data import truncated_jpeg
from tests.serving_fixtures import auth_headers, build_tiny_bundle, start_server, triton_client


def _styles_and_scenario(profile):
    return {name: src.synthetic for name, src in profile.data.sources.items()}, profile.monitoring.scenario


def _reference(bundle, profile, day, out_dir):
    """A reference profile of ``bundle`` on another day's images (what reference_profile builds
    from VAL_CALIB), saved like the asset saves it."""
    import torch

    from roadwork_ml.data.records import time_of_day
    from roadwork_ml.monitoring.projection import PCAProjection
    from roadwork_ml.monitoring.reference import ReferenceProfile
    from roadwork_ml.monitoring.scenario import generate_day
    from roadwork_ml.serving.predictor import BundlePredictor

    styles, scenario = _styles_and_scenario(profile)
    recs = list(generate_day(styles, scenario, day, profile.data.image_size)) + list(
        generate_day(styles, scenario, day + timedelta(days=20), profile.data.image_size)
    )
    p = BundlePredictor(bundle, backend="onnx")
    out = p.predict_tensor(torch.stack([p.load_image(r.image_bytes) for r in recs]))
    mon = profile.monitoring
    proj = PCAProjection.fit(out.embeddings, mon.embedding_dim, seed=0)
    meta = pd.DataFrame(
        {
            "time_of_day": [time_of_day(r.hour) for r in recs],
            "weather": [r.weather for r in recs],
            "source": [r.source for r in recs],
        }
    )
    ref = ReferenceProfile.build(
        out.decisions.calibrated[:, 1],
        out.features,
        proj.transform(out.embeddings),
        meta,
        max_samples=mon.reference_max_samples,
        mmd_samples=mon.mmd_reference_size,
        seed=0,
        labels=np.array([r.label for r in recs]),
        slice_columns=("time_of_day", "weather", "source"),
        projection=proj,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # an unregistered bundle: the reference names it by its manifest hash, as the server's log does
    manifest_sha = hashlib.sha256((Path(bundle) / "manifest.json").read_bytes()).hexdigest()
    (out_dir / "champion.json").write_text(json.dumps({"champion": None, "bundle_manifest_sha256": manifest_sha}))
    ref.save(out_dir)  # hashes champion.json too, like the asset
    return out_dir


def _send_day(server, recs, batch: int = 8) -> tuple[int, list[str]]:
    import tritonclient.http as hc

    from roadwork_ml.monitoring.scenario import record_timestamp

    client = triton_client(server)
    sent, versions = 0, []
    for i in range(0, len(recs), batch):
        part = recs[i : i + batch]
        cols = {
            "image_bytes": [r.image_bytes for r in part] + ([truncated_jpeg()] if i == 0 else []),
            "image_id": [r.record_id for r in part] + (["broken-upload"] if i == 0 else []),
            "source": [r.source for r in part] + (["natix"] if i == 0 else []),
            "camera_id": [r.camera_id for r in part] + (["cam"] if i == 0 else []),
            "weather": [r.weather for r in part] + (["clear"] if i == 0 else []),
            "timestamp": [record_timestamp(_day_of(r), r).isoformat() for r in part]
            + ([record_timestamp(_day_of(part[0]), part[0]).isoformat()] if i == 0 else []),
        }
        hours = np.array([r.hour for r in part] + ([12] if i == 0 else []), dtype=np.int32)
        inputs = []
        for name, values in cols.items():
            t = hc.InferInput(name, [len(values)], "BYTES")
            t.set_data_from_numpy(np.array([v if isinstance(v, bytes) else v.encode() for v in values], dtype=object))
            inputs.append(t)
        h = hc.InferInput("hour", [len(hours)], "INT32")
        h.set_data_from_numpy(hours)
        inputs.append(h)
        res = client.infer("roadwork", inputs, headers=auth_headers())
        errors = [e.decode() for e in res.as_numpy("error")]
        assert all(e == "" for e in errors[: len(part)]) and (i > 0 or errors[-1].startswith("truncated"))
        versions += [v.decode() for v in res.as_numpy("model_version")[: len(part)]]
        sent += len(part)
    return sent, versions


def _day_of(rec):
    from datetime import date

    return date.fromisoformat(rec.record_id.split(":", 1)[0])


@pytest.mark.slow
def test_a_day_through_the_server_feeds_production_traffic_and_drift_report(tmp_path):
    from roadwork_assets.definitions import build_definitions
    from roadwork_assets.monitoring import DRIFT_REPORT, PRODUCTION_TRAFFIC, REFERENCE_PROFILE
    from roadwork_assets.resources import (
        ArtifactStore,
        MlflowTracking,
        ProfileResource,
        profile_source,
        resolve_profile,
    )
    from roadwork_ml.config import load_profile
    from roadwork_ml.monitoring.inference_log import day_path, read_log
    from roadwork_ml.monitoring.scenario import generate_day

    log_dir = tmp_path / "serving_log"
    profile_yaml = tmp_path / "profile.yaml"
    profile_yaml.write_text(
        f"extends: tiny\nname: tiny_served\nmonitoring: {{serving_log_dir: '{log_dir}'}}\nserving: {{log_flush_rows: 16, log_flush_seconds: 60.0}}\n"
    )
    profile = load_profile(str(profile_yaml))
    bundle = build_tiny_bundle(tmp_path / "bundle", seed=0)
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    start = profile.monitoring.scenario.start
    with store.staging(REFERENCE_PROFILE, profile=resolve_profile(profile_source(str(profile_yaml)), ())) as out:
        _reference(bundle, profile, start, out)
    ref_dir = store.location(REFERENCE_PROFILE)

    day = start + timedelta(days=1)
    styles, scenario = _styles_and_scenario(profile)
    recs = list(generate_day(styles, scenario, day, profile.data.image_size))
    server = start_server(
        ["--bundle", str(bundle), "--profile", str(profile_yaml), "--reference", str(ref_dir)], tmp_path
    )
    try:
        sent, versions = _send_day(server, recs)
        # 16-row flushes: parts exist while the server runs; the rest is still buffered
        parts = list((log_dir / f"day={day.isoformat()}" / ".parts").glob("*.parquet"))
        assert len(parts) >= 1 and not day_path(log_dir, day).exists()
    finally:
        code = server.stop()
    assert code in (0, -15) and "Application shutdown complete" in server.output(), server.output()
    log = read_log(day_path(log_dir, day))
    assert len(log) == sent == len(recs)  # nothing lost on the clean shutdown, the bad upload never logged
    assert sorted(log["image_id"]) == sorted(r.record_id for r in recs)
    assert set(log["model_version"]) == set(versions) and not list(log_dir.rglob(".parts/*.parquet"))
    assert set(log["timestamp"].dt.date) == {day}
    by_id = log.set_index("image_id")
    assert all(
        by_id.loc[r.record_id, "weather"] == r.weather and int(by_id.loc[r.record_id, "hour"]) == r.hour for r in recs
    )

    resources = {
        "settings": ProfileResource(profile=str(profile_yaml)),
        "store": store,
        "mlflow": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "mlartifacts")
        ),
    }
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        defs = build_definitions(str(profile_yaml))
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=dg.AssetSelection.assets("production_traffic", "drift_report"),
            partition_key=day.isoformat(),
            resources=resources,
            instance=instance,
        )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]
    traffic = read_log(store.read(PRODUCTION_TRAFFIC, day.isoformat()) / "log.parquet")
    assert len(traffic) == len(recs) and set(traffic["model_version"]) == set(versions)
    report = json.loads((store.read(DRIFT_REPORT, day.isoformat()) / "report.json").read_text())
    assert report["n_rows"] == len(recs) and report["decision"] in ("ok", "alert", "retrain", "rollback")
