"""Exact / near duplicate removal: correctness against a brute-force oracle, clusters, conflicts, groups."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from roadwork_ml.data.dedup import (
    REMOVED_COLUMNS,
    as_uint64,
    dedup_summary,
    deduplicate,
    hamming,
    near_duplicate_pairs,
    popcount64,
)
from roadwork_ml.data.splitting import assign_splits, check_splits

RATIOS = {"train": 0.60, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.10}


def flip(h: int, bits) -> int:
    for b in bits:
        h ^= 1 << int(b)
    return h


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)


def oracle_pairs(a: np.ndarray, b: np.ndarray | None, k: int) -> set[tuple[int, int, int]]:
    """O(n^2) oracle, independent of the code under test: bit matrices and a matmul."""

    def bits(h):
        return np.unpackbits(h.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).astype(np.float64)

    A = bits(a)
    B = A if b is None else bits(b)
    d = A.sum(1)[:, None] + B.sum(1)[None, :] - 2.0 * (A @ B.T)
    d = np.rint(d).astype(np.int64)
    i, j = np.nonzero(d <= k)
    if b is None:
        keep = i < j
        i, j = i[keep], j[keep]
    return {(int(x), int(y), int(d[x, y])) for x, y in zip(i, j, strict=False)}


def planted_hashes(rng: np.random.Generator, n_base: int, n_derived: int, max_flip: int) -> np.ndarray:
    base = random_hashes(rng, n_base)
    derived = []
    for _ in range(n_derived):
        h = int(base[rng.integers(n_base)])
        derived.append(flip(h, rng.choice(64, size=rng.integers(0, max_flip + 1), replace=False)))
    out = np.concatenate([base, np.array(derived, dtype=np.uint64)])
    return out[rng.permutation(len(out))]


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col, default in (("label", 0), ("source", "natix")):
        if col not in df:
            df[col] = default
    if "group_id" not in df:
        df["group_id"] = df["source"] + ":" + df["record_id"]
    own = pd.Series([f"{i:064x}" for i in range(len(df))], index=df.index)
    df["sha256"] = df["sha256"].fillna(own) if "sha256" in df else own
    df["phash"] = np.array([int(h) for h in df["phash"]], dtype=np.uint64)
    return df


# --- primitives ----------------------------------------------------------------------------


def test_popcount_matches_python():
    rng = np.random.default_rng(0)
    h = np.concatenate([random_hashes(rng, 1000), np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)])
    assert popcount64(h).tolist() == [bin(int(x)).count("1") for x in h]


def test_as_uint64_keeps_bit_patterns():
    big = 2**64 - 5
    signed = np.array([big], dtype=np.uint64).view(np.int64)  # what an int64 round-trip gives
    assert int(as_uint64(signed)[0]) == big
    assert int(as_uint64(np.array([big], dtype=object))[0]) == big
    assert int(as_uint64(np.array([format(big, "016x")], dtype=object))[0]) == big
    assert hamming(np.uint64(0), np.uint64(2**64 - 1)).item() == 64


@pytest.mark.parametrize("k", [0, 2, 4, 6])
def test_near_pairs_match_bruteforce_oracle_self(k):
    rng = np.random.default_rng(k)
    h = planted_hashes(rng, n_base=1500, n_derived=500, max_flip=8)
    assert len(h) == 2000
    got = {tuple(map(int, r)) for r in near_duplicate_pairs(h, None, k)}
    want = oracle_pairs(h, None, k)
    assert got == want
    assert len(want) > 50  # the planted pairs make the comparison meaningful


def test_near_pairs_match_oracle_across_sets_and_in_fallback():
    rng = np.random.default_rng(11)
    h = planted_hashes(rng, n_base=1500, n_derived=500, max_flip=6)
    a, b = h[:1200], h[1200:]
    for k in (3, 4):
        got = {tuple(map(int, r)) for r in near_duplicate_pairs(a, b, k)}
        assert got == oracle_pairs(a, b, k)
    # wide radius: the band index is not selective and the all-pairs path takes over
    small = h[:400]
    for k in (20, 64):
        got = {tuple(map(int, r)) for r in near_duplicate_pairs(small, None, k)}
        assert got == oracle_pairs(small, None, k)


def test_near_pairs_sorted_and_typed():
    h = np.array([0, 1, 3, 2**40 + 2**41 + 2**42], dtype=np.uint64)
    p = near_duplicate_pairs(h, None, 2)
    assert p.dtype == np.int64 and p.shape[1] == 3
    assert p.tolist() == [[0, 1, 1], [0, 2, 2], [1, 2, 1]]
    assert near_duplicate_pairs(h[:0], h, 4).shape == (0, 3)


# --- deduplicate ---------------------------------------------------------------------------


def test_exact_duplicates_within_and_across_sources():
    rng = np.random.default_rng(1)
    hs = [int(x) for x in random_hashes(rng, 4)]
    df = frame(
        [
            {"record_id": "m1", "source": "mapillary", "sha256": "aa", "phash": hs[0]},
            {"record_id": "n1", "source": "natix", "sha256": "aa", "phash": hs[0]},
            {"record_id": "r1", "source": "roadwork", "sha256": "aa", "phash": hs[0]},
            {"record_id": "n2", "source": "natix", "sha256": "bb", "phash": hs[1]},
            {"record_id": "n3", "source": "natix", "sha256": "bb", "phash": hs[1]},
            {"record_id": "n4", "source": "natix", "sha256": "cc", "phash": hs[2]},
        ]
    )
    kept, removed = deduplicate(df, max_hamming=0)
    assert sorted(kept["record_id"]) == ["n1", "n2", "n4"]  # natix first by priority, then record_id
    assert list(removed.columns) == REMOVED_COLUMNS
    rm = removed.set_index("record_id")
    assert rm.loc["m1", "duplicate_of"] == "n1" and rm.loc["r1", "duplicate_of"] == "n1"
    assert rm.loc["n3", "duplicate_of"] == "n2"
    assert set(rm["kind"]) == {"exact"} and set(rm["hamming"]) == {0}
    s = dedup_summary(kept, removed)
    assert s["n_exact"] == 3 and s["n_near"] == 0 and s["n_cross_source"] == 2 and s["n_kept"] == 3


def test_source_priority_is_configurable():
    df = frame(
        [
            {"record_id": "n1", "source": "natix", "sha256": "aa", "phash": 5},
            {"record_id": "m1", "source": "mapillary", "sha256": "aa", "phash": 5},
        ]
    )
    kept, _ = deduplicate(df, 0, source_priority=["mapillary", "natix"])
    assert kept["record_id"].tolist() == ["m1"]


@pytest.mark.parametrize("k", [0, 1, 4, 7])
def test_near_duplicate_at_k_but_not_k_plus_1(k):
    rng = np.random.default_rng(100 + k)
    base = int(random_hashes(rng, 1)[0])
    bits = rng.choice(64, size=k + 1, replace=False)
    far = [int(x) for x in random_hashes(rng, 20)]
    at_k = frame(
        [{"record_id": "a", "phash": base}, {"record_id": "b", "phash": flip(base, bits[:k])}]
        + [{"record_id": f"z{i}", "phash": h} for i, h in enumerate(far)]
    )
    kept, removed = deduplicate(at_k, max_hamming=k)
    assert removed["record_id"].tolist() == ["b"]
    assert removed["duplicate_of"].tolist() == ["a"] and removed["hamming"].tolist() == [k]
    assert removed["kind"].tolist() == ["near"]
    beyond = frame(
        [{"record_id": "a", "phash": base}, {"record_id": "b", "phash": flip(base, bits)}]
        + [{"record_id": f"z{i}", "phash": h} for i, h in enumerate(far)]
    )
    kept, removed = deduplicate(beyond, max_hamming=k)
    assert len(removed) == 0 and len(kept) == 22


def test_chain_collapses_to_one_representative():
    rng = np.random.default_rng(2)
    a = int(random_hashes(rng, 1)[0])
    bits = rng.choice(64, size=8, replace=False)
    b = flip(a, bits[:4])
    c = flip(b, bits[4:])  # d(a, b) = d(b, c) = 4, d(a, c) = 8
    assert hamming(np.uint64(a), np.uint64(c)).item() == 8
    df = frame([{"record_id": "a", "phash": a}, {"record_id": "b", "phash": b}, {"record_id": "c", "phash": c}])
    kept, removed = deduplicate(df, max_hamming=4)
    assert kept["record_id"].tolist() == ["a"]
    assert kept["dup_cluster_size"].tolist() == [3]
    assert removed.set_index("record_id")["hamming"].to_dict() == {"b": 4, "c": 8}
    assert set(removed["duplicate_of"]) == {"a"}


def test_label_conflict_keeps_majority_and_reports():
    df = frame(
        [
            {"record_id": "a", "phash": 0, "label": 0, "sha256": "s"},
            {"record_id": "b", "phash": 0, "label": 1, "sha256": "s"},
            {"record_id": "c", "phash": 1, "label": 1},
            {"record_id": "x", "phash": 2**63 - 1, "label": 0},
        ]
    )
    kept, removed = deduplicate(df, max_hamming=2)
    # cluster {a, b, c}: majority label 1, so 'b' (best-ranked with label 1) survives, not 'a'
    k = kept.set_index("record_id")
    assert sorted(k.index) == ["b", "x"]
    assert bool(k.loc["b", "label_conflict"]) and not bool(k.loc["x", "label_conflict"])
    rm = removed.set_index("record_id")
    assert bool(rm.loc["a", "label_conflict"]) and not bool(rm.loc["c", "label_conflict"])
    assert rm.loc["a", "kind"] == "exact" and rm.loc["c", "kind"] == "near"
    assert dedup_summary(kept, removed)["n_label_conflict_clusters"] == 1


def test_label_tie_goes_to_priority_source():
    df = frame(
        [
            {"record_id": "r1", "source": "roadwork", "phash": 7, "label": 1, "sha256": "s"},
            {"record_id": "n1", "source": "natix", "phash": 7, "label": 0, "sha256": "s"},
        ]
    )
    kept, removed = deduplicate(df, 0)
    assert kept["record_id"].tolist() == ["n1"] and bool(kept["label_conflict"].iloc[0])


def test_groups_of_duplicates_are_merged_so_scenes_cannot_straddle():
    rng = np.random.default_rng(3)
    h = [int(x) for x in random_hashes(rng, 6)]
    rows = [
        {"record_id": "a1", "group_id": "natix:G1", "phash": h[0]},
        {"record_id": "a2", "group_id": "natix:G1", "phash": h[1]},
        {"record_id": "b1", "group_id": "natix:G2", "phash": flip(h[0], [3])},  # near dup of a1
        {"record_id": "b2", "group_id": "natix:G2", "phash": h[2]},
        {"record_id": "c1", "group_id": "natix:G3", "phash": h[3]},
    ]
    kept, removed = deduplicate(frame(rows), max_hamming=4)
    k = kept.set_index("record_id")
    assert removed["record_id"].tolist() == ["b1"]
    assert k.loc["a1", "group_id"] == k.loc["a2", "group_id"] == k.loc["b2", "group_id"] == "natix:G1"
    assert k.loc["b2", "orig_group_id"] == "natix:G2" and k.loc["c1", "group_id"] == "natix:G3"
    s = dedup_summary(kept, removed)
    assert s["n_groups_before_merge"] == 3 and s["n_groups_after_merge"] == 2
    kept_plain, _ = deduplicate(frame(rows), max_hamming=4, merge_groups=False)
    assert "orig_group_id" not in kept_plain and kept_plain.set_index("record_id").loc["b2", "group_id"] == "natix:G2"


def test_dedup_then_split_has_no_cross_split_near_duplicates():
    """End to end: sequences of near-identical frames, dedup, split, asset-style checks pass."""
    rng = np.random.default_rng(4)
    rows = []
    for g in range(1200):
        src = ["natix", "roadwork", "mapillary"][g % 3]
        base = int(random_hashes(rng, 1)[0])
        y = int(rng.random() < 0.3)
        for f in range(int(rng.integers(1, 6))):
            # frames of a drive: a few bits apart from the sequence's first frame
            rows.append(
                {
                    "record_id": f"{src}-{g}-{f}",
                    "source": src,
                    "group_id": f"{src}:{g}",
                    "label": y,
                    "phash": flip(base, rng.choice(64, size=int(rng.integers(0, 9)), replace=False)),
                }
            )
    df = frame(rows)
    # plant cross-source copies (exact) and a cross-group near duplicate
    df = pd.concat(
        [df, df.iloc[:30].assign(record_id=lambda d: "copy-" + d["record_id"], source="mapillary")], ignore_index=True
    )
    kept, removed = deduplicate(df, max_hamming=4)
    kept_ids = set(kept["record_id"])
    copies = [r for r in df["record_id"] if r.startswith("copy-")]
    assert not any(c in kept_ids and c[len("copy-") :] in kept_ids for c in copies)  # never both
    direct = removed[removed["record_id"].isin(copies) & ("copy-" + removed["duplicate_of"] == removed["record_id"])]
    direct = pd.concat([direct, removed[("copy-" + removed["record_id"]) == removed["duplicate_of"]]])
    assert len(direct) > 0 and set(direct["kind"]) == {"exact"}
    assert near_duplicate_pairs(kept["phash"].to_numpy(), None, 4).shape[0] == 0
    split = assign_splits(kept, RATIOS, seed=0, tolerance=0.03)
    assert check_splits(kept.assign(split=split), 0.03, max_hamming=4) == []


def test_dedup_scales_to_20k():
    rng = np.random.default_rng(5)
    h = planted_hashes(rng, 18_000, 2_000, max_flip=6)
    n = len(h)
    df = pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(n)],
            "source": rng.choice(["natix", "roadwork", "mapillary"], n),
            "label": rng.integers(0, 2, n),
            "sha256": [f"{i % 19_900:064x}" for i in range(n)],  # 100 exact copies
            "phash": h,
            "group_id": [f"g{i // 4}" for i in range(n)],
        }
    )
    t = time.perf_counter()
    kept, removed = deduplicate(df, max_hamming=4)
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, f"dedup of 20k rows took {elapsed:.2f}s"
    assert len(kept) + len(removed) == n and len(removed) > 1000
    assert near_duplicate_pairs(kept["phash"].to_numpy(), None, 4).shape[0] == 0
    assert kept["sha256"].is_unique


def test_bad_input_is_rejected():
    df = frame([{"record_id": "a", "phash": 1}, {"record_id": "a", "phash": 2}])
    with pytest.raises(ValueError, match="record_id must be unique"):
        deduplicate(df, 4)
    with pytest.raises(ValueError, match="lacks columns"):
        deduplicate(df.drop(columns=["sha256"]), 4)
    kept, removed = deduplicate(df.iloc[:0], 4)
    assert len(kept) == 0 and len(removed) == 0
