"""Where models run: the torch device and precision, and ONNX Runtime's execution providers.

On a CUDA machine every torch inference path runs on the GPU in the profile's precision
(bf16 autocast when ``train.amp``), and ONNX Runtime uses TensorRT / CUDA execution
providers when the installed onnxruntime build has them (the ``gpu`` extra installs
``onnxruntime-gpu``); otherwise everything runs on the CPU, as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from roadwork_ml.config import ModelConfig, Profile


def torch_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` when given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def memory_layout(module: torch.nn.Module, channels_last: bool) -> Iterator[torch.nn.Module]:
    """``module`` with its 4-D (convolution) weights in channels-last layout inside the block when
    ``channels_last`` (oneDNN's and cuDNN's fast path for convnets; a ViT has only its patch
    embedding to convert), in the default layout again afterwards, so state dicts and ONNX export
    see the usual tensors. The values are the same; only their order in memory changes. Nested
    blocks leave the layout to the outermost one."""
    conv = next((p for p in module.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1), None)
    if not channels_last or conv is None or conv.is_contiguous(memory_format=torch.channels_last):
        yield module
        return
    module.to(memory_format=torch.channels_last)
    try:
        yield module
    finally:
        module.to(memory_format=torch.contiguous_format)


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 when ``amp`` and ``device`` is CUDA; None (fp32) otherwise — CPU bf16 matmuls are
    slower than fp32 on most CPUs and would change every CPU-measured number."""
    return torch.bfloat16 if amp and device.type == "cuda" else None


def ort_providers(
    profile: Profile | None = None,
    available: Sequence[str] | None = None,
    exact: bool = False,
    cache_dir: str | None = None,
    tensorrt: bool = True,
) -> list[str | tuple[str, dict[str, Any]]]:
    """ONNX Runtime execution providers in priority order for this machine.

    TensorRT (fp16 when ``export.tensorrt.fp16``, engine cache in ``cache_dir``) then CUDA
    then CPU, keeping only what the installed onnxruntime offers (``available`` overrides
    ``onnxruntime.get_available_providers()``, for tests). ``exact``: numerics must match
    PyTorch fp32 (parity checks) — no TensorRT, and the CUDA EP without TF32. ``tensorrt=False``
    leaves the TensorRT EP out (where a separately built engine serves TensorRT instead).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = set(available)
    out: list[str | tuple[str, dict[str, Any]]] = []
    if tensorrt and not exact and "TensorrtExecutionProvider" in available:
        opts: dict[str, Any] = {"trt_fp16_enable": bool(profile.export.tensorrt.fp16) if profile is not None else False}
        if profile is not None:
            opts["trt_max_workspace_size"] = int(profile.export.tensorrt.workspace_gb * 2**30)
        if cache_dir:
            opts.update({"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir)})
        out.append(("TensorrtExecutionProvider", opts))
    if "CUDAExecutionProvider" in available:
        out.append(("CUDAExecutionProvider", {"use_tf32": 0}) if exact else "CUDAExecutionProvider")
    out.append("CPUExecutionProvider")
    return out


def require_initialisation(cfg: ModelConfig) -> None:
    """Refuse to train a model nobody meant to start from random weights.

    A random-init ViT-L (DINOv2 layer-scale starts at 1e-5) fine-tuned on a few thousand
    images is input-blind (it gave p = 0.4529 for every image), so a profile without
    ``model.weights_path`` and without ``model.init_from: explora_checkpoint`` must say
    ``model.allow_random_init: true``. Call this before training, not when reloading a
    checkpoint (a checkpoint carries its own weights).
    """
    if cfg.weights_path or cfg.init_from == "explora_checkpoint" or cfg.allow_random_init:
        return
    raise ValueError(
        f"model.weights_path is not set for {cfg.backbone}: training would start from random weights, which for a "
        "pretrained-scale ViT gives an input-blind model. Set model.weights_path to local DINOv2 weights "
        "(a .safetensors file or a Hugging Face snapshot folder), or model.init_from=explora_checkpoint, or say "
        "model.allow_random_init=true if random init is what you intend."
    )
