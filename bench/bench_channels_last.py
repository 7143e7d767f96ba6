"""Training-step and inference time on CPU-friendly settings against the defaults, in one run.

* **Training step** (forward, cross-entropy, backward, the profile's optimizer through
  ``build_optimizer``) of the profile's classifier on a random batch at its input size:
  the default layout with the for-loop optimizer step, channels-last (``train.channels_last``)
  with it, and channels-last with torch's fused step (``train.optimizer.fused``).
* **Batch inference**: ``predict_views`` of the profile's served view set (global view + flip for
  the demo) in the default layout against channels-last (``inference.channels_last``), ms per image.

The settings alternate within each of ``--rounds`` rounds so a shared machine's load falls on
all alike; the figures are ratios of medians. ViT backbones have only the patch embedding as a
convolution, so the layout ratios are about 1 there.

    python bench/bench_channels_last.py --profile demo --out bench/results/channels_last_demo.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEP_SETTINGS = {  # name: (memory layout, fused optimizer step)
    "contiguous": (torch.contiguous_format, False),
    "channels_last": (torch.channels_last, False),
    "channels_last_fused": (torch.channels_last, True),
}


def step_ms(profile, layout, fused: bool, steps: int, seed: int = 0) -> float:
    from roadwork_ml.models import build_classifier
    from roadwork_ml.training.optim import build_optimizer

    cfg = profile.train.model_copy(update={"optimizer": profile.train.optimizer.model_copy(update={"fused": fused})})
    torch.manual_seed(seed)
    model = build_classifier(profile.model).train().to(memory_format=layout)
    side = profile.model.img_size
    x = torch.rand(cfg.batch_size, 3, side, side).contiguous(memory_format=layout)
    y = torch.randint(0, 2, (cfg.batch_size,))
    opt = build_optimizer(model, cfg)
    assert bool(opt.defaults.get("fused")) is fused or "fused" not in opt.defaults

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):  # warm-up: oneDNN picks its kernels
        one()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t) / steps * 1000


def inference_ms(profile, channels_last: bool, images: torch.Tensor, seed: int = 0) -> float:
    from roadwork_ml.models import build_classifier
    from roadwork_ml.models.inference import multiview_model, predict_views

    torch.manual_seed(seed)
    model = build_classifier(profile.model).eval()
    inf = profile.inference
    mv = multiview_model(
        model, profile.model, inf, choice={"multi_view": inf.multi_view, "aggregator": "mean", "top_k": 1}
    )
    predict_views(mv, images[: inf.batch_size], inf.batch_size, channels_last=channels_last)  # warm-up
    t = time.perf_counter()
    predict_views(mv, images, inf.batch_size, channels_last=channels_last)
    return (time.perf_counter() - t) / images.shape[0] * 1000


def main() -> None:
    from roadwork_ml.config import load_profile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--images", type=int, default=512, help="images per inference measurement")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench/results/channels_last.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = load_profile(args.profile)
    side = p.inference.input_size
    images = torch.randint(
        0, 256, (args.images, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    steps: dict[str, list[float]] = {k: [] for k in STEP_SETTINGS}
    infer: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for _ in range(args.rounds):
        for name, (layout, fused) in STEP_SETTINGS.items():
            steps[name].append(step_ms(p, layout, fused, args.steps))
        for name in infer:
            infer[name].append(inference_ms(p, name == "channels_last", images))
    med = {k: statistics.median(v) for k, v in steps.items()}
    med_inf = {k: statistics.median(v) for k, v in infer.items()}
    res = {
        "profile": args.profile,
        "backbone": p.model.backbone,
        "img_size": p.model.img_size,
        "batch_size": p.train.batch_size,
        "optimizer": p.train.optimizer.name,
        "inference": {
            "input_size": side,
            "batch_size": p.inference.batch_size,
            "multi_view": p.inference.multi_view,
            "flip_tta": p.inference.flip_tta,
            "images": args.images,
        },
        "threads": args.threads,
        "device": "cpu",
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "step_ms": steps,
        "median_step_ms": med,
        "channels_last_speedup": med["contiguous"] / med["channels_last"],
        "fused_speedup": med["channels_last"] / med["channels_last_fused"],
        "step_speedup": med["contiguous"] / med["channels_last_fused"],
        "inference_ms_per_image": infer,
        "median_inference_ms_per_image": med_inf,
        "inference_channels_last_speedup": med_inf["contiguous"] / med_inf["channels_last"],
        "command": " ".join(sys.argv),
    }
    keys = (
        "median_step_ms",
        "channels_last_speedup",
        "fused_speedup",
        "step_speedup",
        "median_inference_ms_per_image",
        "inference_channels_last_speedup",
    )
    print(json.dumps({k: res[k] for k in keys}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
