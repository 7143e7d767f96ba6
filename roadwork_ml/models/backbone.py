"""timm backbone factory and local weight loading (DINOv2-family ViTs first).

Weights come from local files only: a ``.safetensors`` file, a timm / PyTorch checkpoint
(``.pth``/``.bin``/``.pt``, loaded with ``weights_only=True``), or a Hugging Face model
folder / hub-cache repo (``models--facebook--dinov2-large``) whose keys use the
``transformers`` Dinov2 layout, which is converted to timm's layout here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.layers import Attention
from torch import nn

from roadwork_ml.config import ModelConfig

_ARCH_OVERRIDES = ("patch_size", "embed_dim", "depth", "num_heads")


def create_backbone(cfg: ModelConfig) -> nn.Module:
    """Build ``cfg.backbone`` from timm without a classifier (``num_classes=0``: forward → ``[B, D]``).

    Architecture overrides (patch size, width, depth, heads) build the sized-down models of
    small profiles through the same factory as production. Weights, when configured, load
    from local files through :func:`load_backbone_weights`.
    """
    kwargs: dict[str, Any] = {"num_classes": 0, "drop_path_rate": cfg.drop_path_rate, **cfg.timm_kwargs}
    if "vit" in cfg.backbone or "deit" in cfg.backbone:
        kwargs["img_size"] = cfg.img_size
    for name in _ARCH_OVERRIDES:
        value = getattr(cfg, name)
        if value is not None:
            kwargs[name] = value
    if cfg.weights_path and any(getattr(cfg, n) is not None for n in _ARCH_OVERRIDES):
        raise ValueError(
            "model.weights_path is set together with architecture overrides: pretrained weights need the stock architecture"
        )
    model = timm.create_model(cfg.backbone, pretrained=False, **kwargs)
    if cfg.weights_path:
        load_backbone_weights(model, cfg.weights_path)
    set_attention_backend(model, cfg.attention)
    return model


class FlashAttention(Attention):
    """timm's :class:`~timm.layers.Attention` whose kernel is flash attention: the
    ``flash-attn`` package when it is installed, else PyTorch SDPA restricted to its flash
    kernel (no silent fallback to another kernel). Same parameters and state-dict keys."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or not x.is_cuda or self.gate is not None:
            raise RuntimeError(
                "flash attention needs CUDA tensors, no attention mask and no gate; use model.attention: sdpa"
            )
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)  # [B, N, H, Dh]
        q, k = self.q_norm(q), self.k_norm(k)
        dropout = self.attn_drop.p if self.training else 0.0
        flash = _flash_attn_func()
        if flash is not None and x.dtype in (torch.float16, torch.bfloat16):
            out = flash(q, k, v, dropout_p=dropout, causal=is_causal)
        else:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout, is_causal=is_causal
                )
            out = out.transpose(1, 2)
        out = self.norm(out.reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(out))


def _flash_attn_func():
    try:
        from flash_attn import flash_attn_func  # the `gpu` extra
    except ImportError:
        return None
    return flash_attn_func


ATTENTION_BACKENDS = ("sdpa", "math", "flash")


def set_attention_backend(model: nn.Module, backend: str) -> int:
    """Switch every timm ``Attention`` in ``model`` to ``backend`` in place; returns how many.

    ``sdpa`` = ``F.scaled_dot_product_attention`` (PyTorch picks the kernel; on CPU its fused
    C++ kernel), ``math`` = the explicit ``softmax(QK^T / sqrt(d)) V``, ``flash`` = flash
    attention (CUDA only: requesting it without CUDA raises). Weights are untouched; only the
    module class / ``fused_attn`` flag changes, so state dicts and exports stay compatible.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"model.attention must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if backend == "flash" and not torch.cuda.is_available():
        raise RuntimeError(
            "model.attention: flash needs a CUDA GPU (flash kernels do not run on CPU); use sdpa, which runs on every device"
        )
    count = 0
    for module in model.modules():
        if isinstance(module, Attention):
            module.__class__ = FlashAttention if backend == "flash" else Attention
            module.fused_attn = backend != "math"
            count += 1
    return count


def resolve_weights_file(path: str | Path) -> Path:
    """Find the weight file behind ``path``: a file, an HF model folder, or an HF hub-cache repo folder."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(
            f"weights path {p} does not exist; give a .safetensors/.pth file or a Hugging Face model folder"
        )
    if (p / "snapshots").is_dir():  # hub cache: models--org--name/snapshots/<rev>/
        ref = p / "refs" / "main"
        snaps = sorted((p / "snapshots").iterdir())
        if ref.is_file() and (p / "snapshots" / ref.read_text().strip()).is_dir():
            p = p / "snapshots" / ref.read_text().strip()
        elif snaps:
            p = snaps[-1]
    for name in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "model.pth"):
        if (p / name).is_file():
            return p / name
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin under {p}")


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        return load_file(str(file))
    state = torch.load(str(file), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_RENAMES = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}


def hf_dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert ``transformers`` Dinov2Model keys to timm's VisionTransformer keys.

    Separate query/key/value projections are concatenated into timm's fused ``qkv``.
    SwiGLU MLPs (``dinov2-giant``) are not supported and raise.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("dinov2.")
        if key == "embeddings.cls_token":
            out["cls_token"] = value
        elif key == "embeddings.position_embeddings":
            out["pos_embed"] = value
        elif key.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("embeddings.register_tokens"):
            out["reg_token"] = value
        elif key == "embeddings.mask_token":
            continue  # only used for masked-image pre-training
        elif key.startswith("layernorm."):
            out["norm." + key.rsplit(".", 1)[1]] = value
        elif m := _HF_LAYER.match(key):
            idx, rest = int(m.group(1)), m.group(2)
            if rest.startswith("attention.attention."):
                proj, kind = rest.removeprefix("attention.attention.").split(".")
                qkv.setdefault((idx, kind), {})[proj] = value
                continue
            if rest.startswith("mlp.weights_"):
                raise ValueError("SwiGLU DINOv2 (giant) checkpoints are not supported by this converter")
            module, param = rest.rsplit(".", 1)
            if module not in _HF_RENAMES and rest not in _HF_RENAMES:
                raise ValueError(f"unexpected key in HF DINOv2 checkpoint: {key}")
            target = _HF_RENAMES.get(rest) or f"{_HF_RENAMES[module]}.{param}"
            out[f"blocks.{idx}.{target}"] = value
        elif key.startswith("pooler") or key.startswith("classifier"):
            continue
        else:
            raise ValueError(f"unexpected key in HF DINOv2 checkpoint: {key}")
    for (idx, kind), parts in qkv.items():
        missing = {"query", "key", "value"} - set(parts)
        if missing:
            raise ValueError(f"layer {idx} lacks attention {sorted(missing)} {kind}")
        out[f"blocks.{idx}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def load_backbone_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load local weights into a timm backbone; returns the (empty) missing/unexpected key lists.

    Position embeddings are resampled to the model's grid (DINOv2 ships 518-px / 37×37
    grids; we run 224-px tiles) by timm's own checkpoint filter.
    """
    file = resolve_weights_file(path)
    state = _read_state_dict(file)
    if any(k.startswith(("embeddings.", "encoder.layer.", "dinov2.")) for k in state):
        state = hf_dinov2_to_timm(state)
    state = {k.removeprefix("backbone.").removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc.", "classifier."))}
    if "pos_embed" in state:
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, model)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights {file} do not fit {type(model).__name__}: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {result.unexpected_keys[:5]}{'…' if len(result.unexpected_keys) > 5 else ''}"
        )
    return {"missing": missing, "unexpected": list(result.unexpected_keys)}
