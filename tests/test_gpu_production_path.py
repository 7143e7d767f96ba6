"""bench/gpu_production_path.py runs end to end on CPU at tiny size (the GPU run uses the same code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_on_cpu_at_tiny_size(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [
        sys.executable,
        "bench/gpu_production_path.py",
        "--profile",
        "tiny",
        "--override",
        "train.finetune=lora",
        "--modes",
        "fp32_eager,bf16_sdpa,bf16_flash",
        "--batch",
        "2",
        "--iters",
        "2",
        "--gemm-n",
        "128",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["gemm_roofline_flops"]["fp32"] > 0 and r["backbone"] == "vit_small_patch14_dinov2"
    ls = r["lora_step"]
    assert 0 < ls["trainable_share"] < 0.5 and ls["step_seconds"] > 0
    rows = {x["mode"]: x for x in r["inference"]}
    for mode in ("fp32_eager", "bf16_sdpa"):
        assert (
            rows[mode]["images_per_s"] > 0
            and rows[mode]["flops_per_image"] > 0
            and rows[mode]["mfu_vs_measured_gemm"] > 0
        )
    # the counted FLOPs match the analytic count of 10 views of the tiny ViT (depth 1, D 48,
    # 4x4 patches of 8 px + CLS = 17 tokens): linear layers, attention matmuls, patch conv, head
    n, d, views = 17, 48, 10
    per_view = 2 * n * (3 * d * d + d * d + 8 * d * d) + 4 * n * n * d + 2 * 16 * (3 * 8 * 8) * d + 2 * d * 2
    assert rows["fp32_eager"]["flops_per_image"] == views * per_view
    if not torch.cuda.is_available():
        assert "skipped" in rows["bf16_flash"]
        assert {x["mode"] for x in r["single_image"]} == {"single_image_eager_fp32", "single_image_cuda_graph"}
