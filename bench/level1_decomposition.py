"""What level 1 of the StreetVision emulation costs, taken apart (issue 11): the recipe
ablation's cached checkpoints scored on one split with each image's level-1 draw changed one
part at a time, no training.

Level 1 rotates the photo by U(-20, 20) degrees (black corners) and takes a square crop of
20-100 % of its area. For each checkpoint the served global view (the profile's, with flip TTA)
scores the same images four ways, each image keeping its own draw otherwise
(``roadwork_ml.evaluation.streetvision.image_params``):

* ``as_drawn``: level 1 as the validator sends it;
* ``no_rotation``: the same crop, angle 0;
* ``no_crop``: the same rotation, the whole (square) frame;
* ``neither``: angle 0 and the whole frame (level 0 up to the resize filter).

and ``as_drawn_64px_detail`` / ``neither_64px_detail``: the same two on photos first reduced to
64 px of detail (antialiased) and brought back, as the trainer's batch step sees its 64-px TRAIN
images when it zooms. If the model does better on those zoomed views than on the sharp ones,
the crops it trained on were softer than the crops it is served.

Each way reports MCC, the false- and true-positive rates at 0.5 and the false-positive rate of
the night and dusk negatives, averaged over the seeds.

    python bench/level1_decomposition.py --home /work/ablation_home --profile demo \\
      --checkpoint-dirs /work/ablation_home/recipe_ablation --split VAL_SELECT \\
      --variants default_bs16,default_bs16_source --seeds 42,43,44,45 \\
      --out bench/results/level1_decomposition_demo.json
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cached_checkpoints import add_checkpoint_args, load_native_split, served_checkpoint, write_result  # noqa: E402
from recipe_ablation import _log, load  # noqa: E402

PARTS = ("as_drawn", "no_rotation", "no_crop", "neither")
# (reported name, part of the draw taken out, photos scored: sharp or with 64 px of detail)
WAYS = (*((part, part, "sharp") for part in PARTS), *((f"{p}_64px_detail", p, "soft") for p in ("as_drawn", "neither")))
DARK = ("night", "dusk")


def square_frame(p, h: int, w: int):
    s = min(h, w)
    return dataclasses.replace(p, crop=((h - s) // 2, (w - s) // 2, s, s))


def changed(way: str):
    """``(params, h, w) -> params`` with the part ``way`` names removed from the level-1 draw."""
    no_rot = way in ("no_rotation", "neither")
    no_crop = way in ("no_crop", "neither")

    def edit(p, h, w):
        p = dataclasses.replace(p, angle=0.0) if no_rot else p
        return square_frame(p, h, w) if no_crop else p

    return edit


def soften(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` reduced to ``side`` px (antialiased) and brought back (bilinear)."""
    h, w = images.shape[-2:]
    small = F.interpolate(images.float(), size=side, mode="bilinear", antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear").round().clamp(0, 255).to(torch.uint8)


def rates(y: np.ndarray, p: np.ndarray, dark: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef

    d = p > 0.5
    return {
        "mcc": float(matthews_corrcoef(y, d)),
        "fpr": float(d[y == 0].mean()),
        "tpr": float(d[y == 1].mean()),
        "fpr_night_dusk": float(d[(y == 0) & dark].mean()),
    }


def main() -> None:
    from roadwork_ml.contracts import Split
    from roadwork_ml.evaluation.streetvision import image_params, predict_augmented

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(ap, split_default="VAL_SELECT")
    ap.add_argument("--detail-side", type=int, default=64, help="the softened photos' detail, px")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    profile = load(args.profile, [], args.threads)
    rows, native = load_native_split(args.home, profile, Split[args.split])
    photos = {"sharp": native.images, "soft": soften(native.images, args.detail_side)}
    y = native.labels.numpy()
    dark = rows["time_of_day"].isin(DARK).to_numpy()
    seed = profile.evaluation.streetvision.seed
    dirs = [Path(d) for d in args.checkpoint_dirs.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed: dict = {}
    for v in args.variants.split(","):
        for s in seeds:
            key = f"{v}_s{s}"
            fn = served_checkpoint(dirs, key, profile)
            out = {}
            for way, part, kind in WAYS:
                edit = changed(part)
                p = predict_augmented(
                    fn,
                    photos[kind],
                    lambda i, h, w, e=edit: e(image_params(seed, i, 1, h, w), h, w),
                    profile.inference.batch_size,
                )
                out[way] = rates(y, p, dark)
            per_seed[key] = out
            _log(f"{key}: " + ", ".join(f"{w} {out[w]['mcc']:.3f}" for w, _, _ in WAYS))
    means = {
        v: {w: {m: float(np.mean([per_seed[f"{v}_s{s}"][w][m] for s in seeds])) for m in out[w]} for w, _, _ in WAYS}
        for v in args.variants.split(",")
    }
    lines = [
        f"Level 1 taken apart on {args.split} ({len(y)} images, seeds {args.seeds}; seed means at 0.5):",
        "",
        "| variant | way | MCC | FPR | TPR | FPR night/dusk |",
        "|---|---|---|---|---|---|",
    ]
    for v, m in means.items():
        for w, _, _ in WAYS:
            r = m[w]
            lines.append(
                f"| {v} | {w} | {r['mcc']:.3f} | {r['fpr']:.3f} | {r['tpr']:.3f} | {r['fpr_night_dusk']:.3f} |"
            )
    fields = {
        "split": args.split,
        "n_images": int(len(y)),
        "n_night_dusk_negatives": int(((y == 0) & dark).sum()),
        "seeds": seeds,
        "per_seed": per_seed,
        "seed_means": means,
    }
    write_result(args.out, fields, "\n".join(lines), t0)


if __name__ == "__main__":
    main()
