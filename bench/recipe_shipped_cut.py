"""The recipe ablation at the cut a bundle ships (issue 11): each cached checkpoint's StreetVision
decision cut tuned on VAL_CALIB as ``thresholds.decision_cut: validator_reward`` tunes it, then
its VAL_SELECT and VAL_TEST outputs folded at that cut and compared as the ablation compares them.

``bench/recipe_ablation.py`` and ``bench/recipe_heldout.py`` score every model at P(roadwork) >
0.5. A bundle does not send that: its ``thresholds`` asset tunes a cut on VAL_CALIB through the
validator emulation (levels pooled, classes weighted 50/50, the reward-optimal cut,
:func:`roadwork_ml.policy.thresholds.reward_optimal_cut`) and the served StreetVision output is
P(roadwork) folded so that cut lands on 0.5 (:func:`~roadwork_ml.policy.thresholds.fold_probability`).
This bench does the same for each cached checkpoint:

1. VAL_CALIB through the same served path and emulation as the ablation (global view, the
   profile's flip TTA; 224 px, levels 0-3, JPEG q75), cached in ``<home>/recipe_calib``;
2. the cut on those outputs, exactly as the ``thresholds`` asset computes it;
3. the checkpoint's cached VAL_SELECT (``<home>/recipe_ablation``) and VAL_TEST
   (``<home>/recipe_heldout``) outputs folded at its cut, written in the ablation's cache format
   to ``<home>/recipe_shipped_cut/<split>``, and the ablation's tables built from them;
4. each variant at its shipped cut minus the same checkpoints at 0.5 (``pairs["V:V_at05"]``,
   the seed mean, one paired bootstrap over images): what the cut alone does;
5. with ``--bagged-resamples N``, also each model at its bagged cut (the median of the shipped
   rule's cut over N bootstrap draws of the VAL_CALIB images), paired with 0.5 and the shipped cut.

Nothing is trained, and neither VAL_SELECT nor VAL_TEST tunes anything: the cut sees VAL_CALIB
only. Folding is monotone, so AUROC is unchanged and a level's MCC moves only through the cut.

How the thirteenth pass's files were made (the checkpoints and the VAL_SELECT / VAL_TEST caches
of ``bench/recipe_ablation.py``'s docstring, thirteenth pass; two threads):

    H="--home /work/ablation_home --profile demo --checkpoint-dirs /work/ablation_home/recipe_ablation"
    D=default_bs16_lost0
    Z=${D}_zoomneg2,${D}_zoomneg15
    ZP=${D}_zoomneg2:$D,${D}_zoomneg15:$D
    python bench/recipe_shipped_cut.py $H --variants $D,$Z,${D}_zoom2 --seeds 42,43,44,45 \\
      --bagged-resamples 200 --pairs $ZP,${D}_zoom2:$D --out bench/results/recipe_shipped_cut_demo.json
    python bench/recipe_shipped_cut.py $H --variants $D,$Z --seeds 48,49,50,51 \\
      --bagged-resamples 200 --pairs $ZP --out bench/results/recipe_shipped_cut_demo_zoomneg_fresh.json

Fourteenth pass: the pre-registered confirmation on eight fresh seeds of the default (decided on
``--splits VAL_SELECT`` first, VAL_TEST read after), and the luma floor at both seed blocks:

    python bench/recipe_shipped_cut.py $H --variants $D --seeds 46,47,52,53,54,55,56,57 \
      --bagged-resamples 200 --out bench/results/recipe_shipped_cut_demo_fresh8.json
    python bench/recipe_shipped_cut.py $H --variants $D,${D}_lumafloor25 --seeds 42,43,44,45,48,49,50,51 \
      --pairs ${D}_lumafloor25:$D --out bench/results/recipe_shipped_cut_demo_lumafloor.json
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

from cached_checkpoints import (  # noqa: E402
    CALIB_CACHE,
    SPLIT_CACHES,
    add_checkpoint_args,
    find_checkpoint,
    level_outputs,
    load_native_split,
    served_checkpoint,
)
from recipe_ablation import _log, compare, load, pair_comparisons, table  # noqa: E402

AT_HALF = "_at05"  # a variant's outputs at P(roadwork) > 0.5, paired with its shipped cut
BAGGED = "_bagged"  # the same outputs at the bagged cut (--bagged-resamples)


def calib_outputs(cache: Path, dirs: list[Path], key: str, native, profile) -> dict[int, np.ndarray]:
    """``{level: P(roadwork) [N]}`` of checkpoint ``key`` on VAL_CALIB through the emulation,
    from ``cache`` or computed once and cached there."""
    from roadwork_ml.evaluation.streetvision import emulated_outputs

    path = cache / f"{key}.npz"
    if not path.exists():
        sv = profile.evaluation.streetvision
        t0 = time.perf_counter()
        outs = emulated_outputs(
            served_checkpoint(dirs, key, profile),
            native.images,
            sv.levels,
            sv.seed,
            profile.inference.batch_size,
            sv.size,
        )
        np.savez(path, **{f"level_{lv}": o for lv, o in outs.items()})
        _log(f"{key}: VAL_CALIB emulated in {time.perf_counter() - t0:.0f}s")
    return level_outputs(path)


def shipped_cut(outputs: dict[int, np.ndarray], labels: np.ndarray) -> float:
    """The ``thresholds`` asset's ``validator_reward`` cut: every level's outputs pooled (level-major,
    labels tiled), the classes weighted 50/50."""
    from roadwork_ml.policy.thresholds import reward_optimal_cut

    levels = sorted(outputs)
    p = np.concatenate([outputs[lv] for lv in levels])
    cut, _ = reward_optimal_cut(p, np.tile(labels, len(levels)), 0.5)
    return cut


def bagged_cut(outputs: dict[int, np.ndarray], labels: np.ndarray, n_resamples: int, seed: int = 0) -> float:
    """The median of :func:`shipped_cut` over ``n_resamples`` bootstrap draws of the VAL_CALIB
    images (an image's levels drawn together): a cut less at the mercy of a few images near it."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    cuts = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        if labels[idx].min() == labels[idx].max():
            continue
        cuts.append(shipped_cut({lv: o[idx] for lv, o in outputs.items()}, labels[idx]))
    return float(np.median(cuts))


def fold_run(src: Path, dst: Path, key: str, cut: float, source_key: str | None = None) -> None:
    """The cached run ``source_key`` (default ``key``) in ``src`` with every probability folded at
    ``cut``, to ``dst`` as ``key``."""
    from roadwork_ml.policy.thresholds import fold_probability

    source_key = source_key or key
    run = np.load(src / f"{source_key}.npz")
    np.savez(dst / f"{key}.npz", **{k: fold_probability(run[k], cut) for k in run.files})
    meta = json.loads((src / f"{source_key}.json").read_text())
    meta["shipped_cut"] = cut
    (dst / f"{key}.json").write_text(json.dumps(meta, indent=2, default=float))


def main() -> None:
    from roadwork_ml.contracts import Split

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkpoint_args(ap, None, "bench/results/recipe_shipped_cut.json", "comma list; baseline is the reference")
    ap.add_argument("--pairs", default="", help="extra seed-mean comparisons NEW:REF")
    ap.add_argument("--splits", default="VAL_SELECT,VAL_TEST")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument(
        "--bagged-resamples", type=int, default=0, help="also score each model at its bagged cut (0: off; e.g. 200)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    home = Path(args.home)
    dirs = [Path(d) for d in args.checkpoint_dirs.split(",") if d]
    variants = [v for v in args.variants.split(",") if v]
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    seeds = [int(s) for s in args.seeds.split(",")]
    splits = [s for s in args.splits.split(",") if s]
    if unknown := sorted(set(splits) - set(SPLIT_CACHES)):
        ap.error(f"--splits takes {sorted(SPLIT_CACHES)}, got {unknown}")
    profile = load(args.profile, [], args.threads)

    _, calib = load_native_split(home, profile, Split.VAL_CALIB)
    y_calib = calib.labels.numpy()
    _log(f"VAL_CALIB {len(y_calib)} images ({y_calib.mean():.1%} positive)")
    calib_cache = home / CALIB_CACHE
    calib_cache.mkdir(parents=True, exist_ok=True)
    # today's recipe was trained at some seeds only: its per-seed rows are built where it was
    keys = [f"{v}_s{s}" for s in seeds for v in variants if v != "baseline" or find_checkpoint(dirs, f"{v}_s{s}")]
    calib_p = {k: calib_outputs(calib_cache, dirs, k, calib, profile) for k in keys}
    cuts = {k: shipped_cut(calib_p[k], y_calib) for k in keys}
    bagged = {k: bagged_cut(calib_p[k], y_calib, args.bagged_resamples) for k in keys} if args.bagged_resamples else {}

    res: dict = {
        "profile": args.profile,
        "command": " ".join(sys.argv),
        "seeds": seeds,
        "variants": variants,
        "n_val_calib": int(len(y_calib)),
        "cuts": cuts,
        "bagged_cuts": bagged,
        "bagged_resamples": args.bagged_resamples,
        "splits": {},
    }
    for split in splits:
        src, dst = home / SPLIT_CACHES[split], home / "recipe_shipped_cut" / split
        dst.mkdir(parents=True, exist_ok=True)
        missing = [k for k in keys if not (src / f"{k}.npz").exists()]
        if missing:
            raise SystemExit(f"{split}: no cached outputs for {missing} in {src} (run the ablation / heldout bench)")
        for k in keys:
            fold_run(src, dst, k, cuts[k])
            # the same outputs at 0.5 beside them: the cut's own effect is a pair within one model
            variant, seed = k.rsplit("_s", 1)
            fold_run(src, dst, f"{variant}{AT_HALF}_s{seed}", 0.5, source_key=k)
            if bagged:
                fold_run(src, dst, f"{variant}{BAGGED}_s{seed}", bagged[k], source_key=k)
        from roadwork_assets.data import load_split_rows
        from roadwork_assets.resources import ArtifactStore

        y = load_split_rows(ArtifactStore(root=str(home / "artifacts")), Split[split])["label"].to_numpy()
        out = compare(dst, y, variants, seeds, args.n_resamples)
        ran = [v for v in variants if any(f"{v}_s{s}" in cuts for s in seeds)]
        at_half = [f"{v}:{v}{AT_HALF}" for v in ran]
        if bagged:
            at_half += [f"{v}{BAGGED}:{v}{AT_HALF}" for v in ran] + [f"{v}{BAGGED}:{v}" for v in ran]
        pairs = [p for p in args.pairs.split(",") if p] + at_half
        out["pairs"] = pair_comparisons(dst, y, pairs, seeds, args.n_resamples)
        md = table(out, variants, seeds).replace("VAL_SELECT", split)
        out["table_markdown"] = md
        res["splits"][split] = out
        print(f"\n## {split}, each model at its shipped cut\n\n{md}")
    for v in variants:
        if bagged:
            print(
                f"{v}: bagged cuts "
                + ", ".join(f"s{s} {bagged[f'{v}_s{s}']:.3f}" for s in seeds if f"{v}_s{s}" in bagged)
            )
        print(f"{v}: cuts " + ", ".join(f"s{s} {cuts[f'{v}_s{s}']:.3f}" for s in seeds if f"{v}_s{s}" in cuts))
    res["seconds"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
