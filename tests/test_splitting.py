"""Group-aware stratified splits: ratios, class shares, determinism, and checks that fail on bad input."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from roadwork_ml.contracts import LeakageError, Split
from roadwork_ml.data.splitting import (
    SPLIT_NAMES,
    assign_splits,
    check_splits,
    gps_cell,
    gps_cells,
    group_key,
    split_report,
    union_group_keys,
)

RATIOS = {"train": 0.60, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.10}
TOL = 0.03


def synth(n_groups: int = 3000, seed: int = 0, pos_rate: float = 0.3) -> pd.DataFrame:
    """Three sources, groups of 1..12 frames (and a few long drives), labels 30 % / 70 %, some mixed groups."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice(
        [1, 2, 3, 4, 5, 6, 8, 12, 40], size=n_groups, p=[0.28, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.04, 0.01]
    )
    src = rng.choice(["natix", "roadwork", "mapillary"], size=n_groups, p=[0.5, 0.3, 0.2])
    group_pos = rng.random(n_groups) < pos_rate
    gid = np.repeat(np.arange(n_groups), sizes)
    flip = rng.random(len(gid)) < 0.08  # a drive passes in and out of a work zone
    label = np.where(flip, ~group_pos[gid], group_pos[gid]).astype(np.int8)
    return pd.DataFrame(
        {
            "record_id": [f"{src[g]}-{i}" for i, g in enumerate(gid)],
            "source": src[gid],
            "label": label,
            "group_id": [f"{src[g]}:seq{g}" for g in gid],
            "phash": rng.integers(0, 2**63, size=len(gid), dtype=np.uint64),
        }
    )


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    return synth()


@pytest.fixture(scope="module")
def split_pool(pool) -> pd.DataFrame:
    return pool.assign(split=assign_splits(pool, RATIOS, seed=1234, tolerance=TOL))


def test_splits_are_group_disjoint_with_ratios_and_class_shares(split_pool):
    df = split_pool
    assert set(df["split"]) == set(SPLIT_NAMES)
    assert {s.value for s in Split} == set(SPLIT_NAMES)
    assert df.groupby("group_id")["split"].nunique().max() == 1  # no group straddles
    ids = [set(df.loc[df["split"] == s, "record_id"]) for s in SPLIT_NAMES]
    assert sum(map(len, ids)) == len(set().union(*ids)) == len(df)
    share = df["split"].value_counts(normalize=True)
    for s, r in RATIOS.items():
        assert abs(share[s] - r) < 0.02, (s, share[s])
    pool_pos = df["label"].mean()
    assert 0.25 < pool_pos < 0.35
    for s in SPLIT_NAMES:
        pos = df.loc[df["split"] == s, "label"].mean()
        assert abs(pos - pool_pos) <= TOL, (s, pos, pool_pos)
    assert check_splits(df, TOL, ratios=RATIOS, ratio_tolerance=0.02) == []


def test_stratify_column_balances_source_mix_too(pool):
    strat = pool["source"] + "|" + pool["label"].astype(str)
    df = pool.assign(stratum=strat)
    df["split"] = assign_splits(df, RATIOS, seed=5, tolerance=TOL, stratify_col="stratum")
    src_pool = df["source"].value_counts(normalize=True)
    for s in SPLIT_NAMES:
        part = df[df["split"] == s]
        src_share = part["source"].value_counts(normalize=True)
        for src, p in src_pool.items():
            assert abs(src_share[src] - p) <= TOL, (s, src)
        assert abs(part["label"].mean() - df["label"].mean()) <= TOL
    assert check_splits(df, TOL, ratios=RATIOS, stratify_col="stratum") == []


def test_deterministic_by_seed(pool):
    a = assign_splits(pool, RATIOS, seed=7, tolerance=TOL)
    b = assign_splits(pool, RATIOS, seed=7, tolerance=TOL)
    c = assign_splits(pool, RATIOS, seed=8, tolerance=TOL)
    assert a.equals(b)
    assert (a != c).mean() > 0.05
    shuffled = pool.sample(frac=1.0, random_state=0)  # row order does not matter, only content
    d = assign_splits(shuffled, RATIOS, seed=7, tolerance=TOL)
    assert d.reindex(pool.index).equals(a)


def test_index_preserved_and_subset_of_splits():
    df = synth(400, seed=3)
    df.index = df.index + 10_000
    s = assign_splits(df, {"train": 0.8, "val_test": 0.2}, seed=0, tolerance=TOL)
    assert s.index.equals(df.index) and set(s) == {"train", "val_test"}
    assert abs((s == "train").mean() - 0.8) < 0.03


def test_both_classes_in_every_split_with_few_positive_groups():
    neg = pd.DataFrame(
        {"record_id": [f"n{i}" for i in range(1000)], "group_id": [f"ng{i // 5}" for i in range(1000)], "label": 0}
    )
    sizes = [60, 45, 30, 20, 12]  # five positive drives of very different lengths
    pos = pd.DataFrame(
        {
            "record_id": [f"p{g}-{j}" for g, n in enumerate(sizes) for j in range(n)],
            "group_id": [f"pg{g}" for g, n in enumerate(sizes) for _ in range(n)],
            "label": 1,
        }
    )
    df = pd.concat([neg, pos], ignore_index=True)
    df["split"] = assign_splits(df, RATIOS, seed=0, tolerance=TOL)
    for s in SPLIT_NAMES:
        assert set(df.loc[df["split"] == s, "label"]) == {0, 1}, s
    assert df.groupby("group_id")["split"].nunique().max() == 1
    # the check reports honestly what whole groups cannot achieve, and no missing class
    problems = check_splits(df, TOL)
    assert not any("no rows of label" in p for p in problems)


def test_missing_class_reported_when_pool_cannot_cover_all_splits():
    df = pd.DataFrame(
        {"record_id": [str(i) for i in range(200)], "group_id": [f"g{i // 4}" for i in range(200)], "label": 0}
    )
    df.loc[:7, "label"] = 1  # positives in only two groups: four splits cannot all get one
    df["split"] = assign_splits(df, RATIOS, seed=0, tolerance=TOL)
    problems = check_splits(df, TOL)
    assert any("no rows of label 1" in p for p in problems)


def test_speed_20k_rows_5k_groups():
    rng = np.random.default_rng(9)
    g = np.repeat(np.arange(5000), rng.integers(1, 8, 5000))[:20_000]
    group_pos = rng.random(5000) < 0.3
    df = pd.DataFrame(
        {
            "record_id": np.arange(len(g)).astype(str),
            "group_id": g.astype(str),
            "label": group_pos[g].astype(int),
            "source": rng.choice(["natix", "roadwork", "mapillary"], 5000)[g],
        }
    )
    df["stratum"] = df["source"] + "|" + df["label"].astype(str)
    t = time.perf_counter()
    s = assign_splits(df, RATIOS, seed=0, tolerance=TOL, stratify_col="stratum")
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, f"assign_splits took {elapsed:.2f}s on 20k rows"
    assert check_splits(df.assign(split=s), TOL, ratios=RATIOS, ratio_tolerance=0.02, stratify_col="stratum") == []


def test_duplicate_record_ids_across_splits_raise_leakage():
    df = pd.DataFrame(
        {"record_id": ["same"] * 100, "group_id": [f"g{i}" for i in range(100)], "label": [i % 2 for i in range(100)]}
    )
    with pytest.raises(LeakageError, match="same"):
        assign_splits(df, RATIOS, seed=0, tolerance=TOL)


def test_bad_arguments():
    df = synth(50)
    with pytest.raises(ValueError, match="unknown split names"):
        assign_splits(df, {"train": 0.5, "holdout": 0.5}, seed=0, tolerance=TOL)
    with pytest.raises(ValueError, match="lacks column"):
        assign_splits(df.drop(columns=["group_id"]), RATIOS, seed=0, tolerance=TOL)
    bad = df.copy()
    bad.loc[0, "group_id"] = ""
    with pytest.raises(ValueError, match="empty"):
        assign_splits(bad, RATIOS, seed=0, tolerance=TOL)
    assert len(assign_splits(df.iloc[:0], RATIOS, seed=0, tolerance=TOL)) == 0


# --- the checks must be able to fail ------------------------------------------------------


def test_check_flags_group_straddling(split_pool):
    df = split_pool.copy()
    g = df.loc[df["split"] == "train", "group_id"].value_counts().index[0]  # a multi-frame group
    row = df.index[df["group_id"] == g][0]
    df.loc[row, "split"] = "val_test"
    problems = check_splits(df, TOL)
    assert any("straddle" in p and g in p for p in problems)


def test_check_flags_record_in_two_splits(split_pool):
    df = split_pool.copy()
    extra = df[df["split"] == "train"].iloc[[0]].assign(split="val_calib")
    problems = check_splits(pd.concat([df, extra]), TOL)
    assert any("more than one split" in p for p in problems)


def test_check_flags_missing_class_and_share(split_pool):
    df = split_pool.copy()
    df = df[~((df["split"] == "val_test") & (df["label"] == 1))]
    problems = check_splits(df, TOL)
    assert any("'val_test' has no rows of label 1" in p for p in problems)
    df2 = split_pool.copy()
    # drop half the positives of val_calib: share falls well below the pool's
    pos_idx = df2.index[(df2["split"] == "val_calib") & (df2["label"] == 1)]
    df2 = df2.drop(pos_idx[: len(pos_idx) // 2])
    problems = check_splits(df2, TOL)
    assert any("val_calib" in p and "beyond" in p for p in problems)


def test_check_flags_ratios_unknown_split_and_strata(split_pool):
    df = split_pool.copy()
    assert any(
        "ratio" in p
        for p in check_splits(df, TOL, ratios={"train": 0.4, "val_select": 0.2, "val_calib": 0.2, "val_test": 0.2})
    )
    odd = df.copy()
    odd.loc[odd.index[:5], "split"] = "holdout"
    assert any("unknown split names" in p for p in check_splits(odd, TOL))
    skew = df.copy()
    skew["stratum"] = np.where(skew["split"] == "train", "a", "b")
    assert any("stratum" in p for p in check_splits(skew, TOL, stratify_col="stratum"))
    assert check_splits(df.drop(columns=["group_id"]), TOL) == ["split table lacks column 'group_id'"]


def test_check_flags_near_duplicates_across_splits(split_pool):
    df = split_pool.copy()
    assert check_splits(df, TOL, max_hamming=4) == []
    a = df.index[df["split"] == "train"][0]
    b = df.index[df["split"] == "val_test"][0]
    df.loc[b, "phash"] = np.uint64(int(df.loc[a, "phash"]) ^ 0b101)  # 2 bits apart
    problems = check_splits(df, TOL, max_hamming=4)
    assert any("near-duplicate" in p and "'train'" in p and "'val_test'" in p for p in problems)
    assert check_splits(df, TOL, max_hamming=1) == []


# --- reports and group keys ---------------------------------------------------------------


def test_split_report_numbers(split_pool):
    rep = split_report(split_pool)
    assert rep["n"] == len(split_pool)
    assert list(rep["splits"]) == list(SPLIT_NAMES)
    assert sum(v["n"] for v in rep["splits"].values()) == len(split_pool)
    train = rep["splits"]["train"]
    part = split_pool[split_pool["split"] == "train"]
    assert train["positive_share"] == pytest.approx(part["label"].mean())
    assert set(train["by_source"]) == {"natix", "roadwork", "mapillary"}
    assert sum(v["n"] for v in train["by_source"].values()) == train["n"]
    assert train["n_groups"] == part["group_id"].nunique()


def test_gps_cells_and_group_keys():
    assert gps_cell(48.7105, 2.3501, 0.01) == gps_cell(48.7199, 2.3599, 0.01)
    assert gps_cell(48.7105, 2.3501, 0.01) != gps_cell(48.7205, 2.3501, 0.01)
    assert gps_cell(-0.005, -0.005, 0.01) != gps_cell(0.005, 0.005, 0.01)  # floor, not truncation
    cells = gps_cells([48.7105, np.nan, -0.005], [2.3501, 1.0, -0.005], 0.01)
    assert cells[0] == gps_cell(48.7105, 2.3501, 0.01) and cells[1] == "" and cells[2] == gps_cell(-0.005, -0.005, 0.01)
    with pytest.raises(ValueError):
        gps_cell(float("nan"), 1.0, 0.01)
    assert group_key("natix", "r1", sequence_id="s9", lat=1.0, lon=1.0, cell_deg=0.01) == "natix:seq:s9"
    assert group_key("roadwork", "r1", sequence_id="unknown", lat=1.0, lon=1.0, cell_deg=0.01) == gps_cell(
        1.0, 1.0, 0.01
    )
    assert group_key("natix", "r1", camera_id="c3") == "natix:cam:c3"
    assert group_key("mapillary", "r1") == "mapillary:rec:r1"


def test_union_group_keys_merges_shared_sequence_or_cell():
    df = pd.DataFrame(
        {
            "seq": ["s1", "s1", "s2", "unknown", "s3", ""],
            "cell": ["c1", "c2", "c2", "c9", "", ""],
        }
    )
    g = union_group_keys(df, ["seq", "cell"])
    assert g[0] == g[1] == g[2]  # s1 joins c1 and c2, c2 joins s2
    assert len({g[0], g[3], g[4], g[5]}) == 4
