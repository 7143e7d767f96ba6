"""Choosing how views are combined: the trained attention aggregator, and a measured
comparison of every aggregator on cached view outputs.

The backbone stays frozen: each image's view logits and view embeddings are computed once
(one batched multi-view pass), and everything here works on those cached arrays, so trying
an aggregator costs milliseconds, not a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from roadwork_ml.contracts import Purpose, Split, require_split
from roadwork_ml.evaluation.metrics import mcc
from roadwork_ml.models.multiview import ViewSpec

# The seed's attention MLP is 1280→512→LN→ReLU→Dropout→128→ReLU→1 for a 1280-wide backbone;
# the hidden widths keep those ratios for any backbone width.
_SEED_WIDTH, _SEED_H1, _SEED_H2 = 1280, 512, 128


def attention_widths(embed_dim: int) -> tuple[int, int]:
    """Hidden widths of the attention MLP for a backbone of ``embed_dim`` features."""
    return max(8, round(embed_dim * _SEED_H1 / _SEED_WIDTH)), max(4, round(embed_dim * _SEED_H2 / _SEED_WIDTH))


class AttentionAggregator(nn.Module):
    """View embeddings ``[B, V, D]`` → view weights ``[B, V]`` (softmax over views).

    One score per view from D→h1→LayerNorm→ReLU→Dropout→h2→ReLU→1; the aggregated
    probability is the weighted mean of the views' probabilities.
    """

    def __init__(self, embed_dim: int, dropout: float = 0.1):
        super().__init__()
        h1, h2 = attention_widths(embed_dim)
        self.embed_dim, self.dropout = embed_dim, dropout
        self.score = nn.Sequential(
            nn.Linear(embed_dim, h1),
            nn.LayerNorm(h1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, 1),
        )

    def forward(self, view_embeddings: torch.Tensor) -> torch.Tensor:
        return self.score(view_embeddings).squeeze(-1).softmax(-1)


@dataclass
class AttentionFit:
    module: AttentionAggregator
    losses: list[float]  # mean training NLL per epoch


def fit_attention(
    view_embeddings: np.ndarray,
    view_probs: np.ndarray,
    labels: np.ndarray,
    split: Split | str,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    dropout: float,
    seed: int,
) -> AttentionFit:
    """Train the attention weights on TRAIN view outputs with the backbone frozen.

    ``view_embeddings`` [N, V, D], ``view_probs`` [N, V, C] (softmax of the view logits),
    ``labels`` [N]. Loss: NLL of the attention-weighted probability of the true class.
    """
    require_split(Purpose.FIT_MODEL, split)
    n, v, d = view_embeddings.shape
    if view_probs.shape[:2] != (n, v) or len(labels) != n:
        raise ValueError(
            f"shape mismatch: embeddings {view_embeddings.shape}, probs {view_probs.shape}, labels {len(labels)}"
        )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = AttentionAggregator(d, dropout)
    emb = torch.from_numpy(np.ascontiguousarray(view_embeddings, dtype=np.float32))
    probs = torch.from_numpy(np.ascontiguousarray(view_probs, dtype=np.float32))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    # standardize inputs once; the shift/scale are folded into the first layer afterwards
    mu, sd = emb.reshape(-1, d).mean(0), emb.reshape(-1, d).std(0).clamp_min(1e-6)
    emb_n = (emb - mu) / sd
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            w = module(emb_n[idx])
            p_true = (w.unsqueeze(-1) * probs[idx]).sum(1).gather(1, y[idx].unsqueeze(1)).squeeze(1)
            loss = -p_true.clamp_min(1e-12).log().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
    module.eval()
    with torch.no_grad():
        first: nn.Linear = module.score[0]
        first.bias.sub_(first.weight @ (mu / sd))
        first.weight.div_(sd)
    return AttentionFit(module, losses)


def aggregate(
    kind: str, view_probs: np.ndarray, *, k: int = 1, weights: np.ndarray | None = None, views: np.ndarray | None = None
) -> np.ndarray:
    """Aggregated probabilities ``[N, C]`` from ``view_probs`` [N, V, C], the same arithmetic as
    :class:`~roadwork_ml.models.multiview.MultiViewClassifier`; ``views`` restricts to a view subset."""
    p = view_probs if views is None else view_probs[:, views]
    if kind == "mean":
        return p.mean(1)
    if kind == "global":
        return p[:, 0]
    if kind == "topk":
        k = min(k, p.shape[1])
        order = np.argsort(-p[..., 1], axis=1, kind="stable")[:, :k]
        return np.take_along_axis(p, order[..., None], axis=1).mean(1)
    if kind == "attention":
        if weights is None:
            raise ValueError("attention aggregation needs the view weights")
        return (weights[..., None] * p).sum(1)
    raise ValueError(f"unknown aggregator {kind!r}")


def single_view_indices(spec: ViewSpec) -> np.ndarray:
    """Indices, within ``spec``'s views, of the single-view spec's views (global [+ its flip]);
    every view of a single-view ``spec``."""
    if not spec.flip:
        return np.array([0])
    return np.array([0, spec.n_views // 2])


@dataclass
class Candidate:
    name: str  # e.g. "multi-view topk K=3"
    multi_view: bool
    aggregator: str
    top_k: int
    mcc: float
    accuracy: float

    def to_dict(self) -> dict:
        return {
            "candidate": self.name,
            "multi_view": self.multi_view,
            "aggregator": self.aggregator,
            "top_k": self.top_k,
            "val_select_mcc": self.mcc,
            "val_select_accuracy": self.accuracy,
        }


def compare_aggregators(
    view_probs: np.ndarray,
    labels: np.ndarray,
    split: Split | str,
    spec: ViewSpec,
    k_candidates: list[int],
    attention_weights: dict[bool, np.ndarray],
) -> list[Candidate]:
    """MCC / accuracy at 0.5 of every aggregator on VAL_SELECT view outputs of ``spec``: with a
    multi-view ``spec`` both view sets (single-view candidates use the global view [+ flip]
    subset), with a single-view one the single-view candidates only.

    ``attention_weights`` maps multi_view → attention weights [N, V'] for that view set."""
    require_split(Purpose.MODEL_SELECTION, split)
    out: list[Candidate] = []
    single = single_view_indices(spec)
    for multi in (False, True) if spec.multi else (False,):
        views = None if multi else single
        label = "multi-view" if multi else "single-view"
        kinds: list[tuple[str, int]] = [("mean", 0)]
        if multi:
            kinds += [("global", 0)] + [("topk", k) for k in k_candidates if k < spec.n_views]
        if multi in attention_weights and (multi or len(single) > 1):
            kinds.append(("attention", 0))
        for kind, k in kinds:
            agg = aggregate(kind, view_probs, k=k, weights=attention_weights.get(multi), views=views)
            pred = (agg[:, 1] > 0.5).astype(int)
            name = f"{label} {kind}" + (f" K={k}" if kind == "topk" else "")
            out.append(Candidate(name, multi, kind, k, mcc(labels, pred), float((pred == labels).mean())))
    return out


def choose(candidates: list[Candidate], multi_view: bool, aggregator: str) -> Candidate:
    """The profile's choice: ``aggregator`` 'auto' takes the best VAL_SELECT MCC among the view
    sets the profile allows (``multi_view`` false → single-view only); 'topk' takes its best K."""
    pool = (
        [c for c in candidates if c.multi_view == multi_view]
        if aggregator != "auto" or not multi_view
        else list(candidates)
    )
    if aggregator != "auto":
        pool = [c for c in pool if c.aggregator == aggregator]
    if not pool:
        raise ValueError(f"no candidate for aggregator={aggregator!r}, multi_view={multi_view}")
    return max(pool, key=lambda c: (c.mcc, c.accuracy, -len(c.name)))


CHOICE_FILE = "aggregator.json"
ATTENTION_FILE = "attention.safetensors"


def save_choice(directory, choice: dict, attention: AttentionAggregator | None) -> None:
    """Write ``aggregator.json`` (multi_view, aggregator, top_k, ...) and, for the attention
    aggregator, its weights as safetensors. The caller writes the directory's manifest."""
    from pathlib import Path

    from safetensors.torch import save_file

    from roadwork_ml.artifacts import atomic_path, atomic_write_json

    directory = Path(directory)
    record = dict(choice)
    if choice["aggregator"] == "attention":
        if attention is None:
            raise ValueError("the attention aggregator was chosen but no module was given")
        record["attention"] = {"embed_dim": attention.embed_dim, "dropout": attention.dropout, "file": ATTENTION_FILE}
        with atomic_path(directory / ATTENTION_FILE) as tmp:
            save_file({k: v.detach().contiguous() for k, v in attention.state_dict().items()}, str(tmp))
    atomic_write_json(directory / CHOICE_FILE, record)


def load_choice(directory) -> tuple[dict, AttentionAggregator | None]:
    """Read what :func:`save_choice` wrote (hashes verified by the caller's ``verify_dir``)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    directory = Path(directory)
    choice = json.loads((directory / CHOICE_FILE).read_text())
    attention = None
    if choice["aggregator"] == "attention":
        a = choice["attention"]
        attention = AttentionAggregator(int(a["embed_dim"]), float(a["dropout"]))
        attention.load_state_dict(load_file(str(directory / a["file"])), strict=True)
        attention.eval()
    return choice, attention
