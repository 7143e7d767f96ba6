"""Streaming DataLoader vs the in-memory path: peak RSS and images/s, in one run.

Generates JPEGs on disk once (a temp dir, or --dir to keep them), then measures each path in
its own child process so peak RSS is not shared between them:

* ``in_memory``: today's path, ``load_image_batch`` decodes the whole split into one uint8
  tensor, then batches are sliced from it (an epoch = decode + iterate; later epochs iterate only);
* ``streaming``: :class:`roadwork_ml.training.dataset.ManifestImageDataset` through
  ``build_loader`` with ``--workers`` decode processes (sha256 verified, safe decoder).

Peak memory is sampled every 50 ms over the measuring process and its workers as the sum of
their PSS (proportional set size: a page shared by k processes counts 1/k in each, so the
sum is the resident memory of the whole group; a plain RSS sum counts torch's shared
libraries once per worker). Workers are forked, as in the trainer. Throughput is images delivered as
float batches per second of wall time.

Sizes: ``demo`` = the demo's TRAIN split (2,520 images stored at 128 px, decoded to 64 px);
``large`` = ``--n-large`` images stored at 512 px decoded to 448 px (the issue's 20,000 x 448).
The in-memory path at the large size needs N x 3 x 448 x 448 bytes (12 GB at 20,000); it
runs only with ``--inmemory-large`` and is otherwise reported as that size, not measured.

    python bench/bench_dataloader.py                      # demo + 20,000 x 448
    python bench/bench_dataloader.py --n-large 5000       # what fits a busy shared CPU
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import psutil
from PIL import Image

DEMO = {"n": 2520, "stored": 128, "size": 64, "batch": 64}
LARGE = {"stored": 512, "size": 448, "batch": 64}


def _make_images(root: Path, n: int, side: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` JPEGs (q90) of ``side`` px: smooth gradients plus noise, cheap to make, realistic to decode."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    bases = []
    for _ in range(16):
        a = rng.uniform(0, 255, (3, 3))
        img = a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None] * (1 - xx) * yy
        bases.append(np.clip(img.transpose(1, 2, 0) + rng.normal(0, 12, (side, side, 3)), 0, 255).astype(np.uint8))
    paths, digests = [], []
    for i in range(n):
        p = root / f"{i:06d}.jpg"
        if not p.exists():
            arr = np.roll(bases[i % len(bases)], shift=(i * 7) % side, axis=1)
            Image.fromarray(arr).save(p, format="JPEG", quality=90)
        paths.append(str(p))
        digests.append(hashlib.sha256(p.read_bytes()).hexdigest())
    return paths, digests


class _PeakRss:
    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_full_info().pss
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def _measure(
    kind: str, paths: list[str], digests: list[str], size: int, batch: int, workers: int, epochs: int, q
) -> None:
    import torch

    from roadwork_ml.config import DecodeConfig, LoaderConfig
    from roadwork_ml.contracts import Split
    from roadwork_ml.data.transforms import load_image_batch, to_float
    from roadwork_ml.training.dataset import ManifestImageDataset, build_loader, iterate_batches

    torch.set_num_threads(1)
    labels = np.arange(len(paths)) % 2
    times, checksum = [], 0.0
    with _PeakRss() as rss:
        if kind == "in_memory":
            t0 = time.perf_counter()
            images = load_image_batch(paths, size)
            for _ in range(epochs):
                order = torch.randperm(len(paths))
                for s in range(0, len(paths), batch):
                    x = to_float(images[order[s : s + batch]])
                    checksum += float(x[:, :, 0, 0].sum())
                times.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
        else:
            decode = DecodeConfig(max_pixels=50_000_000, min_side=16, store_max_side=4096, store_jpeg_quality=90)
            ds = ManifestImageDataset(paths, labels, Split.TRAIN, size, decode, sha256=digests)
            cfg = LoaderConfig(num_workers=workers, persistent_workers=workers > 0, prefetch_factor=2)
            loader = build_loader(ds, cfg, batch, shuffle=True)
            for epoch in range(epochs):
                t0 = time.perf_counter()
                ds.set_epoch(epoch)
                for b in iterate_batches(loader):
                    x = to_float(b.images)
                    checksum += float(x[:, :, 0, 0].sum())
                times.append(time.perf_counter() - t0)
            del loader
    q.put(
        {
            "kind": kind,
            "n": len(paths),
            "size": size,
            "epoch_seconds": times,
            "images_per_s": [len(paths) / t for t in times],
            "peak_rss_gb": rss.peak / 1e9,
            "checksum": checksum,
        }
    )


def _run(kind: str, *args) -> dict:
    # fork: the parent has not imported torch, so each child starts small and its workers fork from it
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(kind, *args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-large", type=int, default=20_000, help="images at 448 px (0 = skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per path (the first includes the in-memory decode)")
    ap.add_argument(
        "--inmemory-large",
        action="store_true",
        help="also run the in-memory path at the large size (N x 3 x 448^2 bytes)",
    )
    ap.add_argument(
        "--dir", type=Path, default=None, help="keep the generated images here (default: a temp dir, removed)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_dataloader_"))
    results: dict = {
        "workers": args.workers,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
    }
    try:
        t0 = time.perf_counter()
        demo_paths, demo_sha = _make_images(root / "demo", DEMO["n"], DEMO["stored"])
        print(f"generated {DEMO['n']} demo images in {time.perf_counter() - t0:.0f}s", flush=True)
        common = (DEMO["size"], DEMO["batch"], args.workers, args.epochs)
        mem = _run("in_memory", demo_paths, demo_sha, *common)
        stream = _run("streaming", demo_paths, demo_sha, *common)
        results["demo"] = {
            "in_memory": mem,
            "streaming": stream,
            "throughput_ratio_epoch1": stream["images_per_s"][0] / mem["images_per_s"][0],
            "same_pixels": abs(mem["checksum"] - stream["checksum"]) < 1e-3 * max(1.0, abs(mem["checksum"])),
        }
        print(json.dumps(results["demo"], indent=1, default=float), flush=True)
        if args.n_large:
            t0 = time.perf_counter()
            paths, sha = _make_images(root / "large", args.n_large, LARGE["stored"], seed=1)
            print(f"generated {args.n_large} large images in {time.perf_counter() - t0:.0f}s", flush=True)
            common = (LARGE["size"], LARGE["batch"], args.workers, 1)
            large = {
                "streaming": _run("streaming", paths, sha, *common),
                "in_memory_tensor_gb": args.n_large * 3 * LARGE["size"] ** 2 / 1e9,
            }
            if args.inmemory_large:
                large["in_memory"] = _run("in_memory", paths, sha, *common)
            results["large"] = large
            print(json.dumps(large, indent=1, default=float), flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    results["load_avg_end"] = os.getloadavg()
    d = results["demo"]
    print(
        f"\nDEMO {DEMO['n']} x {DEMO['size']}px: in-memory {d['in_memory']['images_per_s'][0]:.0f} img/s (epoch 1, decode included), "
        f"peak {d['in_memory']['peak_rss_gb']:.2f} GB | streaming ({args.workers} workers) {d['streaming']['images_per_s'][0]:.0f} img/s, "
        f"peak {d['streaming']['peak_rss_gb']:.2f} GB | ratio {d['throughput_ratio_epoch1']:.2f} (goal >= 0.9); "
        f"later epochs: in-memory {d['in_memory']['images_per_s'][-1]:.0f}, streaming {d['streaming']['images_per_s'][-1]:.0f} img/s"
    )
    if "large" in results:
        lg = results["large"]
        print(
            f"LARGE {args.n_large} x {LARGE['size']}px: streaming {lg['streaming']['images_per_s'][0]:.0f} img/s, peak RSS "
            f"{lg['streaming']['peak_rss_gb']:.2f} GB (goal < 3 GB); in-memory tensor alone {lg['in_memory_tensor_gb']:.1f} GB"
            + (f", measured peak {lg['in_memory']['peak_rss_gb']:.2f} GB" if "in_memory" in lg else "")
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
