"""Dependence-aware drift tests: false-alarm rates on 200 simulated stable days with the demo's
sequence structure (3-8 correlated frames per drive), against a naive row-permutation variant
that must fail on the same days, detection on shift days, and the statistics against oracles
(scipy KS, the alibi-identical MMD, statsmodels Holm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from roadwork_ml.monitoring.drift_family import drift_family, subsample_groups
from roadwork_ml.monitoring.drift_stats import (
    bin_shares,
    mmd_permutation_test,
    psi_from_shares,
    quantile_edges,
)
from roadwork_ml.monitoring.group_tests import (
    circular_blocks,
    day_seed,
    draw_group_permutations,
    encode_groups,
    grid_index,
    group_counts,
    grouping_key,
    holm,
    ks_stat,
    mmd_group_kernel,
    mmd_stat,
    permutation_p,
    psi_stat,
)
from roadwork_ml.monitoring.simulation import (
    MODEL_COLUMNS_SIM,
    STABLE,
    WINTER,
    as_sample,
    simulate_day,
    simulated_reference_setup,
)

ALPHA, B, N_STABLE, N_DAY = 0.05, 499, 200, 200
BOUND = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / N_STABLE)  # Monte-Carlo error of a rate over 200 days: 0.096


@pytest.fixture(scope="module")
def setup():
    return simulated_reference_setup(900, 400)  # MMD rows: whole sequences, as the reference keeps them


def _rates(
    setup, config, n_days, iid=False, tests=("mmd", "ks", "psi", "category", "accuracy_drop", "ece_increase"), seed=7
):
    ref, emb_rows, edges, sigma = setup
    rs = as_sample(ref, emb_rows, iid=iid)
    raw, family = {}, 0
    for d in range(n_days):
        res = drift_family(
            rs,
            as_sample(simulate_day(N_DAY, config, seed, d), iid=iid),
            MODEL_COLUMNS_SIM,
            edges,
            sigma,
            B,
            day_seed(f"day{d}", seed),
            ALPHA,
            tests=tests,
        )
        for k, v in res.tests.items():
            raw[k] = raw.get(k, 0) + (v["p_value"] <= ALPHA)
        family += res.any_rejected
    return {k: v / n_days for k, v in raw.items()}, family / n_days


@pytest.fixture(scope="module")
def stable_rates(setup):
    return _rates(setup, STABLE, N_STABLE)


def test_each_test_false_alarm_rate_is_at_most_alpha(stable_rates):
    per_test, _ = stable_rates
    assert len(per_test) == 21  # mmd, 8 ks, 8 psi, 2 category psi, accuracy drop, ECE increase
    assert max(per_test.values()) <= BOUND, per_test
    assert np.mean(list(per_test.values())) <= ALPHA + 0.015, per_test  # on average at the nominal level


def test_the_days_decision_controls_the_family_wise_rate(stable_rates):
    _, family = stable_rates
    assert family <= BOUND, family


def test_naive_row_permutation_over_alarms_on_the_same_days(setup):
    """The same tests permuting rows (every frame its own group) on the same stable days: the test can fail."""
    per_test, family = _rates(setup, STABLE, 25, iid=True, tests=("mmd", "ks", "category"))
    assert per_test["mmd"] > 0.5 and family > 0.5, (per_test, family)
    assert family > BOUND


def test_shift_days_are_detected(setup):
    _, family = _rates(setup, WINTER, 20, seed=8)
    assert family >= 19 / 20


# ------------------------------------------------------------------------------------ pieces vs oracles


def _two_groups(n_ref=120, n_day=80, seed=0):
    rng = np.random.default_rng(seed)
    rg = np.repeat(np.arange(n_ref // 4), 4).astype(str)
    dg = np.repeat(np.arange(n_day // 5), 5).astype(str)
    rc, dc, gr, gd = encode_groups(rg, dg)
    return rng, rc, dc, gr, gd


def test_observed_statistics_match_scipy_alibi_and_psi():
    rng, rc, dc, gr, gd = _two_groups()
    x, y = rng.normal(size=(120, 3)), rng.normal(0.3, 1, size=(80, 3))
    perms = draw_group_permutations(gr, gd, 5, seed=1)
    codes = np.concatenate([rc, dc])
    v0 = perms.observed()
    # KS: exactly scipy's statistic (continuous data, all values distinct)
    pooled = np.concatenate([x[:, 0], y[:, 0]])
    idx, t = grid_index(pooled)
    ks_obs = ks_stat(np.cumsum(group_counts(codes, idx, gr + gd, t), axis=1), v0)[0]
    assert ks_obs == pytest.approx(stats.ks_2samp(x[:, 0], y[:, 0]).statistic, abs=1e-6)
    # MMD: one row per group = the unbiased statistic of the alibi-identical implementation ...
    sigma = 1.3
    z = np.concatenate([x, y])
    single = np.arange(200)
    kern = mmd_group_kernel(single, z, sigma, 200)
    ref_mmd = mmd_permutation_test(x, y, n_permutations=19, sigma=sigma, device="cpu")
    side = (single < 120).astype(float)[None, :]
    assert mmd_stat(kern, side)[0] == pytest.approx(ref_mmd.statistic, rel=1e-9, abs=1e-12)
    # ... and with sequences, kernel means over pairs from different groups only (brute force)
    g = np.concatenate([rc, dc])
    k = np.exp(-((z[:, None, :] - z[None, :, :]) ** 2).sum(-1) / (2 * sigma**2))
    other = g[:, None] != g[None, :]
    rx = np.arange(200) < 120
    by_hand = (
        k[np.ix_(rx, rx)][other[np.ix_(rx, rx)]].mean()
        + k[np.ix_(~rx, ~rx)][other[np.ix_(~rx, ~rx)]].mean()
        - 2 * k[np.ix_(rx, ~rx)].mean()
    )
    assert mmd_stat(mmd_group_kernel(g, z, sigma, gr + gd), v0)[0] == pytest.approx(by_hand, rel=1e-9)
    # PSI: the same as psi_from_shares on the two samples' shares
    edges = quantile_edges(x[:, 1], 10)
    counts = group_counts(
        codes, np.searchsorted(edges, np.concatenate([x[:, 1], y[:, 1]]), side="left"), gr + gd, len(edges) + 1
    )
    assert psi_stat(counts, v0)[0] == pytest.approx(
        psi_from_shares(bin_shares(x[:, 1], edges), bin_shares(y[:, 1], edges))
    )


def test_permutations_keep_groups_whole_and_p_value_formula():
    perms = draw_group_permutations(30, 16, 200, seed=3)
    assert perms.ref_side.shape == (200, 46) and (perms.ref_side.sum(axis=1) == 30).all()
    assert permutation_p(1.0, np.array([0.5, 1.0, 2.0, 0.1])) == pytest.approx(3 / 5)  # (1 + 2) / (1 + 4)
    assert permutation_p(9.0, np.zeros(99)) == pytest.approx(0.01)  # never 0
    a, b = (
        draw_group_permutations(30, 16, 50, seed=day_seed("2026-11-01")),
        draw_group_permutations(30, 16, 50, seed=day_seed("2026-11-02")),
    )
    assert not np.array_equal(a.ref_side, b.ref_side)
    assert day_seed("2026-11-01") == day_seed("2026-11-01")


def test_holm_matches_statsmodels():
    p = {"a": 0.001, "b": 0.04, "c": 0.03, "d": 0.5, "e": 0.012}
    expected = multipletests(list(p.values()), method="holm")[1]
    assert list(holm(p).values()) == pytest.approx(list(expected))


def test_grouping_key_falls_back_in_order():
    import pandas as pd

    ts = pd.to_datetime(
        ["2026-11-01T10:00:00Z", "2026-11-01T10:04:00Z", "2026-11-01T10:12:00Z", "2026-11-01T10:01:00Z"]
    )
    df = pd.DataFrame(
        {"sequence_id": ["s1", "s1", "s2", "unknown"], "camera_id": ["c", "c", "c", "d"], "timestamp": ts}
    )
    g, kind = grouping_key(df)
    assert kind == "sequence+camera_window" and g[0] == g[1] != g[2] and g[3].startswith("cam:d@")
    g, kind = grouping_key(df.drop(columns="sequence_id"))
    assert kind == "camera_window" and g[0] == g[1] == g[3].replace("cam:d", "cam:c") and g[2] != g[0]
    g, kind = grouping_key(pd.DataFrame({"x": np.arange(100)}), seed=5)
    assert kind == "circular_block" and len(set(g)) in (10, 11)  # blocks of ceil(sqrt(100)) = 10 rows, one wraps
    assert np.array_equal(circular_blocks(100, 5), circular_blocks(100, 5))


def test_subsample_keeps_whole_groups():
    groups = np.repeat(np.arange(50), 6).astype(str)
    rows = subsample_groups(groups, 100, seed=2)
    kept = groups[rows]
    assert len(rows) <= 100 and all((kept == g).sum() == 6 for g in set(kept))
