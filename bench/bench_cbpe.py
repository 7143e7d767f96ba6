"""Label-free performance estimate (CBPE) error over simulated days: stable, covariate shift, concept shift.

For each day (:mod:`roadwork_ml.monitoring.simulation`, sequences of 3-8 frames), the CBPE
estimate of accuracy / F1 / MCC is compared with the metric the day's labels actually give
(all rows labelled in the simulation, the "labelled truth"), and with the *expected* accuracy
under the true label probabilities (truth without label noise: isolates CBPE's bias from the
irreducible sampling noise of a finite day). Reported: mean |estimate - truth|, the coverage of
the 95 % sampling interval, and how often :func:`~roadwork_ml.monitoring.cbpe.cbpe_reliability`
flags the estimate unreliable (from the day's 30 % labelled rows).

    python bench/bench_cbpe.py                  # 100 days per phase at 200 and 2000 images/day

Writes ``bench/results/cbpe.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from roadwork_ml.artifacts import atomic_write_json
from roadwork_ml.monitoring.cbpe import cbpe, cbpe_reliability, realised_metrics
from roadwork_ml.monitoring.simulation import CONCEPT, STABLE, WINTER, simulate_day


def measure(config, n_days: int, n: int) -> dict[str, float]:
    err = {m: [] for m in ("accuracy", "f1", "mcc")}
    err_expected, covered, flagged = [], 0, 0
    for d in range(n_days):
        day = simulate_day(n, config, 123, d)
        p, y, pt = day["prob"].to_numpy(), day["y"].to_numpy(), day["p_true"].to_numpy()
        est = cbpe(p, n_draws=200, seed=d)
        truth = realised_metrics(p, y)
        for m, values in err.items():
            values.append(abs(est.estimate[m] - truth[m]))
        expected_acc = float(np.mean(np.where(p > 0.5, pt, 1 - pt)))
        err_expected.append(abs(est.estimate["accuracy"] - expected_acc))
        covered += est.interval["accuracy"][0] <= truth["accuracy"] <= est.interval["accuracy"][1]
        flagged += cbpe_reliability(est, p, day["label"].to_numpy(), seed=d).reliable is False
    return {
        **{f"mae_{m}": float(np.mean(v)) for m, v in err.items()},
        "mae_accuracy_vs_expected": float(np.mean(err_expected)),
        "interval_coverage": covered / n_days,
        "flagged_unreliable": flagged / n_days,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=100)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    args = ap.parse_args()
    out = {}
    print(
        f"{'phase':<16}{'n/day':>7}{'|err| acc':>11}{'vs E[acc]':>11}{'|err| F1':>10}{'|err| MCC':>11}{'cover95':>9}{'flagged':>9}"
    )
    for name, cfg in (("stable", STABLE), ("covariate_shift", WINTER), ("concept_shift", CONCEPT)):
        for n in args.sizes:
            r = measure(cfg, args.days, n)
            out[f"{name}/{n}"] = r
            print(
                f"{name:<16}{n:>7}{r['mae_accuracy']:>11.4f}{r['mae_accuracy_vs_expected']:>11.4f}{r['mae_f1']:>10.4f}{r['mae_mcc']:>11.4f}"
                f"{r['interval_coverage']:>9.2f}{r['flagged_unreliable']:>9.2f}"
            )
    atomic_write_json(ROOT / "bench" / "results" / "cbpe.json", {"days": args.days, "results": out})


if __name__ == "__main__":
    main()
