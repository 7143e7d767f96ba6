import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from roadwork_ml.contracts import LeakageError, Split
from roadwork_ml.policy.thresholds import ExitThresholds, exit_sweep, fit_thresholds, fold_probability, mcc_optimal_cut


def _scores(n, seed, shift=2.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = rng.normal(0, 1, n) + np.where(y == 1, shift, -shift) * 0.5 + 0.7  # biased: best cut is not 0.5
    return 1 / (1 + np.exp(-logit)), y


def _brute_fnr_coverage(p, y, tau):
    exited = np.maximum(p, 1 - p) >= tau
    pos = exited & (y == 1)
    fn = (pos & (p <= 0.5)).sum()
    return exited.mean(), (fn / pos.sum() if pos.sum() else 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_sweep_matches_brute_force_and_choice_is_optimal(seed):
    p, y = _scores(800, seed)
    taus = np.linspace(0.5, 1, 101)
    cov, fnr = exit_sweep(p, y, taus)
    for t, c, f in zip(taus[::10], cov[::10], fnr[::10], strict=False):
        bc, bf = _brute_fnr_coverage(p, y, t)
        assert c == pytest.approx(bc, abs=1e-12) and f == pytest.approx(bf, abs=1e-12)
    fitted = fit_thresholds(p, y, Split.VAL_CALIB, target_fnr_exit=0.05, min_coverage=0.3, grid_size=1001)
    assert fitted.feasible_
    folded = fitted.fold(p)  # exits decide with the deployed (folded) cut
    c, f = _brute_fnr_coverage(folded, y, fitted.tau_)
    assert f <= 0.05 and c >= 0.3 and c == pytest.approx(fitted.coverage_)
    assert fitted.exits(p).mean() == pytest.approx(c)
    # no feasible τ on the grid has higher coverage
    grid = np.linspace(0.5, 1, 1001)
    gc, gf = exit_sweep(folded, y, grid)
    assert gc[(gf <= 0.05) & (gc >= 0.3)].max() == pytest.approx(fitted.coverage_)


def test_infeasible_targets_are_reported_not_hidden():
    p, y = _scores(500, 0, shift=0.2)  # nearly random scores
    fitted = fit_thresholds(p, y, Split.VAL_CALIB, target_fnr_exit=0.001, min_coverage=0.99)
    assert not fitted.feasible_


@pytest.mark.parametrize("seed", range(5))
def test_mcc_cut_beats_every_other_cut(seed):
    p, y = _scores(400, seed)
    cut, best = mcc_optimal_cut(p, y)
    assert best == pytest.approx(matthews_corrcoef(y, p > cut), abs=1e-12)
    for t in np.unique(p)[::7]:
        assert matthews_corrcoef(y, p > t) <= best + 1e-12


def test_fold_puts_the_cut_on_one_half():
    rng = np.random.default_rng(0)
    p = np.r_[rng.random(10000), 0.0, 1.0, 0.3, np.nan, np.inf, -np.inf]
    for cut in (0.01, 0.3, 0.5, 0.83, 0.999):
        f = fold_probability(p, cut)
        assert np.isfinite(f).all() and f.min() >= 0 and f.max() <= 1
        finite = np.isfinite(p)
        assert ((f[finite] > 0.5) == (p[finite] > cut)).all()
        order = np.argsort(p[:10000])
        assert (np.diff(f[:10000][order]) >= 0).all()  # monotone


def test_leakage_and_serialization():
    p, y = _scores(300, 1)
    with pytest.raises(LeakageError):
        fit_thresholds(p, y, Split.VAL_TEST, 0.05, 0.5)
    fitted = fit_thresholds(p, y, "val_calib", 0.05, 0.5)
    again = ExitThresholds.from_dict(fitted.to_dict())
    assert again.tau_ == fitted.tau_ and again.decision_cut_ == fitted.decision_cut_
    assert (again.fold(p) == fitted.fold(p)).all()


def _reward_sklearn(p, y, cut, share):
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    w = np.where(y == 1, share / (y == 1).sum(), (1 - share) / (y == 0).sum())
    pred = (p > cut).astype(int)
    m = matthews_corrcoef(y, pred, sample_weight=w)
    a = accuracy_score(y, pred, sample_weight=w)
    return (0.5 * m + 0.5 * a) ** 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_optimal_cut_matches_a_brute_force_search_with_sklearn(seed):
    from roadwork_ml.policy.thresholds import reward_optimal_cut

    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.35).astype(int)  # fewer positives than the validator's 50 %
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1).round(3)  # ties on purpose
    cut, best = reward_optimal_cut(p, y, 0.5)
    s = np.unique(p)
    candidates = np.r_[(s[1:] + s[:-1]) / 2, s[0] / 2, s[-1]]
    brute = max(_reward_sklearn(p, y, c, 0.5) for c in candidates)
    assert best == pytest.approx(brute, abs=1e-9)
    assert _reward_sklearn(p, y, cut, 0.5) == pytest.approx(best, abs=1e-9)


def test_validator_cut_follows_the_shifted_scores_the_clean_cut_misses():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.4).astype(int)
    clean = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.08, 400), 0, 1)
    distorted = np.clip(clean - 0.35 * y, 0, 1)  # distortion pulls positives down (colour lost)
    vp, vy = np.r_[clean, distorted], np.r_[y, y]
    clean_fit = fit_thresholds(clean, y, "val_calib", 0.05, 0.5)
    val_fit = fit_thresholds(
        clean, y, "val_calib", 0.05, 0.5, cut_rule="validator_reward", validator_p1=vp, validator_labels=vy
    )
    assert val_fit.decision_cut_ < clean_fit.decision_cut_
    from roadwork_ml.evaluation.streetvision import reward

    def pooled_reward(cut):
        pred = (vp > cut).astype(int)
        from sklearn.metrics import accuracy_score, matthews_corrcoef

        return reward(matthews_corrcoef(vy, pred), accuracy_score(vy, pred))

    assert pooled_reward(val_fit.decision_cut_) > pooled_reward(clean_fit.decision_cut_) + 0.05
    again = ExitThresholds.from_dict(val_fit.to_dict())
    assert again.cut_rule == "validator_reward" and again.decision_cut_ == val_fit.decision_cut_
    with pytest.raises(Exception, match="needs validator_p1"):
        fit_thresholds(clean, y, "val_calib", 0.05, 0.5, cut_rule="validator_reward")


def test_half_rule_ships_the_models_own_cut_and_needs_no_emulation():
    p, y = _scores(600, 3)
    tuned_cut, _ = mcc_optimal_cut(p, y)
    assert abs(tuned_cut - 0.5) > 0.05  # the biased scores' own best cut is elsewhere
    fit = fit_thresholds(p, y, "val_calib", 0.05, 0.5, cut_rule="half")
    assert fit.decision_cut_ == 0.5
    np.testing.assert_allclose(fit.fold(p), p, atol=1e-12)  # nothing folded
    assert fit.mcc_at_cut_ == pytest.approx(matthews_corrcoef(y, (p > 0.5).astype(int)), abs=1e-12)
    assert np.isnan(fit.reward_at_cut_)
    again = ExitThresholds.from_dict(fit.to_dict())
    assert again.cut_rule == "half" and again.decision_cut_ == 0.5
    with pytest.raises(ValueError, match="cut_rule must be one of"):
        ExitThresholds(cut_rule="median")
