"""Dependence-aware two-sample tests: permute whole groups (sequences) of reference and day.

Production frames arrive in sequences (3-8 frames of one drive share camera, scene, light),
and the reference is itself a clustered sample. A test that permutes *rows* treats the
frames of a sequence as independent and under-estimates the null spread, so it alarms
on quiet days. Here every permutation reassigns *groups*: the pooled groups of reference
and day are shuffled and the first ``G_ref`` of them play the reference, the rest the day,
so a group never splits and the group sizes travel with it. Under H0 (reference and day
sequences come from one distribution) the groups are exchangeable, and the p-value

    ``p = (1 + #{T* >= T}) / (1 + B)``

over ``B`` permutation statistics ``T*`` is exact (valid at every level, never 0).

Grouping key (:func:`grouping_key`): the ``sequence_id`` column where present and filled,
else ``camera_id`` + a ``window_minutes`` time window of ``timestamp``, else circular
blocks of ``ceil(sqrt(n))`` consecutive rows starting at a seeded offset.

All statistics are functions of per-group sums and the 0/1 side matrix ``V`` [B, G] (row b
marks the groups permutation b assigns to the reference), so all permutations of one test
are a few matrix products over groups, not rows (see "group-level statistics"). One :class:`GroupPermutations` (group-level draws)
serves every test of the day, mapped to each test's rows by their group code; the draws
are seeded from the day (:func:`day_seed`), so a rerun reproduces the day and two days
never share a permutation set.

The family's decision controls the family-wise error rate with Holm's step-down
correction (:func:`holm`): P(any test of a stable day rejects) <= alpha, whatever the
dependence between the tests.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from roadwork_ml.data.records import UNKNOWN
from roadwork_ml.evaluation.metrics.calibration import _bin_index
from roadwork_ml.monitoring.drift_stats import PSI_EPS

__all__ = [
    "GROUPING_KINDS",
    "GroupPermutations",
    "accuracy_drop_stat",
    "accuracy_sums",
    "day_seed",
    "draw_group_permutations",
    "ece_increase_stat",
    "ece_sums",
    "grid_index",
    "group_counts",
    "group_sums",
    "grouping_key",
    "holm",
    "ks_stat",
    "mmd_group_kernel",
    "mmd_stat",
    "permutation_p",
    "psi_stat",
]

GROUPING_KINDS = ("sequence", "camera_window", "circular_block", "row")


def day_seed(day: str | date | None, base_seed: int = 0) -> int:
    """A 63-bit seed from ``(base_seed, day)``: reproducible per day, different across days."""
    d = day.isoformat() if isinstance(day, date) else str(day or "")
    ss = np.random.SeedSequence([int(base_seed) % (1 << 63), zlib.crc32(d.encode("utf-8"))])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def grouping_key(df: pd.DataFrame, seed: int = 0, window_minutes: float = 10.0) -> tuple[np.ndarray, str]:
    """Group label per row (object array [N]) and the kind used (see module notes).

    ``sequence``: the ``sequence_id`` column (null, empty and ``"unknown"`` count as missing);
    ``camera_window``: ``camera_id`` + floor(timestamp / window) when both columns exist;
    ``circular_block``: blocks of ``ceil(sqrt(N))`` rows in row order, wrapped around from a
    seeded offset, so no block boundary is fixed in advance. Rows without a sequence id get
    the next key that exists (kind ``"sequence+<fallback>"`` when only some rows have one).
    """
    n = len(df)
    if n == 0:
        raise ValueError("grouping_key needs at least one row")
    known = np.zeros(n, dtype=bool)
    if "sequence_id" in df.columns:
        seq = df["sequence_id"].astype("string")
        known = (seq.notna() & (seq.str.len() > 0) & (seq != UNKNOWN)).to_numpy(dtype=bool)
        if known.all():
            return seq.astype(str).to_numpy(dtype=object), "sequence"
    if "camera_id" in df.columns and "timestamp" in df.columns and not df["timestamp"].isna().any():
        if window_minutes <= 0:
            raise ValueError(f"window_minutes must be > 0, got {window_minutes}")
        ts = pd.to_datetime(df["timestamp"], utc=True)
        window = (ts.astype("int64") // int(window_minutes * 60e9)).astype(str)
        fallback, kind = ("cam:" + df["camera_id"].astype(str) + "@" + window).to_numpy(dtype=object), "camera_window"
    else:
        fallback, kind = np.array([f"block:{b}" for b in circular_blocks(n, seed)], dtype=object), "circular_block"
    if known.any():
        return np.where(
            known, ("seq:" + df["sequence_id"].astype(str)).to_numpy(dtype=object), fallback
        ), f"sequence+{kind}"
    return fallback, kind


def circular_blocks(n: int, seed: int) -> np.ndarray:
    """int [n]: rows in blocks of ``ceil(sqrt(n))`` consecutive rows, wrapped from a seeded offset."""
    b = max(1, math.ceil(math.sqrt(n)))
    offset = int(np.random.default_rng(seed).integers(n))
    return ((np.arange(n) + offset) % n) // b


@dataclass(frozen=True)
class GroupPermutations:
    """Group-level permutation draws shared by every test of one day.

    ``ref_side`` bool [B, G]: draw b puts group g on the reference side; groups ``0..G_ref-1``
    are the reference's, ``G_ref..G-1`` the day's (so the observed split is ``g < G_ref``).
    """

    n_ref_groups: int
    n_day_groups: int
    ref_side: np.ndarray
    seed: int

    @property
    def n_permutations(self) -> int:
        return int(self.ref_side.shape[0])

    def sides(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float64 [b, G]: draws ``start..stop`` as 0/1 side indicators (1 = reference)."""
        return self.ref_side[start:stop].astype(np.float64)

    def observed(self) -> np.ndarray:
        """float64 [1, G]: the observed split (the reference's own groups)."""
        return (np.arange(self.n_ref_groups + self.n_day_groups) < self.n_ref_groups).astype(np.float64)[None, :]


def draw_group_permutations(n_ref_groups: int, n_day_groups: int, n_permutations: int, seed: int) -> GroupPermutations:
    """``n_permutations`` uniform relabellings of the pooled groups (first ``n_ref_groups`` = reference)."""
    if n_ref_groups < 1 or n_day_groups < 1:
        raise ValueError(
            f"both samples need at least one group, got {n_ref_groups} reference and {n_day_groups} day groups"
        )
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    g = n_ref_groups + n_day_groups
    rng = np.random.default_rng(seed)
    # a uniformly random subset of n_ref_groups per draw: the smallest n_ref_groups of G uniforms
    chosen = rng.random((n_permutations, g)).argpartition(n_ref_groups - 1, axis=1)[:, :n_ref_groups]
    ref_side = np.zeros((n_permutations, g), dtype=bool)
    np.put_along_axis(ref_side, chosen, True, axis=1)
    return GroupPermutations(n_ref_groups, n_day_groups, ref_side, int(seed))


def encode_groups(ref_groups: Any, day_groups: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Integer codes: reference groups ``0..G_ref-1``, day groups ``G_ref..G-1`` (a day group that
    shares a label with a reference group is still a separate group: the samples are disjoint)."""
    rc, ru = pd.factorize(pd.Series(np.asarray(ref_groups, dtype=object)).astype(str))
    dc, du = pd.factorize(pd.Series(np.asarray(day_groups, dtype=object)).astype(str))
    return rc.astype(np.int64), dc.astype(np.int64) + len(ru), len(ru), len(du)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """``(1 + #{null >= observed}) / (1 + B)`` (a tolerance of 1e-12 relative keeps float ties as ties)."""
    null = np.asarray(null, dtype=np.float64)
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + np.count_nonzero(null >= observed - tol)) / (1 + null.size))


# ------------------------------------------------------------------ group-level statistics
#
# Every statistic below is a function of per-group sums ``S`` [G, k] (built once from the
# rows, :func:`group_sums`) and the side indicator ``V`` [B, G] (1 = reference): the
# reference-side sums of all B splits are one product ``V @ S`` [B, k] and the day-side
# sums are ``S.sum(0) - V @ S``. The cost per day is therefore O(N) to build ``S`` plus
# O(B G k) for the products, whatever N is; the observed split is just another row of V.


def group_sums(codes: np.ndarray, x: np.ndarray, n_groups: int) -> np.ndarray:
    """``S`` [G, k]: column sums of ``x`` [N, k] (or [N]) per group code in ``codes`` [N]."""
    x2 = np.asarray(x, dtype=np.float64).reshape(len(codes), -1)
    a = sparse.csr_matrix(
        (np.ones(len(codes)), (np.asarray(codes), np.arange(len(codes)))), shape=(n_groups, len(codes))
    )
    return np.asarray(a @ x2)


def group_counts(codes: np.ndarray, index: np.ndarray, n_groups: int, n_bins: int) -> np.ndarray:
    """``C`` [G, n_bins]: rows of each group in each bin (``index`` int [N] in ``0..n_bins-1``)."""
    flat = np.asarray(codes, dtype=np.int64) * n_bins + np.asarray(index, dtype=np.int64)
    return np.bincount(flat, minlength=n_groups * n_bins).reshape(n_groups, n_bins).astype(np.float64)


def _split(v: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = v @ s
    return r, s.sum(axis=0)[None, :] - r


def mmd_group_kernel(
    codes: np.ndarray, z: np.ndarray, sigma: float, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray]:
    """Group-aggregated RBF kernel of rows ``z`` [N, D] over the groups that have rows (``active``
    [G_a] group codes): ``K_G = A K Aᵀ`` [G_a, G_a] with its diagonal (all pairs *within* a group)
    zeroed, ``s_G = K_G 1`` [G_a], row counts ``n_G`` [G_a] and ``T = 1ᵀ K_G 1``; ``A`` [G_a, N] is
    the group membership and ``k(a, b) = exp(-||a - b||² / (2σ²))``. ``n_groups`` is the size of
    the full code space.

    Pairs within a sequence are left out: frames of one drive are near-duplicates, so those pairs
    carry no information about the two distributions and, being a large share of the kernel mass,
    drown the between-sequence signal. With one row per group this is the usual unbiased MMD²."""
    z = np.asarray(z, dtype=np.float64)
    active, local = np.unique(np.asarray(codes), return_inverse=True)
    if active.size and active[-1] >= n_groups:
        raise ValueError(f"group code {active[-1]} outside 0..{n_groups - 1}")
    sq = (z * z).sum(axis=1)
    k = np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0) / (2.0 * sigma * sigma))
    kg = group_sums(local, group_sums(local, k, len(active)).T, len(active))  # A (A K)ᵀ = A K Aᵀ (K symmetric)
    np.fill_diagonal(kg, 0.0)
    s = kg.sum(axis=1)
    n_g = np.bincount(local, minlength=len(active)).astype(np.float64)
    return kg, s, n_g, float(s.sum()), active


def mmd_stat(kernel: tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray], v: np.ndarray) -> np.ndarray:
    """Between-group unbiased MMD² [B] of the splits ``v`` [B, G]: kernel means over pairs of rows
    from *different* groups, ``Σ_XX = vᵀK_Gv`` over ``n_x² - Σ_{g∈X} n_g²`` pairs, ``Σ_YY = T - 2vᵀs_G
    + vᵀK_Gv`` over ``n_y² - Σ_{g∈Y} n_g²``, ``Σ_XY = vᵀs_G - vᵀK_Gv`` over ``n_x n_y`` (ordered pairs)."""
    kg, s, n_g, total, active = kernel
    v = v[:, active]
    n, n2 = n_g.sum(), (n_g**2).sum()
    nx = v @ n_g
    ny = n - nx
    sx2 = v @ (n_g**2)
    px, py = nx * nx - sx2, ny * ny - (n2 - sx2)
    q = ((v @ kg) * v).sum(axis=1)
    r = v @ s
    with np.errstate(divide="ignore", invalid="ignore"):
        out = q / px + (total - 2 * r + q) / py - 2.0 * (r - q) / (nx * ny)
    return np.where((px > 0) & (py > 0), out, -np.inf)


def grid_index(values: np.ndarray, max_points: int = 512) -> tuple[np.ndarray, int]:
    """Rank of each value among the distinct pooled values (int [N], count T), or, above
    ``max_points`` distinct values, its bin among ``max_points`` pooled-quantile bins."""
    v = np.asarray(values, dtype=np.float64)
    vs = np.sort(v)
    uniq = vs[np.r_[vs[1:] != vs[:-1], True]]
    if len(uniq) > max_points:  # the pooled (inverted-CDF) quantiles k / max_points
        uniq = np.unique(vs[(np.arange(1, max_points + 1) * len(v) + max_points - 1) // max_points - 1])
    return np.searchsorted(uniq, v, side="left"), len(uniq)


def ks_stat(cum_counts: np.ndarray, v: np.ndarray) -> np.ndarray:
    """KS distance [B] from per-group *cumulative* counts ``cum_counts`` [G, T] (rows of the group
    with value <= grid point t, :func:`grid_index` + ``cumsum``): ``max_t |F_ref(t) - F_day(t)|``.
    With at most ``max_points`` distinct values this is exactly the two-sample KS statistic.
    Counts are exact in float32 (integers < 2^24), which halves the cost of the product."""
    c = cum_counts.astype(np.float32, copy=False)
    cx = v.astype(np.float32, copy=False) @ c
    cy = c.sum(axis=0)[None, :] - cx
    nx, ny = cx[:, -1:], cy[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(cx / nx - cy / ny).max(axis=1).astype(np.float64)
    return np.where((nx[:, 0] > 0) & (ny[:, 0] > 0), d, -np.inf)


def psi_stat(counts: np.ndarray, v: np.ndarray, eps: float = PSI_EPS) -> np.ndarray:
    """PSI [B] of the bin shares of the reference side vs the day side; ``counts`` [G, bins]
    per-group rows per bin (fixed reference edges or category codes); empty shares -> ``eps``."""
    rx, ry = _split(v, counts)
    nx, ny = rx.sum(axis=1, keepdims=True), ry.sum(axis=1, keepdims=True)
    r = np.where(rx > 0, rx / np.maximum(nx, 1), eps)
    c = np.where(ry > 0, ry / np.maximum(ny, 1), eps)
    return ((r - c) * np.log(r / c)).sum(axis=1)


def accuracy_sums(codes: np.ndarray, correct: np.ndarray, n_groups: int) -> np.ndarray:
    """[G, 2]: labelled rows and correct predictions per group."""
    c = np.asarray(correct, dtype=np.float64)
    return group_sums(codes, np.column_stack([np.ones_like(c), c]), n_groups)


def accuracy_drop_stat(sums: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Relative accuracy drop [B]: ``(acc_ref - acc_day) / acc_ref`` from :func:`accuracy_sums`."""
    rx, ry = _split(v, sums)
    with np.errstate(divide="ignore", invalid="ignore"):
        ax, ay = rx[:, 1] / rx[:, 0], ry[:, 1] / ry[:, 0]
        out = (ax - ay) / ax
    return np.where((rx[:, 0] > 0) & (ry[:, 0] > 0) & (ax > 0), out, -np.inf)


def ece_sums(codes: np.ndarray, probs1: np.ndarray, labels: np.ndarray, n_groups: int, n_bins: int = 15) -> np.ndarray:
    """[G, n_bins + 1]: per group, the sum of ``confidence - correct`` in each top-label
    confidence bin (the bins of :func:`roadwork_ml.evaluation.metrics.ece`, argmax ``p > 0.5``)
    and, last, the labelled row count."""
    p = np.asarray(probs1, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    conf = np.maximum(p, 1 - p)
    correct = ((p > 0.5).astype(np.float64) == y).astype(np.float64)
    x = np.zeros((len(p), n_bins + 1))
    x[np.arange(len(p)), _bin_index(conf, n_bins)] = conf - correct
    x[:, -1] = 1.0
    return group_sums(codes, x, n_groups)


def ece_increase_stat(sums: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``ECE_day - ECE_ref`` [B] from :func:`ece_sums` (``ECE = Σ_b |Σ_{i∈b}(conf_i - correct_i)| / n``)."""
    rx, ry = _split(v, sums)
    nx, ny = rx[:, -1], ry[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.abs(ry[:, :-1]).sum(axis=1) / ny - np.abs(rx[:, :-1]).sum(axis=1) / nx
    return np.where((nx > 0) & (ny > 0), out, -np.inf)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values: reject test i at family-wise level α iff ``p_adj[i] <= α``."""
    names = list(p_values)
    p = np.array([p_values[k] for k in names], dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return {k: float(v) for k, v in zip(names, out, strict=False)}
