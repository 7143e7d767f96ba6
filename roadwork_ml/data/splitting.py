"""Group-aware, label-stratified splits into TRAIN / VAL_SELECT / VAL_CALIB / VAL_TEST.

Pipeline order: ``deduplicate`` (dedup.py) ─► ``fuse`` (fusion.py) ─► :func:`assign_splits`.

The unit of assignment is a *group* (``group_id``: a drive sequence, a GPS cell, or a
merged group of near-duplicate scenes — see ``dedup.merge_groups_of_duplicates``), so no
group ever straddles two splits. Within that constraint we want, per split ``s`` and
stratum ``k`` (the label, or (stratify value, label) when a stratify column is given,
e.g. fusion's ``source|label`` ``stratum``), a count close to ``T[s, k] = ratio_s * N_k``.

Algorithm (deterministic by seed)
---------------------------------
1. Aggregate rows into a group × stratum count matrix ``V``.
2. Greedy: visit groups by size descending (ties broken by a seeded shuffle) and put
   each into the split whose cost grows least. The cost is a chi-square-like distance
   to the targets, ``sum_{s,k} (C[s,k] - T[s,k])^2 / T[s,k] + sum_s (C_s - T_s)^2 / T_s``,
   so small splits (VAL_TEST at 10 %) count as much, relatively, as TRAIN. Big groups
   first, singletons last to fine-tune (the bin-packing heuristic also behind sklearn's
   ``StratifiedGroupKFold``).
3. Local search, vectorized: evaluate moving every group to every other split at once
   (two small matrix products), apply the best improving move, repeat until none improves.
4. Repair: if a split lacks a label that the pool has in at least as many groups as there
   are splits, move the cheapest group carrying that label there from a split that has
   several such groups.
5. If the class share of some split is still beyond ``tolerance`` of the pool share, try a
   few more seeded orders (restarts) and keep the best (fewest violations, then cost).

20k rows in 5k groups take well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from roadwork_ml.contracts import LeakageError, Split, assert_disjoint
from roadwork_ml.data.dedup import near_duplicate_pairs

SPLIT_NAMES: tuple[str, ...] = tuple(s.value for s in Split)


# --- group keys ----------------------------------------------------------------------------


def gps_cell(lat: float, lon: float, cell_deg: float) -> str:
    """Key of the ``cell_deg`` × ``cell_deg`` GPS cell holding (lat, lon), e.g. ``'gps:0.01:4871:235'``.

    Frames of one place share a cell; two frames a few metres apart across a cell border do
    not (use sequence ids as well where available, see :func:`union_group_keys`).
    """
    if cell_deg <= 0:
        raise ValueError(f"gps_cell: cell_deg must be > 0, got {cell_deg}")
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"gps_cell: lat/lon must be finite numbers, got ({lat}, {lon})")
    return f"gps:{cell_deg:g}:{math.floor(lat / cell_deg)}:{math.floor(lon / cell_deg)}"


def gps_cells(lat, lon, cell_deg: float) -> np.ndarray:
    """Vectorized :func:`gps_cell`; rows with a missing / non-finite coordinate get ``''``."""
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    ok = np.isfinite(lat) & np.isfinite(lon)
    out = np.full(lat.shape, "", dtype=object)
    ilat = np.floor(lat[ok] / cell_deg).astype(np.int64)
    ilon = np.floor(lon[ok] / cell_deg).astype(np.int64)
    out[ok] = [f"gps:{cell_deg:g}:{a}:{b}" for a, b in zip(ilat.tolist(), ilon.tolist(), strict=False)]
    return out


def group_key(
    source: str,
    record_id: str,
    *,
    sequence_id: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    cell_deg: float | None = None,
    camera_id: str | None = None,
) -> str:
    """One record's group key, most specific evidence of "same scene" first.

    sequence (frames of one drive) ► GPS cell (frames of one place) ► camera ► the record
    itself. Unknown values (``None``, ``''``, ``'unknown'``) are skipped. Keys are prefixed
    with the source so two sources' sequence ids never collide.
    """

    def known(v) -> bool:
        return v is not None and str(v) not in ("", "unknown", "nan")

    if known(sequence_id):
        return f"{source}:seq:{sequence_id}"
    if cell_deg is not None and lat is not None and lon is not None and math.isfinite(lat) and math.isfinite(lon):
        return gps_cell(lat, lon, cell_deg)  # a place is a place, whatever the source
    if known(camera_id):
        return f"{source}:cam:{camera_id}"
    return f"{source}:rec:{record_id}"


def union_group_keys(df: pd.DataFrame, columns: Iterable[str]) -> pd.Series:
    """Merge rows that share *any* non-empty key among ``columns`` (e.g. sequence and GPS cell).

    Returns a group id per row (the smallest key string of the component, prefixed
    ``'u:'``); rows with no key at all get ``'u:row:<index>'``. Uses connected components.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    columns = list(columns)
    n = len(df)
    keys_all = []
    rows_all = []
    for c in columns:
        vals = df[c].astype(str).to_numpy()
        ok = ~np.isin(vals, ["", "unknown", "nan", "None"])
        keys_all.append(np.char.add(f"{c}=", vals[ok].astype(str)))
        rows_all.append(np.flatnonzero(ok))
    keys = np.concatenate(keys_all) if keys_all else np.empty(0, dtype=str)
    rows = np.concatenate(rows_all) if rows_all else np.empty(0, dtype=np.int64)
    codes, names = pd.factorize(keys, sort=True)
    # bipartite graph rows <-> keys
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, n + codes)), shape=(n + len(names), n + len(names)))
    _, comp = connected_components(graph, directed=False)
    best = {}
    for code, name in enumerate(names):
        c = comp[n + code]
        if c not in best:  # names sorted: first seen is the smallest
            best[c] = name
    out = [f"u:{best[comp[i]]}" if comp[i] in best else f"u:row:{idx}" for i, idx in enumerate(df.index)]
    return pd.Series(out, index=df.index, name="group_id")


# --- assignment ----------------------------------------------------------------------------


def _validate_ratios(ratios: dict[str, float]) -> tuple[list[str], np.ndarray]:
    unknown = set(ratios) - set(SPLIT_NAMES)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; expected a subset of {list(SPLIT_NAMES)}")
    names = [s for s in SPLIT_NAMES if s in ratios]
    r = np.array([float(ratios[s]) for s in names])
    if (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"split ratios must be >= 0 and sum to > 0, got {ratios}")
    return names, r / r.sum()


def _strata(df: pd.DataFrame, label_col: str, stratify_col: str | None) -> np.ndarray:
    if stratify_col is None:
        return pd.factorize(df[label_col].to_numpy(), sort=True)[0]
    key = df[stratify_col].astype(str) + "\x1f" + df[label_col].astype(str)
    return pd.factorize(key.to_numpy(), sort=True)[0]


class _Problem:
    """Targets and weights of the chi-square cost, over groups × strata counts."""

    def __init__(self, V: np.ndarray, ratios: np.ndarray):
        self.V = V  # G × K counts
        self.n = V.sum(1)  # G
        N_k = V.sum(0)
        self.active = ratios > 0
        self.T = ratios[:, None] * N_k[None, :]  # S × K
        self.Tt = self.T.sum(1)  # S
        self.W = 1.0 / np.maximum(self.T, 1.0)
        self.Wt = 1.0 / np.maximum(self.Tt, 1.0)
        self.V2W = (V * V) @ self.W.T  # G × S: sum_k W[s,k] v_k^2
        self.n2Wt = (self.n * self.n)[:, None] * self.Wt[None, :]  # G × S

    def cost(self, C: np.ndarray) -> float:
        return float((((C - self.T) ** 2) * self.W).sum() + (((C.sum(1) - self.Tt) ** 2) * self.Wt).sum())

    def counts(self, assign: np.ndarray) -> np.ndarray:
        C = np.zeros_like(self.T)
        np.add.at(C, assign, self.V)
        return C

    def greedy(self, order: np.ndarray) -> np.ndarray:
        # Pure-Python inner loop: S and K are tiny, numpy call overhead would dominate.
        S, K = self.T.shape
        T = self.T.tolist()
        W = self.W.tolist()
        Tt = self.Tt.tolist()
        Wt = self.Wt.tolist()
        C = [[0.0] * K for _ in range(S)]
        Ct = [0.0] * S
        splits = [s for s in range(S) if self.active[s]]
        rows, cols = np.nonzero(self.V)
        vals = self.V[rows, cols]
        starts = np.searchsorted(rows, np.arange(len(self.V) + 1)).tolist()
        cols_l, vals_l, n_l = cols.tolist(), vals.tolist(), self.n.tolist()
        assign = np.empty(len(self.V), dtype=np.int64)
        for g in order.tolist():
            lo, hi = starts[g], starts[g + 1]
            nz = list(zip(cols_l[lo:hi], vals_l[lo:hi], strict=False))
            n = n_l[g]
            best_s, best_d = -1, float("inf")
            for s in splits:
                Cs, Ts, Ws = C[s], T[s], W[s]
                d = Wt[s] * n * (n + 2.0 * (Ct[s] - Tt[s]))
                for k, v in nz:
                    d += Ws[k] * v * (v + 2.0 * (Cs[k] - Ts[k]))
                if d < best_d:
                    best_s, best_d = s, d
            assign[g] = best_s
            Cs = C[best_s]
            for k, v in nz:
                Cs[k] += v
            Ct[best_s] += n
        return assign

    def move_deltas(self, assign: np.ndarray, C: np.ndarray) -> np.ndarray:
        """G × S: cost change of moving each group to each split (0 for its own split)."""
        D = C - self.T
        Dt = C.sum(1) - self.Tt
        VD = self.V @ (self.W * D).T  # G × S
        nD = self.n[:, None] * (self.Wt * Dt)[None, :]
        add = self.V2W + 2.0 * VD + self.n2Wt + 2.0 * nD
        g = np.arange(len(assign))
        rm = self.V2W[g, assign] - 2.0 * VD[g, assign] + self.n2Wt[g, assign] - 2.0 * nD[g, assign]
        delta = add + rm[:, None]
        delta[g, assign] = 0.0
        delta[:, ~self.active] = np.inf
        return delta

    def local_search(self, assign: np.ndarray, max_moves: int = 2000) -> np.ndarray:
        assign = assign.copy()
        C = self.counts(assign)
        for _ in range(max_moves):
            delta = self.move_deltas(assign, C)
            flat = int(np.argmin(delta))
            g, s = divmod(flat, delta.shape[1])
            if delta[g, s] >= -1e-9:
                break
            C[assign[g]] -= self.V[g]
            C[s] += self.V[g]
            assign[g] = s
        return assign


def _label_matrix(groups: np.ndarray, labels: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    lab_codes, lab_values = pd.factorize(labels, sort=True)
    L = np.zeros((n_groups, len(lab_values)))
    np.add.at(L, (groups, lab_codes), 1.0)
    return L, np.asarray(lab_values)


def _share_violations(assign: np.ndarray, L: np.ndarray, active: np.ndarray, tolerance: float) -> float:
    """Sum of excess |class share - pool share| beyond tolerance over splits (0 = all within)."""
    S = len(active)
    CL = np.zeros((S, L.shape[1]))
    np.add.at(CL, assign, L)
    pool = L.sum(0) / max(L.sum(), 1.0)
    tot = CL.sum(1, keepdims=True)
    share = np.divide(CL, tot, out=np.zeros_like(CL), where=tot > 0)
    excess = np.clip(np.abs(share - pool[None, :]) - tolerance, 0, None)
    missing = ((CL == 0) & (pool[None, :] > 0)).sum(1)
    return float((excess.sum(1) + missing)[active].sum())


def _repair_missing_labels(prob: _Problem, assign: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Move groups so each active split holds every label the pool has in enough groups."""
    assign = assign.copy()
    S = len(prob.active)
    n_active = int(prob.active.sum())
    has = L > 0  # G × labels
    for c in range(L.shape[1]):
        if int(has[:, c].sum()) < n_active:
            continue  # infeasible: fewer groups with this label than splits
        for _ in range(n_active):
            per_split = np.bincount(assign[has[:, c]], minlength=S)
            lacking = [s for s in range(S) if prob.active[s] and per_split[s] == 0]
            if not lacking:
                break
            s = lacking[0]
            donors = has[:, c] & (per_split[assign] >= 2)
            if not donors.any():
                break
            C = prob.counts(assign)
            delta = prob.move_deltas(assign, C)[:, s]
            delta[~donors] = np.inf
            g = int(np.argmin(delta))
            assign[g] = s
    return assign


def assign_splits(
    df: pd.DataFrame,
    ratios: dict[str, float],
    seed: int,
    tolerance: float,
    *,
    group_col: str = "group_id",
    label_col: str = "label",
    stratify_col: str | None = None,
    id_col: str = "record_id",
    n_restarts: int = 8,
) -> pd.Series:
    """Split name (``'train'``, ``'val_select'``, ``'val_calib'``, ``'val_test'``) per row of ``df``.

    Whole groups go to one split; counts follow ``ratios`` and, per split, the share of each
    stratum (label, or ``stratify_col`` × label) follows the pool's. ``tolerance`` is the
    allowed |class share − pool share| per split: when the first solution misses it, up to
    ``n_restarts`` further seeded orders are tried. The result is deterministic in ``seed``.
    Raises :class:`LeakageError` if a ``record_id`` repeats across groups that land in
    different splits (ids must be unique; deduplicate first).
    """
    names, r = _validate_ratios(ratios)
    for c in (group_col, label_col) + ((stratify_col,) if stratify_col else ()):
        if c not in df.columns:
            raise ValueError(f"assign_splits: input lacks column {c!r}")
    if len(df) == 0:
        return pd.Series([], index=df.index, dtype=object, name="split")
    if df[group_col].isna().any() or (df[group_col].astype(str) == "").any():
        raise ValueError(f"assign_splits: {group_col!r} is empty for some rows; every record needs a group")

    g_codes, g_names = pd.factorize(df[group_col].astype(str).to_numpy(), sort=True)
    G = len(g_names)
    k_codes = _strata(df, label_col, stratify_col)
    V = np.zeros((G, int(k_codes.max()) + 1))
    np.add.at(V, (g_codes, k_codes), 1.0)
    prob = _Problem(V, r)
    L, _ = _label_matrix(g_codes, df[label_col].to_numpy(), G)

    rng = np.random.default_rng(seed)
    best = None
    for _attempt in range(1 + max(0, n_restarts)):
        perm = rng.permutation(G)
        order = perm[np.argsort(-prob.n[perm], kind="stable")]  # size desc, seeded ties
        assign = prob.local_search(prob.greedy(order))
        assign = _repair_missing_labels(prob, assign, L)
        score = (_share_violations(assign, L, prob.active, tolerance), prob.cost(prob.counts(assign)))
        if best is None or score < best[0]:
            best = (score, assign)
        if score[0] == 0.0:
            break
    assign = best[1]

    split_of_row = np.asarray(names, dtype=object)[assign[g_codes]]
    out = pd.Series(split_of_row, index=df.index, name="split")
    if id_col in df.columns:
        ids = df[id_col].astype(str).to_numpy()
        assert_disjoint({s: ids[split_of_row == s] for s in names}, what=id_col)
    return out


# --- reports and checks --------------------------------------------------------------------


def split_report(
    df: pd.DataFrame,
    split_col: str = "split",
    *,
    label_col: str = "label",
    source_col: str = "source",
    group_col: str = "group_id",
) -> dict:
    """JSON-ready counts and positive share per split, and per split × source."""
    n = len(df)
    pos = (df[label_col] == 1) if n else pd.Series(dtype=bool)
    out: dict = {
        "n": int(n),
        "positive_share": float(pos.mean()) if n else float("nan"),
        "n_groups": int(df[group_col].nunique()) if group_col in df else None,
        "splits": {},
    }
    order = [s for s in SPLIT_NAMES if s in set(df[split_col])] + sorted(set(df[split_col]) - set(SPLIT_NAMES))
    for s in order:
        part = df[df[split_col] == s]
        entry = {
            "n": int(len(part)),
            "share_of_pool": float(len(part) / n) if n else 0.0,
            "positive_share": float((part[label_col] == 1).mean()) if len(part) else float("nan"),
            "n_positive": int((part[label_col] == 1).sum()),
            "n_groups": int(part[group_col].nunique()) if group_col in part else None,
        }
        if source_col in part:
            entry["by_source"] = {
                str(src): {"n": int(len(p)), "positive_share": float((p[label_col] == 1).mean())}
                for src, p in part.groupby(source_col, sort=True)
            }
        out["splits"][s] = entry
    return out


SPLIT_RULES = (
    "splits_disjoint",
    "no_group_in_two_splits",
    "both_classes_in_every_split",
    "class_share_within_tolerance",
    "split_ratios",
    "strata_within_tolerance",
    "no_near_duplicates_across_splits",
)


def check_splits(df: pd.DataFrame, tolerance: float, **kwargs) -> list[str]:
    """Violations of the split contract, as readable messages (empty list = all good); the
    arguments and rules are those of :func:`split_violations`."""
    return [m for msgs in split_violations(df, tolerance, **kwargs).values() for m in msgs]


def split_violations(
    df: pd.DataFrame,
    tolerance: float,
    *,
    split_col: str = "split",
    group_col: str = "group_id",
    label_col: str = "label",
    id_col: str = "record_id",
    ratios: dict[str, float] | None = None,
    ratio_tolerance: float = 0.05,
    stratify_col: str | None = None,
    max_hamming: int | None = None,
    phash_col: str = "phash",
) -> dict[str, list[str]]:
    """Violations of the split contract by rule (:data:`SPLIT_RULES`), as readable messages.

    Always checked: split names are known; every ``id_col`` is in one split only; no group
    straddles splits; every split holds every label of the pool; each split's share of each
    label is within ``tolerance`` of the pool's. Optional: ``ratios`` (each split's share of
    rows within ``ratio_tolerance``), ``stratify_col`` (each stratum's share per split within
    ``tolerance``), ``max_hamming`` (no pHash pair within that distance across two splits).
    """
    found: dict[str, list[str]] = {rule: [] for rule in SPLIT_RULES}
    for c in (split_col, group_col, label_col):
        if c not in df.columns:
            found["splits_disjoint"].append(f"split table lacks column {c!r}")
            return found
    if len(df) == 0:
        found["splits_disjoint"].append("split table is empty")
        return found
    splits = df[split_col].astype(str)
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        found["splits_disjoint"].append(f"unknown split names {unknown}; expected {list(SPLIT_NAMES)}")
    present = [s for s in SPLIT_NAMES if s in set(splits)]

    if id_col in df.columns:
        ids = df[id_col].astype(str)
        per_id = pd.DataFrame({"id": ids, "s": splits}).drop_duplicates().groupby("id")["s"].nunique()
        bad = per_id[per_id > 1]
        if len(bad):
            found["splits_disjoint"].append(
                f"{len(bad)} {id_col}s are in more than one split, e.g. {bad.index[:3].tolist()}"
            )
        try:
            assert_disjoint({s: ids[splits == s].tolist() for s in set(splits)}, what=id_col)
        except LeakageError as exc:
            if not len(bad):
                found["splits_disjoint"].append(str(exc))

    per_group = pd.DataFrame({"g": df[group_col].astype(str), "s": splits}).drop_duplicates()
    straddle = per_group.groupby("g")["s"].nunique()
    straddle = straddle[straddle > 1]
    if len(straddle):
        g0 = straddle.index[0]
        where = sorted(per_group.loc[per_group["g"] == g0, "s"])
        found["no_group_in_two_splits"].append(
            f"{len(straddle)} groups straddle splits, e.g. group {g0!r} is in {where}"
        )

    labels = df[label_col]
    pool_share = labels.value_counts(normalize=True).sort_index()
    # with two labels the shares are complements: report the share of the larger label only
    share_checked = set(pool_share.index[-1:]) if len(pool_share) == 2 else set(pool_share.index)
    for s in present:
        part = labels[splits == s]
        share = part.value_counts(normalize=True)
        for y, p in pool_share.items():
            got = float(share.get(y, 0.0))
            if got == 0.0:
                n_groups_y = df.loc[labels == y, group_col].nunique()
                found["both_classes_in_every_split"].append(
                    f"split {s!r} has no rows of label {y!r} (pool share {p:.3f}, held by {n_groups_y} groups)"
                )
            elif y in share_checked and abs(got - p) > tolerance:
                found["class_share_within_tolerance"].append(
                    f"split {s!r}: share of label {y!r} is {got:.3f}, pool {p:.3f}, beyond ±{tolerance:.3f}"
                )

    if ratios is not None:
        n = len(df)
        total = sum(ratios.values())
        for s, want in ratios.items():
            got = float((splits == s).sum() / n)
            if abs(got - want / total) > ratio_tolerance:
                found["split_ratios"].append(
                    f"split {s!r} holds {got:.3f} of rows, ratio {want / total:.3f}, beyond ±{ratio_tolerance:.3f}"
                )

    if stratify_col is not None:
        if stratify_col not in df.columns:
            found["strata_within_tolerance"].append(f"split table lacks stratify column {stratify_col!r}")
        else:
            strata = df[stratify_col].astype(str)
            pool = strata.value_counts(normalize=True)
            for s in present:
                share = strata[splits == s].value_counts(normalize=True)
                for k, p in pool.items():
                    got = float(share.get(k, 0.0))
                    if abs(got - p) > tolerance:
                        found["strata_within_tolerance"].append(
                            f"split {s!r}: share of {stratify_col}={k!r} is {got:.3f}, pool {p:.3f}, beyond ±{tolerance:.3f}"
                        )

    if max_hamming is not None:
        if phash_col not in df.columns:
            found["no_near_duplicates_across_splits"].append(
                f"split table lacks {phash_col!r}; cannot check near duplicates across splits"
            )
        else:
            hashes = {s: df.loc[splits == s, phash_col].to_numpy() for s in present}
            rid = {s: (df.loc[splits == s, id_col].astype(str).to_numpy() if id_col in df else None) for s in present}
            for i, a in enumerate(present):
                for b in present[i + 1 :]:
                    pairs = near_duplicate_pairs(hashes[a], hashes[b], max_hamming)
                    if len(pairs):
                        ex = ""
                        if rid[a] is not None:
                            p0 = pairs[0]
                            ex = f", e.g. {rid[a][p0[0]]!r} ~ {rid[b][p0[1]]!r} at distance {p0[2]}"
                        found["no_near_duplicates_across_splits"].append(
                            f"{len(pairs)} near-duplicate pairs (pHash distance <= {max_hamming}) across {a!r} and {b!r}{ex}"
                        )
    return found
