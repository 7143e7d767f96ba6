"""Optimizer (timm's factory), layer-wise LR decay for ViT backbones, SAM, EMA, gradient clipping.

Parameter groups: the head at ``lr``; the backbone at ``lr * backbone_lr_mult``, and with
``layer_decay`` each backbone block further scaled by ``layer_decay ** (depth - block)``
(timm's ``param_groups_layer_decay``, BEiT-style). timm records the scale as ``lr_scale``;
torch's LambdaLR does not read it, so the group's ``lr`` is set to ``lr * lr_scale`` here.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import create_optimizer_v2, get_optimizer_class, param_groups_layer_decay, param_groups_weight_decay
from timm.utils import ModelEmaV3

from roadwork_ml.config import OptimizerConfig, TrainConfig

__all__ = ["SAM", "build_ema", "build_optimizer", "clip_gradients"]


def _backbone_groups(backbone: torch.nn.Module, wd: float, cfg: OptimizerConfig) -> list[dict[str, Any]]:
    no_wd = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    if cfg.layer_decay is not None:
        return param_groups_layer_decay(
            backbone,
            wd,
            no_weight_decay_list=no_wd,
            layer_decay=cfg.layer_decay,
            weight_decay_exclude_1d=cfg.filter_bias_and_bn,
        )
    params = [p for p in backbone.parameters() if p.requires_grad]
    if cfg.filter_bias_and_bn and wd > 0:
        return param_groups_weight_decay(backbone, wd, no_weight_decay_list=no_wd)
    return [{"params": params, "weight_decay": wd}] if params else []


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer.name`` through ``timm.optim.create_optimizer_v2``; each group's
    ``lr`` already includes its scale (head 1, backbone ``backbone_lr_mult`` x layer decay)."""
    oc = cfg.optimizer
    backbone = getattr(model, "backbone", None)
    groups: list[dict[str, Any]] = []
    if backbone is not None:
        for g in _backbone_groups(backbone, cfg.weight_decay, oc):
            g = dict(g)
            g["lr_scale"] = g.get("lr_scale", 1.0) * cfg.backbone_lr_mult
            groups.append(g)
        # by identity, not by name: a peft model names them base_model.model.backbone.*
        in_backbone = {id(p) for p in backbone.parameters()}
        head = [p for p in model.parameters() if p.requires_grad and id(p) not in in_backbone]
    else:
        head = [p for p in model.parameters() if p.requires_grad]
    if head:
        if oc.filter_bias_and_bn and cfg.weight_decay > 0:
            groups += [
                {"params": [p for p in head if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
                {"params": [p for p in head if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0},
            ]
        else:
            groups.append({"params": head, "weight_decay": cfg.weight_decay, "lr_scale": 1.0})
    groups = [g for g in groups if len(list(g["params"]))]
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    kwargs: dict[str, Any] = {}
    if oc.name.lower() in ("sgd", "nesterov", "momentum", "rmsprop", "rmsproptf", "lars", "nlars"):
        kwargs["momentum"] = oc.momentum
    if oc.fused and _has_fused_kernel(oc.name):
        kwargs["fused"] = True
    opt = create_optimizer_v2(groups, opt=oc.name, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
    return SAM(opt, oc.sam_rho) if oc.sam else opt


def _has_fused_kernel(name: str) -> bool:
    """Whether timm's optimizer ``name`` is one of torch's with a ``fused`` implementation."""
    cls = get_optimizer_class(name, bind_defaults=False)
    cls = getattr(cls, "func", cls)  # timm binds nesterov / momentum as functools.partial(SGD, ...)
    return cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


class SAM:
    """Sharpness-aware minimisation (Foret et al. 2021) around any optimizer.

    ``first_step`` moves each weight to ``w + rho * g / ||g||`` (the worst case nearby);
    after a second backward there, ``second_step`` restores ``w`` and steps the base
    optimizer with the gradient of the perturbed point.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float):
        self.base, self.rho = base, float(rho)
        self.param_groups = base.param_groups
        self._saved: dict[torch.nn.Parameter, torch.Tensor] = {}

    @torch.no_grad()
    def first_step(self) -> None:
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.norm(torch.stack([gr.norm(2) for gr in grads]), 2) if grads else torch.tensor(0.0)
        scale = self.rho / (norm + 1e-12)
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                e = p.grad * scale
                self._saved[p] = e
                p.add_(e)

    @torch.no_grad()
    def second_step(self) -> None:
        for p, e in self._saved.items():
            p.sub_(e)
        self._saved.clear()
        self.base.step()

    def step(self) -> None:  # pragma: no cover - the trainer calls first/second_step
        raise RuntimeError("SAM needs two passes: call first_step, backward again, then second_step")

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()


def clip_gradients(model: torch.nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm to ``max_norm`` (None: measure only); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        return float(torch.norm(torch.stack([p.grad.detach().norm(2) for p in params]), 2))
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def build_ema(model: torch.nn.Module, cfg: TrainConfig) -> ModelEmaV3 | None:
    """timm's ModelEmaV3 of ``model`` (on its device) when ``cfg.ema.enabled``."""
    if not cfg.ema.enabled:
        return None
    return ModelEmaV3(model, decay=cfg.ema.decay, use_warmup=cfg.ema.warmup)
