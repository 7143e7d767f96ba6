"""The recipe ablation's cached checkpoints, read back by the benches that re-score them without
training (``recipe_heldout``, ``level1_decomposition``, ``streetvision_draws``): where a run's
checkpoint is, the served prediction of one, a split at the emulation's native side, where each
split's emulated outputs are cached and how one is read, the command-line arguments those benches
share, and how they write their result."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# each split's emulated outputs under the ablation's home: VAL_SELECT from recipe_ablation,
# VAL_TEST from recipe_heldout, VAL_CALIB from recipe_shipped_cut
SPLIT_CACHES = {"VAL_SELECT": "recipe_ablation", "VAL_TEST": "recipe_heldout"}
CALIB_CACHE = "recipe_calib"


def level_outputs(path: str | Path) -> dict:
    """``{level: P(roadwork) [N]}`` of one cached run (the ``level_<k>`` arrays of its ``.npz``)."""
    import numpy as np

    run = np.load(path)
    return {int(k.split("_")[1]): run[k] for k in run.files if k.startswith("level_")}


def find_checkpoint(dirs: list[Path], key: str) -> Path | None:
    """The first cache directory holding ``<key>_checkpoint``, or None."""
    for d in dirs:
        if (d / f"{key}_checkpoint").is_dir():
            return d
    return None


def served_checkpoint(dirs: list[Path], key: str, profile):
    """``predict(uint8 [B, 3, H, W]) -> P(roadwork) [B]`` of the cached run ``key`` as the
    evaluation serves it (global view, the profile's flip TTA); exits naming the directories
    when no cache holds it."""
    from roadwork_ml.config import ModelConfig
    from roadwork_ml.models.inference import global_view_probability
    from roadwork_ml.training.checkpoint import load_checkpoint

    d = find_checkpoint(dirs, key)
    if d is None:
        raise SystemExit(f"no checkpoint {key}_checkpoint in {','.join(str(x) for x in dirs)}")
    model, cfg = load_checkpoint(d / f"{key}_checkpoint", device="cpu")
    return global_view_probability(model.eval(), ModelConfig.model_validate(cfg["model"]), profile.inference)


def load_native_split(home: str | Path, profile, split):
    """(rows, TensorSplit) of ``split`` from a make-demo home's store, at the side the StreetVision
    emulation draws from: ``max(inference.input_size, evaluation.streetvision.size)``."""
    from roadwork_assets.data import load_split_rows, load_split_tensors
    from roadwork_assets.resources import ArtifactStore

    store = ArtifactStore(root=str(Path(home) / "artifacts"))
    rows = load_split_rows(store, split)
    side = max(profile.inference.input_size, profile.evaluation.streetvision.size)
    return rows, load_split_tensors(store, rows, split, side)


def add_checkpoint_args(
    ap: argparse.ArgumentParser,
    split_default: str | None,
    out_default: str | None = None,
    variants_help: str = "comma list of cached variants",
) -> None:
    """--home, --profile, --checkpoint-dirs, --split (unless ``split_default`` is None),
    --variants, --seeds, --threads, --out (required unless ``out_default``)."""
    ap.add_argument("--home", required=True, help="the ablation's Dagster home (its artifacts hold the splits)")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--checkpoint-dirs", required=True, help="comma list of the ablation's cache directories")
    if split_default is not None:
        ap.add_argument("--split", default=split_default, choices=["VAL_SELECT", "VAL_TEST"])
    ap.add_argument("--variants", required=True, help=variants_help)
    ap.add_argument("--seeds", default="42,43,44,45")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=out_default, required=out_default is None)


def write_result(out: str | Path, fields: dict, md: str, t0: float) -> None:
    """Print the bench's table ``md`` and write ``{"command", **fields, "table_markdown",
    "seconds"}`` to ``out`` as JSON (``seconds`` since ``t0``, a ``time.perf_counter()``)."""
    print(md)
    res = {"command": " ".join(sys.argv), **fields, "table_markdown": md, "seconds": time.perf_counter() - t0}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2))
    print(f"[{time.strftime('%H:%M:%S')}] wrote {out}", flush=True)
