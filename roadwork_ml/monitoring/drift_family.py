"""The day's family of group-permutation drift tests, Holm-corrected as one family.

:func:`drift_family` runs, on one shared set of group-level permutations
(:mod:`.group_tests`), every test the day's decision uses:

==================  ===============================================  ===========
test name           statistic                                        side
==================  ===============================================  ===========
``mmd``             unbiased MMD² of the (PCA) embeddings            larger
``ks:<col>``        KS distance of each model column                 larger
``psi:<col>``       PSI of each model column (reference's edges)     larger
``psi:<category>``  PSI of the shares of each slice category         larger
``accuracy_drop``   relative drop of labelled accuracy vs reference  larger
``ece_increase``    ECE(day) - ECE(reference) on labelled rows       larger
==================  ===============================================  ===========

Each p-value is ``(1 + #{T* >= T}) / (1 + B)``; Holm's correction over *all* tests run
gives ``p_holm``, and ``rejected = p_holm <= alpha``, so a stable day has P(any rejection)
<= alpha. The labelled tests run only when both sides hold ``min_labels`` labelled rows;
a reference labelled more densely than the day is first thinned (seeded) to the day's
labelled fraction, so a group's labelled share is the same on either side (exchangeability).
Permutations are processed in chunks so the side matrix ``V`` [b, G] stays within
``max_cells`` float64 cells (memory ~ 8 * max_cells bytes per matrix). KS uses the exact
ECDFs up to ``max_ks_points`` distinct pooled values, else a pooled-quantile grid of that size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from roadwork_ml.monitoring.group_tests import (
    GroupPermutations,
    accuracy_drop_stat,
    accuracy_sums,
    draw_group_permutations,
    ece_increase_stat,
    ece_sums,
    encode_groups,
    grid_index,
    group_counts,
    holm,
    ks_stat,
    mmd_group_kernel,
    mmd_stat,
    permutation_p,
    psi_stat,
)

__all__ = ["DriftSample", "FamilyResult", "drift_family", "subsample_groups"]


@dataclass
class DriftSample:
    """One side of the comparison.

    ``values`` [N, C] model columns, ``groups`` [N] grouping key of those rows;
    ``embeddings`` [M, k] with ``embedding_groups`` [M] (may be other rows of the same groups);
    ``categories``: name -> [N] strings; ``labels`` [N] 0/1 with -1 or NaN = none (``values[:, 0]``
    is the calibrated P(roadwork) the labelled tests score).
    """

    values: np.ndarray
    groups: np.ndarray
    embeddings: np.ndarray | None = None
    embedding_groups: np.ndarray | None = None
    categories: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None


@dataclass
class FamilyResult:
    """``tests``: name -> {statistic, p_value, p_holm, rejected}; ``alpha``: family-wise level."""

    tests: dict[str, dict[str, Any]]
    alpha: float
    n_permutations: int
    seed: int
    groups: dict[str, int]

    @property
    def any_rejected(self) -> bool:
        return any(t["rejected"] for t in self.tests.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "tests": self.tests,
            "alpha": self.alpha,
            "n_permutations": self.n_permutations,
            "seed": self.seed,
            "groups": self.groups,
            "any_rejected": self.any_rejected,
        }


def subsample_groups(groups: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Sorted row indices of whole groups, drawn in a seeded random order until ``max_rows`` is reached."""
    g = pd.Series(np.asarray(groups, dtype=object)).astype(str)
    if len(g) <= max_rows:
        return np.arange(len(g))
    codes, uniques = pd.factorize(g)
    order = np.random.default_rng(seed).permutation(len(uniques))
    sizes = np.bincount(codes, minlength=len(uniques))
    keep_groups = order[np.cumsum(sizes[order]) <= max_rows]
    if keep_groups.size == 0:
        keep_groups = order[:1]
    return np.flatnonzero(np.isin(codes, keep_groups))


def _run(stat, perms: GroupPermutations, max_cells: int) -> tuple[float, float]:
    """Observed statistic and its permutation p-value; ``stat(v [b, G]) -> [b]``."""
    observed = float(stat(perms.observed())[0])
    g = perms.n_ref_groups + perms.n_day_groups
    chunk = max(1, min(perms.n_permutations, max_cells // max(1, g)))
    null = np.concatenate([stat(perms.sides(s, s + chunk)) for s in range(0, perms.n_permutations, chunk)])
    return observed, permutation_p(observed, null)


def _labelled(sample: DriftSample) -> np.ndarray:
    if sample.labels is None:
        return np.zeros(len(sample.values), dtype=bool)
    y = np.asarray(sample.labels, dtype=np.float64)
    return np.isin(y, (0.0, 1.0))


def drift_family(
    reference: DriftSample,
    day: DriftSample,
    columns: Sequence[str],
    edges: Mapping[str, np.ndarray],
    sigma: float | None,
    n_permutations: int,
    seed: int,
    alpha: float,
    min_labels: int = 50,
    tests: Sequence[str] = ("mmd", "ks", "psi", "category", "accuracy_drop", "ece_increase"),
    max_cells: int = 4_000_000,
    max_ks_points: int = 512,
) -> FamilyResult:
    """Run the family (module table) and Holm-correct it; see :class:`DriftSample` for shapes.

    ``edges``: interior PSI bin edges per column (the reference's quantiles); ``sigma``: the
    RBF bandwidth of the MMD (the reference's, fixed); ``seed``: the day's seed (``day_seed``).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    ref_all = np.concatenate(
        [np.asarray(reference.groups, dtype=object)]
        + ([np.asarray(reference.embedding_groups, dtype=object)] if reference.embedding_groups is not None else [])
    )
    day_all = np.concatenate(
        [np.asarray(day.groups, dtype=object)]
        + ([np.asarray(day.embedding_groups, dtype=object)] if day.embedding_groups is not None else [])
    )
    rc, dc, g_ref, g_day = encode_groups(ref_all, day_all)
    n_r, n_d = len(reference.values), len(day.values)
    ref_codes, day_codes = rc[:n_r], dc[:n_d]
    perms = draw_group_permutations(g_ref, g_day, n_permutations, seed)
    g = g_ref + g_day
    codes = np.concatenate([ref_codes, day_codes])
    pooled = np.concatenate([np.asarray(reference.values, dtype=np.float64), np.asarray(day.values, dtype=np.float64)])
    raw: dict[str, dict[str, Any]] = {}

    if "mmd" in tests and reference.embeddings is not None and day.embeddings is not None and sigma is not None:
        e_codes = np.concatenate([rc[n_r:], dc[n_d:]])
        kernel = mmd_group_kernel(e_codes, np.concatenate([reference.embeddings, day.embeddings]), sigma, g)
        t, p = _run(lambda v: mmd_stat(kernel, v), perms, max_cells)
        raw["mmd"] = {"kind": "mmd", "column": "embedding", "statistic": t, "p_value": p, "rows": len(e_codes)}
    for j, col in enumerate(columns):
        x = pooled[:, j]
        if "ks" in tests:
            idx, t_points = grid_index(x, max_ks_points)
            counts = np.cumsum(group_counts(codes, idx, g, t_points), axis=1).astype(np.float32)
            t, p = _run(lambda v, c=counts: ks_stat(c, v), perms, max_cells)
            raw[f"ks:{col}"] = {"kind": "ks", "column": col, "statistic": t, "p_value": p}
        if "psi" in tests:
            e = np.asarray(edges[col], dtype=np.float64)
            counts = group_counts(codes, np.searchsorted(e, x, side="left"), g, len(e) + 1)
            t, p = _run(lambda v, c=counts: psi_stat(c, v), perms, max_cells)
            raw[f"psi:{col}"] = {"kind": "psi", "column": col, "statistic": t, "p_value": p}
    if "category" in tests:
        for name in sorted(set(reference.categories) & set(day.categories)):
            cats = np.concatenate(
                [np.asarray(reference.categories[name]).astype(str), np.asarray(day.categories[name]).astype(str)]
            )
            idx, uniq = pd.factorize(pd.Series(cats))
            if len(uniq) < 2:
                continue
            counts = group_counts(codes, idx, g, len(uniq))
            t, p = _run(lambda v, c=counts: psi_stat(c, v), perms, max_cells)
            raw[f"psi:{name}"] = {"kind": "psi_category", "column": name, "statistic": t, "p_value": p}
    lr, ld = _labelled(reference), _labelled(day)
    if lr.mean() > ld.mean() > 0:
        # Permuting groups is exact only if a group's labelled share does not depend on its side:
        # thin the (usually fully labelled) reference to the day's label fraction, seeded.
        keep = np.random.default_rng([seed, 1]).random(len(lr)) < ld.mean() / lr.mean()
        lr = lr & keep
    if lr.sum() >= min_labels and ld.sum() >= min_labels:
        lab = np.concatenate([lr, ld])
        y = np.concatenate([np.asarray(reference.labels, dtype=np.float64), np.asarray(day.labels, dtype=np.float64)])[
            lab
        ]
        p1 = pooled[lab, 0]
        lc = codes[lab]
        if "accuracy_drop" in tests:
            sums = accuracy_sums(lc, ((p1 > 0.5).astype(np.float64) == y).astype(np.float64), g)
            t, p = _run(lambda v: accuracy_drop_stat(sums, v), perms, max_cells)
            raw["accuracy_drop"] = {
                "kind": "accuracy_drop",
                "column": "label",
                "statistic": t,
                "p_value": p,
                "rows": int(lab.sum()),
            }
        if "ece_increase" in tests:
            esums = ece_sums(lc, p1, y, g)
            t, p = _run(lambda v: ece_increase_stat(esums, v), perms, max_cells)
            raw["ece_increase"] = {
                "kind": "ece_increase",
                "column": "label",
                "statistic": t,
                "p_value": p,
                "rows": int(lab.sum()),
            }

    adjusted = holm({k: v["p_value"] for k, v in raw.items()}) if raw else {}
    for k, v in raw.items():
        v["p_holm"] = adjusted[k]
        v["rejected"] = bool(adjusted[k] <= alpha)
    return FamilyResult(
        tests=raw,
        alpha=float(alpha),
        n_permutations=int(n_permutations),
        seed=int(seed),
        groups={"reference": int(g_ref), "day": int(g_day)},
    )
