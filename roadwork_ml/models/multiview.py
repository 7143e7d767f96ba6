"""Multi-view inference: 1 global view + a grid of overlapping tiles (+ optional flips),
all through one batched forward pass over ``[B·V, 3, S, S]`` — never a Python loop over views.

Views are built with one ``F.interpolate`` for the global view and one ``unfold``-style
gather for the tiles, so the whole path exports to ONNX as a single graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

AGGREGATORS = ("mean", "topk", "global", "attention")


@dataclass(frozen=True)
class ViewSpec:
    """``grid`` × ``grid`` tiles overlapping by ``overlap`` (fraction of a tile side), each
    resized to ``size`` px, plus the global view; ``flip`` doubles every view (TTA)."""

    size: int
    grid: int = 3
    overlap: float = 0.125
    flip: bool = False
    multi: bool = True

    @property
    def n_views(self) -> int:
        base = 1 + (self.grid * self.grid if self.multi else 0)
        return base * (2 if self.flip else 1)


def tile_boxes(height: int, width: int, grid: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(top, left, tile_h, tile_w) of a ``grid``×``grid`` tiling whose neighbours overlap by
    ``overlap`` of a tile: tile = side / (grid − (grid − 1)·overlap)."""
    th = round(height / (grid - (grid - 1) * overlap))
    tw = round(width / (grid - (grid - 1) * overlap))
    tops = [round(i * (height - th) / max(1, grid - 1)) for i in range(grid)]
    lefts = [round(j * (width - tw) / max(1, grid - 1)) for j in range(grid)]
    return [(t, left, th, tw) for t in tops for left in lefts]


def make_views(images: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """``[B, 3, H, W]`` float → ``[B, V, 3, S, S]`` with V = ``spec.n_views`` (global first)."""
    b, c, h, w = images.shape
    views = [F.interpolate(images, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=False)]
    if spec.multi:
        boxes = tile_boxes(h, w, spec.grid, spec.overlap)
        tiles = torch.stack(
            [images[:, :, t : t + th, left : left + tw] for t, left, th, tw in boxes], dim=1
        )  # [B, T, 3, th, tw]
        tiles = F.interpolate(tiles.flatten(0, 1), size=(spec.size, spec.size), mode="bilinear", align_corners=False)
        views.append(tiles.view(b, len(boxes) * c, spec.size, spec.size))
    out = torch.cat(views, dim=1).view(b, -1, c, spec.size, spec.size)
    if spec.flip:
        out = torch.cat([out, out.flip(-1)], dim=1)
    return out


class MultiViewClassifier(nn.Module):
    """Wraps a classifier: images ``[B, 3, H, W]`` → (aggregated logits ``[B, C]``,
    view logits ``[B, V, C]``, view embeddings ``[B, V, D]``) in one batched pass.

    Aggregation: ``mean`` of view probabilities; ``topk`` — the mean of the K views with the
    highest roadwork probability (small objects show up strongly in a few tiles only);
    ``global`` — the global view decides and the tiles only feed the uncertainty features
    (for a model trained on whole images only, whose tiles are out of distribution); or
    ``attention`` — a trained :class:`~roadwork_ml.models.aggregator.AttentionAggregator`
    weights the views' probabilities from their embeddings.
    The aggregated logits are ``log`` of the aggregated probabilities, so softmax recovers them.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ViewSpec,
        aggregator: str = "mean",
        top_k: int = 3,
        attention: nn.Module | None = None,
        view_chunk: int = 0,
    ):
        super().__init__()
        if view_chunk < 0:
            raise ValueError(f"view_chunk must be >= 0 (0 = every view in one pass), got {view_chunk}")
        self.view_chunk = view_chunk
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
        if aggregator == "attention" and attention is None:
            raise ValueError(
                "aggregator 'attention' needs a trained attention module (see roadwork_ml.models.aggregator)"
            )
        self.model, self.spec, self.aggregator, self.top_k = model, spec, aggregator, top_k
        self.attention = attention if aggregator == "attention" else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = images.shape[0]
        views = make_views(images, self.spec)
        v = views.shape[1]
        chunk = self.view_chunk or v
        if chunk >= v:
            logits, emb = self.model.forward_with_embedding(views.flatten(0, 1))
            view_logits, view_emb = logits.view(b, v, -1), emb.view(b, v, -1)
        else:  # same graph, the backbone run over [B·chunk] rows at a time (a static, unrolled loop)
            parts = [
                self.model.forward_with_embedding(views[:, i : i + chunk].flatten(0, 1)) for i in range(0, v, chunk)
            ]
            view_logits = torch.cat([lg.view(b, -1, lg.shape[-1]) for lg, _ in parts], 1)
            view_emb = torch.cat([e.view(b, -1, e.shape[-1]) for _, e in parts], 1)
        probs = view_logits.softmax(-1)
        if self.aggregator == "attention":
            weights = self.attention(view_emb)  # [B, V], rows sum to 1
            agg = (weights.unsqueeze(-1) * probs).sum(1)
        else:
            if self.aggregator == "global":
                probs = probs[:, :1]
            elif self.aggregator == "topk" and v > 1:
                k = min(self.top_k, v)
                idx = probs[..., 1].topk(k, dim=1).indices
                probs = probs.gather(1, idx.unsqueeze(-1).expand(-1, -1, probs.shape[-1]))
            agg = probs.mean(1)
        return agg.clamp_min(1e-12).log(), view_logits, view_emb


def measure_view_chunk(
    mv: MultiViewClassifier, images: torch.Tensor, candidates: list[int] | None = None, min_seconds: float = 1.0
) -> tuple[int, dict[int, float]]:
    """Time ``mv`` on float ``images`` ``[B, 3, H, W]`` with each ``view_chunk`` candidate
    (views per backbone pass; 0 = all) and return (the fastest, {candidate: images/s}).
    ``mv.view_chunk`` is left at the fastest. Outputs do not depend on the chunk."""
    import time

    v = mv.spec.n_views
    candidates = candidates or sorted({c for c in (1, 2, 3, 5, v // 2, 0) if 0 <= c <= v})
    rates: dict[int, float] = {}
    with torch.no_grad():
        for c in candidates:
            mv.view_chunk = c
            mv(images)  # warm-up
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < min_seconds or n == 0:
                mv(images)
                n += images.shape[0]
            rates[c] = n / (time.perf_counter() - t0)
    best = max(rates, key=rates.get)
    mv.view_chunk = best
    return best, rates
