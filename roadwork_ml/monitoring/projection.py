"""A PCA projection of backbone embeddings, so the inference log stores compact vectors.

``PCAProjection.fit`` centres the embeddings and keeps the top ``dim`` right singular
vectors (float64 SVD); ``transform`` returns the centred scores ``(x - mean) @ Wᵀ`` as
float32 ``[N, dim]`` — the same numbers as ``sklearn.decomposition.PCA(dim).transform``
up to the sign of each component. Signs follow sklearn's ``svd_flip`` convention (the
largest-magnitude loading of each component is positive), so refits are reproducible.
The projection serialises to JSON (``to_dict`` / ``from_dict``): floats are written with
``repr`` precision, so a round trip is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PCAProjection"]

SCHEMA = "pca_projection/1"


@dataclass
class PCAProjection:
    """``mean``: [D]; ``components``: [dim, D] orthonormal rows; ``explained_variance``: [dim]
    (variance of each score, ``ddof=1``, embedding units²); ``explained_variance_ratio``: [dim]."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    n_fit: int

    @property
    def input_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @classmethod
    def fit(cls, emb: Any, dim: int, seed: int = 0, max_rows: int = 50_000) -> PCAProjection:
        """Fit on ``emb`` [N, D] (finite). More than ``max_rows`` rows are subsampled with ``seed``."""
        x = np.asarray(emb, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"emb must be [N, D] with N >= 2, got shape {list(x.shape)}")
        if not np.isfinite(x).all():
            raise ValueError(f"emb holds non-finite values in {int((~np.isfinite(x)).any(axis=1).sum())} rows")
        n, d = x.shape
        if not 1 <= dim <= min(n, d):
            raise ValueError(f"dim must be in [1, min(N, D)] = [1, {min(n, d)}], got {dim}")
        if n > max_rows:
            x = x[np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))]
            n = max_rows
        mean = x.mean(axis=0)
        _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
        signs[signs == 0] = 1.0
        vt = vt * signs[:, None]
        var = sv**2 / (n - 1)
        total = var.sum()
        ratio = var / total if total > 0 else np.zeros_like(var)
        return cls(
            mean=mean,
            components=vt[:dim].copy(),
            explained_variance=var[:dim].copy(),
            explained_variance_ratio=ratio[:dim].copy(),
            n_fit=int(n),
        )

    def transform(self, emb: Any) -> np.ndarray:
        """``[N, D]`` → ``[N, dim]`` float32 centred scores."""
        x = np.asarray(emb, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"emb must be [N, {self.input_dim}], got shape {list(x.shape)}")
        if not np.isfinite(x).all():
            raise ValueError("emb holds non-finite values")
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "input_dim": self.input_dim,
            "dim": self.dim,
            "n_fit": self.n_fit,
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance": self.explained_variance.tolist(),
            "explained_variance_ratio": self.explained_variance_ratio.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PCAProjection:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a PCA projection (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        comps = np.asarray(d["components"], dtype=np.float64)
        if comps.shape != (d["dim"], d["input_dim"]):
            raise ValueError(f"components have shape {list(comps.shape)}, header says [{d['dim']}, {d['input_dim']}]")
        return cls(
            mean=np.asarray(d["mean"], dtype=np.float64),
            components=comps,
            explained_variance=np.asarray(d["explained_variance"], dtype=np.float64),
            explained_variance_ratio=np.asarray(d["explained_variance_ratio"], dtype=np.float64),
            n_fit=int(d["n_fit"]),
        )
