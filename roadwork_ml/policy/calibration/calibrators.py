"""The calibrators: one estimator class per method (see the table in :mod:`roadwork_ml.policy.calibration`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.policy.calibration._fitting import (
    _PROB_FLOOR,
    _as_labels,
    _as_logits,
    _as_slices,
    _binary_probs,
    _lbfgs,
    _t,
)
from roadwork_ml.policy.estimator import PolicyEstimator

# --- the base class -----------------------------------------------------------------------


class Calibrator(PolicyEstimator):
    """Base class: validates inputs, checks the split tag, delegates to ``_fit`` / ``_predict``.

    Fitted attributes: ``num_classes_`` plus each subclass's own (all ending in ``_``).
    """

    binary_only: ClassVar[bool] = False
    uses_slices: ClassVar[bool] = False

    # public API ------------------------------------------------------------------------
    def fit(self, logits: np.ndarray, labels: np.ndarray, *, split: Split | str, **kw: Any) -> Calibrator:
        """Fit on ``logits`` ``[N, C]`` and integer ``labels`` ``[N]``; returns ``self``.

        ``split``: the data's split tag; must be VAL_CALIB (raises :class:`LeakageError` otherwise).
        """
        self.check_split(split)
        where = f"{type(self).__name__}.fit"
        z = _as_logits(logits, where)
        if self.binary_only and z.shape[1] != 2:
            raise ContractError(
                f"{where}: {self.kind} calibrates binary classifiers only (C = 2), got C = {z.shape[1]}"
            )
        y = _as_labels(labels, z.shape[0], z.shape[1], where)
        if np.unique(y).size < 2:
            raise ValueError(
                f"{where}: the calibration set holds only class {np.unique(y).tolist()} ({y.size} rows); "
                "calibration needs samples of at least two classes"
            )
        self.num_classes_ = int(z.shape[1])
        self._fit(z, y, **kw)
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[N, C]`` (float64, rows sum to 1)."""
        self.check_fitted()
        z = _as_logits(logits, f"{type(self).__name__}.predict_proba", self.num_classes_)
        return self._predict(z)

    # subclass hooks --------------------------------------------------------------------
    def _fit(self, z: np.ndarray, y: np.ndarray, **kw: Any) -> None:
        raise NotImplementedError

    def _predict(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --- the calibrators ------------------------------------------------------------------------


class Identity(Calibrator):
    """``softmax(logits)``: the uncalibrated baseline. Fitting records C (and checks the split)."""

    kind = "identity"

    def fit(self, logits: np.ndarray, labels: np.ndarray, *, split: Split | str, **kw: Any) -> Identity:
        self.check_split(split)
        self.num_classes_ = int(_as_logits(logits, "Identity.fit").shape[1])
        return self

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z, axis=1)


def _fit_log_temperatures(
    z: np.ndarray, y: np.ndarray, n_temps: int, t_min: float, t_max: float, max_iter: int
) -> np.ndarray:
    """NLL-optimal temperatures for ``softmax(z / T)`` (``n_temps`` = 1 or C), each clamped to ``[t_min, t_max]``.

    Optimized over log T with LBFGS. The NLL is convex in 1/T, so for one temperature clamping
    the unconstrained optimum is the constrained optimum. For several, every temperature that
    hits a bound is fixed there and the others are refitted, until none moves past a bound.
    """
    zt, yt = _t(z), torch.as_tensor(y)
    lo, hi = math.log(t_min), math.log(t_max)
    log_t = np.zeros(n_temps)
    fixed = np.zeros(n_temps, dtype=bool)
    for _ in range(n_temps + 1):
        free = torch.zeros(int((~fixed).sum()), dtype=torch.float64, requires_grad=True)
        base = _t(log_t)
        free_idx = torch.as_tensor(np.flatnonzero(~fixed))

        def loss(
            base: torch.Tensor = base, free_idx: torch.Tensor = free_idx, free: torch.Tensor = free
        ) -> torch.Tensor:
            lt = base.index_put((free_idx,), free) if len(free_idx) else base
            return F.cross_entropy(zt * torch.exp(-lt), yt)

        if len(free_idx):
            _lbfgs([free], loss, max_iter)
            log_t[~fixed] = free.detach().numpy()
        out = (log_t < lo) | (log_t > hi)
        log_t = np.clip(log_t, lo, hi)
        if not (out & ~fixed).any():
            break
        fixed |= out
    temps = np.clip(np.exp(log_t), t_min, t_max)
    temps[log_t <= lo] = t_min  # exp(log(t)) need not round-trip: a clamped T is exactly the bound
    temps[log_t >= hi] = t_max
    return temps


class TemperatureScaling(Calibrator):
    """``softmax(logits / T)`` with one temperature, NLL-optimal over log T, clamped to ``[t_min, t_max]``."""

    kind = "temperature"

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.t_min, self.t_max = float(t_min), float(t_max)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        self.temperature_ = float(_fit_log_temperatures(z, y, 1, self.t_min, self.t_max, 200)[0])

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperature_, axis=1)


class ClasswiseTemperature(Calibrator):
    """``softmax(z_c / T_c)``: one temperature per class column, each clamped to ``[t_min, t_max]``."""

    kind = "classwise_temperature"

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.t_min, self.t_max = float(t_min), float(t_max)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        self.temperatures_ = _fit_log_temperatures(z, y, z.shape[1], self.t_min, self.t_max, 300)

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperatures_[None, :], axis=1)


def _fit_logistic(
    X: np.ndarray, y: np.ndarray, init: np.ndarray, l2: float, max_iter: int = 500
) -> tuple[np.ndarray, float, float]:
    """Binary logistic regression ``sigmoid(X w + c)`` by LBFGS on mean NLL + ``l2·‖w‖²`` (c unpenalized).

    ``X`` may have zero columns (intercept only). Returns (w, c, objective).
    """
    Xt, yt = _t(X), _t(y.astype(np.float64))
    w = _t(np.asarray(init, dtype=np.float64)).clone().requires_grad_(True)
    c = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def loss() -> torch.Tensor:
        s = Xt @ w + c if X.shape[1] else c.expand(len(yt))
        return F.binary_cross_entropy_with_logits(s, yt) + l2 * (w * w).sum()

    obj = _lbfgs([w, c], loss, max_iter)
    return w.detach().numpy().copy(), float(c.detach()[0]), obj


class PlattScaling(Calibrator):
    """Binary: ``p1 = sigmoid(a·m + b)`` on the logit margin ``m = z1 − z0`` (plain maximum likelihood).

    ``l2`` (default 1e-8, on the mean-NLL scale) only keeps ``a`` finite when the calibration
    set is separable; it is too small to move a fit on overlapping classes.
    """

    kind = "platt"
    binary_only = True

    def __init__(self, l2: float = 1e-8) -> None:
        self.l2 = float(l2)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        w, c, _ = _fit_logistic((z[:, 1] - z[:, 0])[:, None], y, np.array([1.0]), self.l2)
        self.a_, self.b_ = float(w[0]), c

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return _binary_probs(self.a_ * (z[:, 1] - z[:, 0]) + self.b_)


def _beta_features(z: np.ndarray) -> np.ndarray:
    """``[ln p1, −ln(1 − p1)]`` from binary logits, via log-softmax (exact even where p1 rounds to 0 or 1)."""
    lp = log_softmax(z, axis=1)
    return np.stack([lp[:, 1], -lp[:, 0]], axis=1)


class BetaCalibration(Calibrator):
    """Binary beta calibration (Kull, Silva Filho & Flach 2017), the 3-parameter "abm" family.

    ``p1' = sigmoid(a·ln p1 − b·ln(1 − p1) + c)`` with ``a, b ≥ 0`` (so the map is monotone).
    The constrained problem is solved exactly: the objective (logistic NLL + a tiny ``l2`` on
    a, b) is convex, so its constrained minimum is the best *feasible* one among the
    unconstrained minima with each subset of {a, b} pinned to 0 (an active-set enumeration;
    the paper's reference code does one step of this: refit without a feature whose
    coefficient came out negative). a = b = 1, c = 0 is the identity.
    """

    kind = "beta"
    binary_only = True

    def __init__(self, l2: float = 1e-8) -> None:
        self.l2 = float(l2)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        X = _beta_features(z)
        best: tuple[float, np.ndarray, float] | None = None
        for free in ([0, 1], [0], [1], []):
            w, c, obj = _fit_logistic(X[:, free], y, np.ones(len(free)), self.l2)
            if np.any(w < 0):
                continue  # infeasible: the constrained optimum pins this coefficient to 0 instead
            full = np.zeros(2)
            full[free] = w
            if best is None or obj < best[0]:
                best = (obj, full, c)
        assert best is not None  # the intercept-only model is always feasible
        self.a_, self.b_, self.c_ = float(best[1][0]), float(best[1][1]), float(best[2])

    def _predict(self, z: np.ndarray) -> np.ndarray:
        X = _beta_features(z)
        return _binary_probs(self.a_ * X[:, 0] + self.b_ * X[:, 1] + self.c_)


class IsotonicCalibration(Calibrator):
    """Binary isotonic regression of the label on ``p1`` (non-decreasing, clipped outside the fitted range).

    Stores sklearn's ``X_thresholds_`` / ``y_thresholds_`` and predicts with ``np.interp`` (the
    same piecewise-linear map sklearn uses). Outputs are clipped to ``[eps, 1 − eps]``
    (default 1e-6) so a step that reached exactly 0 or 1 cannot make the NLL infinite;
    ``eps = 0`` reproduces sklearn's ``predict`` exactly.
    """

    kind = "isotonic"
    binary_only = True

    def __init__(self, eps: float = 1e-6) -> None:
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"IsotonicCalibration: eps must be in [0, 0.5), got {eps}")
        self.eps = float(eps)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(softmax(z, axis=1)[:, 1], y.astype(np.float64))
        self.x_thresholds_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=np.float64)

    def _predict(self, z: np.ndarray) -> np.ndarray:
        p1 = np.interp(softmax(z, axis=1)[:, 1], self.x_thresholds_, self.y_thresholds_)
        p1 = np.clip(p1, self.eps, 1.0 - self.eps)
        return np.stack([1.0 - p1, p1], axis=1)


class DirichletCalibration(Calibrator):
    """Dirichlet calibration (Kull et al. 2019): ``softmax(W · ln p + b)``, ``W`` ``[C, C]``, ``b`` ``[C]``.

    Regularization is **ODIR** (off-diagonal and intercept regularization, the paper's choice
    for neural networks): mean NLL + ``reg_lambda / (C(C−1)) · Σ_{i≠j} W_ij²`` +
    ``reg_mu / C · Σ_j b_j²``. The diagonal is free, so pure temperature-like rescaling of the
    log-probabilities is not shrunk. Initialized at the identity (W = I, b = 0).
    """

    kind = "dirichlet"

    def __init__(self, reg_lambda: float = 1e-3, reg_mu: float = 1e-3) -> None:
        self.reg_lambda, self.reg_mu = float(reg_lambda), float(reg_mu)

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        C = z.shape[1]
        lp, yt = _t(log_softmax(z, axis=1)), torch.as_tensor(y)
        W = torch.eye(C, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(C, dtype=torch.float64, requires_grad=True)
        off = 1.0 - torch.eye(C, dtype=torch.float64)

        def loss() -> torch.Tensor:
            nll = F.cross_entropy(lp @ W.T + b, yt)
            return nll + self.reg_lambda / (C * (C - 1)) * ((W * off) ** 2).sum() + self.reg_mu / C * (b * b).sum()

        _lbfgs([W, b], loss, 500)
        self.weights_, self.bias_ = W.detach().numpy().copy(), b.detach().numpy().copy()

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(log_softmax(z, axis=1) @ self.weights_.T + self.bias_[None, :], axis=1)


class EnsembleTemperature(Calibrator):
    """Ensemble temperature scaling (Zhang, Kailkhura & Han 2020, "Mix-n-Match").

    ``p = w1·softmax(z / T) + w2·softmax(z) + w3 / C`` with ``w`` on the simplex. As in the
    paper, T is the temperature-scaling T; then ``w`` minimizes the NLL (convex in ``w``) by
    SLSQP under ``w ≥ 0, Σw = 1``.
    """

    kind = "ensemble_temperature"

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.t_min, self.t_max = float(t_min), float(t_max)

    def _components(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return softmax(z / self.temperature_, axis=1), softmax(z, axis=1), np.full(z.shape, 1.0 / z.shape[1])

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        self.temperature_ = float(_fit_log_temperatures(z, y, 1, self.t_min, self.t_max, 200)[0])
        rows = np.arange(len(y))
        P = np.stack([c[rows, y] for c in self._components(z)], axis=1)  # [N, 3] prob of the true class

        def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
            q = np.maximum(P @ w, _PROB_FLOOR)
            return float(-np.mean(np.log(q))), -(P / q[:, None]).mean(axis=0)

        res = minimize(
            nll,
            np.array([0.8, 0.1, 0.1]),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * 3,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(3)}],
            options={"ftol": 1e-12, "maxiter": 200},
        )
        w = np.clip(res.x, 0.0, None)
        self.weights_ = w / w.sum()

    def _predict(self, z: np.ndarray) -> np.ndarray:
        ts, raw, uni = self._components(z)
        p = self.weights_[0] * ts + self.weights_[1] * raw + self.weights_[2] * uni
        return p / p.sum(axis=1, keepdims=True)


class SliceTemperature(Calibrator):
    """One temperature per slice (e.g. camera, city, time of day), with a global fallback.

    ``fit(logits, labels, slices=s)`` fits a global temperature on all rows and one per slice
    with at least ``min_samples_per_slice`` rows. ``predict_proba(logits, slices=s)`` uses a
    slice's own temperature where it has one and the global temperature for small slices,
    slices never seen in fitting, and every row when ``slices`` is None. Slice labels are
    compared as strings (``str(value)``), which is also how they are stored in JSON.
    """

    kind = "slice_temperature"
    uses_slices = True

    def __init__(self, min_samples_per_slice: int = 100, t_min: float = 0.1, t_max: float = 10.0) -> None:
        if int(min_samples_per_slice) < 1:
            raise ValueError(f"SliceTemperature: min_samples_per_slice must be >= 1, got {min_samples_per_slice}")
        self.min_samples_per_slice = int(min_samples_per_slice)
        self.t_min, self.t_max = float(t_min), float(t_max)

    def _fit(self, z: np.ndarray, y: np.ndarray, slices: Any = None) -> None:
        s = _as_slices(slices, len(y), "SliceTemperature.fit")
        self.global_temperature_ = float(_fit_log_temperatures(z, y, 1, self.t_min, self.t_max, 200)[0])
        keys, counts = np.unique(s, return_counts=True)
        self.slice_counts_ = {str(k): int(n) for k, n in zip(keys, counts, strict=False)}
        self.temperatures_ = {}
        for k, n in zip(keys, counts, strict=False):
            m = s == k
            if n >= self.min_samples_per_slice and np.unique(y[m]).size >= 2:
                self.temperatures_[str(k)] = float(_fit_log_temperatures(z[m], y[m], 1, self.t_min, self.t_max, 200)[0])

    def temperatures_for(self, slices: Any, n: int) -> np.ndarray:
        """Per-row temperature ``[n]`` (global where the slice has none)."""
        self.check_fitted()
        if slices is None:
            return np.full(n, self.global_temperature_)
        s = _as_slices(slices, n, "SliceTemperature.predict_proba")
        return np.array([self.temperatures_.get(k, self.global_temperature_) for k in s], dtype=np.float64)

    def predict_proba(self, logits: np.ndarray, slices: Any = None) -> np.ndarray:
        self.check_fitted()
        z = _as_logits(logits, "SliceTemperature.predict_proba", self.num_classes_)
        return softmax(z / self.temperatures_for(slices, len(z))[:, None], axis=1)


CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.kind: cls
    for cls in (
        Identity,
        TemperatureScaling,
        ClasswiseTemperature,
        PlattScaling,
        BetaCalibration,
        IsotonicCalibration,
        DirichletCalibration,
        EnsembleTemperature,
        SliceTemperature,
    )
}


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild any calibrator from its :meth:`~Calibrator.to_dict` output (dispatch on ``d["kind"]``)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in CALIBRATORS:
        raise ContractError(f"unknown calibrator kind {kind!r}; known kinds: {sorted(CALIBRATORS)}")
    return CALIBRATORS[kind].from_dict(d)
