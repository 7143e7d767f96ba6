"""Two-sample drift statistics: PSI, Kolmogorov-Smirnov, kernel MMD, embedding mean shift.

Every function compares a *reference* sample (what the model was validated on) with a
*current* sample (one day of production traffic). Inputs are numpy arrays; 1-D ``[N]``
for the univariate statistics, 2-D ``[N, D]`` for MMD and the embedding shift.

PSI (population stability index)
    ``PSI = Σ_b (r_b - c_b) ln(r_b / c_b)`` over bins ``b`` with reference / current
    shares ``r_b`` / ``c_b``. Two binnings:

    * ``mode="quantile"`` (ours): ``bins - 1`` interior edges at the reference quantiles
      ``k / bins`` (deciles for 10 bins). Edges are reference values (numpy's
      ``method="inverted_cdf"``: the smallest value with ECDF >= k / bins), bins are
      right-closed ``(e_k, e_{k+1}]`` with open outer bins, so without ties every reference
      bin holds ``1 / bins`` of the reference up to rounding; duplicate edges are dropped,
      so a discrete column gets one bin per value range it actually takes. A share of exactly 0 is replaced by
      :data:`PSI_EPS` = 1e-4 (0.01 %) before the log, so PSI stays finite; a bin that
      holds 10 % of the reference and nothing today then adds
      ``0.1 * ln(0.1 / 1e-4) ≈ 0.69``. Shares are not renormalised after the replacement.
    * ``mode="evidently"``: evidently 0.7.23's ``psi`` stat test
      (``evidently.legacy.calculations.stattests.psi``) for a numerical column, number
      for number: if the reference has more than 20 distinct values, equal-width
      ``np.histogram_bin_edges(concat(ref, cur), bins="sturges")`` over *both* samples
      (``bins`` is ignored, as in evidently); otherwise one bin per distinct value. Zero
      shares become ``min(non-zero share) / 1e6`` if that minimum is <= 1e-4, else 1e-4.

KS
    ``scipy.stats.ks_2samp(reference, current)`` with scipy's default ``method="auto"``
    (exact p-value for small samples, asymptotic otherwise), two-sided.

MMD
    Unbiased MMD² with a Gaussian RBF kernel ``k(a, b) = exp(-||a - b||² / (2 σ²))``,
    identical to alibi-detect 0.13's pytorch ``MMDDrift.score``:
    ``MMD² = Σ_{i≠j∈X} k / (n(n-1)) + Σ_{i≠j∈Y} k / (m(m-1)) - 2 Σ_{i∈X, j∈Y} k / (nm)``.
    ``sigma=None`` is alibi's median heuristic on the reference sample
    (:func:`median_heuristic_sigma`). The p-value counts the observed statistic:
    ``(1 + #{null >= observed}) / (P + 1)``, so it is never 0 and a level-α test is
    exact under H0. (alibi reports ``mean(null >= observed)`` without the +1.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats

__all__ = [
    "PSI_EPS",
    "quantile_edges",
    "bin_shares",
    "psi_from_shares",
    "psi",
    "psi_categorical",
    "KSResult",
    "ks",
    "MMDResult",
    "median_heuristic_sigma",
    "mmd_permutation_test",
    "EmbeddingShift",
    "embedding_shift",
]

PSI_EPS = 1e-4  # share that stands in for an empty bin (quantile mode and categories)


def _finite_1d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array [N], got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} non-finite values; drop or impute them first")
    return a


# ------------------------------------------------------------------------------------ PSI


def quantile_edges(reference: Any, bins: int = 10) -> np.ndarray:
    """Interior bin edges ``[<= bins - 1]``: reference quantiles ``k / bins`` (inverted CDF), duplicates dropped."""
    ref = _finite_1d(reference, "reference")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    return np.unique(np.quantile(ref, np.arange(1, bins) / bins, method="inverted_cdf"))


def bin_shares(values: Any, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each of the ``len(edges) + 1`` right-closed bins ``(e_k, e_{k+1}]``."""
    v = _finite_1d(values, "values")
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="left")
    return np.bincount(idx, minlength=len(edges) + 1) / v.size


def psi_from_shares(ref_shares: Any, cur_shares: Any, eps: float = PSI_EPS) -> float:
    """``Σ (r - c) ln(r / c)`` after replacing zero shares by ``eps`` (see module notes)."""
    r = np.asarray(ref_shares, dtype=np.float64)
    c = np.asarray(cur_shares, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"share vectors differ in shape: {r.shape} vs {c.shape}")
    r = np.where(r > 0, r, eps)
    c = np.where(c > 0, c, eps)
    return float(np.sum((r - c) * np.log(r / c)))


def _evidently_fill(p: np.ndarray) -> np.ndarray:
    nz = p[p != 0]
    fill = nz.min() / 10**6 if nz.min() <= 0.0001 else 0.0001
    return np.where(p == 0, fill, p)


def _psi_evidently(ref: np.ndarray, cur: np.ndarray) -> float:
    if np.unique(ref).size > 20:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / ref.size
        c = np.histogram(cur, edges)[0] / cur.size
    else:
        keys = np.union1d(ref, cur)
        r = np.array([np.count_nonzero(ref == k) for k in keys]) / ref.size
        c = np.array([np.count_nonzero(cur == k) for k in keys]) / cur.size
    r, c = _evidently_fill(r), _evidently_fill(c)
    return float(np.sum((r - c) * np.log(r / c)))


def psi(reference: Any, current: Any, bins: int = 10, mode: Literal["quantile", "evidently"] = "quantile") -> float:
    """Population stability index of a numeric column (unitless, >= 0). See module notes.

    Args:
        reference: ``[N]`` finite values. current: ``[M]`` finite values.
        bins: quantile bins (``mode="quantile"``); ignored by ``mode="evidently"``.
    """
    ref = _finite_1d(reference, "reference")
    cur = _finite_1d(current, "current")
    if mode == "evidently":
        return _psi_evidently(ref, cur)
    if mode != "quantile":
        raise ValueError(f"mode must be 'quantile' or 'evidently', got {mode!r}")
    edges = quantile_edges(ref, bins)
    return psi_from_shares(bin_shares(ref, edges), bin_shares(cur, edges))


def psi_categorical(reference: Any, current: Any, eps: float = PSI_EPS) -> tuple[float, list[str]]:
    """PSI over the union of categories (e.g. ``time_of_day``); returns (psi, categories new today)."""
    ref = np.asarray(reference, dtype=object).astype(str)
    cur = np.asarray(current, dtype=object).astype(str)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi_categorical needs non-empty reference and current samples")
    keys = sorted(set(ref.tolist()) | set(cur.tolist()))
    r = np.array([np.count_nonzero(ref == k) for k in keys]) / ref.size
    c = np.array([np.count_nonzero(cur == k) for k in keys]) / cur.size
    new = [k for k, rk in zip(keys, r, strict=False) if rk == 0]
    return psi_from_shares(r, c, eps), new


# ------------------------------------------------------------------------------------ KS


@dataclass(frozen=True)
class KSResult:
    statistic: float  # sup |F_ref - F_cur|, in [0, 1]
    p_value: float  # two-sided


def ks(reference: Any, current: Any) -> KSResult:
    """Two-sample two-sided Kolmogorov-Smirnov test, exactly ``scipy.stats.ks_2samp`` (method 'auto')."""
    ref = _finite_1d(reference, "reference")
    cur = _finite_1d(current, "current")
    res = stats.ks_2samp(ref, cur)
    return KSResult(statistic=float(res.statistic), p_value=float(res.pvalue))


# ------------------------------------------------------------------------------------ MMD


@dataclass
class MMDResult:
    """``statistic``: unbiased MMD² (kernel units, can be slightly < 0 under H0);
    ``null``: ``[P]`` MMD² of the permuted splits; ``sigma``: RBF bandwidth (input units)."""

    statistic: float
    p_value: float
    sigma: float
    n_permutations: int
    null: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        q = np.quantile(self.null, [0.5, 0.95]) if self.null.size else [math.nan, math.nan]
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "sigma": self.sigma,
            "n_permutations": self.n_permutations,
            "null_median": float(q[0]),
            "null_q95": float(q[1]),
        }


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _as_2d(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be [N, D] with N >= 2, got shape {list(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds non-finite values")
    return a


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||²`` [Na, Nb], the same float ops as alibi-detect's ``squared_pairwise_distance``."""
    a2 = a.pow(2).sum(dim=-1, keepdim=True)
    b2 = b.pow(2).sum(dim=-1, keepdim=True)
    return torch.addmm(b2.transpose(-2, -1), a, b.transpose(-2, -1), alpha=-2).add_(a2).clamp_min_(1e-30)


def median_heuristic_sigma(x: Any, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> float:
    """alibi-detect's ``sigma_median`` on one sample ``x`` [N, D]: ``sqrt(median_{i≠j} ||x_i - x_j||² / 2)``.

    Exactly: the ``N + (N² - N) // 2 - 1``-th smallest (0-based) entry of the [N, N] squared
    distance matrix, whose ``N`` diagonal zeros (clamped to 1e-30) sort first; so the kernel
    ``exp(-d² / (2σ²))`` is ``exp(-d² / median d²)``. Cost O(N² D); subsample large ``x`` first.
    """
    a = _as_2d(x, "x")
    t = torch.from_numpy(np.ascontiguousarray(a)).to(_device(device))
    if dtype is not None:
        t = t.to(dtype)
    n = t.shape[0]
    d = _sq_dist(t, t).flatten()
    k = n + (n * n - n) // 2 - 1
    return float(torch.kthvalue(d.cpu(), k + 1).values.mul(0.5).sqrt())


def _permutation_masks(gen: torch.Generator, n_total: int, n_x: int, count: int) -> torch.Tensor:
    """``[N, count]`` float 0/1 matrix: column p marks the rows permutation p assigns to X."""
    order = torch.rand(count, n_total, generator=gen, dtype=torch.float64).argsort(dim=1)
    mask = torch.zeros(count, n_total, dtype=torch.float64)
    mask.scatter_(1, order[:, :n_x], 1.0)
    return mask.T.contiguous()


def mmd_permutation_test(
    x: Any,
    y: Any,
    n_permutations: int = 100,
    sigma: float | None = None,
    seed: int = 0,
    chunk: int = 256,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> MMDResult:
    """Unbiased MMD² of ``x`` [n, d] (reference) vs ``y`` [m, d] and its permutation p-value.

    The pooled kernel ``K`` [N, N] (N = n + m, diagonal zeroed) is built once. A permutation
    assigns n pooled rows to X; with its 0/1 membership column ``u`` and ``s = K 1``,
    ``T = 1ᵀ K 1``: ``Σ_XX = uᵀKu``, ``Σ_YY = T - 2 uᵀs + uᵀKu``, ``Σ_XY = uᵀs - uᵀKu``. All
    permutations are therefore one matrix product ``K @ U`` with ``U`` [N, P], evaluated in
    blocks of ``chunk`` columns (memory: K plus one [N, chunk] block). Permutations come
    from a CPU ``torch.Generator(seed)``, so the null does not depend on the device.

    Args:
        sigma: RBF bandwidth; ``None`` = :func:`median_heuristic_sigma` of ``x`` (alibi's default).
        device: ``None`` = CUDA when available, else CPU.
        dtype: kernel precision; ``None`` = float64 on CPU, float32 on CUDA. Reductions of the
            null (``uᵀKu``, ``uᵀs``, ``T``) are accumulated in float64 either way.
    """
    xa, ya = _as_2d(x, "x"), _as_2d(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"x and y must have the same width, got {xa.shape[1]} and {ya.shape[1]}")
    if n_permutations < 1 or chunk < 1:
        raise ValueError(f"n_permutations and chunk must be >= 1, got {n_permutations}, {chunk}")
    dev = _device(device)
    if dtype is None:
        dtype = torch.float64 if dev.type == "cpu" else torch.float32
    n, m = xa.shape[0], ya.shape[0]
    if sigma is None:
        sigma = median_heuristic_sigma(xa, dtype=dtype, device=dev)
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be a positive finite bandwidth, got {sigma}")

    with torch.no_grad():
        z = torch.from_numpy(
            np.concatenate([xa, ya]).astype(np.float64 if dtype == torch.float64 else np.float32, copy=False)
        ).to(dev, dtype)
        kmat = _sq_dist(z, z)
        kmat.mul_(-1.0 / (2.0 * sigma * sigma)).exp_()
        kmat.fill_diagonal_(0.0)
        c_xx, c_yy = 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1))
        # observed statistic: alibi's formula on the blocks
        observed = float(
            c_xx * kmat[:n, :n].sum(dtype=torch.float64)
            + c_yy * kmat[n:, n:].sum(dtype=torch.float64)
            - 2.0 * kmat[n:, :n].sum(dtype=torch.float64) / (n * m)
        )
        s = kmat.sum(dim=1, dtype=torch.float64)  # [N]
        total = s.sum()
        gen = torch.Generator().manual_seed(int(seed))
        null = torch.empty(n_permutations, dtype=torch.float64)
        for start in range(0, n_permutations, chunk):
            count = min(chunk, n_permutations - start)
            u = _permutation_masks(gen, n + m, n, count).to(dev)  # [N, count] float64
            ku = kmat @ u.to(dtype)  # [N, count]
            q = (u * ku.to(torch.float64)).sum(dim=0)  # uᵀKu
            r = u.T @ s  # uᵀs
            null[start : start + count] = (c_xx * q + c_yy * (total - 2 * r + q) - 2.0 * (r - q) / (n * m)).cpu()
    null_np = null.numpy()
    p_value = (1.0 + float(np.count_nonzero(null_np >= observed))) / (n_permutations + 1.0)
    return MMDResult(
        statistic=observed, p_value=p_value, sigma=float(sigma), n_permutations=int(n_permutations), null=null_np
    )


# ------------------------------------------------------------------------------------ embeddings


@dataclass(frozen=True)
class EmbeddingShift:
    """``l2_std = ||(μ_cur - μ_ref) / σ_ref||₂`` (reference-std units, sums over D dims);
    ``rms_std = l2_std / sqrt(D)`` (mean shift per dimension, std units);
    ``cosine_distance = 1 - cos(μ_ref, μ_cur)`` of the raw mean vectors (in [0, 2])."""

    l2_std: float
    rms_std: float
    cosine_distance: float
    dim: int

    def to_dict(self) -> dict[str, float]:
        return {
            "l2_std": self.l2_std,
            "rms_std": self.rms_std,
            "cosine_distance": self.cosine_distance,
            "dim": self.dim,
        }


def embedding_shift(ref_emb: Any, cur_emb: Any, std_floor: float = 1e-8) -> EmbeddingShift:
    """Distance between the mean embeddings of ``ref_emb`` [N, D] and ``cur_emb`` [M, D].

    The L2 distance divides each dimension by the reference's std (population, floored at
    ``std_floor``), so a value of 1 per dimension means "the mean moved by one reference
    standard deviation". Under H0 ``l2_std² ≈ D / M`` (sampling noise of the current mean).
    The cosine distance compares mean *directions*; on centred inputs (PCA scores, whose
    reference mean is ~0) it is dominated by noise and the L2 figure is the one to read.
    """
    r = _as_2d(ref_emb, "ref_emb").astype(np.float64)
    c = _as_2d(cur_emb, "cur_emb").astype(np.float64)
    if r.shape[1] != c.shape[1]:
        raise ValueError(f"embedding widths differ: {r.shape[1]} vs {c.shape[1]}")
    mu_r, mu_c = r.mean(axis=0), c.mean(axis=0)
    z = (mu_c - mu_r) / np.maximum(r.std(axis=0), std_floor)
    l2 = float(np.linalg.norm(z))
    denom = float(np.linalg.norm(mu_r) * np.linalg.norm(mu_c))
    cos = float(mu_r @ mu_c / denom) if denom > 0 else 1.0
    return EmbeddingShift(l2_std=l2, rms_std=l2 / math.sqrt(r.shape[1]), cosine_distance=1.0 - cos, dim=int(r.shape[1]))
