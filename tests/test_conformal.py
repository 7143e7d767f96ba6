"""Conformal prediction sets, conformal risk control and SCRC: guarantees measured, not assumed.

Monte-Carlo checks use fresh synthetic draws per split with a *calibrated* synthetic
model (labels drawn from the model's own probabilities, or from a known truth) so that
the populations are known. Bounds are checked within 3 Monte-Carlo standard errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from roadwork_ml.contracts import ContractError, LeakageError
from roadwork_ml.policy.conformal import (
    APS,
    CONFORMAL_REGISTRY,
    RAPS,
    SCRC,
    ConformalError,
    ConformalRiskControl,
    SplitConformalLAC,
    conformal_from_dict,
    conformal_quantile,
    conformal_rank,
    raps_class_scores,
)

ALPHA = 0.1
N_CAL = 500
UPPER = 1 - ALPHA + 1 / (N_CAL + 1)


# --- synthetic data ----------------------------------------------------------------------


def binary_probs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated binary 'roadwork' model: labels drawn from its own probabilities."""
    z = rng.normal(0.0, 1.5, n) + rng.choice([-2.5, 2.5], n)
    p1 = 1.0 / (1.0 + np.exp(-z))
    y = (rng.random(n) < p1).astype(np.int64)
    return np.stack([1.0 - p1, p1], axis=1), y


def dirichlet_probs(n: int, rng: np.random.Generator, c: int = 5) -> tuple[np.ndarray, np.ndarray]:
    p = rng.dirichlet(np.full(c, 0.5), n)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
    return p, y


def mc_mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def covered(sets: np.ndarray, y: np.ndarray) -> np.ndarray:
    return sets[np.arange(y.size), y]


# --- the finite-sample quantile ----------------------------------------------------------


def test_conformal_rank_and_quantile_are_the_exact_order_statistic():
    assert conformal_rank(500, 0.1) == 451
    assert conformal_rank(99, 0.1) == 90  # (99+1)*0.9 is 90.00000000000001 in floats
    assert conformal_rank(9, 0.1) == 9
    assert conformal_rank(8, 0.1) == 9  # > n: full sets
    s = np.random.default_rng(0).permutation(np.arange(1.0, 501.0))
    assert conformal_quantile(s, 0.1) == 451.0  # the 451-th smallest
    # numpy's 'higher' at level k/n returns the (k+1)-th order statistic, one too many
    assert np.quantile(s, 451 / 500, method="higher") == 452.0
    assert conformal_quantile(s[:8], 0.1) == math.inf
    batch = np.random.default_rng(1).random((7, 40))
    np.testing.assert_array_equal(conformal_quantile(batch, 0.2), [conformal_quantile(r, 0.2) for r in batch])


def test_batched_split_conformal_mean_coverage_is_k_over_n_plus_1():
    """4,000 splits in numpy: mean coverage of LAC is exactly k/(n+1) for tie-free scores.

    Precise enough (SE ~ 3e-4) to tell the k-th order statistic (0.9002) from the
    (k+1)-th that np.quantile(method='higher') gives (0.9022).
    """
    rng = np.random.default_rng(7)
    b, n_test = 4000, 1000
    p_cal, y_cal = binary_probs(b * N_CAL, rng)
    p_test, y_test = binary_probs(b * n_test, rng)
    s_cal = (1.0 - p_cal[np.arange(y_cal.size), y_cal]).reshape(b, N_CAL)
    s_test = (1.0 - p_test[np.arange(y_test.size), y_test]).reshape(b, n_test)
    thr = conformal_quantile(s_cal, ALPHA, axis=-1)
    cov = (s_test <= thr[:, None]).mean(axis=1)
    mean, se = mc_mean_se(cov)
    k = conformal_rank(N_CAL, ALPHA)
    print(f"\nbatched LAC over {b} splits: coverage {mean:.5f} +- {se:.5f} (exact {k / (N_CAL + 1):.5f})")
    assert abs(mean - k / (N_CAL + 1)) <= 3 * se
    assert 1 - ALPHA - 3 * se <= mean <= UPPER + 3 * se
    # the off-by-one variant is the (k+1)-th order statistic: mean (k+1)/(n+1), above the upper bound
    thr_higher = np.quantile(s_cal, k / N_CAL, method="higher", axis=-1)
    mean_higher = float((s_test <= thr_higher[:, None]).mean())
    assert abs(mean_higher - (k + 1) / (N_CAL + 1)) <= 3 * se
    assert abs(mean - (k + 1) / (N_CAL + 1)) > 3 * se  # and ours is distinguishable from it


# --- coverage of the estimator classes over many splits ----------------------------------

METHODS = {
    "lac": (lambda s: SplitConformalLAC(ALPHA), True),
    "aps_randomized": (lambda s: APS(ALPHA, randomized=True, seed=s), True),
    "aps_deterministic": (lambda s: APS(ALPHA, randomized=False), False),
    "raps_randomized": (lambda s: RAPS(ALPHA, k_reg=1, lambda_reg=0.1, randomized=True, seed=s), True),
    "raps_deterministic": (lambda s: RAPS(ALPHA, k_reg=1, lambda_reg=0.1, randomized=False), False),
}


@pytest.mark.parametrize("data", ["binary", "dirichlet5"])
def test_estimators_cover_within_finite_sample_bounds(data):
    """250 calibration/test splits, n_cal=500, the real estimator classes.

    Tie-free scores (LAC, randomized APS/RAPS): 1-a <= coverage <= 1-a+1/(n+1).
    Deterministic APS/RAPS scores have an atom (the full cumulative mass 1 for the
    lowest-ranked class), so only the lower bound holds; they may over-cover (on the
    binary model, whose error rate exceeds alpha, the threshold lands on the atom and
    every set is {0, 1}).
    """
    gen = binary_probs if data == "binary" else dirichlet_probs
    rng = np.random.default_rng(11 if data == "binary" else 12)
    n_splits, n_test = 250, 2000
    cov = {name: [] for name in METHODS}
    for s in range(n_splits):
        p_cal, y_cal = gen(N_CAL, rng)
        p_test, y_test = gen(n_test, rng)
        for name, (make, _) in METHODS.items():
            est = make(s).fit(p_cal, y_cal, split="val_calib")
            sets = est.predict_sets(p_test, seed=s) if est.randomized else est.predict_sets(p_test)
            cov[name].append(covered(sets, y_test).mean())
    report = []
    for name, (_, tight) in METHODS.items():
        mean, se = mc_mean_se(cov[name])
        report.append(f"{name}={mean:.4f}+-{se:.4f}")
        assert mean >= 1 - ALPHA - 3 * se, (name, mean, se)
        if tight:
            assert mean <= UPPER + 3 * se, (name, mean, se)
    print(f"\n{data} coverage over {n_splits} splits (bounds [{1 - ALPHA:.4f}, {UPPER:.4f}]): " + ", ".join(report))


# --- the scores are the papers' formulas -------------------------------------------------


def _slow_raps_score(pi: np.ndarray, y: int, u: float, k_reg: int, lam: float) -> float:
    """Romano et al. 2020 / Angelopoulos et al. 2021, written out element by element."""
    rho = 0.0
    rank = 1
    for c in range(pi.size):
        if pi[c] > pi[y]:
            rho += pi[c]
            rank += 1
    return rho + u * pi[y] + lam * max(0, rank - k_reg)


@pytest.mark.parametrize("c", [2, 5])
def test_aps_raps_scores_match_the_papers_formulas(c):
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(c, 0.8), 300)
    u = rng.random(300)
    y = rng.integers(0, c, 300)
    for k_reg, lam in [(0, 0.0), (1, 0.1), (2, 0.05)]:
        for randomized in (True, False):
            fast = raps_class_scores(p, u if randomized else None, k_reg=k_reg, lambda_reg=lam)
            slow = np.array(
                [
                    [_slow_raps_score(p[i], j, u[i] if randomized else 1.0, k_reg, lam) for j in range(c)]
                    for i in range(300)
                ]
            )
            assert np.max(np.abs(fast - slow)) < 1e-12
    # the estimator's calibration threshold is the k-th smallest slow score, its sets {y: E <= tau}
    est = RAPS(ALPHA, k_reg=1, lambda_reg=0.1).fit(p, y, split="val_calib", u=u)
    true_slow = sorted(_slow_raps_score(p[i], int(y[i]), u[i], 1, 0.1) for i in range(300))
    tau = true_slow[conformal_rank(300, ALPHA) - 1]
    assert abs(est.threshold_ - tau) < 1e-12
    p_new = rng.dirichlet(np.full(c, 0.8), 200)
    u_new = rng.random(200)
    sets = est.predict_sets(p_new, u=u_new)
    slow_sets = np.array(
        [[_slow_raps_score(p_new[i], j, u_new[i], 1, 0.1) <= tau for j in range(c)] for i in range(200)]
    )
    np.testing.assert_array_equal(sets, slow_sets)
    aps = APS(ALPHA).fit(p, y, split="val_calib", u=u)
    np.testing.assert_allclose(aps.class_scores(p, u), raps_class_scores(p, u), atol=0, rtol=0)


# --- MAPIE as an oracle ------------------------------------------------------------------


def _passthrough_classifier(n_classes: int):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Passthrough(ClassifierMixin, BaseEstimator):
        """A prefit 'classifier' whose features are already the class probabilities."""

        def fit(self, x, y=None):
            self.classes_ = np.arange(n_classes)
            self.n_features_in_ = n_classes
            return self

        def predict_proba(self, x):
            return np.asarray(x)

        def predict(self, x):
            return np.argmax(x, axis=1)

    return Passthrough().fit(np.zeros((1, n_classes)))


@pytest.mark.filterwarnings("ignore")
def test_lac_and_aps_sets_match_mapie():
    """MAPIE (tested with mapie==1.6.0): same LAC sets (binary and 4-class) and the same
    randomized APS sets (4-class; MAPIE refuses APS on binary targets). MAPIE's APS score
    is ``cumsum - u p_y``, i.e. ours with ``u -> 1 - u``, and it draws its uniforms from
    ``RandomState(random_state)`` at conformalize and at predict time."""
    mapie_cls = pytest.importorskip("mapie.classification")
    rng = np.random.default_rng(5)
    for c in (2, 4):
        p = rng.dirichlet(np.full(c, 0.7), 3000)
        y = np.minimum((rng.random(3000)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), c - 1)
        p_cal, y_cal, p_test = p[:N_CAL], y[:N_CAL], p[N_CAL:]
        clf = _passthrough_classifier(c)
        m = mapie_cls.SplitConformalClassifier(clf, confidence_level=1 - ALPHA, conformity_score="lac", prefit=True)
        m.conformalize(p_cal, y_cal)
        _, m_sets = m.predict_set(p_test)
        ours = SplitConformalLAC(ALPHA).fit(p_cal, y_cal, split="val_calib").predict_sets(p_test)
        np.testing.assert_array_equal(m_sets[:, :, 0], ours)
        if c == 2:
            continue
        seed = 17
        m = mapie_cls.SplitConformalClassifier(
            clf, confidence_level=1 - ALPHA, conformity_score="aps", prefit=True, random_state=seed
        )
        m.conformalize(p_cal, y_cal)
        _, m_sets = m.predict_set(p_test, conformity_score_params={"include_last_label": "randomized"})
        u_cal = np.random.RandomState(seed).uniform(size=N_CAL)
        u_test = np.random.RandomState(seed).uniform(size=(len(p_test), 1)).ravel()
        aps = APS(ALPHA, randomized=True).fit(p_cal, y_cal, split="val_calib", u=1 - u_cal)
        np.testing.assert_allclose(
            aps.class_scores(p_cal, 1 - u_cal)[np.arange(N_CAL), y_cal], np.ravel(m.conformity_scores), atol=1e-12
        )
        np.testing.assert_array_equal(m_sets[:, :, 0], aps.predict_sets(p_test, u=1 - u_test))


# --- conformal risk control of false negatives -------------------------------------------


def test_crc_lambda_is_the_smallest_feasible_value():
    # 10 rows, alpha=0.3: #misses <= 0.3*11 - 1 = 2.3 -> at most 2 misses
    p1 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 1, 1, 1, 0, 1, 0, 1, 1, 0])
    crc = ConformalRiskControl(0.3).fit(np.stack([1 - p1, p1], 1), y, split="val_calib")
    # positives' 1-p1: .1 .2 .3 .4 .6 .8 .9 -> 3rd largest is 0.6
    assert crc.lambda_ == pytest.approx(0.6)
    sets = crc.predict_sets(np.stack([1 - p1, p1], 1))
    assert ((y == 1) & ~sets[:, 1]).sum() == 2
    assert (
        ConformalRiskControl(0.05).fit(np.stack([1 - p1, p1], 1), y, split="val_calib").lambda_ == 1.0
    )  # alpha < 1/(n+1)


def test_crc_controls_false_negatives_over_splits():
    rng = np.random.default_rng(21)
    n_splits, n_test = 300, 2000
    joint, cond = [], []
    for _ in range(n_splits):
        p_cal, y_cal = binary_probs(N_CAL, rng)
        p_test, y_test = binary_probs(n_test, rng)
        for conditional, out in ((False, joint), (True, cond)):
            crc = ConformalRiskControl(ALPHA, conditional=conditional).fit(p_cal, y_cal, split="val_calib")
            miss = (y_test == 1) & ~crc.predict_sets(p_test)[:, 1]
            out.append(miss.mean() if not conditional else miss[y_test == 1].mean())
    (mj, sj), (mc, sc) = mc_mean_se(joint), mc_mean_se(cond)
    print(
        f"\nCRC over {n_splits} splits: P(y=1, miss) = {mj:.4f}+-{sj:.4f}, P(miss | y=1) = {mc:.4f}+-{sc:.4f} (alpha {ALPHA})"
    )
    exact = math.floor(ALPHA * (N_CAL + 1)) / (N_CAL + 1)  # CRC is tight for tie-free losses
    assert mj <= ALPHA + 3 * sj and abs(mj - exact) <= 3 * sj
    assert mc <= ALPHA + 3 * sc and mc >= ALPHA - 1 / 200 - 3 * sc  # ~250 positives per split


# --- SCRC ------------------------------------------------------------------------------


def scrc_population(n: int, rng: np.random.Generator, gate_noise: float = 0.03):
    """Truth q = P(Y=1|x); an over-confident, noisy model; a gate that sees the true error probability with noise."""
    z = rng.normal(0.0, 1.5, n) + rng.choice([-2.0, 2.0], n)
    q = 1.0 / (1.0 + np.exp(-z))
    p1 = 1.0 / (1.0 + np.exp(-(1.5 * z + rng.normal(0.0, 1.0, n))))
    probs = np.stack([1.0 - p1, p1], axis=1)
    pred = np.argmax(probs, axis=1)
    p_err = np.where(pred == 1, 1.0 - q, q)
    gate = -p_err + rng.normal(0.0, gate_noise, n)
    y = (rng.random(n) < q).astype(np.int64)
    return probs, y, gate, p_err


@pytest.fixture(scope="module")
def scrc_pool():
    probs, _, gate, p_err = scrc_population(100_000, np.random.default_rng(99))
    return gate, probs.max(axis=1), p_err


def _true_selective_risk(pool, lam_gate: float, lam_conf: float) -> tuple[float, float]:
    gate, conf, p_err = pool
    acc = (gate >= lam_gate) & (conf >= lam_conf)
    return (float(p_err[acc].mean()) if acc.any() else 0.0), float(acc.mean())


def _naive_two_threshold(probs, y, gate, alpha, n_grid=20):
    """Max coverage subject to *empirical* selective risk <= alpha: no guarantee."""
    levels = np.arange(n_grid - 1) / (n_grid - 1)
    gg = np.unique(np.r_[-np.inf, np.quantile(gate, levels)])
    gc = np.unique(np.r_[-np.inf, np.quantile(probs.max(1), levels)])
    a = (gate[None] >= gg[:, None]).astype(float)
    b = (probs.max(1)[None] >= gc[:, None]).astype(float)
    wrong = (probs.argmax(1) != y).astype(float)
    n_acc, n_err = a @ b.T, (a * wrong) @ b.T
    ok = (n_acc > 0) & (n_err <= alpha * n_acc)
    i, j = np.unravel_index(np.argmax(np.where(ok, n_acc, -1)), n_acc.shape)
    return gg[i], gc[j]


def test_scrc_selective_risk_guarantee_holds_over_draws(scrc_pool):
    """P(selective risk of the fitted rule > alpha) <= delta, over 200 calibration draws."""
    alpha, delta, n, draws = 0.1, 0.1, 2000, 200
    rng = np.random.default_rng(31)
    risks, covs, naive = [], [], []
    for d in range(draws):
        probs, y, gate, _ = scrc_population(n, rng)
        est = SCRC(alpha, delta, seed=d).fit(probs, y, gate, split="val_calib")
        r, c = _true_selective_risk(scrc_pool, est.lambda_gate_, est.lambda_conf_)
        risks.append(r)
        covs.append(c)
        naive.append(_true_selective_risk(scrc_pool, *_naive_two_threshold(probs, y, gate, alpha))[0])
    viol = float(np.mean(np.array(risks) > alpha))
    viol_naive = float(np.mean(np.array(naive) > alpha))
    bound = delta + 3 * math.sqrt(delta * (1 - delta) / draws)
    print(
        f"\nSCRC over {draws} draws: P(risk > {alpha}) = {viol:.3f} (delta {delta}), mean coverage {np.mean(covs):.3f}, "
        f"mean risk {np.mean(risks):.4f}; naive plug-in rule: P(risk > alpha) = {viol_naive:.3f}"
    )
    assert viol <= bound
    assert np.mean(covs) > 0.5  # not trivially abstaining (oracle coverage at risk 0.1 is ~0.78)
    assert viol_naive > bound  # the check has power: the uncorrected rule fails it


def test_scrc_contamination_option_restores_the_guarantee(scrc_pool):
    """Labels flipped to the model's own prediction with prob eps hide errors; alpha(1-eps) fixes it."""
    alpha, delta, n, draws, eps = 0.1, 0.1, 3000, 200, 0.2
    rng = np.random.default_rng(41)
    plain, robust = [], []
    for d in range(draws):
        probs, y, gate, _ = scrc_population(n, rng)
        flip = rng.random(n) < eps
        y = np.where(flip, probs.argmax(1), y)
        for eps_fit, out in ((0.0, plain), (eps, robust)):
            est = SCRC(alpha, delta, seed=d, contamination_eps=eps_fit).fit(probs, y, gate, split="val_calib")
            out.append(_true_selective_risk(scrc_pool, est.lambda_gate_, est.lambda_conf_))
    plain, robust = np.array(plain), np.array(robust)
    bound = delta + 3 * math.sqrt(delta * (1 - delta) / draws)
    vp, vr = float(np.mean(plain[:, 0] > alpha)), float(np.mean(robust[:, 0] > alpha))
    print(
        f"\nSCRC with {eps:.0%} adversarial label noise: P(risk > alpha) plain {vp:.3f}, robust {vr:.3f}; "
        f"coverage plain {plain[:, 1].mean():.3f}, robust {robust[:, 1].mean():.3f}"
    )
    assert vp > bound
    assert vr <= bound
    assert robust[:, 1].mean() > 0.5


def test_scrc_sets_and_edge_cases():
    rng = np.random.default_rng(2)
    probs, y, gate, _ = scrc_population(1500, rng)
    est = SCRC(0.1, 0.1).fit(probs, y, gate, split="val_calib")
    assert est.certified_
    sets = est.predict_sets(probs, gate)
    acc = est.accept(probs, gate)
    assert (sets[acc].sum(1) == 1).all() and (sets[~acc].sum(1) == 2).all()
    np.testing.assert_array_equal(sets[acc].argmax(1), probs[acc].argmax(1))
    # an impossible target certifies nothing and defers everything
    y_bad = 1 - probs.argmax(1)  # every prediction wrong
    none = SCRC(0.05, 0.1).fit(probs, y_bad, gate, split="val_calib")
    assert not none.certified_ and not none.accept(probs, gate).any()
    assert json.loads(json.dumps(none.to_dict(), allow_nan=False))["fitted"]["lambda_gate_"] == {"__float__": "inf"}


# --- contamination -----------------------------------------------------------------------


def test_contamination_robust_option_restores_clean_coverage():
    """Constructed worst case: with prob eps a calibration label is replaced by the model's
    own prediction (always covered once the threshold is >= 0.5). Standard LAC/APS/RAPS
    then under-cover clean test data (LAC: ~1 - alpha/(1-eps)); the Huber option
    (alpha' = alpha(1-eps)) restores >= 1 - alpha."""
    rng = np.random.default_rng(51)
    eps, n_splits, n_test = 0.1, 250, 2000
    makers = {
        "lac": lambda s, e: SplitConformalLAC(ALPHA, contamination_eps=e),
        "aps": lambda s, e: APS(ALPHA, seed=s, contamination_eps=e),
        "raps": lambda s, e: RAPS(ALPHA, seed=s, contamination_eps=e),
    }
    cov = {(k, e): [] for k in makers for e in (0.0, eps)}
    for s in range(n_splits):
        p_cal, y_cal = binary_probs(N_CAL, rng)
        flip = rng.random(N_CAL) < eps
        y_noisy = np.where(flip, p_cal.argmax(1), y_cal)
        p_test, y_test = binary_probs(n_test, rng)
        for (name, e), out in cov.items():
            est = makers[name](s, e).fit(p_cal, y_noisy, split="val_calib")
            out.append(
                covered(est.predict_sets(p_test, seed=s) if est.randomized else est.predict_sets(p_test), y_test).mean()
            )
    report = {key: mc_mean_se(v) for key, v in cov.items()}
    print(
        "\nclean-test coverage with adversarial label noise eps=0.1: "
        + ", ".join(f"{k}{'(robust)' if e else ''}={m:.4f}+-{se:.4f}" for (k, e), (m, se) in report.items())
    )
    for name in makers:
        m_std, se_std = report[(name, 0.0)]
        m_rob, se_rob = report[(name, eps)]
        assert m_std < 1 - ALPHA - 3 * se_std, name  # standard split conformal under-covers
        assert m_rob >= 1 - ALPHA - 3 * se_rob, name  # the robust option does not
        assert m_rob <= 1 - ALPHA + 0.01, name  # ... and is not absurdly conservative
    # LAC's under-coverage matches the worst-case Huber bound
    k = conformal_rank(N_CAL, ALPHA)
    assert abs(report[("lac", 0.0)][0] - (1 - (1 - k / (N_CAL + 1)) / (1 - eps))) <= 3 * report[("lac", 0.0)][1]


def test_uniform_label_plugin_removes_over_coverage():
    """Random (uniform) label noise makes standard conformal over-cover; the plug-in
    'uniform_label' model estimates the clean score CDF and lands near 1 - alpha
    (asymptotically valid, so a small tolerance)."""
    rng = np.random.default_rng(61)
    eps, n_splits, n_test = 0.2, 250, 2000
    std, plug, plug_aps = [], [], []
    for s in range(n_splits):
        p_cal, y_cal = binary_probs(N_CAL, rng)
        flip = rng.random(N_CAL) < eps
        y_noisy = np.where(flip, rng.integers(0, 2, N_CAL), y_cal)
        p_test, y_test = binary_probs(n_test, rng)
        std.append(
            covered(SplitConformalLAC(ALPHA).fit(p_cal, y_noisy, split="val_calib").predict_sets(p_test), y_test).mean()
        )
        est = SplitConformalLAC(ALPHA, contamination_eps=eps, contamination_model="uniform_label").fit(
            p_cal, y_noisy, split="val_calib"
        )
        plug.append(covered(est.predict_sets(p_test), y_test).mean())
        est = APS(ALPHA, seed=s, contamination_eps=eps, contamination_model="uniform_label").fit(
            p_cal, y_noisy, split="val_calib"
        )
        plug_aps.append(covered(est.predict_sets(p_test, seed=s), y_test).mean())
    (ms, ss), (mp, sp), (ma, sa) = mc_mean_se(std), mc_mean_se(plug), mc_mean_se(plug_aps)
    print(
        f"\nuniform label noise eps=0.2: standard LAC {ms:.4f}+-{ss:.4f}, plug-in LAC {mp:.4f}+-{sp:.4f}, plug-in APS {ma:.4f}+-{sa:.4f}"
    )
    assert ms > 1 - ALPHA + 0.02
    for m, se in ((mp, sp), (ma, sa)):
        assert abs(m - (1 - ALPHA)) <= 0.005 + 3 * se


# --- serialization, leakage, misuse ------------------------------------------------------


def _fitted_all(rng):
    p, y = binary_probs(N_CAL, rng)
    gate = rng.random(N_CAL)
    ests = [
        SplitConformalLAC(ALPHA).fit(p, y, split="val_calib"),
        SplitConformalLAC(ALPHA, contamination_eps=0.05, allow_empty=False).fit(p, y, split="val_calib"),
        APS(ALPHA, seed=3).fit(p, y, split="val_calib"),
        APS(ALPHA, randomized=False).fit(p, y, split="val_calib"),
        RAPS(ALPHA, k_reg=1, lambda_reg=0.2, seed=4, contamination_eps=0.1, contamination_model="uniform_label").fit(
            p, y, split="val_calib"
        ),
        ConformalRiskControl(0.05, conditional=True).fit(p, y, split="val_calib"),
        SCRC(0.1, 0.1, seed=5).fit(p, y, gate, split="val_calib"),
        SplitConformalLAC(ALPHA).fit(p[:5], y[:5], split="val_calib"),  # threshold +inf
    ]
    return ests, p, gate


def _sets(est, p, gate, seed=None):
    if isinstance(est, SCRC):
        return est.predict_sets(p, gate)
    if getattr(est, "randomized", False):
        return est.predict_sets(p, seed=seed)
    return est.predict_sets(p)


def test_to_dict_from_dict_round_trip_gives_identical_sets():
    rng = np.random.default_rng(71)
    ests, _, _ = _fitted_all(rng)
    p_new, _ = binary_probs(1000, rng)
    gate_new = rng.random(1000)
    kinds = set()
    for est in ests:
        blob = json.dumps(est.to_dict(), allow_nan=False)  # strict JSON: no Infinity/NaN
        back = conformal_from_dict(json.loads(blob))
        assert type(back) is type(est)
        kinds.add(back.kind)
        np.testing.assert_array_equal(_sets(back, p_new, gate_new, seed=9), _sets(est, p_new, gate_new, seed=9))
    assert kinds == set(CONFORMAL_REGISTRY)
    assert ests[-1].threshold_ == math.inf and _sets(ests[-1], p_new, gate_new).all()
    with pytest.raises(ContractError):
        conformal_from_dict({"kind": "nope"})
    with pytest.raises(ContractError):
        SplitConformalLAC.from_dict({**ests[0].to_dict(), "kind": "aps"})


def test_randomized_prediction_is_reproducible_only_with_a_seed():
    rng = np.random.default_rng(81)
    p, y = dirichlet_probs(N_CAL, rng)
    est = APS(ALPHA, seed=1).fit(p, y, split="val_calib")
    again = APS(ALPHA, seed=1).fit(p, y, split="val_calib")
    assert est.threshold_ == again.threshold_
    assert APS(ALPHA, seed=2).fit(p, y, split="val_calib").threshold_ != est.threshold_
    p_new, _ = dirichlet_probs(2000, rng)
    np.testing.assert_array_equal(est.predict_sets(p_new, seed=4), est.predict_sets(p_new, seed=4))
    assert (est.predict_sets(p_new, seed=4) != est.predict_sets(p_new, seed=5)).any()
    assert est.predict_sets(p_new).shape == (2000, 5)  # seed=None: fresh entropy
    with pytest.raises(ConformalError):
        APS(ALPHA, randomized=False).fit(p, y, split="val_calib", u=np.zeros(N_CAL))


@pytest.mark.parametrize("split", ["train", "val_test", "val_select", ["val_calib", "val_test"], []])
def test_fit_refuses_every_split_but_val_calib(split):
    rng = np.random.default_rng(91)
    p, y = binary_probs(200, rng)
    gate = rng.random(200)
    for cls in (SplitConformalLAC, APS, RAPS, ConformalRiskControl):
        with pytest.raises(LeakageError):
            cls().fit(p, y, split=split)
    with pytest.raises(LeakageError):
        SCRC().fit(p, y, gate, split=split)


def test_misuse_is_reported():
    rng = np.random.default_rng(92)
    p, y = binary_probs(100, rng)
    with pytest.raises(ConformalError):
        SplitConformalLAC(ALPHA).predict_sets(p)  # not fitted
    with pytest.raises(ContractError):
        SplitConformalLAC(ALPHA).fit(p * 2, y, split="val_calib")  # not probabilities
    with pytest.raises(ContractError):
        SplitConformalLAC(ALPHA).fit(p, y + 1, split="val_calib")  # label 2 of 2 classes
    with pytest.raises(ConformalError):
        SplitConformalLAC(1.5)
    with pytest.raises(ConformalError):
        APS(ALPHA, contamination_eps=0.1, contamination_model="bogus")
    sets = SplitConformalLAC(0.4, allow_empty=False).fit(p, y, split="val_calib").predict_sets(p)
    assert sets.any(axis=1).all()
