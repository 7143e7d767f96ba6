"""The final evaluation on VAL_TEST through the bundle's full decision path (ONNX multi-view
model, calibrator, active policy). With the promotion comparison in deployed_model, the only
reader of VAL_TEST; the report itself is built by roadwork_ml.evaluation.report."""

import json

import dagster as dg
import numpy as np

from roadwork_assets.bundle import BUNDLE, load_bundle_dir
from roadwork_assets.data import SOURCE_IMAGES, SPLITS, load_split_rows, load_split_tensors
from roadwork_assets.metadata import humane, identity_md, image_md, profile_md, table
from roadwork_assets.resources import ArtifactStore, MlflowTracking, ProfileResource
from roadwork_ml.artifacts import atomic_write_json, sha256_file, verify_dir, write_manifest
from roadwork_ml.contracts import Split

EVALUATION_REPORT = "evaluation_report"
EVAL_ARRAYS = "val_test_outputs.safetensors"


def load_val_test_inputs(store: ArtifactStore, profile, rows):
    """(VAL_TEST at the StreetVision emulation's native size, the served input resized from it to
    ``inference.input_size``): the report and the champion comparison score the same pixels.
    Decoding straight to the input size resamples differently, and a model whose outputs sit
    near the cut would then be compared with itself on other images."""
    from roadwork_ml.evaluation.report import resize_images

    size = profile.inference.input_size
    native = load_split_tensors(store, rows, Split.VAL_TEST, max(size, profile.evaluation.streetvision.size))
    return native, resize_images(native.images, size)


@dg.asset(deps=[BUNDLE, SPLITS, SOURCE_IMAGES], group_name="evaluation", kinds={"onnx", "mlflow"})
def evaluation_report(
    context: dg.AssetExecutionContext, settings: ProfileResource, store: ArtifactStore, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    """Classification, calibration, selective, cascade, conformal-set and fairness metrics on
    VAL_TEST with bootstrap intervals (percentile and BCa), slices with the worst one named,
    plots, and the StreetVision emulation (4 validator augmentation levels at 224 px)."""
    from safetensors.numpy import save_file

    from roadwork_ml.evaluation.report import build_report, resize_images, write_report_plots
    from roadwork_ml.serving.predictor import BundlePredictor

    resolved = settings.resolved()
    profile = resolved.profile
    ev, size, batch = profile.evaluation, profile.inference.input_size, profile.inference.batch_size
    bundle_dir = load_bundle_dir(store)
    predictor = BundlePredictor(bundle_dir, backend="onnx")
    rows = load_split_rows(store, Split.VAL_TEST)
    native, served = load_val_test_inputs(store, profile, rows)
    y = native.labels.numpy()
    d = predictor.predict_tensor(served, batch_size=batch).decisions
    context.log.info(f"VAL_TEST: {len(y)} images through the bundle ({predictor.backend}, {predictor.n_views} views)")
    result = build_report(
        y,
        d,
        rows,
        native.images,
        lambda b: predictor.predict_tensor(resize_images(b, size), batch_size=batch).decisions.streetvision,
        ev,
        split=Split.VAL_TEST,
        batch_size=batch,
    )
    bundle_sha = sha256_file(bundle_dir / "manifest.json")
    with store.staging(EVALUATION_REPORT, profile=resolved) as out_dir:
        write_report_plots(result, y, d.calibrated, out_dir / "plots", predictor.policy.kind, ev.n_bins)
        save_file(
            {
                "labels": y.astype(np.int64),
                "streetvision": d.streetvision.astype(np.float64),
                "calibrated": d.calibrated[:, 1].astype(np.float64),
                "accepted": d.accepted.astype(np.int8),
            },
            str(out_dir / EVAL_ARRAYS),
        )
        atomic_write_json(out_dir / "report.json", {"bundle_manifest_sha256": bundle_sha, **result.report})
        write_manifest(out_dir, extra={"kind": EVALUATION_REPORT, "bundle_manifest_sha256": bundle_sha})
    d_path = store.read(EVALUATION_REPORT)
    with mlflow.run(
        profile.tracking.experiment,
        run_name=f"evaluation-{context.run_id[:8]}",
        tags={
            "dagster.run_id": context.run_id,
            "roadwork.asset": EVALUATION_REPORT,
            "roadwork.bundle_manifest_sha256": bundle_sha,
            "roadwork.profile_sha256": resolved.sha256,
        },
    ) as tracked:
        tracked.log_metrics(result.summary)
        tracked.log_artifacts(d_path / "plots", "plots")
        tracked.log_artifacts(d_path, "report")

    worst = result.report["worst_slice"]
    tables = result.tables()
    plots = d_path / "plots"
    return dg.MaterializeResult(
        metadata=humane(
            {
                "path": dg.MetadataValue.path(str(store.location(EVALUATION_REPORT) / "report.json")),
                "n_val_test": len(y),
                **identity_md(mlflow, profile.deploy.registered_model, bundle_sha, when="materialization"),
                "summary": table(tables["summary"]),
                "worst_slice": f"{worst.get('family')}={worst.get('slice')}: accuracy {worst.get('value', float('nan')):.3f} (n={worst.get('n')})",
                "slices": table(tables["slices"]),
                "fairness": table(tables["fairness"]),
                "cascade": table(tables["cascade"]),
                "prediction_sets": table(tables["prediction_sets"]),
                "streetvision": table(tables["streetvision"]),
                "reliability": image_md(plots / "reliability.png", "reliability diagram"),
                "confidence_histogram": image_md(plots / "confidence_histogram.png", "confidence histogram"),
                "risk_coverage": image_md(plots / "risk_coverage.png", "risk-coverage"),
                "slice_heatmap": image_md(plots / "slice_heatmap.png", "time x weather accuracy"),
                **{k: dg.MetadataValue.float(v) for k, v in result.summary.items()},
                **profile_md(resolved),
            }
        )
    )


def load_evaluation(store: ArtifactStore) -> tuple[dict, dict]:
    """(report, VAL_TEST output arrays) of the current evaluation, hash-verified."""
    from safetensors.numpy import load_file

    directory = store.read(EVALUATION_REPORT)
    verify_dir(directory)
    return json.loads((directory / "report.json").read_text()), load_file(str(directory / EVAL_ARRAYS))


@dg.asset_check(
    asset=evaluation_report,
    blocking=True,
    description="the report belongs to the current bundle, covers every VAL_TEST image, and every interval is finite and contains its estimate",
)
def report_complete(store: ArtifactStore) -> dg.AssetCheckResult:
    from roadwork_ml.evaluation.report import intervals_contain_estimates

    report, _ = load_evaluation(store)
    bundle_sha = sha256_file(load_bundle_dir(store) / "manifest.json")
    n_rows = len(load_split_rows(store, Split.VAL_TEST))
    bad = intervals_contain_estimates(report)
    plots = sorted(p.name for p in (store.read(EVALUATION_REPORT) / "plots").glob("*.png"))
    passed = (
        report["bundle_manifest_sha256"] == bundle_sha
        and len(report["record_ids"]) == n_rows
        and not bad
        and len(plots) == 4
    )
    return dg.AssetCheckResult(
        passed=bool(passed),
        metadata=humane(
            {
                "same_bundle": report["bundle_manifest_sha256"] == bundle_sha,
                "rows": len(report["record_ids"]),
                "val_test_rows": n_rows,
                "bad_intervals": ", ".join(bad) or "none",
                "plots": ", ".join(plots),
            }
        ),
    )
