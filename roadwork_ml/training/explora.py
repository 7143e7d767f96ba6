"""ExPLoRA (arXiv 2406.10973): continue DINOv2's self-supervised objective on unlabeled
target-domain images with the last N ViT blocks trained in full and Q/V LoRA on the others,
then merge the adapters into a plain backbone that phase 1 starts from.

The objective is DINO's (student/teacher, EMA teacher, multi-crop, centring and sharpening)
with a freshly initialised DINO head (released DINOv2 weights ship without it), and
optionally iBOT's masked-patch loss. Images only: labels are never read, and the leakage
contract admits TRAIN images and logged production traffic (``Purpose.SELF_SUPERVISED``).

Shapes: images uint8 or float ``[N, 3, H, W]``; crops float ``[K, 3, s, s]`` in [0, 1].
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.ops import roi_align

from roadwork_ml.artifacts import atomic_path, atomic_write_json, verify_dir, write_manifest
from roadwork_ml.config import ExploraConfig, ModelConfig
from roadwork_ml.contracts import Purpose, require_split
from roadwork_ml.models.backbone import create_backbone
from roadwork_ml.models.peft_adapters import add_lora, merge_adapters
from roadwork_ml.training.schedule import warmup_cosine

BACKBONE_WEIGHTS = "backbone.safetensors"
CONFIG = "config.json"
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class DINOHead(nn.Module):
    """``[B, D]`` → ``[B, out_dim]`` prototype scores: 3-layer MLP → bottleneck → L2 norm →
    weight-normalised linear layer with its norm fixed at 1 (DINO / DINOv2)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, bottleneck: int):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def _random_boxes(n: int, h: int, w: int, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """``[n, 4]`` (x1, y1, x2, y2) random-resized-crop boxes: area share in ``scale``, aspect in [3/4, 4/3]."""
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=gen) * h * w
    ratio = torch.exp(torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=gen))
    bw = torch.sqrt(area * ratio).clamp(4, w)
    bh = torch.sqrt(area / ratio).clamp(4, h)
    x1 = torch.rand(n, generator=gen) * (w - bw)
    y1 = torch.rand(n, generator=gen) * (h - bh)
    return torch.stack([x1, y1, x1 + bw, y1 + bh], 1)


def _photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-crop flip, brightness/contrast/saturation jitter and 20 % grayscale (DINO's recipe, no blur)."""
    k = x.shape[0]
    flip = torch.rand(k, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    b = 1 + (torch.rand(k, 1, 1, 1, generator=gen) - 0.5) * 0.8
    c = 1 + (torch.rand(k, 1, 1, 1, generator=gen) - 0.5) * 0.8
    s = 1 + (torch.rand(k, 1, 1, 1, generator=gen) - 0.5) * 0.4
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * s
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    x = x * b
    to_gray = (torch.rand(k, generator=gen) < 0.2)[:, None, None, None]
    x = torch.where(to_gray, x.mean(1, keepdim=True).expand_as(x), x)
    return x.clamp(0, 1)


def multi_crop(
    images: torch.Tensor, cfg: ExploraConfig, global_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """float ``[B, 3, H, W]`` → (2 global crops ``[2B, 3, G, G]``, ``cfg.local_crops`` local
    crops ``[L·B, 3, l, l]``), crop-major (all first crops, then all second crops, …)."""
    b, _, h, w = images.shape

    def crops(n_per: int, scale: tuple[float, float], size: int) -> torch.Tensor:
        if n_per == 0:
            return images.new_zeros(0, 3, size, size)
        idx = torch.arange(b, dtype=images.dtype).repeat(n_per)[:, None]
        boxes = torch.cat([idx, _random_boxes(b * n_per, h, w, scale, gen).to(images.dtype)], 1).to(images.device)
        out = roi_align(images, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        return _photometric(out, gen.__class__().manual_seed(int(torch.randint(2**31, (1,), generator=gen))))

    return crops(2, cfg.global_crops_scale, global_size), crops(
        cfg.local_crops, cfg.local_crops_scale, cfg.local_crop_size
    )


def explora_backbone(model_cfg: ModelConfig, initial_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The backbone ExPLoRA trains: the profile's timm ViT (same state-dict keys) built with
    ``dynamic_img_size`` so local crops of another size run through it."""
    cfg = model_cfg.model_copy(
        update={"timm_kwargs": {**model_cfg.timm_kwargs, "dynamic_img_size": True}, "drop_path_rate": 0.0}
    )
    backbone = create_backbone(cfg)
    if initial_state is not None:
        backbone.load_state_dict(initial_state, strict=True)
    if not hasattr(backbone, "blocks") or not hasattr(backbone.blocks[0], "attn"):
        raise ValueError(f"ExPLoRA needs a timm ViT backbone, got {model_cfg.backbone}")
    return backbone


def intended_parameters(state_keys: Sequence[str], depth: int, cfg: ExploraConfig) -> dict[str, str]:
    """Backbone keys ExPLoRA may change → why: ``block`` (one of the last N blocks, trained in
    full), ``lora_qv`` (fused qkv weight of a LoRA block: Q and V rows only), ``norm``."""
    first_full = depth - min(cfg.unfrozen_blocks, depth)
    out: dict[str, str] = {}
    for key in state_keys:
        parts = key.split(".")
        if parts[0] == "blocks" and int(parts[1]) >= first_full:
            out[key] = "block"
        elif parts[0] == "blocks" and key.endswith("attn.qkv.weight"):
            out[key] = "lora_qv"
        elif cfg.unfreeze_norms and (".norm1." in key or ".norm2." in key or parts[0] == "norm"):
            out[key] = "norm"
        elif cfg.unfrozen_blocks > 0 and parts[0] == "norm":
            out[key] = "block"
    return out


def _features(
    vit: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled ``[B, D]``, patch tokens ``[B, N, D]``) of a timm ViT on normalised ``x``; patches
    where ``mask`` ``[B, h, w]`` is true are replaced by ``mask_token`` before the blocks (iBOT)."""
    t = vit.patch_embed(x)  # [B, h, w, D] (dynamic_img_size)
    if mask is not None:
        t = torch.where(mask[..., None], mask_token.to(t.dtype).expand_as(t), t)
    t = vit.norm_pre(vit.patch_drop(vit._pos_embed(t)))
    t = vit.norm(vit.blocks(t))
    return vit.forward_head(t, pre_logits=True), t[:, vit.num_prefix_tokens :]


def _dino_loss(student: torch.Tensor, teacher_probs: torch.Tensor, n_global: int, temp: float) -> torch.Tensor:
    """Cross-entropy of teacher (global crops, ``[G, B, K]`` probs) against student (all crops,
    ``[V, B, K]`` scores), over every pair of different crops."""
    logp = F.log_softmax(student / temp, dim=-1)
    total, pairs = student.new_zeros(()), 0
    for ti in range(n_global):
        for si in range(logp.shape[0]):
            if si == ti:
                continue
            total = total + (-(teacher_probs[ti] * logp[si]).sum(-1)).mean()
            pairs += 1
    return total / pairs


@dataclass
class ExploraResult:
    """``backbone_state``: merged teacher backbone, timm keys (load into ``create_backbone``)."""

    backbone_state: dict[str, torch.Tensor]
    report: dict[str, Any] = field(default_factory=dict)


def _batches(
    images: Any, batch_size: int, steps: int, gen: torch.Generator, max_images: int | None
) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``batch_size`` images drawn with replacement from a uint8/float
    tensor ``[N, 3, H, W]`` or a map-style dataset of images / (image, label) / {"image": …}."""
    n = len(images)
    if max_images is not None:
        n = min(n, max_images)
    if n < 2:
        raise ValueError(f"ExPLoRA needs at least 2 unlabeled images, got {n}")

    def item(i: int) -> torch.Tensor:
        x = images[i]
        if isinstance(x, dict):
            x = x["image"]
        elif isinstance(x, (tuple, list)):
            x = x[0]  # labels are ignored on purpose
        return torch.as_tensor(x)

    for _ in range(steps):
        idx = torch.randint(n, (batch_size,), generator=gen)
        batch = images[idx] if isinstance(images, torch.Tensor) else torch.stack([item(int(i)) for i in idx])
        yield batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()


def run_explora(
    images: Any,
    split_tags: Sequence[str],
    model_cfg: ModelConfig,
    cfg: ExploraConfig,
    initial_state: dict[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    log: Any = None,
    probe_images: torch.Tensor | None = None,
    train_all: bool = False,
) -> ExploraResult:
    """Run ExPLoRA and return the merged backbone with its report.

    Args:
        images: unlabeled images (see :func:`_batches`); ``split_tags``: the split of each
            source the images come from (``train``, ``production_traffic``) — checked against
            the leakage contract before anything runs.
        model_cfg: the profile's model section; ``initial_state`` overrides its weights
            (timm keys), e.g. the DINOv2 weights already loaded elsewhere.
        probe_images: images for the collapse check (default: 256 drawn from ``images``).
        train_all: train every backbone weight and no adapter — plain DINO pre-training (the
            benchmark's stand-in for DINOv2's web pre-training), not ExPLoRA.
    Returns the merged teacher backbone (timm keys, fp32, CPU) and a report with the loss
    curve, the collapse statistics, trainable parameter counts and the changed keys.
    """
    require_split(Purpose.SELF_SUPERVISED, list(split_tags))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    log = log or (lambda _msg: None)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t_start = time.perf_counter()

    vit = explora_backbone(model_cfg, initial_state)
    initial = {k: v.detach().clone() for k, v in vit.state_dict().items()}
    depth = len(vit.blocks)
    lora_blocks = [] if train_all else list(range(depth - min(cfg.unfrozen_blocks, depth)))
    student_backbone: nn.Module = (
        add_lora(vit, cfg.lora, blocks=lora_blocks, modules_to_save=None) if lora_blocks else vit
    )
    inner = student_backbone.base_model.model if lora_blocks else vit  # the timm ViT, adapters injected
    for name, p in inner.named_parameters():
        key = name.replace(".base_layer", "")
        parts = key.split(".")
        if "lora_" in name:
            continue
        full_block = parts[0] == "blocks" and int(parts[1]) >= len(lora_blocks)
        norm = cfg.unfreeze_norms and (".norm1." in key or ".norm2." in key or parts[0] == "norm")
        p.requires_grad_(train_all or full_block or norm or (cfg.unfrozen_blocks > 0 and parts[0] == "norm"))
    dim = int(inner.num_features)
    head = DINOHead(dim, cfg.out_dim, cfg.head_hidden, cfg.head_bottleneck)
    mask_token = nn.Parameter(torch.zeros(dim))
    student = nn.ModuleDict({"backbone": student_backbone, "head": head}).to(device)
    mask_token = nn.Parameter(mask_token.data.to(device))
    teacher = copy.deepcopy(student).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t_inner = teacher["backbone"].base_model.model if lora_blocks else teacher["backbone"]
    ema_pairs = [
        (ps, pt) for ps, pt in zip(student.parameters(), teacher.parameters(), strict=False) if ps.requires_grad
    ]

    backbone_trainable = sum(p.numel() for p in student["backbone"].parameters() if p.requires_grad)
    backbone_total = sum(p.numel() for n, p in student["backbone"].named_parameters() if "lora_" not in n)
    params = [p for p in student.parameters() if p.requires_grad] + ([mask_token] if cfg.ibot_weight > 0 else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.steps, int(cfg.warmup_fraction * cfg.steps))
    mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)
    center = torch.zeros(cfg.out_dim, device=device)
    patch_center = torch.zeros(cfg.out_dim, device=device)
    amp = device.type == "cuda"
    patch = int(inner.patch_embed.patch_size[0])
    g_size = model_cfg.img_size

    losses: list[float] = []
    for step, batch in enumerate(_batches(images, cfg.batch_size, cfg.steps, gen, cfg.max_images)):
        b = batch.shape[0]
        glob, loc = multi_crop(batch.to(device), cfg, g_size, gen)
        glob, loc = (glob - mean) / std, (loc - mean) / std
        m = (
            cfg.ema_momentum[1]
            - (cfg.ema_momentum[1] - cfg.ema_momentum[0]) * (math.cos(math.pi * step / cfg.steps) + 1) / 2
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            with torch.no_grad():
                t_cls, t_patch = _features(t_inner, glob)
                t_out = teacher["head"](t_cls).float()
                t_probs = F.softmax((t_out - center) / cfg.teacher_temp, dim=-1).view(2, b, -1)
            mask = None
            if cfg.ibot_weight > 0:
                grid = g_size // patch
                mask = torch.rand(2 * b, grid, grid, generator=gen).to(device) < cfg.ibot_mask_ratio
            s_cls, s_patch = _features(inner, glob, mask, mask_token)
            s_views = [student["head"](s_cls)]
            if loc.shape[0]:
                s_views.append(student["head"](_features(inner, loc)[0]))
            s_out = torch.cat(s_views).float().view(2 + cfg.local_crops, b, -1)
            loss = _dino_loss(s_out, t_probs, 2, cfg.student_temp)
            if mask is not None and mask.any():
                flat = mask.flatten(1)
                with torch.no_grad():
                    tp = teacher["head"](t_patch[flat]).float()
                    tp_probs = F.softmax((tp - patch_center) / cfg.teacher_temp, dim=-1)
                sp = student["head"](s_patch[flat]).float()
                ibot = (-(tp_probs * F.log_softmax(sp / cfg.student_temp, -1)).sum(-1)).mean()
                loss = loss + cfg.ibot_weight * ibot
                patch_center = patch_center * cfg.center_momentum + tp.mean(0) * (1 - cfg.center_momentum)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ExPLoRA loss is {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for ps, pt in ema_pairs:  # frozen tensors are skipped: m·a + (1−m)·a is not bitwise a
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            center = center * cfg.center_momentum + t_out.mean(0) * (1 - cfg.center_momentum)
        losses.append(float(loss.detach()))
        if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps - 1:
            log(f"explora step {step + 1}/{cfg.steps}: loss {losses[-1]:.4f} (teacher momentum {m:.4f})")

    probe = (
        probe_images
        if probe_images is not None
        else next(_batches(images, min(256, len(images)), 1, torch.Generator().manual_seed(1), cfg.max_images))
    )
    collapse = teacher_collapse_stats(t_inner, teacher["head"], probe, g_size, center, cfg.teacher_temp, device)
    merged = (
        merge_adapters(copy.deepcopy(teacher["backbone"]).cpu())
        if lora_blocks
        else copy.deepcopy(teacher["backbone"]).cpu()
    )
    state = {k: v.detach().float().contiguous() for k, v in merged.state_dict().items()}
    intended = {k: "all" for k in initial} if train_all else intended_parameters(list(initial), depth, cfg)
    change = changed_parameters(initial, state, intended)
    report = {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "images": min(len(images), cfg.max_images or len(images)),
        "split_tags": sorted(set(split_tags)),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "lora_blocks": lora_blocks,
        "unfrozen_blocks": list(range(len(lora_blocks), depth)),
        "backbone_trainable_params": backbone_trainable,
        "backbone_params": backbone_total,
        "backbone_trainable_share": backbone_trainable / backbone_total,
        **collapse,
        **change,
        "seconds": time.perf_counter() - t_start,
        "device": str(device),
    }
    return ExploraResult(state, report)


@torch.no_grad()
def teacher_collapse_stats(
    vit: nn.Module,
    head: nn.Module,
    images: torch.Tensor,
    size: int,
    center: torch.Tensor,
    temp: float,
    device: torch.device,
) -> dict[str, float]:
    """Collapse statistics of the teacher on ``images`` (resized to ``size``, no augmentation):

    * ``teacher_entropy``: H(batch-mean teacher distribution) / log(K) in [0, 1]; near 0 when
      one prototype takes every image (dominance collapse);
    * ``teacher_sample_entropy``: mean per-image H / log(K); near 1 with a near-0 spread when
      the output is uniform;
    * ``embedding_std``: mean over dims of the std of L2-normalised backbone embeddings,
      times sqrt(D) (≈ 1 for well-spread embeddings, 0 when every image maps to one point).
    """
    x = images.to(device)
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_STD, device=device).view(1, 3, 1, 1)
    cls, _ = _features(vit, (x - mean) / std)
    cls = cls.float()
    probs = F.softmax((head(cls).float() - center) / temp, dim=-1)
    log_k = math.log(probs.shape[-1])
    mean_p = probs.mean(0)
    z = F.normalize(cls, dim=-1)
    return {
        "teacher_entropy": float(-(mean_p * mean_p.clamp_min(1e-12).log()).sum() / log_k),
        "teacher_sample_entropy": float((-(probs * probs.clamp_min(1e-12).log()).sum(-1)).mean() / log_k),
        "embedding_std": float(z.std(0).mean() * math.sqrt(z.shape[1])),
        "probe_images": int(x.shape[0]),
    }


def changed_parameters(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], intended: dict[str, str]
) -> dict[str, Any]:
    """Which backbone tensors changed (bitwise) and whether each change was intended. For a
    ``lora_qv`` key the K rows (the middle third of the fused qkv weight) must stay identical."""
    if set(before) != set(after):
        raise ValueError(f"backbone keys differ: {sorted(set(before) ^ set(after))[:5]}")
    changed, unintended = [], []
    for key, a in before.items():
        b = after[key]
        if torch.equal(a, b):
            continue
        changed.append(key)
        why = intended.get(key)
        if why is None:
            unintended.append(key)
        elif why == "lora_qv":
            d = a.shape[0] // 3
            if not torch.equal(a[d : 2 * d], b[d : 2 * d]):
                unintended.append(f"{key}[K rows]")
    return {"changed_params": changed, "unintended_changes": unintended, "intended_params": len(intended)}


def save_explora_backbone(result: ExploraResult, directory: str | Path, model_cfg: ModelConfig) -> dict:
    """``backbone.safetensors`` (timm keys) + ``config.json`` (model section, report) + manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / BACKBONE_WEIGHTS) as tmp:
        save_file(result.backbone_state, str(tmp), metadata={"format": "pt", "roadwork": "explora-backbone/1"})
    report = {k: v for k, v in result.report.items() if k != "losses"}
    atomic_write_json(
        directory / CONFIG,
        {
            "model": model_cfg.model_copy(update={"weights_path": None}).model_dump(mode="json"),
            "report": report,
            "losses": result.report.get("losses", []),
        },
    )
    return write_manifest(directory, extra={"kind": "explora-backbone"})


def load_explora_backbone(directory: str | Path) -> dict[str, torch.Tensor]:
    """Verify hashes and return the merged backbone state (timm keys)."""
    directory = Path(directory)
    verify_dir(directory)
    return load_file(str(directory / BACKBONE_WEIGHTS))


def reloads_identically(state: dict[str, torch.Tensor], directory: str | Path) -> bool:
    """True when the saved backbone reloads bit-identically (same keys, dtypes, shapes, bytes)."""
    loaded = load_explora_backbone(directory)
    return set(loaded) == set(state) and all(
        loaded[k].dtype == state[k].dtype and torch.equal(loaded[k], state[k]) for k in state
    )


@dataclass(frozen=True)
class ExploraCheck:
    name: str
    passed: bool
    value: Any
    floor: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def explora_checks(result: ExploraResult, cfg: ExploraConfig, directory: str | Path) -> list[ExploraCheck]:
    """The blocking checks: teacher not collapsed (entropy and per-dim std above their floors),
    only the intended parameters changed (and some did), the saved backbone reloads bit-identically."""
    r = result.report
    return [
        ExploraCheck(
            "teacher_entropy",
            r["teacher_entropy"] >= cfg.min_teacher_entropy,
            r["teacher_entropy"],
            cfg.min_teacher_entropy,
        ),
        ExploraCheck(
            "embedding_std", r["embedding_std"] >= cfg.min_embedding_std, r["embedding_std"], cfg.min_embedding_std
        ),
        ExploraCheck(
            "only_intended_params_changed",
            not r["unintended_changes"] and bool(r["changed_params"]),
            {"changed": len(r["changed_params"]), "unintended": r["unintended_changes"]},
        ),
        ExploraCheck(
            "reloads_bit_identically", reloads_identically(result.backbone_state, directory), BACKBONE_WEIGHTS
        ),
    ]


def init_from_explora(model: nn.Module, directory: str | Path) -> nn.Module:
    """``model.init_from: explora_checkpoint``: load the merged ExPLoRA backbone (hash-verified,
    strict) into ``model.backbone`` of a freshly built classifier; returns ``model``."""
    directory = Path(directory)
    meta = json.loads((directory / CONFIG).read_text())
    state = load_explora_backbone(directory)
    mine = {k for k in model.backbone.state_dict()}
    if set(state) != mine:
        raise ValueError(
            f"ExPLoRA backbone {directory} ({meta['model']['backbone']}) does not fit this model: keys differ {sorted(set(state) ^ mine)[:5]}"
        )
    model.backbone.load_state_dict(state, strict=True)
    return model
