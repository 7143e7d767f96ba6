"""Classification losses per sample, so class weights, per-sample (hard-negative) weights and
the batch mean combine in one place.

Every function returns ``(numerator [N], denominator [N])``; the batch loss is
``sum(numerator * w) / sum(denominator * w)`` for per-sample weights ``w`` (1 when absent),
which for plain or class-weighted cross-entropy equals ``torch.nn.functional.cross_entropy``'s
``reduction="mean"`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from roadwork_ml.config import LossConfig

__all__ = ["balanced_class_weights", "build_loss", "focal_loss", "js_consistency", "weighted_mean"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def balanced_class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> torch.Tensor:
    """``n / (C * count_c)`` per class (scikit-learn's "balanced"); a missing class gets weight 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax focal loss per sample ``-w_y (1 - p_y)^gamma log p_y``, ``[N]`` (Lin et al. 2017).

    ``logits [N, C]``, ``target [N]`` int64, ``weight [C]`` optional class weights (alpha).
    ``gamma = 0`` is cross-entropy.
    """
    logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    loss = -((1.0 - logp.exp()).clamp_min(0.0) ** gamma) * logp
    if weight is not None:
        loss = loss * weight.to(loss.device)[target]
    return loss


def weighted_mean(num: torch.Tensor, den: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    if sample_weight is not None:
        num, den = num * sample_weight, den * sample_weight
    return num.sum() / den.sum().clamp_min(1e-12)


def build_loss(
    cfg: LossConfig, label_smoothing: float, train_labels: Sequence[int] | np.ndarray, num_classes: int = 2
) -> LossFn:
    """``loss(logits [N, C], target [N], sample_weight [N] | None) -> scalar``.

    ``cfg.class_weights``: "none", "balanced" (from ``train_labels``) or explicit ``[C]``.
    Label smoothing applies to cross-entropy only (focal down-weights easy samples instead).
    """
    if cfg.class_weights == "balanced":
        cw: torch.Tensor | None = balanced_class_weights(train_labels, num_classes)
    elif cfg.class_weights == "none":
        cw = None
    else:
        cw = torch.tensor(cfg.class_weights, dtype=torch.float32)
        if cw.shape != (num_classes,):
            raise ValueError(f"loss.class_weights has {cw.numel()} values for {num_classes} classes")

    def loss(logits: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
        w = cw.to(logits.device) if cw is not None else None
        if cfg.name == "focal":
            num = focal_loss(logits, target, cfg.focal_gamma, w)
        else:
            num = F.cross_entropy(logits.float(), target, weight=w, label_smoothing=label_smoothing, reduction="none")
        den = w[target] if w is not None else torch.ones_like(num)
        return weighted_mean(num, den, sample_weight)

    return loss


def js_consistency(logits: torch.Tensor, views: int) -> torch.Tensor:
    """Jensen-Shannon divergence between ``views`` predictions of the same images (AugMix's
    consistency term): ``mean_i KL(p_i || m)``, ``m`` the views' mean distribution, averaged over
    images; in nats, 0 when every view agrees.

    ``logits [views * B, C]`` holds view ``i`` of image ``j`` at row ``i * B + j``.
    """
    if logits.shape[0] % views:
        raise ValueError(f"{logits.shape[0]} rows are not {views} views of the same images")
    logp = F.log_softmax(logits.float(), dim=1).view(views, -1, logits.shape[1])
    log_m = torch.logsumexp(logp, dim=0) - math.log(views)
    return (logp.exp() * (logp - log_m)).sum(2).mean()
