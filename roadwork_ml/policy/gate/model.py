"""The gate's network and hyper-parameters: :class:`GateConfig`, :class:`GateMLP`, the exported module, input checks."""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from roadwork_ml.contracts import ContractError
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

MODE_MLP = "mlp"
MODE_MAX_PROB = "max_prob_fallback"  # too few errors to learn from: confidence = max_prob


@dataclass(frozen=True)
class GateConfig:
    """Hyper-parameters of the gate (the seed plan's phase-3 numbers are the defaults)."""

    hidden_sizes: tuple[int, ...] = (128, 64, 32)
    dropouts: tuple[float, ...] = (0.2, 0.1, 0.05)
    pos_weight: float = 2.0  # weight of the "wrong" class in BCEWithLogits
    lr: float = 1e-3
    weight_decay: float = 1e-2  # AdamW
    epochs: int = 20
    batch_size: int = 256
    seed: int = 0
    std_floor: float = 1e-6  # standardization: std = max(std, std_floor)
    # intra-op CPU threads while training / predicting (restored afterwards). The MLP is tiny:
    # one thread is as fast when the machine is idle and ~10x faster when it is busy.
    num_threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "dropouts", tuple(float(d) for d in self.dropouts))
        if len(self.hidden_sizes) != len(self.dropouts):
            raise ValueError(f"GateConfig: {len(self.hidden_sizes)} hidden sizes but {len(self.dropouts)} dropouts")
        if any(h < 1 for h in self.hidden_sizes) or any(not 0 <= d < 1 for d in self.dropouts):
            raise ValueError(f"GateConfig: hidden sizes must be >= 1 and dropouts in [0, 1), got {self}")
        if self.num_threads < 1:
            raise ValueError(f"GateConfig: num_threads must be >= 1, got {self.num_threads}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.pos_weight <= 0 or self.std_floor <= 0:
            raise ValueError(
                f"GateConfig: epochs >= 1, batch_size >= 2, lr/pos_weight/std_floor > 0 required, got {self}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["dropouts"] = list(self.dropouts)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GateConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ContractError(f"GateConfig: unknown keys {sorted(unknown)}")
        return cls(**d)


class GateMLP(nn.Module):
    """``in → 128 → 64 → 32 → 1``; each hidden block is Linear → BatchNorm1d → ReLU → Dropout.

    ``forward(x [N, in]) -> logit [N]`` (logit of P(wrong)).
    """

    def __init__(
        self,
        in_features: int = len(FEATURE_NAMES),
        hidden_sizes: Iterable[int] = (128, 64, 32),
        dropouts: Iterable[float] = (0.2, 0.1, 0.05),
    ):
        super().__init__()
        hidden_sizes, dropouts = list(hidden_sizes), list(dropouts)
        if len(hidden_sizes) != len(dropouts):
            raise ValueError(f"GateMLP: {len(hidden_sizes)} hidden sizes but {len(dropouts)} dropouts")
        layers: list[nn.Module] = []
        width = in_features
        for h, d in zip(hidden_sizes, dropouts, strict=False):
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(d)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class _GateConfidenceModule(nn.Module):
    """Raw features ``[N, F]`` → ``confidence = 1 - P(wrong)`` ``[N]`` (float32, eval mode)."""

    def __init__(
        self, mlp: GateMLP | None, mean: torch.Tensor, std: torch.Tensor, active: torch.Tensor, max_prob_index: int
    ):
        super().__init__()
        self.mlp = mlp
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())
        self.register_buffer("active", active.detach().clone().bool())
        self.max_prob_index = int(max_prob_index)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.float()
        if self.mlp is None:
            return x[:, self.max_prob_index]
        z = torch.where(self.active, (x - self.mean) / self.std, torch.zeros_like(x))
        return torch.sigmoid(-self.mlp(z))


def _to_2d_float(features: Any, n_features: int | None, where: str) -> np.ndarray:
    x = np.asarray(
        features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features, dtype=np.float64
    )
    if x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        want = f"[N, {n_features}]" if n_features is not None else "[N, F]"
        raise ValueError(f"{where}: features must be {want}, got shape {list(x.shape)}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{where}: features hold non-finite values in {bad} of {x.shape[0]} rows")
    return x


def _to_labels(is_wrong: Any, n: int, where: str) -> np.ndarray:
    y = np.asarray(is_wrong)
    if y.shape != (n,):
        raise ValueError(f"{where}: is_wrong must be [{n}] to match features, got shape {list(y.shape)}")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{where}: is_wrong must hold only 0/1 (1 = the classifier's prediction was wrong)")
    return y.astype(np.int64)


def _safe_auc(y: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    """(AUROC, AUPRC) for detecting ``y == 1``; ``None`` when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if y.size == 0 or y.min() == y.max():
        return None, None
    return float(roc_auc_score(y, score)), float(average_precision_score(y, score))


@contextmanager
def _torch_threads(n: int):
    """Run the block with ``n`` intra-op torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _batches(perm: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split ``perm`` into batches; a trailing batch of 1 joins the previous one (BatchNorm needs >= 2)."""
    chunks = list(torch.split(perm, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj
