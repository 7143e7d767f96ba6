"""Training-step time in channels-last against the default memory layout, in one run.

One optimizer step (forward, cross-entropy, backward, AdamW) of the profile's classifier on a
random batch at its input size, alternating the two layouts over ``--rounds`` rounds so a
shared machine's load falls on both alike; the figure is the ratio of their median step times
(``train.channels_last``'s reason to exist). ViT backbones have only the patch embedding as a
convolution, so the ratio is about 1 there.

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


def step_ms(model_cfg, layout, batch: int, steps: int, seed: int = 0) -> float:
    from roadwork_ml.models import build_classifier

    torch.manual_seed(seed)
    model = build_classifier(model_cfg).train().to(memory_format=layout)
    x = torch.rand(batch, 3, model_cfg.img_size, model_cfg.img_size).contiguous(memory_format=layout)
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

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


def main() -> None:
    from roadwork_ml.config import load_profile

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="bench/results/channels_last.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = load_profile(args.profile)
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for _ in range(args.rounds):
        times["contiguous"].append(step_ms(p.model, torch.contiguous_format, p.train.batch_size, args.steps))
        times["channels_last"].append(step_ms(p.model, torch.channels_last, p.train.batch_size, args.steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "profile": args.profile,
        "backbone": p.model.backbone,
        "img_size": p.model.img_size,
        "batch_size": p.train.batch_size,
        "threads": args.threads,
        "device": "cpu",
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "step_ms": times,
        "median_step_ms": med,
        "channels_last_speedup": med["contiguous"] / med["channels_last"],
        "command": " ".join(sys.argv),
    }
    print(json.dumps({k: res[k] for k in ("median_step_ms", "channels_last_speedup")}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
