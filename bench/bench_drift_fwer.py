"""False alarms of the day's drift decision: today's row-permutation rules vs the sequence-permutation family.

Same simulated days for both (:mod:`roadwork_ml.monitoring.simulation`, the demo's sequence
structure: 3-8 correlated frames per drive, 200 images a day, a 1200-image VAL_CALIB-like
reference of which 500 embeddings feed the MMD):

* **old** (the rules before issue 15): 8 scipy KS tests Bonferroni-corrected at 0.05, the MMD
  permutation test with one fixed seed for every day (100 row permutations), PSI > 0.2 on a
  model column or slice category;
* **new**: :func:`~roadwork_ml.monitoring.drift_family.drift_family`, whole sequences of
  reference and day permuted (B = 499, seeded per day), Holm over all 21 tests at 0.05.

Reported per test and for the whole decision: the false-alarm rate over ``--days`` stable days
(with its Monte-Carlo standard error) and the detection rate over ``--shift-days`` winter days.

    python bench/bench_drift_fwer.py                # 200 stable + 20 shift days
    python bench/bench_drift_fwer.py --days 50

Writes ``bench/results/drift_fwer.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from roadwork_ml.artifacts import atomic_write_json
from roadwork_ml.monitoring.drift_family import drift_family
from roadwork_ml.monitoring.drift_stats import (
    bin_shares,
    ks,
    mmd_permutation_test,
    psi_from_shares,
)
from roadwork_ml.monitoring.group_tests import day_seed
from roadwork_ml.monitoring.simulation import (
    MODEL_COLUMNS_SIM,
    STABLE,
    WINTER,
    as_sample,
    simulate_day,
    simulated_reference_setup,
)

ALPHA = 0.05


def _category_psi(ref: np.ndarray, cur: np.ndarray) -> float:
    keys = sorted(set(ref) | set(cur))
    return psi_from_shares([np.mean(ref == k) for k in keys], [np.mean(cur == k) for k in keys])


def old_rules(ref, emb_rows, edges, sigma, day) -> dict[str, bool]:
    """The pre-issue-15 decision: i.i.d. tests, one fixed MMD seed (the scenario's, 7) every day."""
    rv, dv = ref[list(MODEL_COLUMNS_SIM)].to_numpy(), day[list(MODEL_COLUMNS_SIM)].to_numpy()
    ks_any = any(
        min(1.0, ks(rv[:, j], dv[:, j]).p_value * len(MODEL_COLUMNS_SIM)) < ALPHA for j in range(len(MODEL_COLUMNS_SIM))
    )
    psi_any = any(
        psi_from_shares(bin_shares(rv[:, j], edges[c]), bin_shares(dv[:, j], edges[c])) > 0.2
        for j, c in enumerate(MODEL_COLUMNS_SIM)
    )
    cat_any = any(_category_psi(ref[c].to_numpy(), day[c].to_numpy()) > 0.2 for c in ("time_of_day", "source"))
    er = np.stack(ref["embedding"].to_numpy())[emb_rows]
    ed = np.stack(day["embedding"].to_numpy())
    mmd = mmd_permutation_test(er, ed, n_permutations=100, sigma=sigma, seed=7, device="cpu").p_value < ALPHA
    return {
        "ks_bonferroni": ks_any,
        "mmd_fixed_seed": mmd,
        "psi_threshold": psi_any,
        "category_psi": cat_any,
        "decision": ks_any or mmd or psi_any or cat_any,
    }


def new_family(rs, edges, sigma, day, d, permutations) -> dict[str, bool]:
    res = drift_family(rs, as_sample(day), MODEL_COLUMNS_SIM, edges, sigma, permutations, day_seed(f"day{d}", 7), ALPHA)
    kinds = {}
    for t in res.tests.values():
        kinds[t["kind"]] = kinds.get(t["kind"], False) or t["rejected"]
    raw = {f"raw:{name}": t["p_value"] <= ALPHA for name, t in res.tests.items()}  # each test alone at alpha
    return {**kinds, **raw, "decision": res.any_rejected}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=200)
    ap.add_argument("--shift-days", type=int, default=20)
    ap.add_argument("--permutations", type=int, default=499)
    args = ap.parse_args()

    ref, emb_rows, edges, sigma = simulated_reference_setup(1200, 500)  # whole sequences, as the reference keeps them
    rs = as_sample(ref, emb_rows)

    out = {
        "alpha": ALPHA,
        "days": args.days,
        "shift_days": args.shift_days,
        "permutations": args.permutations,
        "rows_per_day": 200,
    }
    for phase, config, n_days in (("stable", STABLE, args.days), ("winter_shift", WINTER, args.shift_days)):
        old_counts, new_counts = {}, {}
        t0 = time.perf_counter()
        for d in range(n_days):
            day = simulate_day(200, config, 7 if phase == "stable" else 8, d)
            for k, v in old_rules(ref, emb_rows, edges, sigma, day).items():
                old_counts[k] = old_counts.get(k, 0) + int(v)
            for k, v in new_family(rs, edges, sigma, day, d, args.permutations).items():
                new_counts[k] = new_counts.get(k, 0) + int(v)
        out[phase] = {
            "old": {k: v / n_days for k, v in old_counts.items()},
            "new": {k: v / n_days for k, v in new_counts.items()},
            "seconds": time.perf_counter() - t0,
        }
    se = math.sqrt(ALPHA * (1 - ALPHA) / args.days)
    out["monte_carlo_se_at_alpha"] = se

    print(f"{args.days} stable days, {args.shift_days} winter days; alpha {ALPHA}, MC s.e. at alpha {se:.4f}")
    print(f"{'test':<22}{'old stable':>12}{'new stable':>12}{'old shift':>12}{'new shift':>12}")
    raw = {k: v for k, v in out["stable"]["new"].items() if k.startswith("raw:")}
    out["stable"]["max_single_test_rate"] = max(raw.values())
    print(
        f"each test alone at alpha on stable days: max {max(raw.values()):.3f} ({max(raw, key=raw.get)}), mean {np.mean(list(raw.values())):.3f}"
    )
    for k in sorted(
        set(out["stable"]["old"]) | {k for k in out["stable"]["new"] if not k.startswith("raw:")} | {"raw:mmd"}
    ):
        row = [
            out["stable"]["old"].get(k),
            out["stable"]["new"].get(k),
            out["winter_shift"]["old"].get(k),
            out["winter_shift"]["new"].get(k),
        ]
        print(f"{k:<22}" + "".join(f"{'-' if v is None else f'{v:.3f}':>12}" for v in row))
    atomic_write_json(ROOT / "bench" / "results" / "drift_fwer.json", out)


if __name__ == "__main__":
    main()
