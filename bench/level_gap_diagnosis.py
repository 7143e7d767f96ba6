"""Why the default recipe's level-0 minus level-3 MCC gap stays at ~0.05 (issue 11): six
diagnoses read from the recipe ablation's cache (bench/recipe_ablation.py), no training.

1. ``per_level``: each level's AUROC, MCC at the validator's 0.5 cut and MCC at the best cut
   for that level on the same images (an oracle no miner has: it bounds what any
   level-aware calibration could win back). If the best-cut gap stays, the loss is
   discrimination, not a shifted score.
2. ``seed_ensemble``: the per-level MCC of the seed-averaged P(roadwork): if averaging four
   models leaves the gap, it is not seed-to-seed variance.
3. ``level1_false_positives``: level 0 and level 1 false-positive rates of the seed-averaged
   P(roadwork) on negatives with orange distractors and on plain ones (the synthetic
   generator's tags).
4. ``train_lost_objects``: the share of TRAIN positives with known roadwork boxes whose every
   box the default batch step's zoom or crop leaves out of the frame, over one epoch's draws
   (what ``train.augmentation.lost_object_weight`` acts on).
5. ``served_antialias`` (``--antialias``): each cached checkpoint scored again through the
   served global view with the 128 -> 64 px resize antialiased (the served path uses plain
   bilinear, a 2 x 2 box at 2x), paired with the cached outputs by a bootstrap over images.
   The plain path is recomputed first and must reproduce the cache (a self-check).
6. ``errors_per_level``: false positives and false negatives per seed at each level, and the
   colour-saturation severity each level-3 draw gave the positives that level 3 loses and
   level 0 keeps (lost by at least half of the seeds at level 3, by fewer than half at level 0).
   Levels 1-3 share one rotation and crop per image, so what level 3 adds to level 1 is its
   distortions.

``--split VAL_TEST`` reads the held-out outputs of ``bench/recipe_heldout.py`` (default cache
``<home>/recipe_heldout``) instead of the ablation's VAL_SELECT outputs (a diagnosis after the
choice; ``--antialias`` and ``train_lost_objects`` stay on VAL_SELECT and TRAIN).

    python bench/level_gap_diagnosis.py --home /work/ablation_home --profile demo \\
      --variant photometric_norm_geometry100_noise_e14 --seeds 42,43,44,45 --antialias \\
      --out bench/results/level_gap_diagnosis_demo.json
    python bench/level_gap_diagnosis.py --home /work/ablation_home --profile demo --split VAL_TEST \\
      --variant default_bs16_lost0 --seeds 42,43,44,45,46,47,48,49,50,51 \\
      --out bench/results/level_gap_diagnosis_demo_val_test_lost0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CUTS = np.round(np.linspace(0.05, 0.95, 91), 2)


def per_level(y: np.ndarray, outputs: dict[int, np.ndarray]) -> dict:
    """AUROC, MCC at 0.5 and at the level's own best cut (of :data:`CUTS`) for each level."""
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    out = {}
    for level, p in outputs.items():
        by_cut = {float(c): float(matthews_corrcoef(y, p > c)) for c in CUTS}
        best = max(by_cut, key=by_cut.get)
        out[str(level)] = {
            "auroc": float(roc_auc_score(y, p)),
            "mcc_at_0_5": float(matthews_corrcoef(y, p > 0.5)),
            "best_cut": best,
            "mcc_at_best_cut": by_cut[best],
        }
    levels = sorted(outputs)
    out["gap_at_0_5"] = out[str(levels[0])]["mcc_at_0_5"] - out[str(levels[-1])]["mcc_at_0_5"]
    out["gap_at_best_cuts"] = out[str(levels[0])]["mcc_at_best_cut"] - out[str(levels[-1])]["mcc_at_best_cut"]
    return out


def false_positive_rates(y: np.ndarray, outputs: dict[int, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Per mask of negatives: n and the false-positive rate at 0.5 at each level."""
    return {
        name: {"n": int((m & (y == 0)).sum())}
        | {str(lv): float(((p > 0.5) & m & (y == 0)).sum() / max(1, (m & (y == 0)).sum())) for lv, p in outputs.items()}
        for name, m in masks.items()
    }


def errors_per_level(y: np.ndarray, outputs: dict[int, dict[int, np.ndarray]], severities: list[dict]) -> dict:
    """Mean false positives / negatives per seed at each level (cut 0.5), and the colour-saturation
    (``CS``) severities of the level-3 draws of the positives level 3 loses and level 0 keeps
    (``outputs``: seed -> level -> P(roadwork) ``[N]``; ``severities``: each image's level-3 draw)."""
    seeds = list(outputs)
    levels = sorted(outputs[seeds[0]])
    pos = y == 1
    miss = {lv: np.mean([outputs[s][lv] <= 0.5 for s in seeds], axis=0) for lv in levels}
    out: dict = {
        str(lv): {
            "false_positives": float(np.mean([((outputs[s][lv] > 0.5) & ~pos).sum() for s in seeds])),
            "false_negatives": float(np.mean([((outputs[s][lv] <= 0.5) & pos).sum() for s in seeds])),
        }
        for lv in levels
    }
    if 0 in miss and 3 in miss:
        lost = np.flatnonzero(pos & (miss[3] >= 0.5) & (miss[0] < 0.5))
        cs = [int(severities[i].get("CS", 0)) for i in lost]
        out["level_3_losses"] = {
            "positives": len(lost),
            "with_saturation_severity_1_or_2": sum(c > 0 for c in cs),
            "saturation_severity_counts": {str(k): cs.count(k) for k in (0, 1, 2)},
            "rows": [int(i) for i in lost],
        }
    return out


def train_lost_objects(store, profile, seed: int = 0) -> dict:
    """One epoch of the profile's batch-step frames over TRAIN: how many positives with known
    boxes (tags, else regenerated synthetic scenes) show none of them."""
    from streetvision_geometry_oracle import train_boxes

    from roadwork_assets.recipe import load_train_rows
    from roadwork_ml.data.transforms import objects_visible
    from roadwork_ml.training.trainer import legacy_augment

    rows = load_train_rows(store, profile)
    boxes = train_boxes(rows, profile)
    y = torch.as_tensor(rows["label"].to_numpy())
    known = (~torch.isnan(boxes).any(-1)).any(-1)
    x = torch.zeros(len(y), 3, 8, 8)  # the frames do not depend on the pixels
    _, frames = legacy_augment(x, torch.Generator().manual_seed(seed), profile.train)
    lost = (y == 1) & known & ~objects_visible(frames, boxes)
    n = int(((y == 1) & known).sum())
    return {"train_positives_with_boxes": n, "lost": int(lost.sum()), "share": float(lost.sum()) / max(1, n)}


def served_probability(model, model_cfg, inf, antialias: bool):
    """``predict(uint8 [B, 3, H, W]) -> P(roadwork)``: the served global view (resize to
    ``inference.input_size``, then to the model's input, flip TTA, mean of probabilities) with the
    second resize antialiased or not."""
    from roadwork_ml.data.transforms import to_float
    from roadwork_ml.evaluation.report import resize_images

    side = model_cfg.img_size

    @torch.no_grad()
    def predict(batch: torch.Tensor) -> np.ndarray:
        out = []
        for s in range(0, batch.shape[0], inf.batch_size):
            x = to_float(resize_images(batch[s : s + inf.batch_size], inf.input_size))
            v = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=antialias)
            views = [v, v.flip(-1)] if inf.flip_tta else [v]
            out.append(torch.stack([model(u).softmax(-1)[:, 1] for u in views]).mean(0))
        return torch.cat(out).double().numpy()

    return predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, help="the ablation's Dagster home (its artifacts hold the splits)")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--cache-dir", help="default: <home>/recipe_ablation (VAL_TEST: <home>/recipe_heldout)")
    ap.add_argument("--split", default="VAL_SELECT", choices=["VAL_SELECT", "VAL_TEST"])
    ap.add_argument("--variant", default="photometric_norm_geometry100_noise_e14")
    ap.add_argument("--seeds", default="42,43,44,45")
    ap.add_argument("--antialias", action="store_true", help="also rescore the checkpoints (~90 s each on 1 thread)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-resamples", type=int, default=2000)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.antialias and args.split != "VAL_SELECT":
        ap.error("--antialias re-scores the ablation's VAL_SELECT checkpoints: run it without --split")
    torch.set_num_threads(args.threads)

    from roadwork_assets.data import load_split_rows, load_split_tensors
    from roadwork_assets.resources import ArtifactStore
    from roadwork_ml.config import load_profile
    from roadwork_ml.contracts import Split

    profile = load_profile(args.profile, [])
    default_cache = "recipe_heldout" if args.split == "VAL_TEST" else "recipe_ablation"
    cache = Path(args.cache_dir or Path(args.home) / default_cache)
    seeds = [int(s) for s in args.seeds.split(",")]
    store = ArtifactStore(root=str(Path(args.home) / "artifacts"))
    rows = load_split_rows(store, Split[args.split])
    y = rows["label"].to_numpy()
    runs = {s: np.load(cache / f"{args.variant}_s{s}.npz") for s in seeds}
    levels = sorted(int(k.split("_")[1]) for k in runs[seeds[0]].files if k.startswith("level_"))
    outputs = {s: {lv: runs[s][f"level_{lv}"] for lv in levels} for s in seeds}
    mean_p = {lv: np.mean([outputs[s][lv] for s in seeds], axis=0) for lv in levels}

    tags = [json.loads(t) for t in rows["tags"]]
    distractors = np.array([sum(t.get("distractors", {}).values()) > 0 for t in tags])
    result: dict = {
        "command": " ".join(sys.argv),
        "variant": args.variant,
        "split": args.split,
        "seeds": seeds,
        "n_images": len(y),
        "per_level": {str(s): per_level(y, outputs[s]) for s in seeds},
        "seed_ensemble": per_level(y, mean_p),
        "level1_false_positives": false_positive_rates(
            y,
            {lv: mean_p[lv] for lv in (0, 1)},
            {"all": np.ones_like(distractors), "distractors": distractors, "plain": ~distractors},
        ),
    }

    from roadwork_ml.evaluation.streetvision import image_params

    side = max(profile.inference.input_size, profile.evaluation.streetvision.size)  # the emulation's native side
    draws = [image_params(profile.evaluation.streetvision.seed, i, 3, side, side).severities for i in range(len(y))]
    result["errors_per_level"] = errors_per_level(y, outputs, draws)
    result["train_lost_objects"] = train_lost_objects(store, profile)

    if args.antialias:
        from roadwork_ml.evaluation.streetvision import paired_streetvision, streetvision_eval
        from roadwork_ml.training.checkpoint import load_checkpoint

        sv_cfg = profile.evaluation.streetvision
        native = load_split_tensors(store, rows, Split.VAL_SELECT, max(profile.inference.input_size, sv_cfg.size))
        rescored = {}
        for s in seeds:
            t0 = time.perf_counter()
            model, _ = load_checkpoint(cache / f"{args.variant}_s{s}_checkpoint")
            model.eval()
            for aa in (False, True):
                fn = served_probability(model, profile.model, profile.inference, antialias=aa)
                sv = streetvision_eval(
                    fn,
                    native.images,
                    y,
                    levels=levels,
                    seed=sv_cfg.seed,
                    batch_size=profile.inference.batch_size,
                    n_resamples=10,
                    n_jobs=1,
                    return_outputs=True,
                )
                if not aa:
                    worst = max(float(np.abs(sv["outputs"][lv] - outputs[s][lv]).max()) for lv in levels)
                    if worst > 1e-5:
                        raise SystemExit(f"seed {s}: the plain served path does not reproduce the cache ({worst:.2e})")
                else:
                    rescored[s] = sv["outputs"]
            print(f"seed {s}: rescored in {time.perf_counter() - t0:.0f}s", flush=True)
        paired = paired_streetvision(
            y, [rescored[s] for s in seeds], [outputs[s] for s in seeds], n_resamples=args.n_resamples, seed=0
        )
        result["served_antialias"] = {
            "per_level": {str(s): per_level(y, rescored[s]) for s in seeds},
            "vs_plain_seed_mean": {m: {k: iv.to_dict() for k, iv in paired[m].items()} for m in paired},
        }

    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for s in seeds:
        r = result["per_level"][str(s)]
        print(
            f"seed {s}: gap at 0.5 {r['gap_at_0_5']:.3f}, at each level's best cut {r['gap_at_best_cuts']:.3f}; AUROC "
            + " ".join(f"L{lv} {r[str(lv)]['auroc']:.3f}" for lv in levels)
        )
    e = result["seed_ensemble"]
    print(f"seed ensemble: gap at 0.5 {e['gap_at_0_5']:.3f}, at best cuts {e['gap_at_best_cuts']:.3f}")
    print("false-positive rates (seed-averaged P):", json.dumps(result["level1_false_positives"]))
    print("errors per seed:", {k: v for k, v in result["errors_per_level"].items() if k != "level_3_losses"})
    print("positives level 3 loses and level 0 keeps:", result["errors_per_level"].get("level_3_losses"))
    print("TRAIN positives whose boxes the batch step leaves out:", result["train_lost_objects"])
    if args.antialias:
        d = result["served_antialias"]["vs_plain_seed_mean"]
        print(
            "antialiased served view minus plain:",
            {m: d[m]["diff"] for m in ("mcc_level_0", "mcc_gap_0_3", "pooled_reward")},
        )


if __name__ == "__main__":
    main()
