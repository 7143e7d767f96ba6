"""The final evaluation report on VAL_TEST, built from the bundle's decisions.

:func:`build_report` turns labels, the decision path's outputs and slice metadata into every
number the report holds (classification, calibration, selective, cascade, conformal sets,
fairness, bootstrap intervals, slices, the StreetVision emulation); :func:`write_report_plots`
draws its four plots. Both are pure: the caller supplies the data and a prediction function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from roadwork_ml.config import EvaluationConfig
from roadwork_ml.contracts import Purpose, Split, require_split

HEADLINE = ("accuracy", "precision", "recall", "f1", "mcc", "auroc", "auprc", "ece", "brier", "augrc")


def cascade_costs(accepted: np.ndarray, costs: list[float]) -> list[dict]:
    """Average cost per image when this model (cost ``costs[0]``) answers the accepted images
    and defers the rest to stage k (cost ``costs[k]``), relative to sending every image to stage k."""
    defer = float(1 - accepted.mean())
    return [
        {
            "deferred_to": f"stage {k} (cost {c:g})",
            "avg_cost": costs[0] + defer * c,
            "relative_cost": (costs[0] + defer * c) / c,
        }
        for k, c in enumerate(costs[1:], start=1)
    ]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` → uint8 ``[N, 3, size, size]`` (bilinear, antialiased); unchanged if already that size."""
    if images.shape[-1] == size:
        return images
    return (
        F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )


@dataclass
class EvaluationReport:
    """``report`` is the JSON document; ``summary`` the headline scalars (MLflow metrics);
    the arrays feed the plots: ``confidence`` of the calibrated prediction and ``correct``
    per image ``[N]``, ``acc_tw`` / ``n_tw`` the time-of-day x weather tables."""

    report: dict
    summary: dict[str, float]
    confidence: np.ndarray
    correct: np.ndarray
    acc_tw: pd.DataFrame
    n_tw: pd.DataFrame

    def tables(self) -> dict[str, list[dict]]:
        """The report's tables as rows (for the asset's metadata)."""
        r = self.report
        iv = r["intervals"]
        street = r["streetvision"]
        return {
            "summary": [
                {
                    "metric": k,
                    "estimate": iv[k]["percentile"]["estimate"],
                    "percentile_low": iv[k]["percentile"]["low"],
                    "percentile_high": iv[k]["percentile"]["high"],
                    "bca_low": iv[k]["bca"]["low"],
                    "bca_high": iv[k]["bca"]["high"],
                }
                for k in HEADLINE
            ],
            "streetvision": [
                {
                    "augmentation": k,
                    "mcc": v["mcc"]["estimate"],
                    "accuracy": v["accuracy"]["estimate"],
                    "reward": v["reward"]["estimate"],
                    "invalid": int(v.get("n_invalid", 0)),
                }
                for k, v in street.items()
                if isinstance(v, dict) and "mcc" in v
            ],
            "fairness": [
                {"criterion": k, "gap": v["value"], "passed": bool(v["passed"])}
                for k, v in r["fairness"].items()
                if isinstance(v, dict) and "value" in v
            ],
            "slices": [
                {k: s.get(k) for k in ("family", "slice", "n", "accuracy", "precision", "recall", "f1", "ece", "auroc")}
                for s in r["slices"]
            ],
            "cascade": r["cascade"]["costs"],
            "prediction_sets": [r["prediction_sets"]],
        }


def _jsonable(value):
    return value.to_dict() if hasattr(value, "to_dict") else value


def build_report(
    labels: np.ndarray,
    decisions,
    rows: pd.DataFrame,
    native_images: torch.Tensor,
    streetvision_predict: Callable[[torch.Tensor], np.ndarray],
    ev: EvaluationConfig,
    *,
    split: Split | str,
    batch_size: int,
) -> EvaluationReport:
    """Every metric of the final report.

    ``labels`` ``[N]`` in {0, 1}; ``decisions`` the decision path's output on the same images
    (``streetvision`` ``[N]``, ``calibrated`` ``[N, 2]``, ``label`` ``[N]``, ``accepted`` ``[N]``
    bool, ``prediction_set`` ``[N, 2]`` bool); ``rows`` the images' split rows (slice columns);
    ``native_images`` uint8 ``[N, 3, H, W]`` at the StreetVision size, which
    ``streetvision_predict`` maps to P(roadwork) ``[N]``. ``split`` must be VAL_TEST.
    """
    from roadwork_ml.evaluation import metrics as M
    from roadwork_ml.evaluation.bootstrap import bootstrap_metrics
    from roadwork_ml.evaluation.fairness import fairness_report
    from roadwork_ml.evaluation.slices import slice_metrics, time_weather_accuracy, worst_slice
    from roadwork_ml.evaluation.streetvision import streetvision_eval

    require_split(Purpose.FINAL_EVALUATION, split)
    y, d = np.asarray(labels), decisions
    sv, cal1 = d.streetvision, d.calibrated[:, 1]
    conf = np.maximum(cal1, 1 - cal1)
    correct = d.label == y
    selective = {
        "aurc": M.aurc(conf, correct),
        "augrc": M.augrc(conf, correct),
        "policy_coverage": float(d.accepted.mean()),
        "policy_selective_risk": float((~correct[d.accepted]).mean()) if d.accepted.any() else 0.0,
    }
    cascade = {
        "exit_share": float(d.accepted.mean()),
        "defer_share": float(1 - d.accepted.mean()),
        "costs": cascade_costs(d.accepted, ev.cascade_costs),
    }
    sets = {
        "coverage": M.set_coverage(y, d.prediction_set),
        "avg_size": M.set_average_size(d.prediction_set),
        "singleton_rate": M.singleton_rate(d.prediction_set),
        "empty_rate": M.empty_rate(d.prediction_set),
    }
    fairness = fairness_report(
        y,
        d.label,
        rows[ev.fairness.column].astype(str).to_numpy(),
        ev.fairness.group_a,
        ev.fairness.group_b,
        ev.fairness.threshold,
    )
    boot = {"n_resamples": ev.n_resamples, "level": ev.level, "seed": ev.seed, "n_jobs": ev.n_jobs}
    intervals = bootstrap_metrics(y, sv, metrics=list(HEADLINE), **boot)
    # ECE and Brier of the *calibrated* probability are what calibration promises; the folded
    # StreetVision output is a decision score, so its calibration intervals come from cal1
    intervals.update(bootstrap_metrics(y, cal1, metrics=["ece", "brier"], **boot))
    slices = slice_metrics(rows, y, sv, n_bins=ev.n_bins, min_count=ev.min_slice_count)
    worst = worst_slice(slices, "accuracy", ev.min_slice_count)
    acc_tw, n_tw = time_weather_accuracy(rows, y, sv)
    street = streetvision_eval(
        streetvision_predict,
        native_images,
        y,
        levels=ev.streetvision.levels,
        seed=ev.streetvision.seed,
        batch_size=batch_size,
        n_resamples=ev.n_resamples,
        level=ev.level,
        n_jobs=ev.n_jobs,
    )

    summary = {f"val_test_{k}": float(intervals[k]["percentile"].estimate) for k in HEADLINE}
    summary.update(
        {
            "val_test_policy_coverage": selective["policy_coverage"],
            "val_test_set_coverage": sets["coverage"],
            "streetvision_reward": float(street["pooled"]["reward"].estimate),
        }
    )
    report = {
        "record_ids": rows["record_id"].tolist(),
        "summary": summary,
        "classification": M.classification_report(y, sv),
        "calibration": M.calibration_report(y, d.calibrated, ev.n_bins),
        "selective": selective,
        "cascade": cascade,
        "prediction_sets": sets,
        "fairness": fairness,
        "intervals": {k: {m: iv.to_dict() for m, iv in v.items()} for k, v in intervals.items()},
        "slices": json.loads(slices.to_json(orient="records")),
        "worst_slice": worst,
        "streetvision": {
            k: ({kk: _jsonable(vv) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in street.items()
        },
    }
    return EvaluationReport(report, summary, conf, correct, acc_tw, n_tw)


def write_report_plots(
    result: EvaluationReport,
    labels: np.ndarray,
    calibrated: np.ndarray,
    directory: str | Path,
    policy_kind: str,
    n_bins: int,
) -> list[Path]:
    """Reliability diagram, confidence histogram, risk-coverage curve (with the policy's
    operating point) and the time x weather heatmap, as PNGs in ``directory``."""
    from roadwork_ml.evaluation import report_plots
    from roadwork_ml.policy.calibration import reliability_diagram

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sel = result.report["selective"]
    paths = [d / "reliability.png", d / "confidence_histogram.png", d / "risk_coverage.png", d / "slice_heatmap.png"]
    reliability_diagram(calibrated, labels, paths[0], n_bins, "VAL_TEST, calibrated")
    report_plots.confidence_histogram(result.confidence, result.correct, paths[1])
    report_plots.risk_coverage_plot(
        result.confidence,
        result.correct,
        paths[2],
        operating_points={f"{policy_kind} policy": (sel["policy_coverage"], sel["policy_selective_risk"])},
    )
    report_plots.slice_heatmap(result.acc_tw, result.n_tw, paths[3])
    return paths


def intervals_contain_estimates(report: dict) -> list[str]:
    """``metric/method`` of every interval that is missing a bound or does not contain its estimate."""
    bad = []
    for metric, methods in report["intervals"].items():
        for method, iv in methods.items():
            if (
                iv["low"] is None
                or iv["high"] is None
                or not (iv["low"] - 1e-12 <= iv["estimate"] <= iv["high"] + 1e-12)
            ):
                bad.append(f"{metric}/{method}")
    return bad
