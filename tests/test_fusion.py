"""Fusion strategies hit their target source shares with whole groups, deterministically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from roadwork_ml.data.fusion import STRATEGIES, fuse, sample_groups
from roadwork_ml.data.splitting import assign_splits, check_splits

RATIOS = {"train": 0.60, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.10}
SIZES = {"natix": 3000, "roadwork": 6000, "mapillary": 2000}  # images per source, roughly
POS = {"natix": 0.30, "roadwork": 0.85, "mapillary": 0.12}


def synth(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for src, n in SIZES.items():
        sizes = rng.integers(1, 9, size=n // 4)  # ~4.5 frames per drive
        gid = np.repeat(np.arange(len(sizes)), sizes)
        pos = rng.random(len(sizes)) < POS[src]
        parts.append(
            pd.DataFrame(
                {
                    "record_id": [f"{src}-{i}" for i in range(len(gid))],
                    "source": src,
                    "label": pos[gid].astype(np.int8),
                    "group_id": [f"{src}:seq{g}" for g in gid],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    return synth()


def whole_groups_only(before: pd.DataFrame, after: pd.DataFrame) -> bool:
    n_before = before.groupby("group_id").size()
    n_after = after.groupby("group_id").size()
    return bool((n_after == n_before.reindex(n_after.index)).all())


def test_naive_keeps_everything(pool):
    out, rep = fuse(pool, "naive", seed=0)
    assert len(out) == len(pool) and out.index.equals(pool.index)
    assert set(out["stratum"]) == {"0", "1"}
    assert rep["before"] == rep["after"] and rep["strategy"] == "naive"


def test_domain_stratified_keeps_all_and_splits_share_the_mix(pool):
    out, rep = fuse(pool, "domain_stratified", seed=0)
    assert len(out) == len(pool)
    assert set(out["stratum"]) == {f"{s}|{y}" for s in SIZES for y in (0, 1)}
    out = out.assign(split=assign_splits(out, RATIOS, seed=1, tolerance=0.03, stratify_col="stratum"))
    assert check_splits(out, 0.03, ratios=RATIOS, stratify_col="stratum") == []
    src_share = out["source"].value_counts(normalize=True)
    for s in RATIOS:
        part = out[out["split"] == s]
        for src, p in part["source"].value_counts(normalize=True).items():
            assert abs(p - src_share[src]) <= 0.03
        for src in SIZES:  # each source keeps its own positive share inside every split
            sub = part[part["source"] == src]
            assert abs(sub["label"].mean() - out.loc[out["source"] == src, "label"].mean()) <= 0.06, (s, src)


def test_balanced_equalizes_sources_with_whole_groups(pool):
    out, rep = fuse(pool, "balanced", seed=0)
    counts = out["source"].value_counts()
    smallest = pool["source"].value_counts().min()
    assert counts["mapillary"] == smallest  # the smallest source is kept whole
    for src in SIZES:
        assert abs(counts[src] - smallest) <= 0.01 * smallest, (src, counts[src], smallest)
        # downsampling keeps each source's positive share
        assert (
            abs(out.loc[out["source"] == src, "label"].mean() - pool.loc[pool["source"] == src, "label"].mean()) <= 0.01
        )
    assert whole_groups_only(pool, out)
    assert (
        rep["after"]["natix"]["n"] == counts["natix"]
        and rep["before"]["roadwork"]["n"] == (pool["source"] == "roadwork").sum()
    )
    assert rep["target_n"]["roadwork"] == pytest.approx(smallest)


def test_weighted_keeps_fraction_proportional_to_weight(pool):
    weights = {"natix": 1.0, "roadwork": 0.5, "mapillary": 0.25}
    out, rep = fuse(pool, "weighted", source_weights=weights, seed=0)
    before = pool["source"].value_counts()
    after = out["source"].value_counts()
    for src, w in weights.items():
        assert abs(after[src] / before[src] - w) <= 0.01, src
    assert after["natix"] == before["natix"]  # the top weight is the largest feasible pool
    assert whole_groups_only(pool, out)
    assert rep["keep_fraction"] == {"mapillary": 0.25, "natix": 1.0, "roadwork": 0.5}
    same, _ = fuse(pool, "weighted", source_weights={"natix": 2, "roadwork": 2, "mapillary": 2}, seed=0)
    assert len(same) == len(pool)


def test_mixing_hits_target_shares_by_downsampling_over_represented(pool):
    mix = {"natix": 0.5, "roadwork": 0.25, "mapillary": 0.25}
    out, rep = fuse(pool, "mixing", mixing_ratios=mix, seed=0)
    share = out["source"].value_counts(normalize=True)
    for src, m in mix.items():
        assert abs(share[src] - m) <= 0.01, (src, share[src])
    before = pool["source"].value_counts()
    after = out["source"].value_counts()
    # natix (3000 for a 50 % share) is the binding source: kept whole; the others are cut
    assert after["natix"] == before["natix"]
    assert after["roadwork"] < before["roadwork"] and after["mapillary"] < before["mapillary"]
    assert len(out) == pytest.approx(2 * before["natix"], rel=0.01)  # the largest feasible pool
    assert whole_groups_only(pool, out)
    assert rep["target_share"] == mix


def test_mixing_renormalizes_over_present_sources(pool):
    two = pool[pool["source"] != "mapillary"]
    with pytest.warns(UserWarning, match="renormalized"):
        out, rep = fuse(two, "mixing", mixing_ratios={"natix": 0.5, "roadwork": 0.25, "mapillary": 0.25}, seed=0)
    share = out["source"].value_counts(normalize=True)
    assert abs(share["natix"] - 2 / 3) <= 0.01
    assert "mapillary" in rep["note"]


def test_deterministic_by_seed(pool):
    a, _ = fuse(pool, "balanced", seed=3)
    b, _ = fuse(pool, "balanced", seed=3)
    c, _ = fuse(pool, "balanced", seed=4)
    assert a.index.equals(b.index)
    assert not a.index.equals(c.index)


def test_bad_configuration_raises(pool):
    with pytest.raises(ValueError, match="unknown fusion strategy"):
        fuse(pool, "smote", seed=0)
    with pytest.raises(ValueError, match="no weight for sources"):
        fuse(pool, "weighted", source_weights={"natix": 1.0}, seed=0)
    with pytest.raises(ValueError, match="needs mixing_ratios"):
        fuse(pool, "mixing", seed=0)
    with pytest.raises(ValueError, match="lacks column"):
        fuse(pool.drop(columns=["group_id"]), "naive")
    assert set(STRATEGIES) == {"naive", "balanced", "weighted", "domain_stratified", "mixing"}


def test_sample_groups_reaches_per_label_targets():
    rng = np.random.default_rng(0)
    V = np.zeros((2000, 2))
    sizes = rng.integers(1, 10, 2000)
    lab = rng.random(2000) < 0.3
    V[np.arange(2000), lab.astype(int)] = sizes
    targets = V.sum(0) * 0.4
    take = sample_groups(V, targets, np.random.default_rng(1))
    got = V[take].sum(0)
    assert np.all(np.abs(got - targets) <= 9)  # within one group per label
    assert sample_groups(V, V.sum(0) * 2, np.random.default_rng(1)).all()
