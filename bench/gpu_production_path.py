"""The production model path measured on one device, as one prepared script.

The ``production`` profile's model (ViT-L/14 at 224, random init: no weights can be
downloaded — intended here, the numbers are about speed, not accuracy) through:

* a LoRA training step (the profile's ``train.lora``; global 224-px views, bf16 autocast on CUDA):
  trainable parameters and share, step time, peak memory;
* the multi-view inference (1 global + 3×3 tiles of a ``inference.input_size`` image, V = 10)
  in four settings: ``fp32_eager`` (explicit math attention, fp32), ``bf16_sdpa`` (bf16
  autocast + SDPA), ``bf16_sdpa_compile`` (+ ``torch.compile``), ``bf16_flash`` (CUDA only);
  images/s, peak memory, model FLOPs per image (torch's FlopCounterMode) and model FLOP
  utilisation against the GEMM roofline measured here (a square bf16 / fp32 matmul);
* single-image (10-view) latency: eager bf16, and replayed as a CUDA graph (CUDA only).

On a CPU the same code runs (``--profile tiny`` in the tests); CUDA-only rows are reported as
skipped with the reason.

    python bench/gpu_production_path.py [--profile production] [--batch 32] [--iters 20]
        [--modes fp32_eager,bf16_sdpa,bf16_sdpa_compile,bf16_flash] [--out bench/results/gpu_production_path.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ALL_MODES = ("fp32_eager", "bf16_sdpa", "bf16_sdpa_compile", "bf16_flash")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
            "peak_memory_kind": "cuda_max_allocated",
        }
    return {
        "peak_memory_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
        "peak_memory_kind": "process_max_rss",
    }


def gemm_roofline(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 1.0) -> float:
    """Measured FLOP/s of an ``n``×``n`` matmul in ``dtype`` on ``device`` (2·n³ per product)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or count < 3:
        a @ b
        count += 1
        if count % 10 == 0:
            _sync(device)
    _sync(device)
    return 2 * n**3 * count / (time.perf_counter() - t0)


def flops_per_image(mv: torch.nn.Module, input_size: int, device: torch.device) -> int:
    """Model FLOPs of one image (all its views) counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(2, 3, input_size, input_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        mv(x)
    return int(counter.get_total_flops() // 2)


def _build(profile, attention: str, device: torch.device):
    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.models.inference import view_spec
    from roadwork_ml.models.multiview import MultiViewClassifier

    cfg = profile.model.model_copy(update={"attention": attention, "allow_random_init": True})
    torch.manual_seed(0)
    model = build_classifier(cfg)
    return MultiViewClassifier(model, view_spec(cfg, profile.inference, True), "mean").to(device).eval()


def _throughput(fn, x: torch.Tensor, iters: int, device: torch.device) -> tuple[float, list[float]]:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return x.shape[0] / med, times


def inference_modes(
    profile, modes: list[str], batch: int, iters: int, device: torch.device, roof: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per mode: images/s (median over ``iters`` timed batches after warm-up), peak memory, MFU."""
    size = profile.inference.input_size
    x = torch.rand(batch, 3, size, size, device=device)
    # counted on the math-attention model: FlopCounterMode does not count SDPA's fused CPU kernel
    model_flops = flops_per_image(_build(profile, "math", device), size, device)
    rows = []
    for mode in modes:
        row: dict[str, Any] = {"mode": mode}
        if mode == "bf16_flash" and device.type != "cuda":
            rows.append({**row, "skipped": "flash attention needs CUDA"})
            continue
        attention = {"fp32_eager": "math", "bf16_flash": "flash"}.get(mode, "sdpa")
        mv = _build(profile, attention, device)
        row["flops_per_image"] = model_flops
        bf16 = mode != "fp32_eager"
        net = torch.compile(mv) if mode.endswith("compile") else mv

        @torch.no_grad()
        def run(inp: torch.Tensor, net=net, bf16=bf16):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return net(inp)

        _peak_reset(device)
        t0 = time.perf_counter()
        run(x)  # warm-up (compilation for the compiled mode)
        _sync(device)
        row["warmup_seconds"] = time.perf_counter() - t0
        run(x)
        img_s, times = _throughput(run, x, iters, device)
        peak_key = "bf16" if bf16 else "fp32"
        achieved = row["flops_per_image"] * img_s
        row.update({"images_per_s": img_s, "batch": batch, "iters": iters, "batch_seconds": times, **_peak(device)})
        row.update(
            {"achieved_flops": achieved, "mfu_vs_measured_gemm": achieved / roof[peak_key], "roofline": peak_key}
        )
        row["bf16_roofline_images_per_s"] = roof["bf16"] / row["flops_per_image"]
        row["fraction_of_bf16_roofline"] = img_s / row["bf16_roofline_images_per_s"]
        rows.append(row)
        del mv, net
    return rows


def single_image_latency(profile, iters: int, device: torch.device) -> list[dict[str, Any]]:
    """One image, all its views: eager bf16 latency, and the same replayed as a CUDA graph."""
    size = profile.inference.input_size
    mv = _build(profile, "sdpa", device)
    x = torch.rand(1, 3, size, size, device=device)
    bf16 = device.type == "cuda"

    @torch.no_grad()
    def run(inp):
        # no autocast weight cache: a CUDA graph must not capture casts cached outside it
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            return mv(inp)

    run(x)
    _, times = _throughput(run, x, iters, device)
    rows = [
        {
            "mode": "single_image_eager" + ("_bf16" if bf16 else "_fp32"),
            "latency_ms": 1e3 * statistics.median(times),
            "views": mv.spec.n_views,
        }
    ]
    if device.type != "cuda":
        rows.append({"mode": "single_image_cuda_graph", "skipped": "CUDA graphs need CUDA"})
        return rows
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            run(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run(static_x)
    new = torch.rand_like(static_x)
    static_x.copy_(new)
    graph.replay()
    _sync(device)
    ref = run(new)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        static_x.copy_(new)
        graph.replay()
        _sync(device)
        times.append(time.perf_counter() - t0)
    rows.append(
        {
            "mode": "single_image_cuda_graph",
            "latency_ms": 1e3 * statistics.median(times),
            "views": mv.spec.n_views,
            "max_abs_diff_vs_eager": float((static_out[0].float() - ref[0].float()).abs().max()),
        }
    )
    return rows


def lora_step(profile, batch: int, device: torch.device) -> dict[str, Any]:
    """One LoRA fine-tuning step on global views (bf16 autocast on CUDA), measured."""
    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.models.peft_adapters import add_lora, measure_train_step

    cfg = profile.model.model_copy(update={"allow_random_init": True})
    torch.manual_seed(0)
    model = add_lora(build_classifier(cfg), profile.train.lora, use_dora=profile.train.finetune == "dora").to(device)
    x = torch.rand(batch, 3, cfg.img_size, cfg.img_size)
    y = torch.randint(0, cfg.num_classes, (batch,))
    _peak_reset(device)
    out = measure_train_step(model, x, y, steps=4, amp=True)
    out["images_per_s"] = batch / out["step_seconds"]
    out["target_modules"] = list(profile.train.lora.target_modules)
    out["rank"] = profile.train.lora.rank
    return out


def run(
    profile_name: str = "production",
    overrides: list[str] | None = None,
    modes: list[str] | None = None,
    batch: int = 32,
    iters: int = 20,
    gemm_n: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Every measurement above on ``device`` (default CUDA when present); returns the JSON-ready result."""
    from roadwork_ml.config import load_profile
    from roadwork_ml.models.device import torch_device

    dev = torch_device(device)
    profile = load_profile(profile_name, overrides)
    modes = list(modes or ALL_MODES)
    n = gemm_n or (8192 if dev.type == "cuda" else 512)
    roof = {"bf16": gemm_roofline(dev, torch.bfloat16, n), "fp32": gemm_roofline(dev, torch.float32, n)}
    result: dict[str, Any] = {
        "profile": profile_name,
        "backbone": profile.model.backbone,
        "img_size": profile.model.img_size,
        "input_size": profile.inference.input_size,
        "weights": "random init (intended: speed only)",
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "gemm_roofline_flops": roof,
        "gemm_n": n,
    }
    result["lora_step"] = lora_step(profile, batch, dev)
    result["inference"] = inference_modes(profile, modes, batch, iters, dev, roof)
    result["single_image"] = single_image_latency(profile, iters, dev)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="production")
    parser.add_argument("--override", action="append", default=[], help="dotted.key=value profile overrides")
    parser.add_argument("--modes", default=",".join(ALL_MODES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--gemm-n", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_production_path.json"))
    args = parser.parse_args(argv)
    result = run(args.profile, args.override, args.modes.split(","), args.batch, args.iters, args.gemm_n, args.device)
    ls = result["lora_step"]
    print(
        f"{result['backbone']} on {result['device']}; GEMM roofline bf16 {result['gemm_roofline_flops']['bf16'] / 1e12:.1f} TFLOP/s, fp32 {result['gemm_roofline_flops']['fp32'] / 1e12:.1f}"
    )
    print(
        f"LoRA step (batch {ls['batch_size']}): {ls['step_seconds'] * 1e3:.1f} ms, {ls['images_per_s']:.1f} img/s, trainable {ls['trainable_params']:,} ({100 * ls['trainable_share']:.2f}%), peak {ls['peak_memory_bytes'] / 2**30:.2f} GiB ({ls['peak_memory_kind']})"
    )
    print(f"{'mode':<20} {'img/s':>9} {'MFU':>6} {'of roofline':>12} {'peak GiB':>9}")
    for r in result["inference"]:
        if "skipped" in r:
            print(f"{r['mode']:<20} skipped: {r['skipped']}")
        else:
            print(
                f"{r['mode']:<20} {r['images_per_s']:>9.2f} {r['mfu_vs_measured_gemm']:>6.3f} {r['fraction_of_bf16_roofline']:>12.3f} {r['peak_memory_bytes'] / 2**30:>9.2f}"
            )
    for r in result["single_image"]:
        print(
            f"{r['mode']:<28} "
            + (f"skipped: {r['skipped']}" if "skipped" in r else f"{r['latency_ms']:.2f} ms ({r['views']} views)")
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
