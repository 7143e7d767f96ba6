"""Held-out confirmation of the recipe ablation (issue 11): the checkpoints the ablation cached
for the recipes it chose between, scored once on VAL_TEST after the choice was made on VAL_SELECT.

``bench/recipe_ablation.py`` selects on VAL_SELECT only, so its seed-averaged numbers carry the
selection. This script re-scores the same trained models (``<variant>_s<seed>_checkpoint`` in
any of ``--checkpoint-dirs``: the ablation's cache directories) on VAL_TEST through the same
served view path and StreetVision emulation (224 px, levels 0-3, JPEG q75), and builds the
ablation's tables from those outputs: per-seed absolute metrics, each variant minus the
baseline of the same seed, and the seed means compared by one paired bootstrap over the
VAL_TEST images. Nothing is trained or tuned here.

    python bench/recipe_heldout.py --home /work/ablation_home --profile demo \\
      --checkpoint-dirs /work/ablation_home/recipe_ablation,/work/ablation_home/recipe_ablation_b \\
      --variants baseline,photometric_norm_geometry100_noise_e14,default_bs16 --seeds 42,43,44,45 \\
      --pairs default_bs16:photometric_norm_geometry100_noise_e14 \\
      --out bench/results/recipe_heldout_demo.json

The ninth pass (a fresh home, batch 16 re-trained beside its follow-ups; V and P as in
``bench/recipe_ablation.py``'s docstring):

    python bench/recipe_heldout.py --home /work/ablation_home --profile demo \
      --checkpoint-dirs /work/ablation_home/recipe_ablation \
      --variants baseline,$V --seeds 42,43,44,45 --pairs $P \
      --out bench/results/recipe_heldout_demo_ninth.json

The tenth pass (the same home; V10 and P10 as in ``bench/recipe_ablation.py``'s docstring):

    python bench/recipe_heldout.py --home /work/ablation_home --profile demo \
      --checkpoint-dirs /work/ablation_home/recipe_ablation \
      --variants baseline,$V10 --seeds 42,43,44,45 --pairs $P10,default_bs16:baseline \
      --out bench/results/recipe_heldout_demo_tenth.json

and lost positives at weight 0 over six seeds:

    python bench/recipe_heldout.py --home /work/ablation_home --profile demo \
      --checkpoint-dirs /work/ablation_home/recipe_ablation \
      --variants default_bs16,default_bs16_lost0 --seeds 42,43,44,45,46,47 \
      --pairs default_bs16_lost0:default_bs16 --out bench/results/recipe_heldout_demo_lost0_6seeds.json

The eleventh pass (the same home; V11 and P11 as in ``bench/recipe_ablation.py``'s docstring),
lost-weight 0 on four fresh seeds (the rule to adopt it set before they were trained) and on
all ten:

    python bench/recipe_heldout.py --home /work/ablation_home --profile demo \\
      --checkpoint-dirs /work/ablation_home/recipe_ablation \\
      --variants default_bs16,default_bs16_lost0 --seeds 48,49,50,51 \\
      --pairs default_bs16_lost0:default_bs16 --out bench/results/recipe_heldout_demo_lost0_fresh.json
    # the same with --seeds 42,43,44,45,46,47,48,49,50,51: recipe_heldout_demo_lost0_10seeds.json
    python bench/recipe_heldout.py --home /work/ablation_home --profile demo \\
      --checkpoint-dirs /work/ablation_home/recipe_ablation --variants $V11 --seeds 42,43,44,45 \\
      --pairs $P11 --out bench/results/recipe_heldout_demo_eleventh.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cached_checkpoints import add_checkpoint_args, find_checkpoint, load_native_split, served_checkpoint  # noqa: E402
from recipe_ablation import _log, compare, load, pair_comparisons, table  # noqa: E402


def score(cache: Path, source: Path, key: str, native, y: np.ndarray, profile, n_resamples: int) -> None:
    """VAL_TEST outputs of one cached checkpoint in the ablation's cache format (``p_val`` is the
    clean VAL_TEST probability here), with its training record from the ablation."""
    from roadwork_ml.evaluation.streetvision import streetvision_eval

    fn = served_checkpoint([source], key, profile)
    t0 = time.perf_counter()
    p_test = fn(native.images)
    sv = streetvision_eval(
        fn,
        native.images,
        y,
        levels=profile.evaluation.streetvision.levels,
        seed=profile.evaluation.streetvision.seed,
        batch_size=profile.inference.batch_size,
        n_resamples=n_resamples,
        n_jobs=1,
        return_outputs=True,
    )
    outputs = sv.pop("outputs")
    meta = json.loads((source / f"{key}.json").read_text())
    meta.update(
        {
            "split": "VAL_TEST",
            "checkpoint": str(source / f"{key}_checkpoint"),
            "val_select_streetvision": meta.pop("streetvision", None),
            "eval_seconds": time.perf_counter() - t0,
        }
    )
    np.savez(cache / f"{key}.npz", p_val=p_test, **{f"level_{lv}": o for lv, o in outputs.items()})
    (cache / f"{key}.json").write_text(json.dumps(meta, indent=2, default=float))
    _log(f"{key}: VAL_TEST pooled reward {sv['pooled']['reward'].estimate:.4f}")


def main() -> None:
    from roadwork_ml.contracts import Split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(ap, None, "bench/results/recipe_heldout.json", "comma list; baseline is the reference")
    ap.add_argument("--pairs", default="", help="extra seed-mean comparisons NEW:REF")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--cache-dir", default=None, help="VAL_TEST outputs (default: <home>/recipe_heldout)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cache = Path(args.cache_dir or Path(args.home) / "recipe_heldout")
    cache.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in args.checkpoint_dirs.split(",") if d]
    variants = [v for v in args.variants.split(",") if v]
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    seeds = [int(s) for s in args.seeds.split(",")]
    profile = load(args.profile, [], args.threads)
    _, native = load_native_split(args.home, profile, Split.VAL_TEST)
    y = native.labels.numpy()
    _log(f"VAL_TEST {len(y)} images ({y.mean():.1%} positive)")
    missing = []
    for seed in seeds:
        for v in variants:
            key = f"{v}_s{seed}"
            if (cache / f"{key}.npz").exists():
                continue
            source = find_checkpoint(dirs, key)
            if source is None:
                missing.append(key)
                continue
            score(cache, source, key, native, y, profile, args.n_resamples)
    res = compare(cache, y, variants, seeds, args.n_resamples)
    if pairs := [p for p in args.pairs.split(",") if p]:
        res["pairs"] = pair_comparisons(cache, y, pairs, seeds, args.n_resamples)
    res.update(
        {
            "profile": args.profile,
            "split": "VAL_TEST",
            "note": "val_select_mcc and p_val hold the clean VAL_TEST MCC and probabilities here (the ablation's keys)",
            "n_images": int(len(y)),
            "positive_share": float(y.mean()),
            "seeds": seeds,
            "variants": variants,
            "missing_checkpoints": missing,
            "n_resamples": args.n_resamples,
            "command": " ".join(sys.argv),
            "seconds_this_invocation": time.perf_counter() - t0,
        }
    )
    md = table(res, variants, seeds).replace("VAL_SELECT", "VAL_TEST")
    res["table_markdown"] = md
    print(md)
    if missing:
        _log(f"no checkpoint for {missing}: left out")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
