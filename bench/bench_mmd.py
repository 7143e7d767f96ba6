"""MMD permutation test: ours (one kernel, all permutations as one matmul) vs alibi-detect.

Same data for both: ``n`` reference vs ``n`` current rows of ``d``-dim float32 Gaussians,
the current one shifted by ``shift`` in every dimension. Same bandwidth: the median
heuristic of the reference (alibi's convention), computed once and passed to both.
alibi-detect 0.13 ``MMDDrift(backend="pytorch", n_permutations=P, sigma=...)`` runs in its own
venv (``make peers``: it needs numpy < 2) through ``bench/peers/alibi_mmd.py`` and is timed there,
from construction (it builds the reference kernel there) through ``score``; ours is one
``mmd_permutation_test`` call (kernel build + P permutations), once per dtype.

    python bench/bench_mmd.py                       # 5000 vs 5000 x 384, P = 100, CPU
    python bench/bench_mmd.py --n 2000 --device cuda

Prints a table and writes ``bench/results/mmd.json``. Ratios, not absolute seconds, are
the result: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from roadwork_ml.artifacts import atomic_write_json  # noqa: E402
from roadwork_ml.monitoring.drift_stats import median_heuristic_sigma, mmd_permutation_test  # noqa: E402


def _alibi(
    x: np.ndarray, y: np.ndarray, sigma: float, n_perm: int, device: str, peers_python: str
) -> tuple[float, float, float]:
    """alibi-detect in its own venv (it needs numpy < 2): bench/peers/alibi_mmd.py on the same arrays."""
    if not Path(peers_python).exists():
        sys.exit(f"{peers_python} not found: build the peers venv first (make peers)")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", y)
        out = subprocess.run(
            [
                peers_python,
                str(ROOT / "bench" / "peers" / "alibi_mmd.py"),
                "--x",
                str(Path(tmp) / "x.npy"),
                "--y",
                str(Path(tmp) / "y.npy"),
                "--permutations",
                str(n_perm),
                "--sigma",
                repr(sigma),
                "--device",
                device,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=3600,
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["seconds"], r["statistic"], r["p_value"]


def _ours(
    x: np.ndarray, y: np.ndarray, sigma: float, n_perm: int, device: str, dtype: torch.dtype, chunk: int
) -> tuple[float, float, float]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    r = mmd_permutation_test(x, y, n_permutations=n_perm, sigma=sigma, seed=0, device=device, dtype=dtype, chunk=chunk)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, r.statistic, r.p_value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="rows per sample")
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument(
        "--shift", type=float, default=0.03, help="mean shift of the current sample, per dimension (std units)"
    )
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mmd.json"))
    ap.add_argument(
        "--peers-python",
        default=str(ROOT / ".venv-peers" / "bin" / "python"),
        help="python of the venv that has alibi-detect (make peers)",
    )
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, args.d), dtype=np.float32)
    y = (rng.standard_normal((args.n, args.d), dtype=np.float32) + np.float32(args.shift)).astype(np.float32)
    t0 = time.perf_counter()
    sigma = median_heuristic_sigma(x, dtype=torch.float32, device=args.device)
    t_sigma = time.perf_counter() - t0

    rows = []
    t_alibi, s_alibi, p_alibi = _alibi(x, y, sigma, args.permutations, args.device, args.peers_python)
    rows.append(
        {"impl": "alibi-detect 0.13 (pytorch, float32)", "seconds": t_alibi, "statistic": s_alibi, "p_value": p_alibi}
    )
    for dtype in (torch.float32, torch.float64):
        t, s, p = _ours(x, y, sigma, args.permutations, args.device, dtype, args.chunk)
        rows.append(
            {"impl": f"roadwork ({str(dtype).removeprefix('torch.')})", "seconds": t, "statistic": s, "p_value": p}
        )
    # reference value of the statistic in float64 (ours, float64 kernel) for both float32 implementations
    exact = rows[2]["statistic"]
    for r in rows:
        r["ratio_vs_alibi"] = t_alibi / r["seconds"]
        r["abs_delta_statistic_vs_alibi"] = abs(r["statistic"] - s_alibi)
        r["abs_delta_statistic_vs_float64"] = abs(r["statistic"] - exact)

    print(
        f"MMD permutation test: {args.n} vs {args.n} x {args.d} float32, shift {args.shift}, P = {args.permutations}, "
        f"sigma {sigma:.4f} (median heuristic, {t_sigma:.2f} s), device {args.device}, torch threads {torch.get_num_threads()}"
    )
    head = f"{'implementation':40s} {'seconds':>9s} {'ratio':>7s} {'statistic':>14s} {'p-value':>9s} {'|Δstat| alibi':>14s} {'|Δstat| f64':>12s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['impl']:40s} {r['seconds']:9.3f} {r['ratio_vs_alibi']:7.1f} {r['statistic']:14.8e} {r['p_value']:9.4f} "
            f"{r['abs_delta_statistic_vs_alibi']:14.3e} {r['abs_delta_statistic_vs_float64']:12.3e}"
        )
    print("p-values: alibi = mean(null >= obs); ours = (1 + #{null >= obs}) / (P + 1); the permutations differ.")

    out = {
        "config": {
            "n": args.n,
            "d": args.d,
            "permutations": args.permutations,
            "shift": args.shift,
            "chunk": args.chunk,
            "device": args.device,
            "sigma": sigma,
            "sigma_seconds": t_sigma,
            "seed": args.seed,
        },
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "rows": rows,
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
