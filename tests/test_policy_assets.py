"""Policy assets alone, on a temporary instance and store, fed a fabricated VAL_CALIB
predictions artifact: direct invocation with a built context, and dg.materialize with their
checks under run-level overrides (the check judges with the run's profile)."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from roadwork_assets.policies import calibrator, calibrator_not_worse, thresholds, thresholds_meet_targets
from roadwork_assets.predictions import VAL_CALIB_LOGITS
from roadwork_assets.resources import ArtifactStore, ProfileResource, resolve_profile
from roadwork_ml.artifacts import write_manifest
from roadwork_ml.contracts import Split
from roadwork_ml.models.predictions import write_predictions


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    """A store holding 240 VAL_CALIB predictions of a decent, overconfident classifier."""
    rng = np.random.default_rng(7)
    n = 240
    y = rng.integers(0, 2, n)
    margin = np.where(y == 1, 1.0, -1.0) * rng.gamma(2.0, 1.5, n) + rng.normal(0, 1.5, n)
    logits = np.stack([-margin, margin], 1) * 2.0
    rows = pd.DataFrame(
        {
            "record_id": [f"r{i:04d}" for i in range(n)],
            "label": y,
            "true_label": y,
            "source": rng.choice(["natix", "roadwork"], n),
            "hour": rng.integers(0, 24, n),
            "time_of_day": rng.choice(["day", "night"], n),
            "weather": rng.choice(["clear", "rain"], n),
            "camera_id": "c0",
            "sequence_id": "s0",
            "group_id": [f"g{i}" for i in range(n)],
        }
    )
    s = ArtifactStore(root=str(tmp_path / "artifacts"))
    with s.staging(VAL_CALIB_LOGITS, profile=resolve_profile("tiny", ())) as out:
        write_predictions(
            out / "predictions.parquet",
            Split.VAL_CALIB,
            rows,
            logits,
            rng.normal(size=(n, 4)),
            rng.random((n, 7)),
            logits[:, None, :].repeat(2, 1),
        )
        write_manifest(out)
    return s


def test_thresholds_invoked_directly_with_a_built_context(store):
    result = thresholds(dg.build_asset_context(), settings=ProfileResource.bound("tiny"), store=store)
    meta = {k: getattr(v, "value", v) for k, v in result.metadata.items()}
    import json

    from roadwork_assets.predictions import load_val_calib_predictions

    preds = load_val_calib_predictions(store)
    p1 = preds.probs[:, 1].tolist()
    # the artifact holds the exact fit; the metadata shows it to 4 significant digits
    from roadwork_ml.policy.thresholds import ExitThresholds

    fit = ExitThresholds.from_dict(json.loads((store.read("thresholds") / "thresholds.json").read_text()))
    tau, cut = fit.tau_, fit.decision_cut_
    # independent recount at the chosen tau: an image exits when max(p, 1-p) >= tau; the FNR
    # counts roadwork images that exit below the decision cut among the roadwork images that exit
    exits = [max(p, 1 - p) >= tau for p in p1]
    pos_exit = [(p > cut) for p, e, y in zip(p1, exits, preds.labels, strict=False) if e and y == 1]
    assert meta["n_val_calib"] == 240 and isinstance(meta["n_val_calib"], int) and 0.5 <= meta["tau"] <= 1.0
    assert meta["tau"] == pytest.approx(tau, rel=5e-4) and meta["decision_cut"] == pytest.approx(
        cut, rel=5e-4, abs=1e-12
    )
    assert meta["coverage"] == pytest.approx(sum(exits) / len(exits), rel=5e-4)
    fnr = pos_exit.count(False) / len(pos_exit) if pos_exit else 0.0
    assert meta["fnr_exit"] == pytest.approx(fnr, rel=5e-4, abs=1e-12)
    assert meta["profile"] == "tiny" and meta["profile_sha256"] == resolve_profile("tiny", ()).sha256
    assert (store.read("thresholds") / "thresholds.json").exists()


@pytest.mark.parametrize(
    "active, severity", [("thresholds", dg.AssetCheckSeverity.ERROR), ("scrc", dg.AssetCheckSeverity.WARN)]
)
def test_threshold_check_judges_with_the_runs_profile(store, active, severity):
    """Unreachable targets (FNR ≤ 0.0001 at coverage ≥ 0.99): the check fails, as an ERROR when
    the run's profile makes thresholds the active policy and a WARN otherwise."""
    overrides = [
        "thresholds.target_fnr_exit=0.0001",
        "thresholds.min_coverage=0.99",
        f"policy.active={{thresholds: {str(active == 'thresholds').lower()}, gate: false, scrc: {str(active == 'scrc').lower()}}}",
    ]
    with dg.instance_for_test() as instance:
        r = dg.materialize(
            [thresholds, thresholds_meet_targets],
            resources={"settings": ProfileResource.bound("tiny"), "store": store},
            instance=instance,
            raise_on_error=False,
            run_config={"resources": {"settings": {"config": {"overrides": overrides}}}},
        )
    (e,) = r.get_asset_check_evaluations()
    assert not e.passed and e.severity == severity and e.metadata["active_policy"].value == active
    assert e.metadata["target_fnr_exit"].value == 0.0001 and e.metadata["min_coverage"].value == 0.99


def test_calibrator_and_its_check_alone(store):
    with dg.instance_for_test() as instance:
        r = dg.materialize(
            [calibrator, calibrator_not_worse],
            resources={"settings": ProfileResource.bound("tiny"), "store": store},
            instance=instance,
        )
    (e,) = r.get_asset_check_evaluations()
    meta = r.asset_materializations_for_node("calibrator")[0].metadata
    assert e.passed and meta["oof_ece_after"].value <= meta["oof_ece_before"].value + 1e-12
    assert isinstance(meta["comparison"], dg.TableMetadataValue) and meta["n_val_calib"].value == 240


# issue 16 item 7: what a person sees in the UI — no "106.0000" counts, no 16-digit floats, no "0.0000"
def test_policy_asset_metadata_reads_as_a_person_expects(store):
    r = dg.materialize(
        [thresholds, calibrator],
        resources={"settings": ProfileResource.bound("tiny"), "store": store},
        raise_on_error=True,
    )
    from tests.metadata_scan import BAD_NUMBER, bad_numbers, shown

    for node in ("thresholds", "calibrator"):
        metadata = r.asset_materializations_for_node(node)[0].metadata
        assert sum(len(shown(v)) for v in metadata.values()) > 8
        assert not bad_numbers(metadata), (node, bad_numbers(metadata))
    for e in r.get_asset_check_evaluations():
        assert not bad_numbers(e.metadata), (e.check_name, bad_numbers(e.metadata))
    meta = r.asset_materializations_for_node("calibrator")[0].metadata
    assert isinstance(meta["n_val_calib"], dg.IntMetadataValue)
    comparison = meta["comparison"]
    types = {c.name: c.type for c in comparison.schema.columns}
    assert types["method"] == "string" and "float" in types.values()
    # the naive rendering this replaces fails the same scan
    assert BAD_NUMBER.search(str(0.12307692307692308)) and BAD_NUMBER.search(f"{106:.4f}")
    assert BAD_NUMBER.search(f"{3e-6:.4f}") and BAD_NUMBER.search(str(float("nan")))


def test_number_rules():
    from roadwork_assets.metadata import humane, table

    m = humane({"n_rows": 106.0, "mcc": 0.123456789, "p_value": 3.1e-9, "lr": 3e-5, "x": None, "ok": True})
    assert m["n_rows"].value == 106 and isinstance(m["n_rows"], dg.IntMetadataValue)
    assert m["mcc"].value == 0.1235 and m["p_value"].value == "3.1e-09" and m["lr"].value == "3e-05"
    assert m["x"] == "—" and m["ok"] is True
    t = table([{"fold": 0.0, "n": 106.0, "errors": 9.0, "p_value": 1e-7, "mcc": None}])
    assert t.records[0].data == {"fold": 0, "n": 106, "errors": 9, "p_value": "1.0e-07", "mcc": "—"}
    assert [c.type for c in t.schema.columns][:3] == ["int", "int", "int"]
