"""Which StreetVision validator step costs each model (roadwork_ml.evaluation.distortions):
VAL_SELECT (``--split VAL_TEST``: the held-out split) through the served global view, level 0, the level-1 geometry alone, then the
geometry plus one level-3 distortion at a time (severities 1 and 2, the ones the validator draws).

    python bench/streetvision_distortions.py --home /work/ablation_home --profile demo \\
      --checkpoint today=/work/ablation_home/recipe_ablation/baseline_s45_checkpoint \\
      --checkpoint saturation=/work/ablation_home/recipe_ablation/legacy_saturation_s45_checkpoint \\
      --out bench/results/streetvision_distortions_demo.json

Each checkpoint is a classifier checkpoint directory (model.safetensors + config.json +
MANIFEST.json, hashes verified), e.g. the ones bench/recipe_ablation.py saves per run or a
phase1_checkpoint. The store under --home must hold the profile's splits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--checkpoint", action="append", required=True, help="NAME=DIR (repeatable)")
    ap.add_argument("--split", default="VAL_SELECT", choices=["VAL_SELECT", "VAL_TEST"])
    ap.add_argument("--no-jpeg", action="store_true", help="leave out the closing JPEG q75 (a diagnosis)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/streetvision_distortions.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cached_checkpoints import load_native_split

    from roadwork_ml.config import load_profile
    from roadwork_ml.contracts import Split
    from roadwork_ml.evaluation.distortions import distortion_breakdown
    from roadwork_ml.models.inference import global_view_probability
    from roadwork_ml.training.checkpoint import load_checkpoint

    profile = load_profile(args.profile)
    sv = profile.evaluation.streetvision
    _, native = load_native_split(args.home, profile, Split[args.split])
    y = native.labels.numpy()
    result: dict = {
        "profile": args.profile,
        "split": args.split,
        "closing_jpeg": not args.no_jpeg,
        "n_images": int(len(y)),
        "models": {},
    }
    for spec in args.checkpoint:
        name, _, directory = spec.partition("=")
        model, _ = load_checkpoint(directory, "cpu")
        t0 = time.perf_counter()
        predict = global_view_probability(model, profile.model, profile.inference)
        breakdown = distortion_breakdown(predict, native.images, y, seed=sv.seed, size=sv.size, jpeg=not args.no_jpeg)
        result["models"][name] = {"checkpoint": directory, "rows": breakdown, "seconds": time.perf_counter() - t0}
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    names = list(result["models"])
    lines = [
        "| row | " + " | ".join(f"{n} MCC | {n} AUROC | {n} P>0.5 | {n} mean P(pos)" for n in names) + " |",
        "|---|" + "---|" * (4 * len(names)),
    ]
    for i, r in enumerate(result["models"][names[0]]["rows"]):
        cells = []
        for n in names:
            row = result["models"][n]["rows"][i]
            cells += [
                f"{row['mcc']:.3f}",
                f"{row['auroc']:.3f}",
                f"{row['positive_rate']:.2f}",
                f"{row['mean_p_positive']:.2f}",
            ]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    result["table_markdown"] = "\n".join(lines)
    result["command"] = " ".join(sys.argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(result["table_markdown"])


if __name__ == "__main__":
    main()
