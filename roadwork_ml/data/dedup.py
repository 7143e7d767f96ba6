"""Exact and near-duplicate removal over the concatenated manifests of every source.

Order of the data pipeline (each step reads the previous step's output)::

    source manifests (concat) ─► deduplicate ─► fuse (fusion.py) ─► assign_splits (splitting.py)

Why dedup comes first: a duplicate must not count twice when fusion balances sources,
and a duplicate pair must never straddle two splits (the cheapest leak there is).

What counts as a duplicate
--------------------------
* **exact**: the same ``sha256`` of the stored bytes (within one source or across sources);
* **near**: perceptual hashes (``phash``, 64-bit DCT hash) at Hamming distance
  ``<= max_hamming`` (a re-encode, a resize, two near-identical frames of one drive).

Duplicate pairs are edges of a graph; its connected components (union-find, done by
``scipy.sparse.csgraph.connected_components``) are *clusters*. Chains collapse: if a~b and
b~c then {a, b, c} is one cluster and exactly one record survives, even when d(a, c) >
``max_hamming``.

Which record survives
---------------------
Per cluster we take the label **majority** (ties: the label of the best-ranked member, rank
= (source priority, record_id)), and keep the best-ranked member that carries that label.
Source priority defaults to :data:`roadwork_ml.config.SOURCE_NAMES` order (NATIX, the target
domain, first). A cluster whose members disagree on the label is flagged
``label_conflict=True`` on the kept row (and per removed row, ``label_conflict`` says whether
that row's label differed from the kept one); :func:`dedup_summary` counts them so the asset
can report label noise instead of hiding it.

Group merging (leakage)
-----------------------
Removing a near duplicate is not enough. If frame x of sequence G2 is a near duplicate of
frame y of sequence G1, the *other* frames of G2 are near-identical to G1 too (same place,
same minute), merely not within ``max_hamming``. Letting G1 and G2 land in different splits
leaks the scene. So by default every cluster also unions the ``group_id`` of all its
members (:func:`merge_groups_of_duplicates`): the kept rows get the merged group in
``group_id`` (the lexicographically smallest original group id of the merged component,
so ids stay readable and deterministic) and the original in ``orig_group_id``. Splitting
then keeps the merged group whole.

Scaling
-------
Near pairs are found with a multi-index (pigeonhole) search: split the 64 bits into
``max_hamming + 1`` bands; two hashes within distance ``k`` agree exactly on at least one
band. Candidates (equal band value) are produced with sort + searchsorted, fully vectorized,
then verified with a numpy SWAR popcount of the XOR. Identical pHashes are collapsed before
the search. When the bands get too narrow to be selective (large ``max_hamming`` or very
clustered hashes) the search falls back to a blocked all-pairs XOR + popcount. 20k hashes
take tens of milliseconds at ``max_hamming=4``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from roadwork_ml.config import SOURCE_NAMES

REQUIRED_COLUMNS = ("record_id", "source", "label", "sha256", "phash", "group_id")
REMOVED_COLUMNS = [
    "record_id",
    "duplicate_of",
    "kind",
    "hamming",
    "source",
    "label",
    "group_id",
    "duplicate_of_source",
    "duplicate_of_label",
    "label_conflict",
]

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_U1, _U2, _U4, _U56 = np.uint64(1), np.uint64(2), np.uint64(4), np.uint64(56)

# Above this many band candidates per possible pair, all-pairs XOR is cheaper than the index.
_BRUTE_FRACTION = 0.25
_BLOCK_ELEMENTS = 1 << 22  # ~32 MiB of uint64 per block in the all-pairs fallback


# --- hashing primitives ------------------------------------------------------------------


def as_uint64(values) -> np.ndarray:
    """Coerce pHashes to ``uint64``: unsigned/signed ints (bit pattern kept), Python ints, hex strings."""
    arr = np.asarray(values)
    if arr.dtype.kind == "u":
        return arr.astype(np.uint64, copy=False)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64, copy=False).view(np.uint64)
    out = np.empty(arr.shape, dtype=np.uint64)
    flat = out.reshape(-1)
    for i, v in enumerate(arr.reshape(-1)):
        if isinstance(v, (bytes, str)):
            v = int(v, 16)
        v = int(v)
        if v < 0:
            v &= (1 << 64) - 1
        flat[i] = v
    return out


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each ``uint64`` (SWAR; numpy < 2 has no ``bitwise_count``)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):  # the multiply wraps on purpose (0-d inputs would warn)
        x = x - ((x >> _U1) & _M1)
        x = (x & _M2) + ((x >> _U2) & _M2)
        x = (x + (x >> _U4)) & _M4
        return ((x * _H01) >> _U56).astype(np.int64)


def hamming(a, b) -> np.ndarray:
    """Element-wise Hamming distance of two pHash arrays (broadcasting)."""
    return popcount64(np.bitwise_xor(as_uint64(a), as_uint64(b)))


def _band_layout(max_hamming: int) -> list[tuple[np.uint64, np.uint64]] | None:
    """(shift, mask) of ``max_hamming + 1`` contiguous bands covering 64 bits; None if impossible."""
    n_bands = max_hamming + 1
    if n_bands > 64:
        return None
    base, extra = divmod(64, n_bands)
    layout, shift = [], 0
    for b in range(n_bands):
        width = base + (1 if b < extra else 0)
        layout.append((np.uint64(shift), np.uint64((1 << width) - 1)))
        shift += width
    return layout


def _brute_pairs(
    a: np.ndarray, b: np.ndarray, max_hamming: int, self_join: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = max(1, _BLOCK_ELEMENTS // max(1, len(b)))
    out_i, out_j, out_d = [], [], []
    for start in range(0, len(a), rows):
        block = a[start : start + rows]
        d = popcount64(block[:, None] ^ b[None, :])
        mask = d <= max_hamming
        if self_join:
            ii = np.arange(start, start + len(block))[:, None]
            mask &= np.arange(len(b))[None, :] > ii
        i, j = np.nonzero(mask)
        out_i.append(i + start)
        out_j.append(j)
        out_d.append(d[i, j])
    if not out_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    return (
        np.concatenate(out_i).astype(np.int64),
        np.concatenate(out_j).astype(np.int64),
        np.concatenate(out_d).astype(np.int64),
    )


def _pairs(
    a: np.ndarray, b: np.ndarray, max_hamming: int, self_join: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (i, j, d) with d(a[i], b[j]) <= max_hamming (i < j for a self join), sorted by (i, j)."""
    empty = np.empty(0, dtype=np.int64)
    if max_hamming < 0 or len(a) == 0 or len(b) == 0:
        return empty, empty, empty
    layout = _band_layout(max_hamming)
    if layout is None:
        i, j, d = _brute_pairs(a, b, max_hamming, self_join)
        return i, j, d
    # First pass: count candidates per band cheaply to decide index vs. all-pairs.
    prepared, total = [], 0
    for shift, mask in layout:
        ka = (a >> shift) & mask
        kb = (b >> shift) & mask
        order_b = np.argsort(kb, kind="stable")
        kb_sorted = kb[order_b]
        left = np.searchsorted(kb_sorted, ka, side="left")
        right = np.searchsorted(kb_sorted, ka, side="right")
        cnt = right - left
        total += int(cnt.sum())
        prepared.append((order_b, left, cnt))
    if total > _BRUTE_FRACTION * len(a) * len(b):
        return _brute_pairs(a, b, max_hamming, self_join)
    found = []
    for order_b, left, cnt in prepared:
        if not cnt.any():
            continue
        # candidates in chunks of about _BLOCK_ELEMENTS, verified at once: memory stays bounded
        ends = np.cumsum(cnt)
        cuts = np.searchsorted(ends, np.arange(_BLOCK_ELEMENTS, int(ends[-1]), _BLOCK_ELEMENTS), side="left")
        bounds = np.unique(np.concatenate([[0], cuts + 1, [len(a)]]))
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=False):
            c = cnt[lo:hi]
            m = int(c.sum())
            if m == 0:
                continue
            ai = np.repeat(np.arange(lo, hi, dtype=np.int64), c)
            offsets = np.arange(m, dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
            bj = order_b[np.repeat(left[lo:hi], c) + offsets].astype(np.int64)
            if self_join:
                keep = ai < bj
                ai, bj = ai[keep], bj[keep]
            d = popcount64(a[ai] ^ b[bj])
            keep = d <= max_hamming
            found.append(ai[keep] * len(b) + bj[keep])
    if not found:
        return empty, empty, empty
    key = np.unique(np.concatenate(found))  # a pair can match on several bands
    ai, bj = np.divmod(key, len(b))
    return ai, bj, popcount64(a[ai] ^ b[bj])


def near_duplicate_pairs(a_hashes, b_hashes=None, max_hamming: int = 4) -> np.ndarray:
    """Pairs of pHashes within ``max_hamming`` bits, as an ``int64`` array of rows ``(i, j, d)``.

    With ``b_hashes`` the pairs run across the two sets (``i`` indexes ``a``, ``j`` indexes
    ``b``): the asset check "no near-duplicate pair across splits" calls it with one split's
    hashes against another's. Without it, pairs within ``a`` with ``i < j``. Rows are sorted
    by ``(i, j)``; ``d`` is the Hamming distance. Exact: it matches an all-pairs comparison.
    """
    a = as_uint64(a_hashes).reshape(-1)
    if b_hashes is None:
        i, j, d = _pairs(a, a, int(max_hamming), self_join=True)
    else:
        b = as_uint64(b_hashes).reshape(-1)
        i, j, d = _pairs(a, b, int(max_hamming), self_join=False)
    return np.stack([i, j, d], axis=1) if len(i) else np.empty((0, 3), dtype=np.int64)


# --- clustering ---------------------------------------------------------------------------


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    if n == 0:
        return np.empty(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _equal_value_edges(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges from each row to the first row with the same code (a star per value)."""
    _, first = np.unique(codes, return_index=True)
    src = np.arange(len(codes), dtype=np.int64)
    dst = first[codes]
    keep = src != dst
    return src[keep], dst[keep]


def _source_rank(sources: np.ndarray, source_priority: Sequence[str] | None) -> np.ndarray:
    priority = list(source_priority if source_priority is not None else SOURCE_NAMES)
    rank_of = {s: i for i, s in enumerate(priority)}
    others = sorted(set(sources.tolist()) - set(rank_of))
    rank_of.update({s: len(priority) + i for i, s in enumerate(others)})
    return np.array([rank_of[s] for s in sources.tolist()], dtype=np.int64)


def duplicate_clusters(df: pd.DataFrame, max_hamming: int) -> np.ndarray:
    """Cluster id per row (positional): rows linked by equal sha256 or pHash distance <= max_hamming."""
    n = len(df)
    sha = df["sha256"]
    sha_codes = pd.factorize(sha.astype(str).to_numpy())[0]
    unknown = (sha.isna() | (sha.astype(str) == "")).to_numpy()
    if unknown.any():  # a missing digest equals nothing: give each such row a code of its own
        sha_codes = sha_codes.copy()
        sha_codes[unknown] = sha_codes.max() + 1 + np.arange(int(unknown.sum()))
    hashes = as_uint64(df["phash"].to_numpy())
    uniq, ph_codes = np.unique(hashes, return_inverse=True)
    ph_codes = ph_codes.reshape(-1)
    s1, d1 = _equal_value_edges(sha_codes)
    s2, d2 = _equal_value_edges(ph_codes)
    # near pairs among distinct pHash values, mapped back to one row per value
    _, first_row = np.unique(ph_codes, return_index=True)
    ui, uj, _ = _pairs(uniq, uniq, int(max_hamming), self_join=True)
    s3, d3 = first_row[ui], first_row[uj]
    src = np.concatenate([s1, s2, s3]).astype(np.int64)
    dst = np.concatenate([d1, d2, d3]).astype(np.int64)
    return _components(n, src, dst)


def merge_groups_of_duplicates(groups: np.ndarray | pd.Series, clusters: np.ndarray) -> np.ndarray:
    """Union the groups of rows that share a duplicate cluster.

    ``groups[i]`` is row i's group id, ``clusters[i]`` its duplicate cluster (see
    :func:`duplicate_clusters`). Returns the merged group id per row: the lexicographically
    smallest original group id in the merged component. Rows never involved in a duplicate
    keep their group id. See the module docstring for why this prevents leakage.
    """
    groups = np.asarray(groups).astype(str)
    g_codes, g_names = pd.factorize(groups, sort=True)  # sorted: code order == lexicographic order
    n_groups = len(g_names)
    # edge: group of each row -> group of the first row in its cluster
    _, first = np.unique(clusters, return_index=True)
    src = g_codes
    dst = g_codes[first[clusters]]
    keep = src != dst
    comp = _components(n_groups, src[keep], dst[keep])
    # smallest group code (== lexicographically smallest name) per component
    min_code = np.full(comp.max() + 1 if n_groups else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(min_code, comp, np.arange(n_groups, dtype=np.int64))
    return np.asarray(g_names)[min_code[comp[g_codes]]]


def deduplicate(
    df: pd.DataFrame,
    max_hamming: int,
    *,
    source_priority: Sequence[str] | None = None,
    merge_groups: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Remove exact and near duplicates; return ``(kept, removed)``.

    ``kept``: the rows of ``df`` that survive (original index and order), plus
    ``dup_cluster_size`` (1 for a unique image), ``label_conflict`` (the cluster's labels
    disagreed) and, with ``merge_groups``, ``orig_group_id`` (``group_id`` then holds the
    merged group). ``removed``: one row per dropped record with :data:`REMOVED_COLUMNS`:
    ``duplicate_of`` is the kept representative's record_id, ``kind`` is ``'exact'`` when the
    removed bytes equal the representative's (same sha256) else ``'near'``, ``hamming`` the
    pHash distance to the representative (may exceed ``max_hamming`` along a chain).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"deduplicate: input lacks columns {missing}; expected the manifest schema")
    if max_hamming < 0:
        raise ValueError(f"deduplicate: max_hamming must be >= 0, got {max_hamming}")
    ids = df["record_id"].astype(str).to_numpy()
    if pd.Series(ids).duplicated().any():
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[:5].tolist()
        raise ValueError(f"deduplicate: record_id must be unique across sources, repeated: {dup}")
    if df["group_id"].isna().any() or (df["group_id"].astype(str) == "").any():
        raise ValueError("deduplicate: group_id is empty for some rows; every record needs a group")
    n = len(df)
    if n == 0:
        kept = df.copy()
        kept["dup_cluster_size"] = pd.Series(dtype=np.int64)
        kept["label_conflict"] = pd.Series(dtype=bool)
        if merge_groups:
            kept["orig_group_id"] = kept["group_id"]
        return kept, pd.DataFrame(columns=REMOVED_COLUMNS)

    clusters = duplicate_clusters(df, max_hamming)
    sources = df["source"].astype(str).to_numpy()
    labels = df["label"].to_numpy()
    hashes = as_uint64(df["phash"].to_numpy())
    shas = df["sha256"].astype(str).to_numpy()
    groups = df["group_id"].astype(str).to_numpy()

    # rank: (source priority, record_id) — the deterministic preference order
    order = np.lexsort((ids, _source_rank(sources, source_priority)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    votes = pd.DataFrame({"c": clusters, "y": labels, "r": rank})
    per = votes.groupby(["c", "y"], sort=False).agg(n=("r", "size"), best=("r", "min")).reset_index()
    n_labels = per.groupby("c")["y"].size()
    # majority label; tie -> the label of the best-ranked member
    winner = per.sort_values(["c", "n", "best"], ascending=[True, False, True]).drop_duplicates("c")
    rep_of_cluster = pd.Series(order[winner["best"].to_numpy()], index=winner["c"].to_numpy())
    rep = rep_of_cluster.reindex(clusters).to_numpy()  # positional index of each row's representative
    conflict_of_cluster = (n_labels > 1).reindex(clusters).to_numpy()
    size_of_cluster = np.bincount(clusters)

    is_rep = rep == np.arange(n)
    kept = df.iloc[is_rep].copy()
    kept["dup_cluster_size"] = size_of_cluster[clusters[is_rep]].astype(np.int64)
    kept["label_conflict"] = conflict_of_cluster[is_rep].astype(bool)
    if merge_groups:
        merged = merge_groups_of_duplicates(groups, clusters)
        kept["orig_group_id"] = kept["group_id"]
        kept["group_id"] = merged[is_rep]

    rm = np.flatnonzero(~is_rep)
    r = rep[rm]
    removed = pd.DataFrame(
        {
            "record_id": ids[rm],
            "duplicate_of": ids[r],
            "kind": np.where(shas[rm] == shas[r], "exact", "near"),
            "hamming": popcount64(hashes[rm] ^ hashes[r]),
            "source": sources[rm],
            "label": labels[rm],
            "group_id": groups[rm],
            "duplicate_of_source": sources[r],
            "duplicate_of_label": labels[r],
            "label_conflict": labels[rm] != labels[r],
        },
        columns=REMOVED_COLUMNS,
    )
    removed = removed.sort_values("record_id", kind="stable").reset_index(drop=True)
    return kept, removed


def dedup_summary(kept: pd.DataFrame, removed: pd.DataFrame) -> dict:
    """Counts for asset metadata: inputs, kept, exact/near removed, conflicts, merged groups, per source."""
    n_in = len(kept) + len(removed)
    out = {
        "n_in": int(n_in),
        "n_kept": int(len(kept)),
        "n_removed": int(len(removed)),
        "n_exact": int((removed["kind"] == "exact").sum()) if len(removed) else 0,
        "n_near": int((removed["kind"] == "near").sum()) if len(removed) else 0,
        "n_cross_source": int((removed["source"] != removed["duplicate_of_source"]).sum()) if len(removed) else 0,
        "n_clusters": int((kept["dup_cluster_size"] > 1).sum()) if "dup_cluster_size" in kept else 0,
        "n_label_conflict_clusters": int(kept["label_conflict"].sum()) if "label_conflict" in kept else 0,
        "n_removed_label_disagrees": int(removed["label_conflict"].sum()) if len(removed) else 0,
    }
    if "orig_group_id" in kept:
        out["n_groups_before_merge"] = int(kept["orig_group_id"].nunique())
        out["n_groups_after_merge"] = int(kept["group_id"].nunique())
    out["removed_by_source"] = (
        {str(k): int(v) for k, v in removed["source"].value_counts().sort_index().items()} if len(removed) else {}
    )
    return out
