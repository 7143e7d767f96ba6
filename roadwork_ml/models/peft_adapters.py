"""Parameter-efficient fine-tuning of the timm ViT backbone with ``peft`` (LoRA / DoRA).

timm ViTs project Q, K and V with one fused ``attn.qkv`` Linear ``[3·D, D]``. peft's standard
LoRA targets it as a whole (``qkv``); the Q/V-only LoRA of the LoRA paper and of ExPLoRA
(``qv``) needs a layer that adapts two thirds of that output, registered here through
peft's custom-module mechanism (``LoraConfig._register_custom_module``, peft 0.21).

The head is trained in full (``modules_to_save``). Adapters are saved as safetensors with a
sha256 manifest; before export they are merged into the base weights (``merge_and_unload``)
so every runtime sees a plain :class:`~roadwork_ml.models.classifier.RoadworkClassifier`.
"""

from __future__ import annotations

import json
import re
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from peft.tuners.lora.layer import Linear as LoraLinear
from safetensors.torch import load_file, save_file
from torch import nn

from roadwork_ml.artifacts import (
    atomic_path,
    atomic_write_json,
    verify_dir,
    write_manifest,
)
from roadwork_ml.config import LoraSettings, TrainConfig

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
HEAD_MODULE = "head.net"  # RoadworkClassifier.head.net; "head" alone would also match timm's backbone.head

_MODULE_PATHS = {
    "qkv": r"attn\.qkv",
    "qv": r"attn\.qkv",
    "proj": r"attn\.proj",
    "fc1": r"mlp\.fc1",
    "fc2": r"mlp\.fc2",
}


class FusedQKV(nn.Linear):
    """Marker type for a timm fused ``qkv`` Linear whose Q and V slices get LoRA (same
    parameters and forward as ``nn.Linear``; peft dispatches custom layers by type)."""


class QVLoraLinear(LoraLinear):
    """LoRA on the Q and V thirds of a fused ``[3·D, D]`` qkv projection; K is untouched.

    ``lora_B`` maps rank → 2·D (Q then V); the update is scattered into rows [0, D) and
    [2D, 3D) of the output. Merging adds the same zero-padded ``[3·D, D]`` delta to the weight.
    """

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        config: LoraConfig,
        **kwargs: Any,
    ) -> None:
        if config.use_dora:
            raise ValueError(
                "Q/V-only LoRA ('qv') does not support DoRA: DoRA's magnitude vector spans the whole fused qkv; target 'qkv' instead"
            )
        full = self.out_features
        if full % 3:
            raise ValueError(f"a fused qkv layer has 3·D outputs, got {full}")
        self.out_features = 2 * (full // 3)
        try:
            super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        finally:
            self.out_features = full

    @staticmethod
    def _scatter_qv(delta: torch.Tensor, dim: int) -> torch.Tensor:
        q, v = delta.chunk(2, dim=dim)
        return torch.cat([q, torch.zeros_like(q), v], dim=dim)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        a, b = self.lora_A[adapter].weight, self.lora_B[adapter].weight
        return self._scatter_qv((b.float() @ a.float()) * self.scaling[adapter], 0).to(b.dtype)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None:
            return super().forward(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            a, b = self.lora_A[name], self.lora_B[name]
            delta = b(a(self.lora_dropout[name](x.to(a.weight.dtype)))) * self.scaling[name]
            result = result + self._scatter_qv(delta, -1).to(result.dtype)
        return result


def target_regex(modules: Sequence[str], blocks: Sequence[int] | None = None) -> str:
    """peft ``target_modules`` regex (full match) for ``modules`` of ViT ``blocks`` (None = all)."""
    paths = "|".join(sorted({_MODULE_PATHS[m] for m in modules}))
    idx = r"\d+" if blocks is None else "|".join(str(int(b)) for b in blocks)
    if blocks is not None and not list(blocks):
        raise ValueError("target_regex got an empty block list")
    return rf"(.*\.)?blocks\.({idx})\.({paths})"


def lora_config(
    settings: LoraSettings,
    use_dora: bool = False,
    blocks: Sequence[int] | None = None,
    modules_to_save: Sequence[str] | None = (HEAD_MODULE,),
) -> LoraConfig:
    """The peft ``LoraConfig`` for ``settings``; registers :class:`QVLoraLinear` when ``qv`` is targeted."""
    cfg = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_regex(settings.target_modules, blocks),
        use_dora=use_dora,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        bias="none",
    )
    if "qv" in settings.target_modules:
        cfg._register_custom_module({FusedQKV: QVLoraLinear})
    return cfg


def _mark_fused_qkv(model: nn.Module, blocks: Sequence[int] | None) -> int:
    count = 0
    for name, module in model.named_modules():
        m = re.fullmatch(r"(.*\.)?blocks\.(\d+)\.attn\.qkv", name)
        if m and type(module) is nn.Linear and (blocks is None or int(m.group(2)) in set(blocks)):
            module.__class__ = FusedQKV
            count += 1
    return count


def add_lora(
    model: nn.Module,
    settings: LoraSettings,
    use_dora: bool = False,
    blocks: Sequence[int] | None = None,
    modules_to_save: Sequence[str] | None = (HEAD_MODULE,),
) -> PeftModel:
    """Wrap ``model`` (a RoadworkClassifier, or a bare timm ViT with ``modules_to_save=None``)
    in a peft model: adapters on ``settings.target_modules`` of ``blocks`` (None = every
    block), ``modules_to_save`` trained in full, every other weight frozen."""
    if "qv" in settings.target_modules and _mark_fused_qkv(model, blocks) == 0:
        raise ValueError(
            "lora.target_modules has 'qv' but the model has no timm fused attn.qkv Linear in the chosen blocks"
        )
    peft_model = get_peft_model(model, lora_config(settings, use_dora, blocks, modules_to_save))
    if not any("lora_" in n for n, _ in peft_model.named_parameters()):
        raise ValueError(f"no layer matched lora.target_modules {settings.target_modules}: is the backbone a timm ViT?")
    return peft_model


def apply_finetune(model: nn.Module, train: TrainConfig) -> nn.Module:
    """Set up ``model`` for ``train.finetune``: ``full`` (every weight), ``linear_probe``
    (backbone frozen), ``lora`` / ``dora`` (a peft model: adapters + the head in full)."""
    mode = train.finetune
    if mode == "full":
        return model
    if mode == "linear_probe":
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        return model
    if mode in ("lora", "dora"):
        return add_lora(model, train.lora, use_dora=mode == "dora")
    raise ValueError(f"unknown train.finetune {mode!r}")


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and drop peft's wrappers (``merge_and_unload``);
    a model that is not a peft model is returned as is. Marker classes revert to ``nn.Linear``."""
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    for module in model.modules():
        if type(module) is FusedQKV:
            module.__class__ = nn.Linear
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_adapters(
    model: PeftModel,
    directory: str | Path,
    settings: LoraSettings,
    use_dora: bool,
    blocks: Sequence[int] | None = None,
) -> dict:
    """Adapter (+ head) weights as safetensors, the adapter settings as JSON, a sha256 manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    if not state:
        raise ValueError("the peft model holds no adapter weights")
    with atomic_path(directory / ADAPTER_WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "roadwork": "peft-adapter/1"})
    atomic_write_json(
        directory / ADAPTER_CONFIG,
        {
            "lora": settings.model_dump(mode="json"),
            "use_dora": use_dora,
            "blocks": list(blocks) if blocks is not None else None,
            "peft_keys": len(state),
        },
    )
    return write_manifest(directory, extra={"kind": "peft-adapter"})


def load_adapters(model: nn.Module, directory: str | Path) -> PeftModel:
    """Verify hashes, wrap ``model`` as :func:`add_lora` did and load the saved adapter weights strictly."""
    directory = Path(directory)
    verify_dir(directory)
    meta = json.loads((directory / ADAPTER_CONFIG).read_text())
    peft_model = add_lora(
        model,
        LoraSettings.model_validate(meta["lora"]),
        meta["use_dora"],
        meta["blocks"],
    )
    result = set_peft_model_state_dict(peft_model, load_file(str(directory / ADAPTER_WEIGHTS)))
    unexpected = list(getattr(result, "unexpected_keys", []))
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k or "modules_to_save" in k]
    if unexpected or missing:
        raise ValueError(
            f"adapter {directory} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return peft_model


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameter counts and the trainable share in [0, 1]."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_share": trainable / max(total, 1),
    }


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def measure_train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 3,
    lr: float = 1e-4,
    amp: bool = True,
) -> dict[str, Any]:
    """Run ``steps`` AdamW steps (cross-entropy) on one batch and report what fine-tuning costs.

    Args: ``images`` float ``[B, 3, S, S]`` in [0, 1], ``labels`` int64 ``[B]``; ``amp``: bf16
    autocast on CUDA. Returns trainable/total params and share, ``step_seconds`` (median over
    steps after the first, seconds), ``peak_memory_bytes`` and what it measures
    (``cuda_max_allocated`` on CUDA, else the process's peak RSS, which includes everything
    the process ever held). The model is trained in place: pass a copy to keep it.
    """
    if steps < 2:
        raise ValueError("measure_train_step needs steps >= 2 (the first step is warm-up)")
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr)
    x, y = images.to(device), labels.to(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and cuda):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    steady = sorted(times[1:])
    return {
        **parameter_counts(model),
        "step_seconds": steady[len(steady) // 2],
        "batch_size": int(x.shape[0]),
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda else _peak_rss_bytes(),
        "peak_memory_kind": "cuda_max_allocated" if cuda else "process_max_rss",
        "device": str(device),
        "final_loss": float(loss.detach()),
    }
