"""Drift reports explain themselves (issue 16 item 8): the accuracy rule says why it was not
applied and how many labels it needs; the slice table carries the labelled counts the log has,
checked against an independent pandas count of the same log."""

import pandas as pd
import pytest

from roadwork_assets.metadata import table
from roadwork_ml.monitoring.decisions import drift_report
from roadwork_ml.monitoring.explain import SLICE_COLUMNS_ORDER, accuracy_rule_note, slice_table
from tests.test_drift_decisions import RULES, _with_accuracy, as_log, make_reference, simulate

SLICES = ("time_of_day", "weather", "source")


@pytest.fixture(scope="module")
def reference():
    return make_reference()


def test_too_few_labels_say_so_and_how_many_more(reference):
    n = RULES.min_labels_for_accuracy - 12
    log = as_log(_with_accuracy(simulate(300, seed=4243), 0.5, n_labels=n))
    report = drift_report(reference, log, RULES, seed=0, slice_columns=SLICES)
    assert report.labelled["enough"] is False and report.n_labelled == n
    note = accuracy_rule_note(report.n_labelled, RULES.min_labels_for_accuracy, report.labelled)
    assert note == f"not applied: {n} labelled rows today, the rule needs {RULES.min_labels_for_accuracy} (12 more)"
    assert accuracy_rule_note(0, 50, None) == "not applied: no labelled rows today; the rule needs 50"
    assert accuracy_rule_note(80, 50, {"accuracy": 0.9123}).startswith("applied: labelled accuracy 0.912 on 80")


def test_slice_table_fills_labelled_counts_where_the_report_has_none(reference):
    log = as_log(simulate(300, seed=11, label_fraction=0.2))
    report = drift_report(reference, log, RULES, seed=0, slice_columns=SLICES)
    # before: the report's own per-slice "labelled" is None wherever a slice has < 50 labels
    assert any(s["labelled"] is None for s in report.slices)
    rows = slice_table(report.slices, log, RULES.min_labels_for_accuracy)
    assert [list(r) for r in rows][0] == list(SLICE_COLUMNS_ORDER)
    has_label = log["label"].fillna(-1).astype(int) >= 0
    for r in rows:  # oracle: a plain pandas count over the same log
        expected = int((has_label & (log[r["slice"]].astype(str) == r["value"])).sum())
        assert r["labelled_rows"] == expected
        assert r["labels_needed"] == max(0, RULES.min_labels_for_accuracy - expected)
        assert (r["labelled_accuracy"] is None) == (expected < RULES.min_labels_for_accuracy)
    assert sum(r["labelled_rows"] for r in rows if r["slice"] == "source") == int(has_label.sum()) > 0
    t = table(rows, columns=SLICE_COLUMNS_ORDER)
    types = {c.name: c.type for c in t.schema.columns}
    assert types["labelled_rows"] == types["rows"] == types["labels_needed"] == "int"
    assert [c.name for c in t.schema.columns] == list(SLICE_COLUMNS_ORDER)
    assert all(isinstance(rec.data["labelled_rows"], int) for rec in t.records)
    assert any(rec.data["labelled_accuracy"] == "—" for rec in t.records)


def test_a_log_without_labels_counts_zero():
    assert (
        slice_table([{"column": "weather", "value": "rain", "rows": 40}], pd.DataFrame({"weather": ["rain"] * 40}), 50)[
            0
        ]["labels_needed"]
        == 50
    )


def test_drift_report_asset_explains_itself_and_logs_the_html_to_mlflow(tmp_path, reference):
    """The real drift_report asset on a real store and a real MLflow (sqlite), fed a fabricated
    reference profile and one day of traffic with too few labels for the accuracy rule."""
    import json
    from urllib.parse import urlparse

    import dagster as dg

    from roadwork_assets.metadata import display
    from roadwork_assets.monitoring import PRODUCTION_TRAFFIC, REFERENCE_PROFILE, build_monitoring
    from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, resolve_profile
    from roadwork_ml.artifacts import write_manifest
    from roadwork_ml.monitoring.inference_log import write_log

    resolved = resolve_profile("tiny", ())
    day = resolved.profile.monitoring.scenario.start_date
    day = day if isinstance(day, str) else day.isoformat()
    store = ArtifactStore(root=str(tmp_path / "artifacts"))
    with store.staging(REFERENCE_PROFILE, profile=resolved) as out:
        (out / "champion.json").write_text(
            json.dumps({"registered_model": "roadwork-classifier", "champion": "1", "bundle_manifest_sha256": "0" * 64})
        )
        reference.save(out)
    n_labels = resolved.profile.monitoring.rules.min_labels_for_accuracy - 7
    log = as_log(_with_accuracy(simulate(300, seed=5), 0.9, n_labels=n_labels), day=day)
    log["model_version"] = "roadwork-classifier/1"  # the model the reference was built for
    with store.staging(PRODUCTION_TRAFFIC, day, profile=resolved) as out:
        write_log(out / "log.parquet", log)
        write_manifest(out)
    mlflow = MlflowTracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"))
    mon = build_monitoring(resolved.profile)
    drift = next(a for a in mon.assets if a.key == dg.AssetKey("drift_report"))
    r = dg.materialize(
        [drift],
        partition_key=day,
        resources={"settings": ProfileResource.bound("tiny"), "store": store, "mlflow": mlflow},
    )
    meta = r.asset_materializations_for_node("drift_report")[0].metadata
    need = resolved.profile.monitoring.rules.min_labels_for_accuracy
    assert meta["labelled_rows"].value == n_labels and meta["labels_needed"].value == 7
    assert meta["accuracy_rule"].value == f"not applied: {n_labels} labelled rows today, the rule needs {need} (7 more)"
    slices = meta["slices"]
    assert sum(rec.data["labelled_rows"] for rec in slices.records if rec.data["slice"] == "source") == n_labels
    uri = meta["evidently_mlflow"].value
    html = urlparse(uri).path
    assert uri.startswith("file://") and html.endswith("drift_report/evidently.html")
    from pathlib import Path

    assert Path(html).read_bytes() == (store.read("drift_report", day) / "evidently.html").read_bytes()
    from tests.metadata_scan import bad_numbers

    assert not bad_numbers(meta), bad_numbers(meta)
    run_id = meta["mlflow_run"].value.split()[0]
    assert mlflow.client().get_run(run_id).data.tags["roadwork.drift_day"] == day
    assert display.MISSING in {rec.data["labelled_accuracy"] for rec in slices.records}
