"""Mixup of a training batch (Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization").

The mixed loss is written as the mixture of two losses, ``lam * L(y) + (1 - lam) * L(y[perm])``:
for cross-entropy that equals the loss against the mixed one-hot target, and it keeps every
loss of :func:`roadwork_ml.training.losses.build_loss` (class weights, focal, per-sample weights)
as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from roadwork_ml.config import MixupConfig

__all__ = ["MixedBatch", "mix_batch"]


@dataclass(frozen=True)
class MixedBatch:
    """``x`` the mixed images ``[B, C, H, W]``; row ``i`` is ``lam * x[i] + (1 - lam) * x[perm[i]]``."""

    x: torch.Tensor
    lam: float
    perm: torch.Tensor

    def loss(self, loss_fn, logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """``lam * loss_fn(logits, y, w) + (1 - lam) * loss_fn(logits, y[perm], w[perm])``."""
        loss = loss_fn(logits, y, w)
        if self.lam >= 1.0:
            return loss
        w_b = w[self.perm] if w is not None else None
        return self.lam * loss + (1.0 - self.lam) * loss_fn(logits, y[self.perm], w_b)


def mix_batch(x: torch.Tensor, cfg: MixupConfig, gen: torch.Generator) -> MixedBatch:
    """Mix ``x [B, C, H, W]`` (float) with a permutation of itself, drawn from ``gen``.

    A batch left unmixed (``cfg.alpha`` 0, or the ``cfg.prob`` draw) comes back as is with
    ``lam = 1``. ``gen`` is only drawn from when mixup is on, so a profile without it trains as
    before.
    """
    n = x.shape[0]
    identity = torch.arange(n, device=x.device)
    if cfg.alpha <= 0:
        return MixedBatch(x, 1.0, identity)
    if float(torch.rand((), generator=gen)) >= cfg.prob:
        return MixedBatch(x, 1.0, identity)
    seed = int(torch.randint(0, 2**31 - 1, (), generator=gen))
    lam = float(np.random.default_rng(seed).beta(cfg.alpha, cfg.alpha))
    perm = torch.randperm(n, generator=gen).to(x.device)
    return MixedBatch(lam * x + (1.0 - lam) * x[perm], lam, perm)
