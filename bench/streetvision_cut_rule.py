"""Paired effect of the StreetVision cut rule on VAL_TEST, for each model a make-demo home bundled.

The same bundle outputs per emulated level, folded at the validator-tuned cut the bundle ships
(``thresholds.decision_cut: validator_reward``) vs the MCC-optimal cut on the same model's
VAL_CALIB outputs as stored (``clean_mcc``, the earlier rule), compared by
:func:`roadwork_ml.evaluation.streetvision.paired_streetvision` (1000 resamples of VAL_TEST).

    python bench/streetvision_cut_rule.py dagster_home bench/results/streetvision_cut_rule_demo.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METRICS = ("mcc_level_0", "mcc_level_1", "mcc_level_2", "mcc_level_3", "mcc_gap_0_3", "pooled_reward")


def unfold(folded: np.ndarray, cut: float) -> np.ndarray:
    """The inverse of :func:`roadwork_ml.policy.thresholds.fold_probability` at ``cut``."""
    return np.where(folded > 0.5, cut + (folded - 0.5) * 2 * (1 - cut), 2 * folded * cut)


def main() -> None:
    from roadwork_assets.data import load_split_rows, load_split_tensors
    from roadwork_assets.resources import ArtifactStore
    from roadwork_ml.config import load_profile
    from roadwork_ml.contracts import Split
    from roadwork_ml.evaluation.report import resize_images
    from roadwork_ml.evaluation.streetvision import emulated_outputs, paired_streetvision
    from roadwork_ml.models.predictions import read_predictions
    from roadwork_ml.policy.thresholds import fold_probability, mcc_optimal_cut
    from roadwork_ml.serving.predictor import BundlePredictor

    home, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    versions = home / "artifacts" / ".versions"
    profile = load_profile(sys.argv[3] if len(sys.argv) > 3 else "demo")
    size, batch, sv = profile.inference.input_size, profile.inference.batch_size, profile.evaluation.streetvision
    store = ArtifactStore(root=str(home / "artifacts"))
    rows = load_split_rows(store, Split.VAL_TEST)
    native = load_split_tensors(store, rows, Split.VAL_TEST, max(size, sv.size))
    y = native.labels.numpy()
    bundles = sorted(d for d in (versions / "bundle").iterdir() if d.is_dir())
    calibs = sorted(d for d in (versions / "val_calib_logits").iterdir() if d.is_dir())
    result: dict = {"command": " ".join(sys.argv), "n_val_test": int(len(y)), "models": {}}
    for i, (bundle_dir, calib_dir) in enumerate(zip(bundles, calibs, strict=True)):
        cut_validator = json.loads((bundle_dir / "streetvision.json").read_text())["decision_cut"]
        calib = read_predictions(calib_dir / "predictions.parquet", expected_split=Split.VAL_CALIB)
        cut_clean, _ = mcc_optimal_cut(calib.probs[:, 1].astype(np.float64), calib.labels)
        predictor = BundlePredictor(bundle_dir, backend="onnx")

        def served(t, predictor=predictor):
            return predictor.predict_tensor(resize_images(t, size), batch_size=batch).decisions.streetvision

        folded = emulated_outputs(served, native.images, sv.levels, sv.seed, batch, sv.size)
        raw = {lv: unfold(f, cut_validator) for lv, f in folded.items()}
        shipped = {lv: fold_probability(r, cut_validator) for lv, r in raw.items()}
        clean = {lv: fold_probability(r, cut_clean) for lv, r in raw.items()}
        res = paired_streetvision(y, shipped, clean, n_resamples=1000, seed=0)
        name = f"v{i + 1}"
        print(f"{name}: validator-tuned cut {cut_validator:.3f}, clean MCC-optimal cut {cut_clean:.3f}")
        for m in METRICS:
            d = res[m]["diff"]
            print(
                f"  {m}: validator {res[m]['new'].estimate:.3f}  clean {res[m]['ref'].estimate:.3f}  "
                f"diff {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
            )
        result["models"][name] = {
            "bundle": bundle_dir.name,
            "cut_validator": cut_validator,
            "cut_clean": cut_clean,
            **{m: {k: iv.to_dict() for k, iv in res[m].items()} for m in METRICS},
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
