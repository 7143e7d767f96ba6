"""Inference benchmark on one bundle and one set of images, all in one run:

* PyTorch eager vs ONNX Runtime (CPU) throughput at batch 1 and 32;
* the batched multi-view pass ([B·V, 3, S, S] in one forward) vs a Python loop over views;
* the full multi-view spec run in view chunks (views per backbone pass) sized by measurement:
  every chunk size is timed, the fastest kept, and compared with one all-views pass and the loop;
* an INT8 dynamically quantized ONNX variant: speed, size, and its accuracy / decision delta;
  INT8 is kept (``int8.keep``) only where it is faster than fp32 at every batch size measured.

Images and labels come from VAL_CALIB of the artifact store next to the bundle (the demo's
DAGSTER_HOME by default); without a store, synthetic scenes are rendered. ``--profile tiny``
measures that profile's model (random init, exported to ONNX here) instead of a bundle: the
tiny ViT, where MatMuls dominate.

    python bench/bench_inference.py [--bundle DIR | --profile tiny] [--images N] [--threads T] [--out JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _images(bundle: Path, n: int, size: int) -> tuple[torch.Tensor, np.ndarray | None, str]:
    store = bundle.parent
    splits = store / "splits" / "splits.parquet"
    if splits.exists():
        import pandas as pd

        from roadwork_ml.data.transforms import load_image_batch

        df = pd.read_parquet(splits)
        rows = df[df["split"] == "val_calib"].sort_values("record_id").head(n)
        paths = [store / m / p for m, p in zip(rows["manifest_dir"], rows["path"], strict=False)]
        return load_image_batch(paths, size), rows["label"].to_numpy(), f"VAL_CALIB of {store}"
    from roadwork_ml.config import load_profile
    from roadwork_ml.data.synthetic import generate_source
    from roadwork_ml.data.transforms import image_bytes_to_tensor

    style = load_profile("demo").data.sources["natix"].synthetic
    recs = list(generate_source("natix", style, 128, 0, n))
    return (
        torch.stack([image_bytes_to_tensor(r.image_bytes, size) for r in recs]),
        np.array([r.label for r in recs]),
        "synthetic natix scenes",
    )


def _throughput(fn, x: np.ndarray | torch.Tensor, batch: int, min_seconds: float = 2.0) -> float:
    """Images per second of ``fn`` over ``x`` in batches of ``batch`` (one warm-up pass)."""
    fn(x[:batch])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or n == 0:
        for i in range(0, len(x) - batch + 1, batch):
            fn(x[i : i + batch])
            n += batch
    return n / (time.perf_counter() - start)


def _interleaved(fns: dict, x, batch: int, rounds: int = 7, seconds: float = 0.7) -> dict[str, float]:
    """Median images/s of each function over ``rounds`` rounds that visit every function in turn."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn(x[:batch])
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(_throughput(fn, x, batch, min_seconds=seconds))
    return {k: float(np.median(v)) for k, v in samples.items()}


def _batched(mv):
    """One forward over all views of the batch: [B·V, 3, S, S]."""

    @torch.no_grad()
    def run(batch: torch.Tensor):
        return mv(batch)

    return run


def _view_loop(mv):
    """The same computation as a Python loop over views: V forwards of [B, 3, S, S]."""
    from roadwork_ml.models.multiview import make_views

    @torch.no_grad()
    def run(batch: torch.Tensor):
        views = make_views(batch, mv.spec)
        return [mv.model.forward_with_embedding(views[:, v]) for v in range(views.shape[1])]

    return run


def _profile_model(name: str, tmp: Path):
    """A random-init multi-view model of profile ``name`` (mean aggregation), exported to ONNX in ``tmp``."""
    from roadwork_ml.config import load_profile
    from roadwork_ml.export.onnx_export import export_onnx
    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.models.inference import view_spec
    from roadwork_ml.models.multiview import MultiViewClassifier

    p = load_profile(name)
    torch.manual_seed(0)
    mv = MultiViewClassifier(build_classifier(p.model), view_spec(p.model, p.inference), "mean").eval()
    export_onnx(mv, tmp / "model.onnx", p.inference.input_size)
    record = {
        "model": p.model.model_dump(mode="json"),
        "n_views": mv.spec.n_views,
        "input_size": p.inference.input_size,
    }
    return mv, record, tmp / "model.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    home = Path(os.environ.get("DAGSTER_HOME", "dagster_home"))
    parser.add_argument("--bundle", type=Path, default=home / "artifacts" / "bundle")
    parser.add_argument(
        "--profile", default=None, help="measure this profile's model (random init) instead of a bundle"
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/inference.json"))
    args = parser.parse_args()

    from safetensors.torch import load_file

    from roadwork_ml.export.bundle import load_bundle, rebuild_model
    from roadwork_ml.export.onnx_export import OnnxRunner
    from roadwork_ml.export.quantize import quantize_int8_dynamic
    from roadwork_ml.numerics import softmax

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    if args.profile:
        mv, record, onnx_path = _profile_model(args.profile, tmp)
        args.bundle = Path(f"profile:{args.profile}")
    else:
        _manifest, record, _ = load_bundle(args.bundle)
        mv = rebuild_model(record, load_file(str(args.bundle / "model.safetensors")))
        onnx_path = args.bundle / "model.onnx"
    size = record["input_size"]
    images_u8, labels, origin = _images(args.bundle, args.images, size)
    x = images_u8.float().div(255.0)
    xn = x.numpy()
    ort_fp32 = OnnxRunner(onnx_path, intra_op_threads=args.threads)
    q = quantize_int8_dynamic(onnx_path, tmp / "model.int8.onnx")
    ort_int8 = OnnxRunner(tmp / "model.int8.onnx", intra_op_threads=args.threads)

    eager, per_view_loop = _batched(mv), _view_loop(mv)

    rows = []
    for b in (1, 32):
        bb = min(b, len(x))
        t_eager = _throughput(eager, x, bb)
        t_ort = _throughput(ort_fp32.run, xn, bb)
        t_int8 = _throughput(ort_int8.run, xn, bb)
        t_loop = _throughput(per_view_loop, x, bb)
        rows.append(
            {
                "batch": bb,
                "torch_eager_img_s": t_eager,
                "onnxruntime_img_s": t_ort,
                "onnxruntime_int8_img_s": t_int8,
                "per_view_loop_img_s": t_loop,
                "ort_vs_eager": t_ort / t_eager,
                "int8_vs_fp32_ort": t_int8 / t_ort,
                "batched_vs_view_loop": t_eager / t_loop,
            }
        )

    # the same weights on the full multi-view spec (1 global + 3x3 tiles [+ flips]): where a
    # per-view loop hurts most
    from dataclasses import replace as dc_replace

    from roadwork_ml.models.multiview import MultiViewClassifier, measure_view_chunk

    full = MultiViewClassifier(mv.model, dc_replace(mv.spec, multi=True), "mean").eval()
    full_batched, full_loop = _batched(full), _view_loop(full)

    bb = min(32, len(x))
    best_chunk, chunk_rates = measure_view_chunk(full, x[:bb], min_seconds=2.0)
    chunked = MultiViewClassifier(mv.model, full.spec, "mean", view_chunk=best_chunk).eval()
    full.view_chunk = 0
    # interleaved rounds, median per variant: a shared CPU's load drifts between consecutive timings
    rates = _interleaved({"batched": full_batched, "loop": full_loop, "chunked": _batched(chunked)}, x, bb)
    multi = {
        "views": full.spec.n_views,
        "batch": bb,
        "batched_img_s": rates["batched"],
        "loop_img_s": rates["loop"],
        "chunked_img_s": rates["chunked"],
    }
    multi.update({"best_view_chunk": best_chunk, "chunk_sweep_img_s": {str(k): v for k, v in chunk_rates.items()}})
    multi["batched_vs_view_loop"] = multi["batched_img_s"] / multi["loop_img_s"]
    multi["chunked_vs_view_loop"] = multi["chunked_img_s"] / multi["loop_img_s"]

    p32 = softmax(ort_fp32.run_batched(xn, 32)["logits"])[:, 1]
    p8 = softmax(ort_int8.run_batched(xn, 32)["logits"])[:, 1]
    acc = {
        "fp32_accuracy": float(((p32 > 0.5) == labels).mean()),
        "int8_accuracy": float(((p8 > 0.5) == labels).mean()),
    }
    acc["keep"] = all(r["int8_vs_fp32_ort"] > 1.0 for r in rows)  # only where INT8 is faster at every batch size
    acc.update(
        {
            "accuracy_delta": acc["int8_accuracy"] - acc["fp32_accuracy"],
            "decision_agreement": float(((p32 > 0.5) == (p8 > 0.5)).mean()),
            "max_prob_diff": float(np.abs(p32 - p8).max()),
            **{k: v for k, v in q.items() if isinstance(v, (int, float))},
        }
    )
    result = {
        "bundle": str(args.bundle),
        "backbone": record["model"]["backbone"],
        "views_per_image": record["n_views"],
        "input_size": size,
        "images": len(x),
        "image_source": origin,
        "threads": args.threads,
        "throughput": rows,
        "multi_view": multi,
        "int8": acc,
    }

    print(
        f"bundle {args.bundle} ({record['model']['backbone']}, {record['n_views']} views at {size}px), {len(x)} images from {origin}, {args.threads} threads"
    )
    print(
        f"{'batch':>5} {'eager img/s':>12} {'ORT img/s':>10} {'ORT int8':>9} {'view loop':>10} {'ORT/eager':>10} {'int8/fp32':>10} {'batched/loop':>13}"
    )
    for r in rows:
        print(
            f"{r['batch']:>5} {r['torch_eager_img_s']:>12.1f} {r['onnxruntime_img_s']:>10.1f} {r['onnxruntime_int8_img_s']:>9.1f} {r['per_view_loop_img_s']:>10.1f} {r['ort_vs_eager']:>10.2f} {r['int8_vs_fp32_ort']:>10.2f} {r['batched_vs_view_loop']:>13.2f}"
        )
    print(
        f"multi-view spec ({multi['views']} views), batch {multi['batch']}: one pass {multi['batched_img_s']:.1f} img/s, per-view loop {multi['loop_img_s']:.1f} img/s ({multi['batched_vs_view_loop']:.2f}x); "
        f"view chunks of {multi['best_view_chunk']} (0 = all) {multi['chunked_img_s']:.1f} img/s = {multi['chunked_vs_view_loop']:.2f}x the loop; sweep {multi['chunk_sweep_img_s']}"
    )
    print(
        f"INT8 kept: {acc['keep']} (int8/fp32 ORT speed per batch size: {[round(r['int8_vs_fp32_ort'], 2) for r in rows]})"
    )
    print(
        f"INT8: accuracy {acc['fp32_accuracy']:.4f} → {acc['int8_accuracy']:.4f} (Δ {acc['accuracy_delta']:+.4f}), decisions agree {acc['decision_agreement']:.4f}, max |Δp| {acc['max_prob_diff']:.4f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
