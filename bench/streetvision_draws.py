"""The StreetVision level gap over several draws of the validator's augmentation (issue 11).

The emulation draws each image's rotation, crop, noise and blur once, from
``(evaluation.streetvision.seed, image index)``; the validator draws afresh for every request.
One draw per image adds the draw's luck to the estimate. This bench scores the recipe
ablation's cached checkpoints on one split under several emulation seeds (``--draw-seeds``;
seed 0 is the evaluation's own draw) and reports per level the MCC at 0.5 averaged over the
training seeds, for each draw and over all draws, with the gap L0-L3 and a bootstrap interval
over images (every draw and training seed of a resampled image together). No training.

    python bench/streetvision_draws.py --home /work/ablation_home --profile demo \\
      --checkpoint-dirs /work/ablation_home/recipe_ablation --split VAL_TEST \\
      --variants default_bs16 --seeds 42,43,44,45 --draw-seeds 0,1,2,3,4 \\
      --out bench/results/streetvision_draws_demo_val_test.json

The eleventh pass scored lost-object weight 0 beside batch 16 (``--variants
default_bs16,default_bs16_lost0``) at seeds 42-45 on both splits
(``streetvision_draws_demo_val_test_lost0.json``, ``..._val_select_lost0.json``) and at the
fresh seeds 48-51 on VAL_TEST (``..._val_test_lost0_fresh.json``), ``--threads 1`` each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cached_checkpoints import add_checkpoint_args, load_native_split, served_checkpoint, write_result  # noqa: E402
from recipe_ablation import _log, load  # noqa: E402

LEVELS = (0, 1, 2, 3)


def mcc_rows(y: np.ndarray, d: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """MCC of decisions ``d [R, N]`` (bool) against labels ``y [N]`` on each resample of rows
    ``idx [B, N]``: ``[B, R]``, 0 where a margin is empty (as scikit-learn)."""
    yy = y[idx].astype(np.float64)[:, None, :]  # [B, 1, N]
    dd = d[:, idx].transpose(1, 0, 2).astype(np.float64)  # [B, R, N]
    tp = (yy * dd).sum(-1)
    fp = ((1 - yy) * dd).sum(-1)
    fn = (yy * (1 - dd)).sum(-1)
    tn = ((1 - yy) * (1 - dd)).sum(-1)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.where(den > 0, (tp * tn - fp * fn) / np.where(den > 0, den, 1), 0.0)


def main() -> None:
    from sklearn.metrics import matthews_corrcoef

    from roadwork_ml.contracts import Split
    from roadwork_ml.evaluation.streetvision import emulated_outputs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(ap, split_default="VAL_TEST")
    ap.add_argument("--draw-seeds", default="0,1,2,3,4")
    ap.add_argument("--n-resamples", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    profile = load(args.profile, [], args.threads)
    _, native = load_native_split(args.home, profile, Split[args.split])
    y = native.labels.numpy()
    dirs = [Path(d) for d in args.checkpoint_dirs.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",")]
    draws = [int(s) for s in args.draw_seeds.split(",")]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), size=(args.n_resamples, len(y)))
    res: dict = {}
    for v in args.variants.split(","):
        decisions = {lv: [] for lv in LEVELS}  # per level: [seed x draw] rows of [N] decisions
        per_run = {}
        for s in seeds:
            key = f"{v}_s{s}"
            fn = served_checkpoint(dirs, key, profile)
            for ds in draws:
                out = emulated_outputs(fn, native.images, LEVELS, seed=ds, batch_size=profile.inference.batch_size)
                per_run[f"s{s}_draw{ds}"] = {f"level_{lv}": float(matthews_corrcoef(y, out[lv] > 0.5)) for lv in LEVELS}
                for lv in LEVELS:
                    decisions[lv].append(out[lv] > 0.5)
                _log(
                    f"{key} draw {ds}: "
                    + ", ".join(f"L{lv} {per_run[f's{s}_draw{ds}'][f'level_{lv}']:.3f}" for lv in LEVELS)
                )
        per_draw = {
            ds: {lv: float(np.mean([per_run[f"s{s}_draw{ds}"][f"level_{lv}"] for s in seeds])) for lv in LEVELS}
            for ds in draws
        }
        means = {lv: float(np.mean([per_draw[ds][lv] for ds in draws])) for lv in LEVELS}
        boot = {lv: mcc_rows(y, np.stack(decisions[lv]), idx).mean(1) for lv in LEVELS}  # [B] mean over runs
        gap_boot = boot[0] - boot[3]
        res[v] = {
            "per_run": per_run,
            "per_draw_seed_means": {
                str(ds): {**{f"level_{lv}": m for lv, m in pd.items()}, "gap": pd[0] - pd[3]}
                for ds, pd in per_draw.items()
            },
            "all_draws": {
                **{
                    f"level_{lv}": {
                        "estimate": means[lv],
                        "low": float(np.quantile(boot[lv], 0.025)),
                        "high": float(np.quantile(boot[lv], 0.975)),
                    }
                    for lv in LEVELS
                },
                "gap": {
                    "estimate": means[0] - means[3],
                    "low": float(np.quantile(gap_boot, 0.025)),
                    "high": float(np.quantile(gap_boot, 0.975)),
                },
            },
        }
    lines = [
        f"The level gap on {args.split} ({len(y)} images) over emulation draws {args.draw_seeds} "
        f"(training seeds {args.seeds}; MCC at 0.5, seed means):",
        "",
        "| variant | draw | L0 MCC | L1 MCC | L2 MCC | L3 MCC | gap L0-L3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, r in res.items():
        for ds, pd in r["per_draw_seed_means"].items():
            lines.append(
                f"| {v} | {ds} | " + " | ".join(f"{pd[f'level_{lv}']:.3f}" for lv in LEVELS) + f" | {pd['gap']:.3f} |"
            )
        a = r["all_draws"]
        lines.append(
            f"| {v} | all | "
            + " | ".join(f"{a[f'level_{lv}']['estimate']:.3f}" for lv in LEVELS)
            + f" | {a['gap']['estimate']:.3f} [{a['gap']['low']:.3f}, {a['gap']['high']:.3f}] |"
        )
    fields = {
        "split": args.split,
        "n_images": int(len(y)),
        "seeds": seeds,
        "draw_seeds": draws,
        "n_resamples": args.n_resamples,
        "variants": res,
    }
    write_result(args.out, fields, "\n".join(lines), t0)


if __name__ == "__main__":
    main()
