"""The final evaluation on VAL_TEST — the only place VAL_TEST is read — through the bundle's
full decision path (ONNX multi-view model, calibrator, active policy)."""


import json

import dagster as dg
import numpy as np
import torch
import torch.nn.functional as F

from roadwork_assets.bundle import BUNDLE_DIR
from roadwork_assets.deployment import EVAL_ARRAYS, EVAL_DIR
from roadwork_assets.loaders import load_split_tensors, load_splits, split_rows
from roadwork_assets.metadata import image_md, table_md
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource, RunOverrides
from roadwork_ml.artifacts import atomic_write_json, sha256_file, verify_dir, write_manifest
from roadwork_ml.contracts import Purpose, Split, require_split

HEADLINE = ("accuracy", "precision", "recall", "f1", "mcc", "auroc", "auprc", "ece", "brier", "augrc")


def cascade_costs(accepted: np.ndarray, costs: list[float]) -> list[dict]:
    """Average cost per image when this model (cost ``costs[0]``) answers the accepted images
    and defers the rest to stage k (cost ``costs[k]``), relative to sending every image to stage k."""
    defer = float(1 - accepted.mean())
    return [{"deferred_to": f"stage {k} (cost {c:g})", "avg_cost": costs[0] + defer * c, "relative_cost": (costs[0] + defer * c) / c} for k, c in enumerate(costs[1:], start=1)]


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True).round().clamp(0, 255).to(torch.uint8)


@dg.asset(deps=[BUNDLE_DIR, "splits"], group_name="evaluation", kinds={"onnx", "mlflow"})
def evaluation_report(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore, mlflow: MlflowTracking) -> dg.MaterializeResult:
    """Classification, calibration, selective, cascade, conformal-set and fairness metrics on
    VAL_TEST with bootstrap intervals (percentile and BCa), slices with the worst one named,
    plots, and the StreetVision emulation (4 validator augmentation levels at 224 px)."""
    from roadwork_ml.evaluation import metrics as M
    from roadwork_ml.evaluation import report_plots
    from roadwork_ml.evaluation.bootstrap import bootstrap_metrics
    from roadwork_ml.evaluation.fairness import fairness_report
    from roadwork_ml.evaluation.slices import slice_metrics, time_weather_accuracy, worst_slice
    from roadwork_ml.evaluation.streetvision import streetvision_eval
    from roadwork_ml.policy.calibration import reliability_diagram
    from roadwork_ml.serving.predictor import BundlePredictor

    profile = settings.load(config.overrides)
    ev = profile.evaluation
    require_split(Purpose.FINAL_EVALUATION, Split.VAL_TEST)
    bundle_dir = store.require(BUNDLE_DIR)
    predictor = BundlePredictor(bundle_dir, backend="onnx")
    rows = split_rows(load_splits(store), Split.VAL_TEST)
    native = load_split_tensors(store, rows, Split.VAL_TEST, max(profile.inference.input_size, ev.streetvision.size))
    images = _resize(native.images, profile.inference.input_size)
    y = native.labels.numpy()
    out = predictor.predict_tensor(images, batch_size=profile.inference.batch_size)
    d = out.decisions
    sv, cal1 = d.streetvision, d.calibrated[:, 1]
    context.log.info(f"VAL_TEST: {len(y)} images through the bundle ({predictor.backend}, {predictor.n_views} views)")

    classification = M.classification_report(y, sv)
    calibration = M.calibration_report(y, d.calibrated, ev.n_bins)
    conf = np.maximum(cal1, 1 - cal1)
    correct = (d.label == y)
    selective = {"aurc": M.aurc(conf, correct), "augrc": M.augrc(conf, correct), "policy_coverage": float(d.accepted.mean()), "policy_selective_risk": float((~correct[d.accepted]).mean()) if d.accepted.any() else 0.0}
    cascade = {"exit_share": float(d.accepted.mean()), "defer_share": float(1 - d.accepted.mean()), "costs": cascade_costs(d.accepted, ev.cascade_costs)}
    sets = {"coverage": M.set_coverage(y, d.prediction_set), "avg_size": M.set_average_size(d.prediction_set), "singleton_rate": M.singleton_rate(d.prediction_set), "empty_rate": M.empty_rate(d.prediction_set)}
    fairness = fairness_report(y, d.label, rows[ev.fairness.column].astype(str).to_numpy(), ev.fairness.group_a, ev.fairness.group_b, ev.fairness.threshold)
    intervals = bootstrap_metrics(y, sv, metrics=list(HEADLINE), n_resamples=ev.n_resamples, level=ev.level, seed=ev.seed, n_jobs=ev.n_jobs)
    # ECE and Brier of the *calibrated* probability are what calibration promises; the folded
    # StreetVision output is a decision score, so its calibration intervals come from cal1
    cal_intervals = bootstrap_metrics(y, cal1, metrics=["ece", "brier"], n_resamples=ev.n_resamples, level=ev.level, seed=ev.seed, n_jobs=ev.n_jobs)
    intervals.update(cal_intervals)
    slices = slice_metrics(rows, y, sv, n_bins=ev.n_bins, min_count=ev.min_slice_count)
    worst = worst_slice(slices, "accuracy", ev.min_slice_count)
    acc_tw, n_tw = time_weather_accuracy(rows, y, sv)

    def predict_fn(batch: torch.Tensor) -> np.ndarray:
        return predictor.predict_tensor(_resize(batch, profile.inference.input_size), batch_size=profile.inference.batch_size).decisions.streetvision

    street = streetvision_eval(predict_fn, native.images, y, levels=ev.streetvision.levels, seed=ev.streetvision.seed, batch_size=profile.inference.batch_size, n_resamples=ev.n_resamples, level=ev.level, n_jobs=ev.n_jobs)

    bundle_sha = sha256_file(bundle_dir / "manifest.json")
    summary = {f"val_test_{k}": float(intervals[k]["percentile"].estimate) for k in HEADLINE}
    summary.update({"val_test_policy_coverage": selective["policy_coverage"], "val_test_set_coverage": sets["coverage"], "streetvision_reward": float(street["pooled"]["reward"].estimate)})
    with store.staging(EVAL_DIR) as out_dir:
        plots = out_dir / "plots"
        plots.mkdir()
        reliability_diagram(d.calibrated, y, plots / "reliability.png", ev.n_bins, "VAL_TEST, calibrated")
        report_plots.confidence_histogram(conf, correct, plots / "confidence_histogram.png")
        report_plots.risk_coverage_plot(conf, correct, plots / "risk_coverage.png", operating_points={f"{predictor.policy.kind} policy": (selective["policy_coverage"], selective["policy_selective_risk"])})
        report_plots.slice_heatmap(acc_tw, n_tw, plots / "slice_heatmap.png")
        from safetensors.numpy import save_file

        save_file({"labels": y.astype(np.int64), "streetvision": sv.astype(np.float64), "calibrated": cal1.astype(np.float64), "accepted": d.accepted.astype(np.int8)}, str(out_dir / EVAL_ARRAYS))
        report = {
            "bundle_manifest_sha256": bundle_sha,
            "record_ids": rows["record_id"].tolist(),
            "summary": summary,
            "classification": classification,
            "calibration": calibration,
            "selective": selective,
            "cascade": cascade,
            "prediction_sets": sets,
            "fairness": fairness,
            "intervals": {k: {m: iv.to_dict() for m, iv in v.items()} for k, v in intervals.items()},
            "slices": json.loads(slices.to_json(orient="records")),
            "worst_slice": worst,
            "streetvision": {k: ({kk: (vv.to_dict() if hasattr(vv, "to_dict") else vv) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in street.items()},
        }
        atomic_write_json(out_dir / "report.json", report)
        write_manifest(out_dir, extra={"kind": "evaluation_report", "bundle_manifest_sha256": bundle_sha})
    d_path = store.path(EVAL_DIR)
    with mlflow.run(profile.tracking.experiment, run_name=f"evaluation-{context.run_id[:8]}", tags={"dagster.run_id": context.run_id, "roadwork.asset": "evaluation_report", "roadwork.bundle_manifest_sha256": bundle_sha}) as tracked:
        tracked.log_metrics(summary)
        tracked.log_artifacts(d_path / "plots", "plots")
        tracked.log_artifacts(d_path, "report")

    table = [{"metric": k, "value": intervals[k]["percentile"].format(), "BCa": intervals[k]["bca"].format()} for k in HEADLINE]
    sv_rows = [{"augmentation": k, "mcc": v["mcc"].format(), "accuracy": v["accuracy"].format(), "reward": v["reward"].format(), "invalid": v.get("n_invalid", 0)} for k, v in street.items() if isinstance(v, dict) and "mcc" in v]
    fair_rows = [{"criterion": k, "gap": v["value"], "passed": v["passed"]} for k, v in fairness.items() if isinstance(v, dict) and "value" in v]
    slice_rows = slices[["family", "slice", "n", "accuracy", "precision", "recall", "f1", "ece", "auroc"]].to_dict("records")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(d_path / "report.json")),
            "n_val_test": len(y),
            "summary": table_md(table),
            "worst_slice": f"{worst.get('family')}={worst.get('slice')}: accuracy {worst.get('value', float('nan')):.3f} (n={worst.get('n')})",
            "slices": table_md(slice_rows),
            "fairness": table_md(fair_rows),
            "cascade": table_md(cascade["costs"]),
            "prediction_sets": table_md([sets]),
            "streetvision": table_md(sv_rows),
            "reliability": image_md(d_path / "plots" / "reliability.png", "reliability diagram"),
            "confidence_histogram": image_md(d_path / "plots" / "confidence_histogram.png", "confidence histogram"),
            "risk_coverage": image_md(d_path / "plots" / "risk_coverage.png", "risk-coverage"),
            "slice_heatmap": image_md(d_path / "plots" / "slice_heatmap.png", "time x weather accuracy"),
            **{k: dg.MetadataValue.float(v) for k, v in summary.items()},
        }
    )


@dg.asset_check(asset=evaluation_report, blocking=True, description="the report belongs to the current bundle, covers every VAL_TEST image, and every interval is finite and contains its estimate")
def report_complete(store: ArtifactStore) -> dg.AssetCheckResult:
    d = store.require(EVAL_DIR)
    verify_dir(d)
    report = json.loads((d / "report.json").read_text())
    bundle_sha = sha256_file(store.require(BUNDLE_DIR) / "manifest.json")
    n_rows = len(split_rows(load_splits(store), Split.VAL_TEST))
    bad = []
    for metric, methods in report["intervals"].items():
        for method, iv in methods.items():
            if iv["low"] is None or iv["high"] is None or not (iv["low"] - 1e-12 <= iv["estimate"] <= iv["high"] + 1e-12):
                bad.append(f"{metric}/{method}")
    plots = sorted(p.name for p in (d / "plots").glob("*.png"))
    passed = report["bundle_manifest_sha256"] == bundle_sha and len(report["record_ids"]) == n_rows and not bad and len(plots) == 4
    return dg.AssetCheckResult(passed=bool(passed), metadata={"same_bundle": report["bundle_manifest_sha256"] == bundle_sha, "rows": len(report["record_ids"]), "val_test_rows": n_rows, "bad_intervals": ", ".join(bad) or "none", "plots": ", ".join(plots)})
