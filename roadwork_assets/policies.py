"""Phase 2 (thresholds) — and later the calibrator, gate and conformal policies — fitted on VAL_CALIB."""


import json

import dagster as dg
import numpy as np

from roadwork_assets.loaders import load_predictions
from roadwork_assets.metadata import image_md
from roadwork_assets.resources import ArtifactStore, ProfileResource, RunOverrides
from roadwork_ml.artifacts import atomic_write_json, verify_dir, write_manifest
from roadwork_ml.contracts import Split
from roadwork_ml.evaluation.plots import threshold_sweep
from roadwork_ml.policy.thresholds import ExitThresholds, exit_sweep, fit_thresholds

THRESHOLDS_DIR = "thresholds"


@dg.asset(deps=["val_calib_logits"], group_name="policies", kinds={"numpy"})
def thresholds(context: dg.AssetExecutionContext, config: RunOverrides, settings: ProfileResource, store: ArtifactStore) -> dg.MaterializeResult:
    """Exit threshold τ (highest coverage with FNR among exited ≤ target, coverage ≥ minimum) and the MCC-optimal cut folded onto 0.5."""
    profile = settings.load(config.overrides)
    preds = load_predictions(store, Split.VAL_CALIB)
    cfg = profile.thresholds
    fitted = fit_thresholds(preds.probs[:, 1], preds.labels, preds.split, cfg.target_fnr_exit, cfg.min_coverage, cfg.grid_size)
    if not fitted.feasible:
        context.log.warning(f"no exit threshold reaches FNR ≤ {cfg.target_fnr_exit} at coverage ≥ {cfg.min_coverage}; the check will fail")
    with store.staging(THRESHOLDS_DIR) as out:
        atomic_write_json(out / "thresholds.json", fitted.to_dict())
        atomic_write_json(out / "sweep.json", fitted.sweep)
        threshold_sweep(fitted.sweep["tau"], fitted.sweep["coverage"], fitted.sweep["fnr"], fitted.tau, cfg.target_fnr_exit, cfg.min_coverage, out / "sweep.png")
        write_manifest(out, extra={"kind": "thresholds"})
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(store.path(THRESHOLDS_DIR, "thresholds.json"))),
            "tau": fitted.tau,
            "coverage": fitted.coverage,
            "fnr_exit": fitted.fnr_exit,
            "feasible": fitted.feasible,
            "decision_cut": fitted.decision_cut,
            "mcc_at_cut": fitted.mcc_at_cut,
            "n_val_calib": len(preds),
            "sweep": image_md(store.path(THRESHOLDS_DIR, "sweep.png"), "exit sweep"),
        }
    )


@dg.asset_check(asset=thresholds, blocking=True, description="re-measured on VAL_CALIB: FNR among exited ≤ target and coverage ≥ minimum at the chosen τ; the folded cut maps to 0.5")
def thresholds_meet_targets(store: ArtifactStore) -> dg.AssetCheckResult:
    directory = store.require(THRESHOLDS_DIR)
    verify_dir(directory)
    fitted = ExitThresholds.from_dict(json.loads((directory / "thresholds.json").read_text()))
    preds = load_predictions(store, Split.VAL_CALIB)
    p1 = preds.probs[:, 1].astype(np.float64)
    coverage, fnr = exit_sweep(p1, preds.labels, np.array([fitted.tau]))
    folded = fitted.fold(p1)
    fold_consistent = bool((((folded > 0.5) == (p1 > fitted.decision_cut))).all() and np.isfinite(folded).all() and folded.min() >= 0 and folded.max() <= 1)
    passed = bool(fnr[0] <= fitted.target_fnr_exit and coverage[0] >= fitted.min_coverage and fold_consistent)
    return dg.AssetCheckResult(passed=passed, metadata={"coverage": float(coverage[0]), "min_coverage": fitted.min_coverage, "fnr_exit": float(fnr[0]), "target_fnr_exit": fitted.target_fnr_exit, "fold_consistent": fold_consistent})
