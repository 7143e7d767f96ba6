"""GPU inference throughput of the served multi-view model: PyTorch eager (fp32, bf16 autocast),
ONNX Runtime CUDA EP, TensorRT FP16 — and whether the engine agrees with the ONNX model.

For a CUDA machine with TensorRT 10 (``pip install -e '.[gpu]'``). Without either it prints
why and exits 0 having measured nothing.

    python bench/gpu_tensorrt.py                                # demo-sized resnet10t, random init
    python bench/gpu_tensorrt.py --bundle-onnx BUNDLE/model.onnx --batch 1 32 64

With ``--bundle-onnx``, the PyTorch rows need the bundle's ``config.json`` and
``model.safetensors`` next to the ONNX file (otherwise they are skipped). Every backend is
timed on device-resident inputs (ONNX Runtime through IO binding), after ``--warmup`` calls,
with CUDA synchronization around ``--iters`` calls; ``x_torch_fp32`` is the throughput ratio to
PyTorch fp32 eager at the same batch. Agreement: decisions at 0.5 and max |Δ| of the
aggregated probability vs ONNX Runtime on CPU (fp32), on ``--agree-n`` random images.

Writes ``bench/results/gpu_tensorrt.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from roadwork_ml.artifacts import atomic_write_json  # noqa: E402
from roadwork_ml.export.onnx_export import OUTPUT_NAMES, OnnxRunner, export_onnx, onnx_signature  # noqa: E402
from roadwork_ml.export.tensorrt_build import TensorRTRunner, build_engine, engine_agreement, tensorrt_available  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], batch: int, iters: int, warmup: int) -> dict:
    """Mean ms per call of ``fn`` over ``iters`` calls after ``warmup`` calls, and images/s."""
    for _ in range(warmup):
        fn()
    _sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync()
    ms = 1e3 * (time.perf_counter() - t0) / iters
    return {"ms_per_batch": ms, "images_per_s": batch * 1e3 / ms}


class TorchRunner:
    """``run(np images) -> {name: np}`` over the PyTorch model (optionally bf16 autocast), for agreement."""

    def __init__(self, mv: torch.nn.Module, device: torch.device, bf16: bool):
        self.mv, self.device, self.bf16 = mv, device, bf16

    def __call__(self, x: torch.Tensor):
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.mv(x)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = self(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in zip(OUTPUT_NAMES, out, strict=False)}


def load_model(bundle_onnx: Path | None, workdir: Path) -> tuple[torch.nn.Module | None, Path, int, str]:
    """(PyTorch model or None, ONNX path, input size S, description)."""
    if bundle_onnx is not None:
        if not bundle_onnx.is_file():
            raise SystemExit(f"gpu_tensorrt: {bundle_onnx} does not exist")
        ins, _ = onnx_signature(bundle_onnx)
        size = int(next(iter(ins.values()))[-1])
        config, weights = bundle_onnx.parent / "config.json", bundle_onnx.parent / "model.safetensors"
        mv = None
        if config.is_file() and weights.is_file():
            import json

            from safetensors.torch import load_file

            from roadwork_ml.export.bundle import rebuild_model

            mv = rebuild_model(json.loads(config.read_text()), load_file(str(weights)))
        else:
            print(f"no config.json + model.safetensors next to {bundle_onnx}: PyTorch rows skipped")
        return mv, bundle_onnx, size, f"bundle {bundle_onnx}"
    from roadwork_ml.config import load_profile
    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.models.inference import multiview_model

    p = load_profile("demo")
    torch.manual_seed(0)
    model = build_classifier(p.model)
    choice = {"multi_view": p.inference.multi_view, "aggregator": "mean", "top_k": 1}
    mv = multiview_model(model, p.model, p.inference, choice)
    path = workdir / "model.onnx"
    export_onnx(mv, path, p.inference.input_size)
    return (
        mv,
        path,
        p.inference.input_size,
        f"demo profile: {p.model.backbone} at {p.model.img_size} px, input {p.inference.input_size} px, random init",
    )


def ort_cuda_fn(onnx_path: Path, x: torch.Tensor) -> Callable[[], object]:
    """ONNX Runtime CUDA EP over device-resident ``x`` (IO binding: no host copies)."""
    runner = OnnxRunner(onnx_path, providers=("CUDAExecutionProvider",))
    binding = runner.session.io_binding()
    binding.bind_input(
        name=runner.input_name,
        device_type="cuda",
        device_id=x.device.index or 0,
        element_type=np.float32,
        shape=tuple(x.shape),
        buffer_ptr=x.data_ptr(),
    )
    for name in runner.output_names:
        binding.bind_output(name, "cuda", x.device.index or 0)
    return lambda: runner.session.run_with_iobinding(binding)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'backend':28s} {'batch':>5s} {'ms/batch':>10s} {'images/s':>10s} {'x torch fp32':>13s}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:28s} {r['batch']:5d}   skipped: {r['error']}")
            continue
        ratio = f"{r['x_torch_fp32']:.2f}" if r.get("x_torch_fp32") is not None else "-"
        print(f"{r['backend']:28s} {r['batch']:5d} {r['ms_per_batch']:10.3f} {r['images_per_s']:10.0f} {ratio:>13s}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--bundle-onnx",
        type=Path,
        default=None,
        help="a bundle's model.onnx (default: build a demo-sized resnet10t model)",
    )
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes (images per call)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=64, help="the engine's largest batch")
    ap.add_argument("--workspace-gb", type=float, default=4)
    ap.add_argument("--agree-n", type=int, default=512, help="images for the agreement check")
    ap.add_argument("--min-agreement", type=float, default=0.99)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_tensorrt.json")
    args = ap.parse_args(argv)

    ok, reason = tensorrt_available()
    if not ok:
        print(f"gpu_tensorrt: skipped, nothing measured: {reason}. Run it on a CUDA machine with TensorRT 10.x.")
        return 0
    device = torch.device("cuda", 0)
    import onnxruntime as ort
    import tensorrt as trt

    batches = sorted(set(args.batch))
    max_batch = max(args.max_batch, *batches)
    with tempfile.TemporaryDirectory(prefix="roadwork-gpu-bench-") as tmp:
        work = Path(tmp)
        mv, onnx_path, size, source = load_model(args.bundle_onnx, work)
        print(
            f"{reason}; onnxruntime {ort.__version__} providers {ort.get_available_providers()}; torch {torch.__version__}"
        )
        print(f"model: {source}")
        t0 = time.perf_counter()
        engine = build_engine(
            onnx_path,
            work / "model.plan",
            size,
            min_batch=1,
            opt_batch=max(batches),
            max_batch=max_batch,
            fp16=True,
            workspace_gb=args.workspace_gb,
        )
        print(
            f"engine built in {time.perf_counter() - t0:.1f} s ({engine.size_bytes / 2**20:.1f} MiB, batches 1..{max_batch}, opt {max(batches)})"
        )
        trt_runner = TensorRTRunner(engine.path)

        rows: list[dict] = []
        backends: list[tuple[str, Callable[[torch.Tensor], Callable[[], object]]]] = []
        if mv is not None:
            mv = mv.to(device).eval()
            fp32, bf16 = TorchRunner(mv, device, False), TorchRunner(mv, device, True)
            backends += [
                ("torch eager fp32", lambda x: lambda: fp32(x)),
                ("torch eager bf16 autocast", lambda x: lambda: bf16(x)),
            ]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            backends.append(("onnxruntime CUDA EP fp32", lambda x: ort_cuda_fn(onnx_path, x)))
        else:
            rows += [
                {
                    "backend": "onnxruntime CUDA EP fp32",
                    "batch": b,
                    "error": "CUDAExecutionProvider not in this onnxruntime build (install onnxruntime-gpu)",
                }
                for b in batches
            ]
        backends.append(("tensorrt fp16", lambda x: lambda: trt_runner.run_torch(x)))

        gen = torch.Generator(device="cpu").manual_seed(0)
        for b in batches:
            x = torch.rand(b, 3, size, size, generator=gen).to(device)
            base = None
            for name, make in backends:
                try:
                    row = {"backend": name, "batch": b, **measure(make(x), b, args.iters, args.warmup)}
                except Exception as e:  # noqa: BLE001 - one backend failing must not lose the others' numbers
                    row = {"backend": name, "batch": b, "error": f"{type(e).__name__}: {e}"}
                if name == "torch eager fp32" and "error" not in row:
                    base = row["images_per_s"]
                row["x_torch_fp32"] = row["images_per_s"] / base if base and "error" not in row else None
                rows.append(row)
                print(
                    f"  {name:28s} batch {b:3d}: "
                    + (f"{row['images_per_s']:9.0f} images/s" if "error" not in row else f"skipped: {row['error']}"),
                    flush=True,
                )

        images = np.random.default_rng(1).random((args.agree_n, 3, size, size), dtype=np.float32)
        cpu_ref = OnnxRunner(onnx_path)
        bs = min(32, max_batch)
        agreement = {
            "tensorrt_fp16_vs_onnx": engine_agreement(
                cpu_ref, trt_runner, images, tolerance=args.min_agreement, batch_size=bs, raise_on_reject=False
            )
        }
        if mv is not None:
            agreement["torch_bf16_vs_onnx"] = engine_agreement(
                cpu_ref, bf16, images, tolerance=args.min_agreement, batch_size=bs, raise_on_reject=False
            )
            agreement["torch_fp32_vs_onnx"] = engine_agreement(
                cpu_ref, fp32, images, tolerance=args.min_agreement, batch_size=bs, raise_on_reject=False
            )

    print_table(rows)
    print("\nagreement vs ONNX Runtime CPU fp32:")
    for k, a in agreement.items():
        print(
            f"  {k:24s} decisions {a['decision_agreement']:.4f}  max |Δp| {a['max_prob_diff']:.2e}  {'accepted' if a['accepted'] else 'REJECTED: ' + str(a['reason'])}"
        )
    result = {
        "rows": rows,
        "agreement": agreement,
        "engine": {k: v for k, v in engine.to_dict().items() if k not in ("path", "onnx_path")},
        "meta": {
            "device": torch.cuda.get_device_name(0),
            "tensorrt": trt.__version__,
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
            "model": source,
            "input_size": size,
            "iters": args.iters,
            "warmup": args.warmup,
            "note": "inputs are device-resident for every backend; x_torch_fp32 = images/s ratio to PyTorch fp32 eager at the same batch",
        },
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
