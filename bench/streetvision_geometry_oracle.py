"""How much of the StreetVision level gap the validator's geometry alone forces (issue 11).

For every VAL_SELECT image (``--split VAL_TEST``: every VAL_TEST image) of a synthetic profile, the scene is regenerated from its record
(origin seed, sequence, frame) and its roadwork boxes are carried through the emulation's own
level-1 rotation and crop (the same draws as ``streetvision_eval``: levels 1-3 share them).
An object-level oracle (P = 1 when a roadwork object is still visible in the frame the
validator sends, else 0; :mod:`roadwork_ml.evaluation.geometry_oracle`) is scored at level 0
and level 1 against the observed labels, with bootstrap intervals. Cached models of
``bench/recipe_ablation.py`` are then scored at level 1 on the images whose roadwork stays in
the frame and on the positives whose roadwork leaves it (on VAL_TEST: the cache of
``bench/recipe_heldout.py``, whose outputs are VAL_TEST's in the same row order).

    python bench/streetvision_geometry_oracle.py --store-dir <dereferenced artifacts> \\
        --cache-dir /work/ablation_home/recipe_ablation \\
        --models baseline_s42,legacy_saturation_s42,photometric_norm_s42 \\
        --out bench/results/streetvision_geometry_oracle_demo.json

``--store-dir`` is a dereferenced copy of a make-demo home's ``artifacts/splits`` and
``artifacts/source_images`` (``cp -rL``), as ``bench/recipe_ablation.py --store-dir`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def scene_boxes(rows, profile) -> tuple[list[list[tuple[float, float, float, float]]], np.ndarray]:
    """Roadwork boxes of each row's regenerated scene, and each scene's roadwork flag."""
    from roadwork_ml.data.synthetic import make_sequence, roadwork_boxes

    cache: dict = {}
    boxes, truth = [], []
    for origin, seq_id, tags in zip(rows["origin"], rows["sequence_id"], rows["tags"], strict=True):
        kind, source, seed, _index = origin.split(":")
        if kind != "synthetic":
            raise ValueError(f"{origin}: the oracle needs synthetic scenes (their objects are known)")
        key = (source, int(seed), int(seq_id.rsplit("seq", 1)[1]))
        if key not in cache:
            cache[key] = make_sequence(source, profile.data.sources[source].synthetic, key[1], key[2])
        spec = cache[key][int(json.loads(tags)["frame"])]
        boxes.append(roadwork_boxes(spec))
        truth.append(int(spec.roadwork))
    return boxes, np.asarray(truth)


def train_boxes(rows, profile):
    """Roadwork boxes ``[N, K, 4]`` of ``rows``: from their tags (records written since the tag
    exists), else regenerated from the synthetic scenes (a store made before it)."""
    from roadwork_ml.training.object_boxes import boxes_from_tags, boxes_tensor

    boxes, _bad = boxes_from_tags(list(rows["tags"]))
    return boxes if boxes is not None else boxes_tensor(scene_boxes(rows, profile)[0])


def main() -> None:
    from recipe_ablation import DirectoryStore

    from roadwork_ml.config import load_profile
    from roadwork_ml.contracts import Split
    from roadwork_ml.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap
    from roadwork_ml.evaluation.geometry_oracle import oracle_outputs
    from roadwork_ml.evaluation.metrics.classification import mcc
    from roadwork_ml.evaluation.streetvision import image_params

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store-dir", required=True)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--cache-dir", default=None, help="bench/recipe_ablation.py's cache (models scored at level 1)")
    ap.add_argument("--models", default="", help="comma list of cached runs, e.g. baseline_s42")
    ap.add_argument("--split", default="VAL_SELECT", choices=["VAL_SELECT", "VAL_TEST"])
    ap.add_argument("--min-share", type=float, default=0.5, help="share of a box that must stay in the frame")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--out", default="bench/results/streetvision_geometry_oracle.json")
    args = ap.parse_args()
    t0 = time.perf_counter()

    profile = load_profile(args.profile)
    sv = profile.evaluation.streetvision
    side = max(profile.inference.input_size, sv.size)  # the evaluation's native square images
    rows = DirectoryStore(args.store_dir).rows(Split[args.split])
    y = rows["label"].to_numpy().astype(int)
    boxes, truth = scene_boxes(rows, profile)
    if not np.array_equal(truth, rows["true_label"].to_numpy().astype(int)):
        raise SystemExit("regenerated scenes disagree with the records' true labels: wrong profile or seed")

    draws = {lv: [image_params(sv.seed, i, lv, side, side) for i in range(len(rows))] for lv in (0, 1)}
    oracle = {lv: oracle_outputs(boxes, draws[lv], side, side, args.min_share) for lv in (0, 1)}
    kept = oracle[1] > 0.5  # some roadwork object still in the level-1 frame
    pos = truth == 1
    lost_pos = pos & ~kept & (oracle[0] > 0.5)
    res: dict = {
        "profile": args.profile,
        "split": args.split,
        "n_images": len(y),
        "positives_observed": int(y.sum()),
        "positives_true": int(pos.sum()),
        "min_share": args.min_share,
        "emulation_seed": sv.seed,
        "native_side": side,
        "true_positives_with_roadwork_at_level_0": int((pos & (oracle[0] > 0.5)).sum()),
        "true_positives_whose_roadwork_leaves_the_level_1_frame": int(lost_pos.sum()),
        "share_of_true_positives_losing_roadwork": float(lost_pos.sum() / max(pos.sum(), 1)),
        "oracle": {},
        "models": {},
    }
    for lv in (0, 1):
        b = bootstrap_metrics(y, oracle[lv], metrics=["mcc", "accuracy"], n_resamples=args.n_resamples, n_jobs=1)
        res["oracle"][f"level_{lv}"] = {k: {m: iv.to_dict() for m, iv in v.items()} for k, v in b.items()}
    drop = paired_bootstrap(y, oracle[0], oracle[1], "mcc", n_resamples=args.n_resamples, n_jobs=1)
    res["oracle"]["mcc_drop_level_0_to_1"] = {
        "estimate": drop.diff,
        "low": drop.interval.low,
        "high": drop.interval.high,
    }

    for key in [m for m in args.models.split(",") if m]:
        npz = np.load(Path(args.cache_dir) / f"{key}.npz")
        p0, p1 = npz["level_0"], npz["level_1"]
        if p0.shape[0] != len(y):
            raise SystemExit(f"{key}: {p0.shape[0]} outputs for {len(y)} {args.split} rows: another split's cache")
        res["models"][key] = {
            "mcc_level_0": mcc(y, p0 > 0.5),
            "mcc_level_1": mcc(y, p1 > 0.5),
            "mcc_level_1_where_roadwork_stays_or_negative": mcc(y[kept | ~pos], p1[kept | ~pos] > 0.5),
            "recall_level_1_positives_roadwork_stays": float((p1[pos & kept] > 0.5).mean()),
            "recall_level_1_positives_roadwork_leaves": float((p1[lost_pos] > 0.5).mean()) if lost_pos.any() else None,
            "recall_level_0_positives": float((p0[pos] > 0.5).mean()),
        }
    res["seconds"] = time.perf_counter() - t0
    res["command"] = " ".join(sys.argv)
    print(json.dumps({k: v for k, v in res.items() if k != "command"}, indent=2, default=float))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
