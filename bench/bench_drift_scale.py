"""A daily drift report over 100,000 logged predictions on 2 cores, and the MMD subsample it uses.

1. **Power curve** of the sequence-permutation MMD against the day's subsample size m (whole
   sequences, :func:`~roadwork_ml.monitoring.drift_family.subsample_groups`): detection rate
   over ``--power-days`` days with a small embedding shift, at the level of the first Holm step
   (alpha / 21 tests). ``max_mmd_rows`` is the smallest m whose power is within 0.05 of the
   largest m's: more rows buy no detection, only an (S_ref + m)² kernel (if even the largest m
   detects under half the days the curve is uninformative and the largest m is kept).
2. **Timing**: :func:`~roadwork_ml.monitoring.decisions.drift_report` (every test of the day:
   the 21-test family with B = 999 permutations, CBPE, slices) on one 100,000-row day (sequences
   of 3-8 frames, 10 % labelled) against a production-sized reference (5000 rows, 2000
   embeddings), with BLAS / torch limited to 2 threads. Goal: <= 60 s.

    python bench/bench_drift_scale.py
    python bench/bench_drift_scale.py --rows 20000 --power-days 10

Writes ``bench/results/drift_scale.json``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "2"

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import pandas as pd
import torch

from roadwork_ml.artifacts import atomic_write_json
from roadwork_ml.monitoring.decisions import drift_report, reference_sample
from roadwork_ml.monitoring.drift_family import DriftSample, drift_family, subsample_groups
from roadwork_ml.monitoring.group_tests import day_seed
from roadwork_ml.monitoring.inference_log import build_log
from roadwork_ml.monitoring.reference import MODEL_COLUMNS, ReferenceProfile
from roadwork_ml.monitoring.settings import DriftRules
from roadwork_ml.monitoring.simulation import MODEL_COLUMNS_SIM, DayConfig, simulate_frame

torch.set_num_threads(2)
RULES = DriftRules(
    psi_alert=0.2,
    psi_retrain=0.3,
    family_alpha=0.05,
    permutations=999,
    group_window_minutes=10,
    ece_increase_retrain=0.05,
    accuracy_drop_alert=0.05,
    reference_mode="fixed",
    rolling_days=7,
    accuracy_retrain=0.6,
    accuracy_rollback=0.5,
    min_labels_for_accuracy=200,
    min_slice_rows=100,
    psi_bins=10,
    psi_mode="quantile",
)


def as_log(df: pd.DataFrame, day: str) -> pd.DataFrame:
    n = len(df)
    rng = np.random.default_rng(0)
    return build_log(
        timestamps=pd.Timestamp(day, tz="UTC") + pd.to_timedelta(rng.integers(0, 86400, n), unit="s"),
        image_ids=[f"{day}:{i}" for i in range(n)],
        sources=df["source"].tolist(),
        camera_ids=["cam"] * n,
        model_version="m/1",
        probs=df["prob"].to_numpy(),
        decisions=np.where(df["prob"] > 0.5, "roadwork", "no_roadwork").tolist(),
        features=df[list(MODEL_COLUMNS_SIM[1:])].to_numpy(),
        embeddings=np.stack(df["embedding"].to_numpy()),
        hours=np.where(df["time_of_day"] == "night", 22, 12),
        times_of_day=df["time_of_day"].tolist(),
        weathers=["clear"] * n,
        labels=df["label"].to_numpy(),
        sequence_ids=df["sequence_id"].tolist(),
    )


def reference(n: int = 20000) -> ReferenceProfile:
    df = simulate_frame(n, DayConfig(label_fraction=1.0), np.random.default_rng(1), "ref")
    meta = pd.DataFrame(
        {"time_of_day": df["time_of_day"], "weather": "clear", "source": df["source"], "sequence_id": df["sequence_id"]}
    )
    return ReferenceProfile.build(
        df["prob"].to_numpy(),
        df[list(MODEL_COLUMNS_SIM[1:])].to_numpy(),
        np.stack(df["embedding"].to_numpy()),
        meta,
        max_samples=5000,
        mmd_samples=2000,
        seed=0,
        labels=df["y"].to_numpy(),
    )


def power_curve(ref: ReferenceProfile, sizes: list[int], days: int, shift: float, rows: int) -> dict[int, float]:
    rs = reference_sample(ref, ())
    level = RULES.family_alpha / 21  # the first Holm step
    hits = dict.fromkeys(sizes, 0)
    for d in range(days):
        df = simulate_frame(
            rows, DayConfig(mean_shift=shift, label_fraction=0.1), np.random.default_rng([9, d]), f"d{d}"
        )
        groups = df["sequence_id"].to_numpy(dtype=object)
        emb = np.stack(df["embedding"].to_numpy()).astype(np.float64)
        for m in sizes:
            keep = subsample_groups(groups, m, seed=d)
            day = DriftSample(
                values=df[list(MODEL_COLUMNS_SIM)].to_numpy()[:2],
                groups=groups[:2],
                embeddings=emb[keep],
                embedding_groups=groups[keep],
            )
            res = drift_family(
                rs, day, (), {}, ref.mmd_sigma, 999, day_seed(f"p{d}"), RULES.family_alpha, tests=("mmd",)
            )
            hits[m] += res.tests["mmd"]["p_value"] <= level
    return {m: hits[m] / days for m in sizes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--power-days", type=int, default=20)
    ap.add_argument(
        "--shift", type=float, default=1.0, help="embedding mean shift of the power days (reference-std units, 2 axes)"
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000])
    args = ap.parse_args()

    t0 = time.perf_counter()
    ref = reference()
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    curve = power_curve(ref, args.sizes, args.power_days, args.shift, rows=max(args.sizes) * 2)
    t_curve = time.perf_counter() - t0
    best = curve[max(args.sizes)]
    # an uninformative curve (nothing detects the shift) says nothing about size: keep the largest
    max_mmd_rows = min(m for m in args.sizes if curve[m] >= best - 0.05) if best >= 0.5 else max(args.sizes)
    print(
        f"power curve (shift {args.shift}, {args.power_days} days, level alpha/21): "
        + ", ".join(f"m={m}: {p:.2f}" for m, p in curve.items())
    )
    print(f"max_mmd_rows = {max_mmd_rows} (smallest m within 0.05 of m={max(args.sizes)}'s power {best:.2f})")

    df = simulate_frame(args.rows, DayConfig(label_fraction=0.1), np.random.default_rng(5), "big")
    log = as_log(df, "2026-11-20")
    t0 = time.perf_counter()
    report = drift_report(ref, log, RULES, seed=7, day="2026-11-20", max_mmd_rows=max_mmd_rows)
    seconds = time.perf_counter() - t0
    print(
        f"drift_report over {len(log):,} rows ({report.family['groups']['day']:,} sequences), B = {RULES.permutations}, "
        f"2 threads: {seconds:.1f} s (goal <= 60 s); decision {report.decision}, {len(report.family['tests'])} tests"
    )
    atomic_write_json(
        ROOT / "bench" / "results" / "drift_scale.json",
        {
            "rows": len(log),
            "sequences": report.family["groups"]["day"],
            "permutations": RULES.permutations,
            "threads": 2,
            "drift_report_seconds": seconds,
            "goal_seconds": 60,
            "decision": report.decision,
            "tests": len(report.family["tests"]),
            "power_curve": {
                "shift": args.shift,
                "days": args.power_days,
                "level": RULES.family_alpha / 21,
                "power": {str(k): v for k, v in curve.items()},
                "max_mmd_rows": max_mmd_rows,
                "seconds": t_curve,
            },
            "reference_build_seconds": t_ref,
            "model_columns": list(MODEL_COLUMNS),
        },
    )


if __name__ == "__main__":
    main()
