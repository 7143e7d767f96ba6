"""Load test of ``roadwork serve`` on loopback against the offline ONNX Runtime ceiling, in one run.

1. Offline ceiling, in this process, on the same encoded images: the ingestion decoder +
   :class:`BundlePredictor` (ONNX Runtime, the profile's ``serving.intra_op_threads``) in
   batches of ``export.triton.max_batch_size`` — what ``roadwork predict`` does — and ONNX
   Runtime alone on the pre-decoded tensors (the model's bare speed).
2. The server (a subprocess on 127.0.0.1, bearer token on, the profile's batching) under a
   closed loop of ``tritonclient.http`` clients at concurrency 1, 4, 16, 64: one image per
   request (BYTES input), ``--requests`` per level, each level also stopped after
   ``--max-seconds``. Throughput, p50 / p95 / p99 latency, errors, and the server's RSS
   before the first and after the last level.

    python bench/bench_serving.py [--bundle DIR] [--profile demo] [--requests 5000] [--out bench/results/serving.json]

Without ``--bundle`` a bundle of the profile's architecture (random init; the same compute
as the trained demo champion) is built in a temporary directory.
Goals (issue 14, 2 cores): ≥ 0.8× the offline ceiling at concurrency 16, p99 ≤ 250 ms,
zero errors over all requests, RSS growth ≤ 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-token-" + os.urandom(8).hex()


def build_bundle(profile_name: str, out: Path) -> Path:
    from tests.serving_fixtures import build_tiny_bundle

    return build_tiny_bundle(out, seed=0, profile=profile_name)


def make_images(profile, n: int) -> list[bytes]:
    """``n`` synthetic street scenes of the profile's natix style, JPEG-encoded as a camera sends them."""
    from roadwork_ml.data.synthetic import generate_source

    style = profile.data.sources["natix"].synthetic
    return [r.image_bytes for r in generate_source("natix", style, profile.data.image_size, 7, n)]


def offline_ceiling(bundle: Path, images: list[bytes], batch: int, threads: int, min_seconds: float = 5.0) -> dict:
    import torch

    from roadwork_ml.serving.predictor import BundlePredictor

    p = BundlePredictor(bundle, backend="onnx", threads=threads or None)
    p.predict_tensor(torch.stack([p.load_image(b) for b in images[:batch]]), batch)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds or n == 0:
        for i in range(0, len(images), batch):
            chunk = images[i : i + batch]
            p.predict_tensor(torch.stack([p.load_image(b) for b in chunk]), batch)
            n += len(chunk)
    with_decode = n / (time.perf_counter() - t0)
    x = torch.stack([p.load_image(b) for b in images]).float().div(255).numpy()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds or n == 0:
        for i in range(0, len(x), batch):
            p._onnx.run(x[i : i + batch])
            n += len(x[i : i + batch])
    return {
        "decode_plus_predict_img_s": with_decode,
        "onnxruntime_only_img_s": n / (time.perf_counter() - t0),
        "batch": batch,
        "threads": threads,
    }


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def load_level(url: str, images: list[bytes], concurrency: int, n_requests: int, max_seconds: float) -> dict:
    """Closed loop: ``concurrency`` threads, one tritonclient each, one image per request."""
    import tritonclient.http as hc

    headers = {"Authorization": f"Bearer {TOKEN}"}
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    counter = iter(range(n_requests))
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker(k: int) -> None:
        client = hc.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
        out = [hc.InferRequestedOutput("probability"), hc.InferRequestedOutput("decision")]
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            inp = hc.InferInput("image_bytes", [1], "BYTES")
            inp.set_data_from_numpy(np.array([images[i % len(images)]], dtype=object))
            t0 = time.perf_counter()
            try:
                res = client.infer("roadwork", [inp], outputs=out, headers=headers)
                if not np.isfinite(res.as_numpy("probability")).all():
                    raise ValueError("non-finite probability")
                lat[k].append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted, the loop goes on
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
        client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = np.array([x for per in lat for x in per]) * 1000
    return {
        "concurrency": concurrency,
        "requests": int(len(all_lat) + len(errors)),
        "ok": len(all_lat),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "seconds": wall,
        "throughput_img_s": len(all_lat) / wall,
        "p50_ms": float(np.percentile(all_lat, 50)) if len(all_lat) else None,
        "p95_ms": float(np.percentile(all_lat, 95)) if len(all_lat) else None,
        "p99_ms": float(np.percentile(all_lat, 99)) if len(all_lat) else None,
        "stopped_by_time": bool(len(all_lat) + len(errors) < n_requests),
    }


def server_batches(url: str) -> tuple[float, float]:
    import urllib.request

    req = urllib.request.Request(f"http://{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    vals = {}
    for line in text.splitlines():
        for name in ("roadwork_batch_size_sum", "roadwork_batch_size_count"):
            if line.startswith(name + " "):
                vals[name] = float(line.split()[-1])
    return vals.get("roadwork_batch_size_sum", 0.0), vals.get("roadwork_batch_size_count", 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--images", type=int, default=256, help="distinct images, cycled")
    ap.add_argument("--requests", type=int, default=5000, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--max-seconds", type=float, default=180.0, help="per level")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serving.json"))
    args = ap.parse_args()

    from roadwork_ml.config import load_profile
    from tests.serving_fixtures import start_server

    profile = load_profile(args.profile)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    bundle = Path(args.bundle) if args.bundle else build_bundle(args.profile, tmp / "bundle")
    images = make_images(profile, args.images)
    sv, tc = profile.serving, profile.export.triton
    print(
        f"bundle {bundle}; {len(images)} images, {np.mean([len(b) for b in images]) / 1024:.1f} KiB mean; profile {profile.name}",
        flush=True,
    )
    ceiling = offline_ceiling(bundle, images, tc.max_batch_size, sv.intra_op_threads)
    print(
        f"offline: decode+predict {ceiling['decode_plus_predict_img_s']:.1f} img/s, ORT only {ceiling['onnxruntime_only_img_s']:.1f} img/s",
        flush=True,
    )

    server = start_server(
        ["--bundle", str(bundle), "--profile", args.profile, "--log-level", "warning"],
        tmp,
        # glibc's per-thread malloc arenas grow the RSS of a many-threaded server in steps
        # (measured: +94 MB in one of three identical c=64 levels without, flat with 2 arenas)
        extra_env={"ROADWORK_SERVE_TOKEN": TOKEN, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")},
    )
    levels = []
    try:
        load_level(server.url, images, 4, 200, 60)  # warm-up, not reported
        rss_before = rss_mb(server.proc.pid)
        for c in (int(x) for x in args.levels.split(",")):
            s0, n0 = server_batches(server.url)
            lv = load_level(server.url, images, c, args.requests, args.max_seconds)
            s1, n1 = server_batches(server.url)
            lv["mean_server_batch"] = (s1 - s0) / max(n1 - n0, 1)
            lv["ratio_to_offline_decode_plus_predict"] = lv["throughput_img_s"] / ceiling["decode_plus_predict_img_s"]
            lv["server_rss_mb_after"] = rss_mb(server.proc.pid)
            levels.append(lv)
            print(
                f"c={c:3d}: {lv['throughput_img_s']:7.1f} img/s ({lv['ratio_to_offline_decode_plus_predict']:.2f}x offline), p50 {lv['p50_ms']:.1f} ms, p95 {lv['p95_ms']:.1f} ms, "
                f"p99 {lv['p99_ms']:.1f} ms, errors {lv['errors']}, mean batch {lv['mean_server_batch']:.1f}, {lv['requests']} requests, "
                f"server RSS {lv['server_rss_mb_after']:.0f} MB",
                flush=True,
            )
        rss_after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    # the machine is shared: measure the ceiling again and compare against the mean of both
    again = offline_ceiling(bundle, images, tc.max_batch_size, sv.intra_op_threads)
    ceiling = {
        "before": ceiling,
        "after": again,
        **{k: (ceiling[k] + again[k]) / 2 for k in ("decode_plus_predict_img_s", "onnxruntime_only_img_s")},
    }
    for lv in levels:
        lv["ratio_to_offline_decode_plus_predict"] = lv["throughput_img_s"] / ceiling["decode_plus_predict_img_s"]
        lv["ratio_to_onnxruntime_only"] = lv["throughput_img_s"] / ceiling["onnxruntime_only_img_s"]
    total = sum(lv["requests"] for lv in levels)
    at16 = next((lv for lv in levels if lv["concurrency"] == 16), None)
    goals = {
        "throughput_ratio_at_16_ge_0.8": None if at16 is None else at16["ratio_to_offline_decode_plus_predict"] >= 0.8,
        "p99_at_16_le_250ms": None if at16 is None else at16["p99_ms"] <= 250,
        "zero_errors": all(lv["errors"] == 0 for lv in levels),
        "rss_growth_le_50mb": rss_after - rss_before <= 50,
    }
    result = {
        "bundle": str(bundle),
        "profile": profile.name,
        "images": len(images),
        "total_requests": total,
        "offline": ceiling,
        "levels": levels,
        "server_rss_mb": {"before": rss_before, "after": rss_after, "growth": rss_after - rss_before},
        "goals": goals,
        "serving": sv.model_dump(),
        "batching": tc.model_dump(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "server_env": {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| concurrency | img/s | × offline (decode+predict) | p50 ms | p95 ms | p99 ms | errors | mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lv in levels:
        print(
            f"| {lv['concurrency']} | {lv['throughput_img_s']:.1f} | {lv['ratio_to_offline_decode_plus_predict']:.2f} | {lv['p50_ms']:.1f} | {lv['p95_ms']:.1f} | {lv['p99_ms']:.1f} | {lv['errors']} | {lv['mean_server_batch']:.1f} |"
        )
    print(
        f"\noffline ceiling (mean of before and after): {ceiling['decode_plus_predict_img_s']:.1f} img/s decode+predict, {ceiling['onnxruntime_only_img_s']:.1f} img/s ONNX Runtime only; "
        f"server RSS {rss_before:.0f} -> {rss_after:.0f} MB; {total} requests; goals {goals}\nwritten to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
