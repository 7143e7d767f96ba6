"""Fusion of the sources into one pool, before splitting.

Pipeline order::

    concat(source manifests) ─► dedup.deduplicate ─► fuse ─► splitting.assign_splits(stratify_col="stratum")

* After dedup, so a cross-source duplicate counts once when sources are balanced.
* Before splitting, so every split (TRAIN and the three validation splits) holds the same
  fused mix; per-source behaviour is still visible in the evaluation's per-source slices.

Strategies (``SplitConfig.fusion``):

``naive``
    keep everything.
``balanced``
    every source contributes as many images as the smallest source.
``weighted``
    ``source_weights`` are relative *sampling rates*: source ``s`` keeps a fraction
    ``w_s / max(w)`` of its images (the highest-weight source is kept whole, which is the
    largest feasible total). Weight 0 drops a source; all weights equal = ``naive``.
``domain_stratified``
    keep everything, and stratify the splits on source × label (the ``stratum`` column),
    so each split has the pool's source × label mix.
``mixing``
    ``mixing_ratios`` are target shares of the fused pool per source (renormalized over the
    sources present); the largest pool with those shares is reached by downsampling the
    over-represented sources only.

Downsampling always keeps whole (source, group) units — never half a drive — picked in a
seeded random order and accepted while they bring the source closer to its per-label
targets, so each source keeps its own positive share. Every strategy returns the frame
with a ``stratum`` column (``"<source>|<label>"`` for ``domain_stratified``, ``"<label>"``
otherwise) for ``assign_splits(..., stratify_col="stratum")``, and a report of counts per
source before and after.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

STRATEGIES = ("naive", "balanced", "weighted", "domain_stratified", "mixing")


class FusionResult(NamedTuple):
    frame: pd.DataFrame
    report: dict


def _unit_matrix(part: pd.DataFrame, group_col: str, label_col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit code per row, U × labels count matrix, label values) for one source."""
    u_codes, _ = pd.factorize(part[group_col].astype(str).to_numpy(), sort=True)
    y_codes, y_values = pd.factorize(part[label_col].to_numpy(), sort=True)
    V = np.zeros((int(u_codes.max()) + 1 if len(u_codes) else 0, len(y_values)))
    np.add.at(V, (u_codes, y_codes), 1.0)
    return u_codes, V, np.asarray(y_values)


def sample_groups(V: np.ndarray, targets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over units (rows of ``V``, counts per label) whose sum approaches ``targets``.

    Units are visited in a random order; a unit is taken when it lowers
    ``sum_k (sel_k - t_k)^2 / max(t_k, 1)``. Whole units only, so the result can miss the
    target by at most about one unit per label.
    """
    U, K = V.shape
    take = np.zeros(U, dtype=bool)
    if U == 0:
        return take
    if (V.sum(0) <= targets + 1e-9).all():
        take[:] = True
        return take
    wl = (1.0 / np.maximum(targets, 1.0)).tolist()
    t = targets.tolist()
    sel = [0.0] * K
    rows = V.tolist()
    for u in rng.permutation(U).tolist():
        v = rows[u]
        d = 0.0
        for k in range(K):
            vk = v[k]
            if vk:
                d += wl[k] * vk * (vk + 2.0 * (sel[k] - t[k]))
        if d < 0.0:
            take[u] = True
            for k in range(K):
                sel[k] += v[k]
            if all(abs(sel[k] - t[k]) <= 0.5 for k in range(K)):
                break  # on target: nothing can improve it
    return take


def _source_targets(counts: pd.Series, strategy: str, source_weights, mixing_ratios) -> tuple[dict[str, float], dict]:
    """Target image count per source, and report extras."""
    sources = list(counts.index)
    extra: dict = {}
    if strategy == "balanced":
        m = float(counts.min())
        return {s: m for s in sources}, extra
    if strategy == "weighted":
        if source_weights is None:
            raise ValueError("fusion 'weighted' needs source_weights")
        missing = [s for s in sources if s not in source_weights]
        if missing:
            raise ValueError(f"fusion 'weighted': source_weights has no weight for sources {missing}")
        w = {s: float(source_weights[s]) for s in sources}
        if any(v < 0 for v in w.values()) or max(w.values()) <= 0:
            raise ValueError(f"fusion 'weighted': weights must be >= 0 with one > 0, got {w}")
        top = max(w.values())
        extra["keep_fraction"] = {s: w[s] / top for s in sources}
        return {s: counts[s] * w[s] / top for s in sources}, extra
    if strategy == "mixing":
        if mixing_ratios is None:
            raise ValueError("fusion 'mixing' needs mixing_ratios")
        missing = [s for s in sources if s not in mixing_ratios]
        if missing:
            raise ValueError(f"fusion 'mixing': mixing_ratios has no share for sources {missing}")
        m = {s: float(mixing_ratios[s]) for s in sources}
        if any(v < 0 for v in m.values()) or sum(m.values()) <= 0:
            raise ValueError(f"fusion 'mixing': shares must be >= 0 with one > 0, got {m}")
        absent = sorted(s for s, v in mixing_ratios.items() if s not in sources and float(v) > 0)
        total = sum(m.values())
        if absent or abs(total - 1.0) > 1e-6:
            note = f"mixing_ratios renormalized over present sources {sources}" + (
                f"; no rows for {absent}" if absent else ""
            )
            warnings.warn(note, stacklevel=3)
            extra["note"] = note
        share = {s: v / total for s, v in m.items()}
        k = min(counts[s] / share[s] for s in sources if share[s] > 0)  # largest feasible pool
        extra["target_share"] = share
        return {s: k * share[s] for s in sources}, extra
    raise AssertionError(strategy)


def fuse(
    df: pd.DataFrame,
    strategy: str,
    source_weights: Mapping[str, float] | None = None,
    mixing_ratios: Mapping[str, float] | None = None,
    seed: int = 0,
    *,
    group_col: str = "group_id",
    label_col: str = "label",
    source_col: str = "source",
) -> FusionResult:
    """Fuse the deduplicated pool of all sources; returns ``FusionResult(frame, report)``.

    ``frame`` keeps ``df``'s columns and index (rows in their original order), plus
    ``stratum``. ``report``: strategy, counts / positive share / share of pool per source
    before and after, target per source where the strategy has one. Unknown strategy ->
    ``ValueError``. Deterministic in ``seed``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown fusion strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    for c in (group_col, label_col, source_col):
        if c not in df.columns:
            raise ValueError(f"fuse: input lacks column {c!r}")
    counts = df[source_col].astype(str).value_counts().sort_index()
    keep = np.ones(len(df), dtype=bool)
    extra: dict = {}
    targets: dict[str, float] | None = None
    if strategy in ("balanced", "weighted", "mixing") and len(df):
        targets, extra = _source_targets(counts, strategy, source_weights, mixing_ratios)
        rng = np.random.default_rng(seed)
        src = df[source_col].astype(str).to_numpy()
        for s in counts.index:  # sorted: the rng stream is deterministic
            pos = np.flatnonzero(src == s)
            part = df.iloc[pos]
            u_codes, V, _ = _unit_matrix(part, group_col, label_col)
            share = V.sum(0) / V.sum()
            take = sample_groups(V, share * targets[s], rng)
            keep[pos] = take[u_codes]
    out = df.iloc[np.flatnonzero(keep)].copy()
    if strategy == "domain_stratified":
        out["stratum"] = out[source_col].astype(str) + "|" + out[label_col].astype(str)
    else:
        out["stratum"] = out[label_col].astype(str)
    return FusionResult(
        out, fusion_report(df, out, strategy, targets, extra, label_col=label_col, source_col=source_col)
    )


def fusion_report(
    before: pd.DataFrame,
    after: pd.DataFrame,
    strategy: str,
    targets=None,
    extra=None,
    *,
    label_col="label",
    source_col="source",
) -> dict:
    def stats(frame: pd.DataFrame) -> dict:
        n = len(frame)
        return {
            str(s): {
                "n": int(len(p)),
                "share": float(len(p) / n) if n else 0.0,
                "positive_share": float((p[label_col] == 1).mean()) if len(p) else float("nan"),
            }
            for s, p in frame.groupby(source_col, sort=True)
        }

    rep = {
        "strategy": strategy,
        "n_before": int(len(before)),
        "n_after": int(len(after)),
        "before": stats(before),
        "after": stats(after),
    }
    if targets is not None:
        rep["target_n"] = {str(s): float(v) for s, v in targets.items()}
    rep.update(extra or {})
    return rep
