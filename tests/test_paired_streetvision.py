"""paired_streetvision: a paired bootstrap of two models' StreetVision emulation outputs."""

from __future__ import annotations

import numpy as np
import pytest

from roadwork_ml.evaluation import metrics as M
from roadwork_ml.evaluation.streetvision import paired_streetvision, reward


def _outputs(y: np.ndarray, flip_share: dict[int, float], seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for lv, share in flip_share.items():
        wrong = rng.random(len(y)) < share
        out[lv] = np.where(wrong, 1 - y, y) * 0.8 + 0.1  # 0.9 / 0.1, never exactly 0.5
    return out


def test_estimates_match_direct_metrics_and_diff_is_new_minus_ref():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    new = _outputs(y, {0: 0.05, 1: 0.08, 2: 0.10, 3: 0.12}, 1)
    ref = _outputs(y, {0: 0.05, 1: 0.10, 2: 0.15, 3: 0.25}, 2)
    res = paired_streetvision(y, new, ref, n_resamples=200, seed=3)
    for lv in range(4):
        r = res[f"mcc_level_{lv}"]
        assert r["new"].estimate == pytest.approx(M.mcc(y, (new[lv] > 0.5).astype(int)))
        assert r["diff"].estimate == pytest.approx(r["new"].estimate - r["ref"].estimate)
        assert r["diff"].low <= r["diff"].estimate <= r["diff"].high
    gap = res["mcc_gap_0_3"]
    assert gap["ref"].estimate == pytest.approx(res["mcc_level_0"]["ref"].estimate - res["mcc_level_3"]["ref"].estimate)
    yy = np.tile(y, 4)
    pp = np.concatenate([(new[lv] > 0.5).astype(int) for lv in range(4)])
    assert res["pooled_reward"]["new"].estimate == pytest.approx(reward(M.mcc(yy, pp), M.accuracy(yy, pp)))
    # ref degrades much more at level 3: the paired interval of the difference excludes 0
    assert res["mcc_level_3"]["diff"].low > 0
    assert res["mcc_gap_0_3"]["diff"].high < 0


def test_identical_models_give_a_zero_difference_and_invalid_outputs_count_as_wrong():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    ref = _outputs(y, {0: 0.1, 3: 0.2}, 4)
    res = paired_streetvision(y, ref, {lv: v.copy() for lv, v in ref.items()}, n_resamples=100)
    assert res["pooled_reward"]["diff"].low == res["pooled_reward"]["diff"].high == 0.0
    bad = {lv: np.where(np.arange(len(y)) < 20, np.nan, v) for lv, v in ref.items()}
    worse = paired_streetvision(y, bad, ref, n_resamples=100)
    assert worse["pooled_accuracy"]["diff"].estimate < 0


def test_levels_must_match():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="same, non-empty levels"):
        paired_streetvision(y, {0: y * 1.0}, {0: y * 1.0, 3: y * 1.0})


def test_runs_of_each_recipe_are_averaged_on_the_same_resampled_images():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 300)
    shares_new = {0: 0.05, 1: 0.08, 2: 0.10, 3: 0.12}
    shares_ref = {0: 0.05, 1: 0.10, 2: 0.15, 3: 0.25}
    new_runs = [_outputs(y, shares_new, s) for s in (1, 2, 3)]
    ref_runs = [_outputs(y, shares_ref, s) for s in (11, 12, 13)]
    pooled = paired_streetvision(y, new_runs, ref_runs, n_resamples=200, seed=0)
    singles = [paired_streetvision(y, n, r, n_resamples=200, seed=0) for n, r in zip(new_runs, ref_runs, strict=True)]
    for m in ("mcc_level_0", "mcc_level_3", "mcc_gap_0_3", "pooled_reward"):
        mean_diff = np.mean([s[m]["diff"].estimate for s in singles])
        assert pooled[m]["diff"].estimate == pytest.approx(mean_diff)
        # averaging three runs narrows the interval of the difference relative to one run
        widths = [s[m]["diff"].high - s[m]["diff"].low for s in singles]
        assert pooled[m]["diff"].high - pooled[m]["diff"].low < np.mean(widths)
    # one run given as a list is the same as the dict form
    one = paired_streetvision(y, [new_runs[0]], [ref_runs[0]], n_resamples=200, seed=0)
    assert one["pooled_reward"]["diff"].estimate == singles[0]["pooled_reward"]["diff"].estimate
    with pytest.raises(ValueError, match="same, non-empty levels"):
        paired_streetvision(y, [new_runs[0], {0: new_runs[1][0]}], ref_runs, n_resamples=10)
