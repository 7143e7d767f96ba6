"""Calibrators, cross-fitted selection and reliability diagrams (roadwork_ml.policy.calibration).

The data are synthetic with a known truth: a true class-1 log-odds ``s``, labels drawn from
``sigmoid(s)``, and observed logits whose margin is ``k · (s + bias)`` — over-confident for
k = 3, under-confident for k = 0.3. NLL / ECE are computed here by small helpers written
independently of the module (and of roadwork_ml.evaluation).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from roadwork_ml.contracts import ContractError, LeakageError, Split
from roadwork_ml.policy import calibration as cal_mod
from roadwork_ml.policy.calibration import (
    CALIBRATORS,
    BetaCalibration,
    Calibrator,
    Identity,
    IsotonicCalibration,
    SliceTemperature,
    TemperatureScaling,
    calibrator_from_dict,
    reliability_diagram,
    select_calibrator,
)

LN2 = math.log(2.0)


# --- independent helpers -----------------------------------------------------------------


def softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([-math.log(max(probs[i, y[i]], 1e-15)) for i in range(len(y))]))


def ece(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with bins (k/n, (k+1)/n], written as a plain loop."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        m = (conf > lo) & (conf <= hi) if k else (conf <= hi)
        if m.any():
            total += m.sum() / len(y) * abs(np.mean(pred[m] == y[m]) - np.mean(conf[m]))
    return float(total)


def miscalibrated(n: int, k: float, bias: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[N, 2]`` with margin ``k · (s + bias)`` for true log-odds ``s ~ N(0, 2²)``; labels ~ Bernoulli(sigmoid(s))."""
    rng = np.random.default_rng(seed)
    s = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-s))).astype(np.int64)
    m = k * (s + bias)
    return np.stack([-m / 2, m / 2], axis=1), y


def fit_any(cal: Calibrator, z: np.ndarray, y: np.ndarray, slices=None) -> Calibrator:
    return cal.fit(z, y, slices=slices, split="val_calib") if cal.uses_slices else cal.fit(z, y, split="val_calib")


def predict_any(cal: Calibrator, z: np.ndarray, slices=None) -> np.ndarray:
    return cal.predict_proba(z, slices=slices) if cal.uses_slices else cal.predict_proba(z)


def assert_pure_json(obj, where="d"):
    """Only Python float/int/str/bool/None/list/dict (np.float64 would pass json.dumps silently)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str, f"{where}: key {k!r} is {type(k)}"
            assert_pure_json(v, f"{where}[{k!r}]")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            assert_pure_json(v, f"{where}[{i}]")
    else:
        assert type(obj) in (float, int, str, bool, type(None)), f"{where} is {type(obj)}"


ALL_KINDS = sorted(k for k in CALIBRATORS if k != "identity")
REGIMES = {"over_confident": 3.0, "under_confident": 0.3}


@pytest.fixture(scope="module")
def regimes() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {name: miscalibrated(12000, k, bias=0.3, seed=1 + i) for i, (name, k) in enumerate(REGIMES.items())}


# --- every calibrator fixes mis-calibration on held-out data --------------------------------


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_calibrator_reduces_ece_and_nll_on_held_out_half(kind, regime, regimes):
    z, y = regimes[regime]
    half = len(y) // 2
    slices = np.where(np.arange(len(y)) % 3 == 0, "day", "night")
    cal = fit_any(CALIBRATORS[kind](), z[:half], y[:half], slices[:half])
    p = predict_any(cal, z[half:], slices[half:])
    p0 = softmax_np(z[half:])
    e0, e1, n0, n1 = ece(p0, y[half:]), ece(p, y[half:]), nll(p0, y[half:]), nll(p, y[half:])
    print(f"{kind:22s} {regime:16s} ECE {e0:.4f} -> {e1:.4f}   NLL {n0:.4f} -> {n1:.4f}")
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert e0 > 0.10, "the synthetic data should be badly calibrated before calibration"
    assert e1 < 0.2 * e0 and e1 < 0.02, f"{kind}/{regime}: ECE {e0:.4f} -> {e1:.4f}"
    assert n1 < n0 - 0.05, f"{kind}/{regime}: NLL {n0:.4f} -> {n1:.4f}"


def test_temperature_recovers_the_true_temperature():
    for k in (3.0, 0.3):
        z, y = miscalibrated(20000, k, bias=0.0, seed=7)
        t = TemperatureScaling().fit(z, y, split="val_calib").temperature_
        assert abs(t - k) <= 0.1 * k, f"fitted T={t:.4f}, true {k}"


def test_temperature_matches_an_independent_optimizer():
    z, y = miscalibrated(5000, 2.0, bias=0.5, seed=3)

    def objective(log_t: float) -> float:
        lz = z / math.exp(log_t)
        lse = np.log(np.exp(lz - lz.max(1, keepdims=True)).sum(1)) + lz.max(1)
        return float(np.mean(lse - lz[np.arange(len(y)), y]))

    ref = minimize_scalar(objective, bounds=(math.log(0.1), math.log(10.0)), method="bounded", options={"xatol": 1e-10})
    ts = TemperatureScaling().fit(z, y, split="val_calib")
    ours = objective(math.log(ts.temperature_))
    assert abs(ours - ref.fun) < 1e-4 and ours <= ref.fun + 1e-9, (ours, ref.fun)
    assert abs(ts.temperature_ - math.exp(ref.x)) < 1e-3 * math.exp(ref.x)
    assert abs(nll(ts.predict_proba(z), y) - ours) < 1e-9


def test_temperature_clamps_to_bounds():
    z, y = miscalibrated(2000, 50.0, bias=0.0, seed=4)  # true T = 50 > 10
    assert TemperatureScaling().fit(z, y, split="val_calib").temperature_ == 10.0
    assert TemperatureScaling(t_max=20.0).fit(z, y, split="val_calib").temperature_ == 20.0
    z, y = miscalibrated(2000, 0.02, bias=0.0, seed=4)  # true T = 0.02 < 0.1
    assert TemperatureScaling().fit(z, y, split="val_calib").temperature_ == pytest.approx(0.1)
    cw = cal_mod.ClasswiseTemperature().fit(np.stack([np.zeros(2000), z[:, 1] - z[:, 0]], 1), y, split="val_calib")
    assert np.all((cw.temperatures_ >= 0.1) & (cw.temperatures_ <= 10.0))


# --- serialization ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CALIBRATORS))
def test_to_dict_from_dict_round_trip_is_exact(kind, regimes):
    z, y = regimes["over_confident"]
    slices = np.arange(len(y)) % 4  # ints: stored and matched as strings
    cal = fit_any(CALIBRATORS[kind](), z[:3000], y[:3000], slices[:3000])
    d = cal.to_dict()
    assert d["kind"] == kind
    assert_pure_json(d)
    text = json.dumps(d)
    for rebuilt in (calibrator_from_dict(json.loads(text)), CALIBRATORS[kind].from_dict(json.loads(text))):
        assert type(rebuilt) is type(cal)
        assert np.max(np.abs(predict_any(rebuilt, z, slices) - predict_any(cal, z, slices))) == 0.0
        assert json.dumps(rebuilt.to_dict()) == text


def test_from_dict_rejects_wrong_or_unknown_kinds():
    d = TemperatureScaling().fit(*miscalibrated(500, 2.0, 0.0, seed=0), split="val_calib").to_dict()
    with pytest.raises(ContractError, match="expected a 'beta' estimator"):
        BetaCalibration.from_dict(d)
    with pytest.raises(ContractError, match="unknown calibrator kind"):
        calibrator_from_dict({**d, "kind": "pickle"})
    with pytest.raises(ContractError, match="'fitted' is empty"):
        calibrator_from_dict({**d, "fitted": {}})
    with pytest.raises(ContractError, match="unknown hyper-parameters"):
        calibrator_from_dict({**d, "params": {**d["params"], "pickle": 1}})


# --- beta: a, b >= 0 -----------------------------------------------------------------------


def _beta_data(a: float, b: float, c: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose labels follow sigmoid(a ln p − b ln(1−p) + c) for p = softmax class-1 prob."""
    rng = np.random.default_rng(seed)
    m = rng.normal(0.0, 2.5, n)
    p = 1.0 / (1.0 + np.exp(-m))
    score = a * np.log(p) - b * np.log1p(-p) + c
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-score))).astype(np.int64)
    return np.stack([np.zeros(n), m], axis=1), y


def _beta_objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float) -> float:
    s = X @ theta[:2] + theta[2]
    return float(np.mean(np.logaddexp(0.0, s) - y * s) + l2 * (theta[0] ** 2 + theta[1] ** 2))


@pytest.mark.parametrize("true_abc", [(-0.7, 1.5, 0.0), (1.2, -0.8, 0.3), (-1.0, -1.0, 0.0), (0.5, 2.0, -0.5)])
def test_beta_coefficients_are_nonnegative_and_optimal(true_abc):
    z, y = _beta_data(*true_abc, n=4000, seed=11)
    X = np.stack([np.log(softmax_np(z)[:, 1]), -np.log(softmax_np(z)[:, 0])], axis=1)
    unconstrained = LogisticRegression(C=1e8, max_iter=5000).fit(X, y).coef_[0]
    beta = BetaCalibration().fit(z, y, split="val_calib")
    assert beta.a_ >= 0.0 and beta.b_ >= 0.0, (beta.a_, beta.b_)
    if min(true_abc[:2]) < 0:
        assert unconstrained.min() < 0, "this case should push an unconstrained fit negative"
    # independent constrained solver on the same objective: L-BFGS-B with bounds
    ref = min(
        (
            minimize(
                _beta_objective,
                x0,
                args=(X, y, beta.l2),
                method="L-BFGS-B",
                bounds=[(0, None), (0, None), (None, None)],
                options={"ftol": 1e-14, "gtol": 1e-10},
            )
            for x0 in (np.array([1.0, 1.0, 0.0]), np.array([0.0, 0.0, 0.0]))
        ),
        key=lambda r: r.fun,
    )
    ours = _beta_objective(np.array([beta.a_, beta.b_, beta.c_]), X, y, beta.l2)
    assert ours <= ref.fun + 1e-7, (ours, ref.fun)


def test_beta_with_anti_informative_scores_falls_back_to_the_base_rate():
    z, y = miscalibrated(4000, 1.0, 0.0, seed=5)
    beta = BetaCalibration().fit(z, 1 - y, split="val_calib")  # flipped labels: both coefficients want to be negative
    assert beta.a_ == 0.0 and beta.b_ == 0.0
    p1 = beta.predict_proba(z)[:, 1]
    np.testing.assert_allclose(p1, np.mean(1 - y), atol=1e-6)


# --- isotonic --------------------------------------------------------------------------------


def test_isotonic_is_monotone_and_matches_sklearn(regimes):
    z, y = regimes["under_confident"]
    iso = IsotonicCalibration().fit(z, y, split="val_calib")
    grid = np.linspace(-20, 20, 4001)
    zg = np.stack([-grid / 2, grid / 2], axis=1)
    p1 = iso.predict_proba(zg)[:, 1]
    assert np.all(np.diff(p1) >= 0)
    assert p1.min() >= 1e-6 and p1.max() <= 1 - 1e-6
    exact = IsotonicCalibration(eps=0.0).fit(z, y, split="val_calib")
    ref = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(softmax_np(z)[:, 1], y)
    np.testing.assert_allclose(exact.predict_proba(zg)[:, 1], ref.predict(softmax_np(zg)[:, 1]), rtol=0, atol=1e-12)


# --- slice temperature ------------------------------------------------------------------------


def test_slice_temperature_falls_back_to_the_global_temperature():
    za, ya = miscalibrated(3000, 3.0, 0.0, seed=21)
    zb, yb = miscalibrated(3000, 0.5, 0.0, seed=22)
    zs, ys = miscalibrated(60, 0.2, 0.0, seed=23)  # a small slice: 60 < 100 rows
    z, y = np.concatenate([za, zb, zs]), np.concatenate([ya, yb, ys])
    s = np.array(["a"] * 3000 + ["b"] * 3000 + ["small"] * 60)
    cal = SliceTemperature(min_samples_per_slice=100).fit(z, y, slices=s, split="val_calib")
    assert set(cal.temperatures_) == {"a", "b"} and cal.slice_counts_["small"] == 60
    assert abs(cal.temperatures_["a"] - 3.0) < 0.3 and abs(cal.temperatures_["b"] - 0.5) < 0.05
    global_ts = TemperatureScaling().fit(z, y, split="val_calib")
    assert cal.global_temperature_ == global_ts.temperature_
    small = s == "small"
    p = cal.predict_proba(z, slices=s)
    assert np.max(np.abs(p[small] - global_ts.predict_proba(z[small]))) == 0.0
    assert np.max(np.abs(p[~small] - global_ts.predict_proba(z[~small]))) > 0.05
    unseen = cal.predict_proba(za[:10], slices=["never_seen"] * 10)
    assert np.max(np.abs(unseen - global_ts.predict_proba(za[:10]))) == 0.0
    assert np.max(np.abs(cal.predict_proba(za[:10]) - global_ts.predict_proba(za[:10]))) == 0.0  # slices=None
    with pytest.raises(ValueError, match="slices"):
        SliceTemperature().fit(z, y, split="val_calib")


# --- selection --------------------------------------------------------------------------------


def test_select_prefers_temperature_over_identity_and_refits_on_all_rows():
    z, y = miscalibrated(4000, 3.0, 0.0, seed=31)
    res = select_calibrator(z, y, ["identity", "temperature"], split=Split.VAL_CALIB)
    rows = {r["method"]: r for r in res.table}
    assert set(rows["temperature"]) == {"method", "oof_nll", "oof_ece", "oof_brier"}
    assert res.method == "temperature" and isinstance(res.calibrator, TemperatureScaling)
    assert rows["temperature"]["oof_nll"] < rows["identity"]["oof_nll"] - 0.1
    assert rows["temperature"]["oof_ece"] < 0.3 * rows["identity"]["oof_ece"]
    assert res.uncalibrated == rows["identity"]
    assert (
        res.calibrator.temperature_ == TemperatureScaling().fit(z, y, split="val_calib").temperature_
    )  # refit on everything
    json.dumps(res.to_dict())


def test_select_with_every_method_beats_identity_and_is_deterministic(regimes):
    z, y = regimes["over_confident"]
    z, y = z[:3000], y[:3000]
    s = np.where(np.arange(len(y)) % 2 == 0, "cam0", "cam1")
    methods = sorted(CALIBRATORS)
    res = select_calibrator(z, y, methods, n_folds=5, seed=0, slices=s, split="val_calib")
    again = select_calibrator(z, y, methods, n_folds=5, seed=0, slices=s, split="val_calib")
    assert res.table == again.table and res.method == again.method
    assert res.method != "identity"
    best = min(r["oof_nll"] for r in res.table)
    assert next(r for r in res.table if r["method"] == res.method)["oof_nll"] <= best * (1 + 1e-4)
    assert best < res.uncalibrated["oof_nll"] - 0.1
    for r in res.table:  # the module's metrics agree with the independent helpers here
        p = res.oof_proba[r["method"]]
        assert r["oof_nll"] == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-9)
        assert r["oof_ece"] == pytest.approx(ece(p, y), abs=1e-12)
        assert r["oof_brier"] == pytest.approx(np.mean((p[:, 1] - y) ** 2), abs=1e-12)


def test_winner_is_lowest_nll_with_ece_breaking_near_ties():
    row = lambda m, n, e: {"method": m, "oof_nll": n, "oof_ece": e, "oof_brier": 0.0}  # noqa: E731
    # b is within 1e-4 relative of the best NLL and has the lower ECE: it wins the tie
    assert cal_mod._pick_winner([row("a", 0.40000, 0.03), row("b", 0.40003, 0.01), row("c", 0.5, 0.0)]) == "b"
    # b is 2e-4 relative worse: no tie, the lowest NLL wins despite its ECE
    assert cal_mod._pick_winner([row("a", 0.40000, 0.03), row("b", 0.40008, 0.01)]) == "a"
    # exact ties in both: the first listed
    assert cal_mod._pick_winner([row("x", 0.3, 0.02), row("y", 0.3, 0.02)]) == "x"


@pytest.mark.parametrize("split", ["val_test", "train", "val_select", Split.VAL_TEST])
def test_select_refuses_any_split_but_val_calib(split):
    z, y = miscalibrated(500, 3.0, 0.0, seed=0)
    with pytest.raises(LeakageError):
        select_calibrator(z, y, ["temperature"], split=split)
    with pytest.raises(LeakageError):
        TemperatureScaling().fit(z, y, split=split)


def test_oof_probabilities_come_from_calibrators_that_never_saw_the_row():
    z, y = miscalibrated(1000, 3.0, 0.0, seed=41)
    res = select_calibrator(z, y, ["temperature"], n_folds=4, seed=9, split="val_calib")
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=9).split(z, y)
    for fit_idx, pred_idx in folds:
        p = TemperatureScaling().fit(z[fit_idx], y[fit_idx], split="val_calib").predict_proba(z[pred_idx])
        assert np.max(np.abs(res.oof_proba["temperature"][pred_idx] - p)) == 0.0


class _Memorizer(Calibrator, register=False):
    """Looks up each row's label if it saw that exact logit row; 0.5 otherwise. Perfect in-sample."""

    kind = "memorize"

    def _fit(self, z, y):
        self.table_ = {tuple(r): int(t) for r, t in zip(z, y, strict=False)}

    def _predict(self, z):
        p1 = np.array([{1: 1 - 1e-9, 0: 1e-9}.get(self.table_.get(tuple(r)), 0.5) for r in z])
        return np.stack([1 - p1, p1], axis=1)


def test_a_memorizing_calibrator_cannot_win(monkeypatch):
    monkeypatch.setitem(CALIBRATORS, "memorize", _Memorizer)
    z, y = miscalibrated(2000, 3.0, 0.0, seed=51)
    assert nll(_Memorizer().fit(z, y, split="val_calib").predict_proba(z), y) < 1e-8  # in-sample it looks perfect
    res = select_calibrator(z, y, ["memorize", "temperature"], split="val_calib")
    rows = {r["method"]: r for r in res.table}
    assert rows["memorize"]["oof_nll"] == pytest.approx(LN2, abs=1e-12)  # never saw any row it scored
    assert res.method == "temperature"


def test_isotonic_cannot_profit_from_fitting_pure_noise():
    rng = np.random.default_rng(61)
    m = rng.normal(0.0, 1.0, 500)
    z, y = np.stack([np.zeros_like(m), m], axis=1), rng.integers(0, 2, 500)  # labels independent of logits
    in_sample = nll(IsotonicCalibration().fit(z, y, split="val_calib").predict_proba(z), y)
    res = select_calibrator(z, y, ["isotonic", "temperature"], split="val_calib")
    rows = {r["method"]: r for r in res.table}
    assert in_sample < LN2 - 0.003, "isotonic should overfit noise in-sample (measured ln2 - 0.0059)"
    assert rows["isotonic"]["oof_nll"] >= LN2  # not better than knowing nothing (p = 0.5)
    assert rows["isotonic"]["oof_nll"] >= rows["temperature"]["oof_nll"]  # TS goes flat (T = 10): identity-like
    assert res.method == "temperature"


# --- multi-class, errors ----------------------------------------------------------------------


def test_multiclass_calibrators_and_binary_only_refusals():
    rng = np.random.default_rng(71)
    true = rng.normal(0, 2, (3000, 3))
    y = np.array([rng.choice(3, p=row) for row in softmax_np(true)])
    z = 2.5 * true
    for kind in ("temperature", "classwise_temperature", "dirichlet", "ensemble_temperature", "identity"):
        cal = CALIBRATORS[kind]().fit(z[:1500], y[:1500], split="val_calib")
        p = cal.predict_proba(z[1500:])
        assert p.shape == (1500, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
        if kind != "identity":
            assert nll(p, y[1500:]) < nll(softmax_np(z[1500:]), y[1500:]) - 0.05, kind
    for kind in ("platt", "beta", "isotonic"):
        with pytest.raises(ContractError, match="binary"):
            CALIBRATORS[kind]().fit(z, y, split="val_calib")


def test_errors_say_what_is_wrong():
    z, y = miscalibrated(300, 2.0, 0.0, seed=0)
    with pytest.raises(RuntimeError, match="not fitted"):
        TemperatureScaling().predict_proba(z)
    with pytest.raises(ValueError, match="only class"):
        TemperatureScaling().fit(z, np.zeros(300, dtype=int), split="val_calib")
    with pytest.raises(ContractError, match="fitted on 2 classes"):
        TemperatureScaling().fit(z, y, split="val_calib").predict_proba(np.zeros((3, 3)))
    with pytest.raises(ContractError, match="non-finite"):
        TemperatureScaling().fit(np.where(np.arange(600).reshape(300, 2) == 5, np.nan, z), y, split="val_calib")
    with pytest.raises(ValueError, match="unknown calibration method"):
        select_calibrator(z, y, ["temprature"], split="val_calib")
    with pytest.raises(ValueError, match="needs slices"):
        select_calibrator(z, y, ["slice_temperature"], split="val_calib")
    np.testing.assert_allclose(
        Identity().fit(z, None, split="val_calib").predict_proba(z), softmax_np(z), rtol=0, atol=1e-15
    )


# --- reliability diagram ---------------------------------------------------------------------


def test_reliability_diagram_writes_a_png_with_the_measured_numbers(tmp_path):
    z, y = miscalibrated(3000, 3.0, 0.3, seed=81)
    probs = softmax_np(z)
    out = reliability_diagram(probs, y, tmp_path / "plots" / "rel.png", n_bins=15, title="uncalibrated")
    data = (tmp_path / "plots" / "rel.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert out["ece"] == pytest.approx(ece(probs, y), abs=1e-12)
    assert sum(out["bin_count"]) == 3000 and len(out["bin_edges"]) == 16
    assert_pure_json(out)
    out1 = reliability_diagram(probs[:, 1], y, tmp_path / "rel1.png")  # [N] class-1 probabilities
    assert out1["ece"] == pytest.approx(out["ece"], abs=1e-12) and out1["bin_count"] == out["bin_count"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp files left behind


@pytest.mark.parametrize("seed", range(6))
def test_ece_guard_never_ships_a_calibrator_worse_than_none(seed):
    """On already calibrated logits a flexible calibrator can win on NLL yet raise ECE: the
    guard keeps only candidates whose out-of-fold ECE is not above the uncalibrated one."""
    from roadwork_ml.policy.calibration import select_calibrator

    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, 400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z))).astype(int)
    logits = np.c_[np.zeros_like(z), z]
    guarded = select_calibrator(logits, y, ["isotonic", "beta", "dirichlet"], seed=seed, split="val_calib")
    chosen = next((r for r in guarded.table if r["method"] == guarded.method), guarded.uncalibrated)
    assert chosen["oof_ece"] <= guarded.uncalibrated["oof_ece"]
    if guarded.method == "identity":
        assert np.allclose(guarded.calibrator.predict_proba(logits)[:, 1], 1 / (1 + np.exp(-z)))
    free = select_calibrator(
        logits, y, ["isotonic", "beta", "dirichlet"], seed=seed, split="val_calib", ece_guard=False
    )
    assert free.method in ("isotonic", "beta", "dirichlet")
