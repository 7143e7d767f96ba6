"""Synthetic scene generator throughput, images per second on ONE core.

For each source style (production profile) and image size, generates N images with
``roadwork_ml.data.synthetic.generate_source`` (scene spec + render + JPEG encode + record)
and reports images/s per core from the process's CPU time (robust to other load on the
machine) and from wall time. The peer is the floor of any image pipeline: JPEG-encoding an
already rendered frame of the same size and quality; ``x_floor`` says how many times that
floor one synthetic image costs.

    python bench/bench_synthetic.py                 # N=300 per source and size
    python bench/bench_synthetic.py --n 1000 --sizes 64,128,224,448

Writes ``bench/results/synthetic.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# one core, no hidden thread pools (set before numpy is imported)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import PIL  # noqa: E402

from roadwork_ml.config import SyntheticStyle, load_profile_dict  # noqa: E402
from roadwork_ml.data.synthetic import encode_jpeg, generate_source, make_sequence, render_scene  # noqa: E402


def _pin_one_core() -> str:
    if hasattr(os, "sched_getaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity on this platform)"


def _styles(profile: str) -> dict[str, SyntheticStyle]:
    raw = load_profile_dict(profile)
    return {name: SyntheticStyle(**cfg["synthetic"]) for name, cfg in raw["data"]["sources"].items()}


def _measure(fn) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - c0, time.perf_counter() - w0


def bench(n: int, sizes: list[int], sources: list[str], profile: str, seed: int) -> dict:
    styles = _styles(profile)
    rows = []
    for size in sizes:
        for source in sources:
            style = styles[source]
            list(generate_source(source, style, size, seed + 1, 20))  # warm caches (noise tiles, masks)
            out: list = []

            def run(out=out, source=source, style=style, size=size) -> None:
                out.extend(generate_source(source, style, size, seed, n))

            cpu, wall = _measure(run)
            # the floor: JPEG-encode already rendered frames of the same size and quality
            specs = [f for i in range(8) for f in make_sequence(source, style, seed, i)][:24]
            frames = [(render_scene(s, size, np.random.default_rng(0)), s.jpeg_quality) for s in specs]
            reps = max(1, n // len(frames))

            def floor(frames=frames, reps=reps) -> None:
                for _ in range(reps):
                    for im, q in frames:
                        encode_jpeg(im, q)

            fcpu, _ = _measure(floor)
            floor_per_s = reps * len(frames) / max(fcpu, 1e-9)
            row = {
                "source": source,
                "image_size": size,
                "n": n,
                "images_per_s_cpu": n / max(cpu, 1e-9),
                "images_per_s_wall": n / max(wall, 1e-9),
                "ms_per_image_cpu": 1e3 * cpu / n,
                "jpeg_floor_images_per_s": floor_per_s,
                "x_floor": floor_per_s / (n / max(cpu, 1e-9)),
                "mean_jpeg_bytes": float(np.mean([len(r.image_bytes) for r in out])),
                "positive_share": float(np.mean([r.true_label for r in out])),
            }
            rows.append(row)
            print(
                f"{source:10s} {size:4d}px  {row['images_per_s_cpu']:7.0f} img/s/core (cpu)  {row['images_per_s_wall']:7.0f} (wall)"
                f"  {row['ms_per_image_cpu']:6.2f} ms  x{row['x_floor']:5.1f} jpeg floor  {row['mean_jpeg_bytes'] / 1024:6.1f} KiB",
                flush=True,
            )
    summary = {}
    for size in sizes:
        sel = [r for r in rows if r["image_size"] == size]
        total_cpu = sum(r["n"] / r["images_per_s_cpu"] for r in sel)
        summary[str(size)] = {"images_per_s_cpu_all_sources": sum(r["n"] for r in sel) / total_cpu}
    return {"rows": rows, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="images per source and size")
    ap.add_argument("--sizes", default="64,128,224")
    ap.add_argument("--sources", default="natix,roadwork,mapillary")
    ap.add_argument("--profile", default="production")
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "synthetic.json"))
    args = ap.parse_args(argv)
    pinned = _pin_one_core()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    sources = [s for s in args.sources.split(",") if s]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    print(f"synthetic generator, one core ({pinned}); load average {load}; N={args.n}")
    print(f"{'source':10s} {'size':>6s}  {'throughput':>24s}")
    result = bench(args.n, sizes, sources, args.profile, args.seed)
    print("\nall sources together, images/s per core (cpu time):")
    for size, s in result["summary"].items():
        print(f"  {size:>4s} px: {s['images_per_s_cpu_all_sources']:7.0f}")
    result["meta"] = {
        "pinning": pinned,
        "load_average_at_start": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "profile": args.profile,
        "seed": args.seed,
        "note": "images_per_s_cpu uses process CPU time (what one core delivers); wall time also counts waiting for a busy machine",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
