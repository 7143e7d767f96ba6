"""Where a recipe's level-1 false positives and level-3 false negatives sit by brightness (issue 11):
each level's true- and false-positive rates at P(roadwork) > 0.5 on the darkest quarter of a
split's images and on the rest, read from the recipe ablation's caches (no training).

"Dark" is the image's mean BT.601 luma at level 1 as the validator sends it (224 px, the
emulation's rotation and crop, pixels of the rotation's black fill left out), below the
negatives' first quartile of that luma. Rates are the mean over the seeds of each seed's rate.
This is what the photometric normalization's luma gain (``model.input_norm: chroma_luma``)
acts on: a dark image is brightened by ``0.45 / mean luma``, a ``model.input_norm_luma_floor``
caps that gain, and the validator's contrast step (x 0.85 or x 0.725 at levels 2-3) darkens a
dark image further. Each level's MCC over all the split's images (seed mean) is reported beside
the rates, so the split's verdict and the rates that make it sit in one table; ``--split
VAL_CALIB`` reads the VAL_CALIB outputs ``bench/recipe_shipped_cut.py`` caches, a third split
that selects nothing in these benches.

How the fourteenth pass's files were made (after bench/recipe_shipped_cut.py filled VAL_CALIB's cache):

    C="--home /work/ablation_home --checkpoint-dirs /work/ablation_home/recipe_ablation"
    D=default_bs16_lost0
    for S in VAL_SELECT VAL_TEST VAL_CALIB; do s=$(echo $S | tr A-Z a-z)
      python bench/dark_image_rates.py $C --split $S --variants $D,${D}_lumafloor25 \\
        --seeds 42,43,44,45,48,49,50,51 --out bench/results/dark_image_rates_demo_$s.json; done
    for S in VAL_SELECT VAL_TEST; do s=$(echo $S | tr A-Z a-z)
      python bench/dark_image_rates.py $C --split $S --variants $D,${D}_lumafloor25,${D}_lumafloor25_j3 \\
        --seeds 42,43,44,45 --out bench/results/dark_image_rates_demo_${s}_s42_45.json; done
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

from cached_checkpoints import (  # noqa: E402
    CALIB_CACHE,
    SPLIT_CACHES,
    add_checkpoint_args,
    level_outputs,
    load_native_split,
    write_result,
)

CACHES = {**SPLIT_CACHES, "VAL_CALIB": CALIB_CACHE}
BLACK_FILL = 0.02  # luma below this is the rotation's fill, left out of the mean


def level1_mean_luma(images, seed: int, size: int, threads: int) -> np.ndarray:
    """Mean luma ``[N]`` (0-1) of each image at level 1 as the emulation draws it, fill left out."""
    from roadwork_ml.evaluation.streetvision import augment

    x = augment(images, 1, seed, size, n_threads=threads).float() / 255  # [N, 3, size, size]
    luma = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)  # [N, size, size]
    keep = (luma > BLACK_FILL).float()
    return ((luma * keep).sum((1, 2)) / keep.sum((1, 2)).clamp_min(1)).numpy()


def rates(by_seed: list[dict[int, np.ndarray]], y: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``{"L{lv}_tpr", "L{lv}_fpr"}``: seed-mean rates at > 0.5 among the rows in ``mask``."""
    out: dict[str, float] = {}
    for lv in sorted(by_seed[0]):
        for name, cls in (("tpr", 1), ("fpr", 0)):
            rows = mask & (y == cls)
            out[f"L{lv}_{name}"] = (
                float(np.mean([(p[lv][rows] > 0.5).mean() for p in by_seed])) if rows.any() else float("nan")
            )
    return out


def level_mcc(by_seed: list[dict[int, np.ndarray]], y: np.ndarray) -> dict[str, float]:
    """``{"L{lv}_mcc"}``: the seed mean of each seed's MCC at > 0.5 over all rows."""
    from sklearn.metrics import matthews_corrcoef

    return {
        f"L{lv}_mcc": float(np.mean([matthews_corrcoef(y, (p[lv] > 0.5).astype(int)) for p in by_seed]))
        for lv in sorted(by_seed[0])
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(ap, split_default=None)
    ap.add_argument("--split", default="VAL_TEST", choices=sorted(CACHES), help="VAL_CALIB: recipe_shipped_cut's cache")
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    from roadwork_ml.config import load_profile
    from roadwork_ml.contracts import Split

    profile = load_profile(args.profile)
    home = Path(args.home)
    _, native = load_native_split(home, profile, Split[args.split])
    y = np.asarray(native.labels, dtype=np.int64)
    sv = profile.evaluation.streetvision
    luma = level1_mean_luma(native.images, sv.seed, sv.size, args.threads)
    cut = float(np.quantile(luma[y == 0], 0.25))
    dark = luma < cut
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    cache = home / CACHES[args.split]
    result: dict[str, dict] = {}
    lines = [
        f"{args.split}, dark = level-1 mean luma < {cut:.3f} ({int((dark & (y == 0)).sum())} negatives, "
        f"{int((dark & (y == 1)).sum())} positives); rest: {int((~dark & (y == 0)).sum())} / "
        f"{int((~dark & (y == 1)).sum())}",
        "",
        "| variant | images | L0 TPR / FPR | L1 TPR / FPR | L2 TPR / FPR | L3 TPR / FPR |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        missing = [s for s in seeds if not (cache / f"{v}_s{s}.npz").exists()]
        if missing:
            raise SystemExit(f"{v}: no cached {args.split} outputs for seeds {missing} in {cache}")
        by_seed = [level_outputs(cache / f"{v}_s{s}.npz") for s in seeds]
        result[v] = {"dark": rates(by_seed, y, dark), "rest": rates(by_seed, y, ~dark), "all": level_mcc(by_seed, y)}
        for part in ("dark", "rest"):
            r = result[v][part]
            cells = " | ".join(f"{r[f'L{lv}_tpr']:.3f} / {r[f'L{lv}_fpr']:.3f}" for lv in sorted(by_seed[0]))
            lines.append(f"| {v} | {part} | {cells} |")
        mcc = result[v]["all"]
        lines.append(
            f"| {v} | MCC, all | " + " | ".join(f"{mcc[f'L{lv}_mcc']:.3f}" for lv in sorted(by_seed[0])) + " |"
        )
    fields = {"split": args.split, "seeds": seeds, "variants": variants, "dark_luma_below": cut}
    write_result(args.out, {**fields, "rates": result}, "\n".join(lines), t0)


if __name__ == "__main__":
    main()
