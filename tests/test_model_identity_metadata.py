"""One model identity on every model-derived asset page (issue 16 item 6): registry version +
bundle manifest sha256 and the registry status, read from a real MLflow registry (sqlite)."""

import hashlib

import dagster as dg
import pytest

from roadwork_assets.deployment import TAG_MANIFEST, _champion_recorded_metric, observe_status
from roadwork_assets.metadata import identity_md
from roadwork_assets.resources import MlflowTracking
from roadwork_ml.evaluation.champion import TAG_ROLLED_BACK
from roadwork_ml.export.identity import model_status

NAME = "roadwork-classifier"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Versions 1..3 with content hashes A, B, C; champion=2, previous_champion=1, challenger=3."""
    tmp = tmp_path_factory.mktemp("mlflow")
    mlflow = MlflowTracking(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}", artifact_root=str(tmp / "art"))
    (tmp / "bundle").mkdir()
    (tmp / "bundle" / "manifest.json").write_text("{}")
    hashes = {}
    for v, name in enumerate("ABC", start=1):
        with mlflow.run("identity", run_name=f"bundle-{name}") as tracked:
            tracked.log_metrics({"val_test_mcc": 0.5 + v / 7})  # 16-digit floats, as MLflow stores them
            tracked.log_artifacts(tmp / "bundle", "bundle")
            run_id = tracked.run_id
        hashes[name] = _sha(name)
        assert mlflow.register_version(NAME, run_id, "bundle", tags={TAG_MANIFEST: hashes[name]}) == str(v)
    mlflow.set_alias(NAME, "previous_champion", "1")
    mlflow.set_alias(NAME, "champion", "2")
    mlflow.set_alias(NAME, "challenger", "3")
    return mlflow, hashes


def test_status_rules():
    assert model_status(None, champion="2") == "not registered"
    assert model_status("2", champion="2") == "champion"
    assert model_status("2", champion="2", rolled_back=True) == "rolled back"
    assert model_status("3", champion="2", challenger="3") == "challenger"
    assert model_status("1", champion="2", previous_champion="1") == "previous champion"
    assert model_status("4", champion="2", challenger="3", previous_champion="1") == "superseded"


def test_each_registered_model_gets_its_version_hash_and_status(registry):
    mlflow, h = registry
    seen = {k: identity_md(mlflow, NAME, h[k], when="materialization") for k in "ABC"}
    seen["D"] = identity_md(mlflow, NAME, _sha("D"))
    assert {k: m["model_version"] for k, m in seen.items()} == {"A": "1", "B": "2", "C": "3", "D": "—"}
    assert seen["B"]["model"] == f"{NAME} v2 (manifest sha256 {h['B'][:12]})"
    assert seen["D"]["model"].startswith("unregistered bundle")
    status = {k: m["model_status"].value for k, m in seen.items()}
    assert status["A"].startswith("**previous champion** at materialization") and "NOT the deployed" in status["A"]
    assert status["B"].startswith("**champion**") and "deployed model" in status["B"]
    assert status["C"].startswith("**challenger**") and status["D"].startswith("**not registered**")


def test_the_promotion_reason_quotes_the_champion_metric_mlflow_shows(registry):
    mlflow, _ = registry
    recorded = mlflow.client().get_run(mlflow.client().get_model_version(NAME, "2").run_id).data.metrics
    assert recorded["val_test_mcc"] == pytest.approx(0.5 + 2 / 7)
    text = _champion_recorded_metric(mlflow, NAME, "2", "mcc")
    assert "champion v2 val_test_mcc as recorded in MLflow: 0.7857" in text
    assert _champion_recorded_metric(mlflow, NAME, None, "mcc") == ""


def test_a_rolled_back_model_is_marked_on_the_bundle_page_by_an_observation(registry):
    mlflow, h = registry

    @dg.asset(name="bundle")
    def bundle_page():
        return 1

    @dg.asset
    def judge(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        observe_status(context, mlflow, NAME, h["B"], ("bundle",))
        return dg.MaterializeResult()

    mlflow.set_version_tag(NAME, "2", TAG_ROLLED_BACK, "true")
    try:
        r = dg.materialize([bundle_page, judge], selection=[judge])
    finally:
        mlflow.set_version_tag(NAME, "2", TAG_ROLLED_BACK, "false")
    (obs,) = [o for o in r.asset_observations_for_node("judge") if o.asset_key == dg.AssetKey("bundle")]
    assert obs.metadata["model_status"].value.startswith("**rolled back** at run ")
    assert obs.metadata["model_version"].value == "2" and obs.metadata["model_sha256"].value == h["B"]
