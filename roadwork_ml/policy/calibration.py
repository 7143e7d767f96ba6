"""Post-hoc calibrators for the classifier's logits, cross-fitted model selection, reliability plots.

Every calibrator has one scikit-learn-style API::

    cal = TemperatureScaling().fit(logits, labels)        # logits [N, C], labels [N] ints
    probs = cal.predict_proba(logits)                     # [N, C], rows sum to 1
    d = cal.to_dict()                                     # JSON-safe, carries "kind"
    cal2 = calibrator_from_dict(d)                        # same predictions, bit for bit

Serialization is plain JSON (floats, ints, strings, lists, dicts), never pickle. Predictions
are computed in float64 numpy from exactly the stored numbers, so a calibrator rebuilt with
``from_dict`` reproduces the original's predictions exactly. Fitting uses torch (LBFGS with a
strong-Wolfe line search, float64 on CPU) or scipy/scikit-learn; it is deterministic.

=====================  ========================================================  =========
kind                   model (z = logits, p = softmax(z), p1 = p[:, 1])          classes
=====================  ========================================================  =========
identity               softmax(z) (the uncalibrated baseline)                    any C
temperature            softmax(z / T), one T in [t_min, t_max] (Guo et al. 2017) any C
classwise_temperature  softmax(z_c / T_c), one T per class, each clamped         any C
platt                  p1 = sigmoid(a·(z1 − z0) + b) (Platt 1999)                C = 2
beta                   p1 = sigmoid(a·ln p1 − b·ln(1 − p1) + c), a, b ≥ 0        C = 2
                       (Kull et al. 2017)
isotonic               p1 = isotonic step-linear map of p1 (Zadrozny & Elkan)    C = 2
dirichlet              softmax(W · ln p + b), ODIR-regularized (Kull et al. 2019) any C
ensemble_temperature   w1·softmax(z/T) + w2·softmax(z) + w3/C, w on the simplex   any C
                       (Zhang et al. 2020, "Mix-n-Match", ensemble TS)
slice_temperature      softmax(z / T_s), one T per slice s, global T fallback    any C
=====================  ========================================================  =========

:func:`select_calibrator` compares methods by K-fold cross-fitting on VAL_CALIB (each
sample is scored by a calibrator that never saw it), picks the lowest out-of-fold NLL and
refits the winner on all the data. :func:`reliability_diagram` writes the PNG that the
``calibrator`` asset attaches as metadata.

The NLL / ECE / Brier helpers here are private on purpose (the calibration-selection
criterion must not change when the reporting metrics in :mod:`roadwork_ml.evaluation`
change); their definitions are written next to them.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, softmax

from roadwork_ml.contracts import ContractError, Purpose, Split, require_split, validate_logits, validate_policy_json

__all__ = [
    "Calibrator",
    "Identity",
    "TemperatureScaling",
    "ClasswiseTemperature",
    "PlattScaling",
    "BetaCalibration",
    "IsotonicCalibration",
    "DirichletCalibration",
    "EnsembleTemperature",
    "SliceTemperature",
    "CALIBRATORS",
    "calibrator_from_dict",
    "SelectionResult",
    "select_calibrator",
    "reliability_diagram",
]

_PROB_FLOOR = 1e-15  # NLL of a probability 0 is capped at -ln(1e-15) ≈ 34.5 nats per sample


# --- input checks ------------------------------------------------------------------------

def _as_logits(logits: Any, where: str, num_classes: int | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ContractError(f"{where}: logits must be [N, C] with C >= 2, got shape {list(z.shape)}")
    if num_classes is not None and z.shape[1] != num_classes:
        raise ContractError(f"{where}: this calibrator was fitted on {num_classes} classes, got logits with {z.shape[1]}")
    validate_logits(z, num_classes=z.shape[1])
    return z


def _as_labels(labels: Any, n: int, num_classes: int, where: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ContractError(f"{where}: labels must be [{n}] to match the logits, got shape {list(y.shape)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ContractError(f"{where}: labels must be integer class ids, got dtype {y.dtype} with non-integer values")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ContractError(f"{where}: labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
    return y


def _as_slices(slices: Any, n: int, where: str) -> np.ndarray:
    if slices is None:
        raise ValueError(f"{where}: pass slices=<array of N slice labels> (one per logits row)")
    s = np.asarray([str(v) for v in np.asarray(slices, dtype=object).ravel()], dtype=object)
    if s.shape != (n,):
        raise ContractError(f"{where}: slices must be [{n}] to match the logits, got {np.asarray(slices).shape}")
    return s


# --- torch optimization helper -------------------------------------------------------------

def _lbfgs(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int = 500) -> float:
    """Minimize ``loss_fn`` over ``params`` in place with LBFGS + strong Wolfe; returns the final loss.

    The best finite point seen (including line-search trial points) is kept, so a run that
    wanders off to a non-finite loss (e.g. a degenerate calibration set) still ends finite.
    """
    with _one_torch_thread():
        return _lbfgs_run(params, loss_fn, max_iter)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch ops single-threaded, then restore the caller's setting.

    Calibration problems are tiny ([N, C] with a handful of parameters); intra-op threads only
    add synchronization, which costs 10-40x on a loaded machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lbfgs_run(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], max_iter: int) -> float:
    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, max_eval=max_iter * 2, tolerance_grad=1e-10,
        tolerance_change=1e-13, history_size=20, line_search_fn="strong_wolfe",
    )
    best = {"loss": math.inf, "params": [p.detach().clone() for p in params]}

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        value = float(loss.detach())
        if math.isfinite(value) and value < best["loss"]:
            best["loss"] = value
            best["params"] = [p.detach().clone() for p in params]
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(loss_fn())
        if not math.isfinite(final) or final > best["loss"]:
            for p, b in zip(params, best["params"]):
                p.copy_(b)
            final = best["loss"]
    return final


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)


# --- the base class -----------------------------------------------------------------------

class Calibrator:
    """Base class: validates inputs, checks an optional split tag, delegates to ``_fit`` / ``_predict``."""

    kind: ClassVar[str] = ""
    binary_only: ClassVar[bool] = False
    uses_slices: ClassVar[bool] = False
    _param_keys: ClassVar[tuple[str, ...]] = ()  # fitted parameters (absent before fit)
    _hyper_keys: ClassVar[tuple[str, ...]] = ()  # constructor arguments

    num_classes: int | None = None

    # public API ------------------------------------------------------------------------
    def fit(self, logits: np.ndarray, labels: np.ndarray, *, split: Split | str | None = None, **kw: Any) -> "Calibrator":
        """Fit on ``logits`` ``[N, C]`` and integer ``labels`` ``[N]``; returns ``self``.

        ``split``: when given, must be VAL_CALIB (raises :class:`LeakageError` otherwise).
        """
        where = f"{type(self).__name__}.fit"
        if split is not None:
            require_split(Purpose.FIT_POLICY, split)
        z = _as_logits(logits, where)
        if self.binary_only and z.shape[1] != 2:
            raise ContractError(f"{where}: {self.kind} calibrates binary classifiers only (C = 2), got C = {z.shape[1]}")
        y = _as_labels(labels, z.shape[0], z.shape[1], where)
        if np.unique(y).size < 2:
            raise ValueError(f"{where}: the calibration set holds only class {np.unique(y).tolist()} ({y.size} rows); "
                             "calibration needs samples of at least two classes")
        self.num_classes = int(z.shape[1])
        self._fit(z, y, **kw)
        return self

    def predict_proba(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities ``[N, C]`` (float64, rows sum to 1)."""
        self._check_fitted()
        z = _as_logits(logits, f"{type(self).__name__}.predict_proba", self.num_classes)
        return self._predict(z)

    def to_dict(self) -> dict:
        self._check_fitted()
        d: dict[str, Any] = {"kind": self.kind, "num_classes": self.num_classes}
        d.update({k: _jsonable(getattr(self, k)) for k in self._hyper_keys})
        d.update({k: _jsonable(getattr(self, k)) for k in self._param_keys})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        validate_policy_json(d, cls.kind, ("num_classes", *cls._hyper_keys, *cls._param_keys))
        obj = cls(**{k: d[k] for k in cls._hyper_keys})
        obj.num_classes = None if d["num_classes"] is None else int(d["num_classes"])
        for k in cls._param_keys:
            setattr(obj, k, _from_json(d[k]))
        return obj

    @property
    def is_fitted(self) -> bool:
        return self.num_classes is not None

    # subclass hooks --------------------------------------------------------------------
    def _fit(self, z: np.ndarray, y: np.ndarray, **kw: Any) -> None:
        raise NotImplementedError

    def _predict(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call .fit(logits, labels) or build it with from_dict()")

    def __repr__(self) -> str:
        if not self.is_fitted:
            return f"{type(self).__name__}(unfitted)"
        shown = {k: getattr(self, k) for k in self._param_keys}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    return v


def _from_json(v: Any) -> Any:
    if isinstance(v, list):
        return np.asarray(v, dtype=np.float64)
    return v


def _binary_probs(score: np.ndarray) -> np.ndarray:
    """``[N]`` class-1 log-odds → ``[N, 2]`` probabilities, each computed directly (no 1 − p cancellation)."""
    return np.stack([expit(-score), expit(score)], axis=1)


# --- the calibrators ------------------------------------------------------------------------

class Identity(Calibrator):
    """``softmax(logits)``: the uncalibrated baseline. Fitting only records C."""

    kind = "identity"

    @property
    def is_fitted(self) -> bool:  # nothing to fit: usable (and serializable) as constructed
        return True

    def fit(self, logits: np.ndarray, labels: np.ndarray, *, split: Split | str | None = None, **kw: Any) -> "Identity":
        if split is not None:
            require_split(Purpose.FIT_POLICY, split)
        self.num_classes = int(_as_logits(logits, "Identity.fit").shape[1])
        return self

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z, axis=1)


def _fit_log_temperatures(z: np.ndarray, y: np.ndarray, n_temps: int, t_min: float, t_max: float, max_iter: int) -> np.ndarray:
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

        def loss() -> torch.Tensor:
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
    _hyper_keys = ("t_min", "t_max")
    _param_keys = ("temperature",)

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.temperature: float | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        self.temperature = float(_fit_log_temperatures(z, y, 1, self.t_min, self.t_max, 200)[0])

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperature, axis=1)


class ClasswiseTemperature(Calibrator):
    """``softmax(z_c / T_c)``: one temperature per class column, each clamped to ``[t_min, t_max]``."""

    kind = "classwise_temperature"
    _hyper_keys = ("t_min", "t_max")
    _param_keys = ("temperatures",)

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.temperatures: np.ndarray | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        self.temperatures = _fit_log_temperatures(z, y, z.shape[1], self.t_min, self.t_max, 300)

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(z / self.temperatures[None, :], axis=1)


def _fit_logistic(X: np.ndarray, y: np.ndarray, init: np.ndarray, l2: float, max_iter: int = 500) -> tuple[np.ndarray, float, float]:
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
    _hyper_keys = ("l2",)
    _param_keys = ("a", "b")

    def __init__(self, l2: float = 1e-8) -> None:
        self.l2 = float(l2)
        self.a: float | None = None
        self.b: float | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        w, c, _ = _fit_logistic((z[:, 1] - z[:, 0])[:, None], y, np.array([1.0]), self.l2)
        self.a, self.b = float(w[0]), c

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return _binary_probs(self.a * (z[:, 1] - z[:, 0]) + self.b)


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
    _hyper_keys = ("l2",)
    _param_keys = ("a", "b", "c")

    def __init__(self, l2: float = 1e-8) -> None:
        self.l2 = float(l2)
        self.a: float | None = None
        self.b: float | None = None
        self.c: float | None = None

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
        self.a, self.b, self.c = float(best[1][0]), float(best[1][1]), float(best[2])

    def _predict(self, z: np.ndarray) -> np.ndarray:
        X = _beta_features(z)
        return _binary_probs(self.a * X[:, 0] + self.b * X[:, 1] + self.c)


class IsotonicCalibration(Calibrator):
    """Binary isotonic regression of the label on ``p1`` (non-decreasing, clipped outside the fitted range).

    Stores sklearn's ``X_thresholds_`` / ``y_thresholds_`` and predicts with ``np.interp`` (the
    same piecewise-linear map sklearn uses). Outputs are clipped to ``[eps, 1 − eps]``
    (default 1e-6) so a step that reached exactly 0 or 1 cannot make the NLL infinite;
    ``eps = 0`` reproduces sklearn's ``predict`` exactly.
    """

    kind = "isotonic"
    binary_only = True
    _hyper_keys = ("eps",)
    _param_keys = ("x_thresholds", "y_thresholds")

    def __init__(self, eps: float = 1e-6) -> None:
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"IsotonicCalibration: eps must be in [0, 0.5), got {eps}")
        self.eps = float(eps)
        self.x_thresholds: np.ndarray | None = None
        self.y_thresholds: np.ndarray | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(softmax(z, axis=1)[:, 1], y.astype(np.float64))
        self.x_thresholds = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_thresholds = np.asarray(iso.y_thresholds_, dtype=np.float64)

    def _predict(self, z: np.ndarray) -> np.ndarray:
        p1 = np.interp(softmax(z, axis=1)[:, 1], self.x_thresholds, self.y_thresholds)
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
    _hyper_keys = ("reg_lambda", "reg_mu")
    _param_keys = ("weights", "bias")

    def __init__(self, reg_lambda: float = 1e-3, reg_mu: float = 1e-3) -> None:
        self.reg_lambda, self.reg_mu = float(reg_lambda), float(reg_mu)
        self.weights: np.ndarray | None = None
        self.bias: np.ndarray | None = None

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
        self.weights, self.bias = W.detach().numpy().copy(), b.detach().numpy().copy()

    def _predict(self, z: np.ndarray) -> np.ndarray:
        return softmax(log_softmax(z, axis=1) @ self.weights.T + self.bias[None, :], axis=1)


class EnsembleTemperature(Calibrator):
    """Ensemble temperature scaling (Zhang, Kailkhura & Han 2020, "Mix-n-Match").

    ``p = w1·softmax(z / T) + w2·softmax(z) + w3 / C`` with ``w`` on the simplex. As in the
    paper, T is the temperature-scaling T; then ``w`` minimizes the NLL (convex in ``w``) by
    SLSQP under ``w ≥ 0, Σw = 1``.
    """

    kind = "ensemble_temperature"
    _hyper_keys = ("t_min", "t_max")
    _param_keys = ("temperature", "weights")

    def __init__(self, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.temperature: float | None = None
        self.weights: np.ndarray | None = None

    def _components(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return softmax(z / self.temperature, axis=1), softmax(z, axis=1), np.full(z.shape, 1.0 / z.shape[1])

    def _fit(self, z: np.ndarray, y: np.ndarray) -> None:
        self.temperature = float(_fit_log_temperatures(z, y, 1, self.t_min, self.t_max, 200)[0])
        rows = np.arange(len(y))
        P = np.stack([c[rows, y] for c in self._components(z)], axis=1)  # [N, 3] prob of the true class

        def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
            q = np.maximum(P @ w, _PROB_FLOOR)
            return float(-np.mean(np.log(q))), -(P / q[:, None]).mean(axis=0)

        res = minimize(nll, np.array([0.8, 0.1, 0.1]), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * 3,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(3)}],
                       options={"ftol": 1e-12, "maxiter": 200})
        w = np.clip(res.x, 0.0, None)
        self.weights = w / w.sum()

    def _predict(self, z: np.ndarray) -> np.ndarray:
        ts, raw, uni = self._components(z)
        p = self.weights[0] * ts + self.weights[1] * raw + self.weights[2] * uni
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
    _hyper_keys = ("min_samples_per_slice", "t_min", "t_max")
    _param_keys = ("global_temperature", "temperatures", "slice_counts")

    def __init__(self, min_samples_per_slice: int = 100, t_min: float = 0.1, t_max: float = 10.0) -> None:
        if int(min_samples_per_slice) < 1:
            raise ValueError(f"SliceTemperature: min_samples_per_slice must be >= 1, got {min_samples_per_slice}")
        self.min_samples_per_slice = int(min_samples_per_slice)
        self.t_min, self.t_max = float(t_min), float(t_max)
        self.global_temperature: float | None = None
        self.temperatures: dict[str, float] | None = None
        self.slice_counts: dict[str, int] | None = None

    def _fit(self, z: np.ndarray, y: np.ndarray, slices: Any = None) -> None:
        s = _as_slices(slices, len(y), "SliceTemperature.fit")
        self.global_temperature = float(_fit_log_temperatures(z, y, 1, self.t_min, self.t_max, 200)[0])
        keys, counts = np.unique(s, return_counts=True)
        self.slice_counts = {str(k): int(n) for k, n in zip(keys, counts)}
        self.temperatures = {}
        for k, n in zip(keys, counts):
            m = s == k
            if n >= self.min_samples_per_slice and np.unique(y[m]).size >= 2:
                self.temperatures[str(k)] = float(_fit_log_temperatures(z[m], y[m], 1, self.t_min, self.t_max, 200)[0])

    def temperatures_for(self, slices: Any, n: int) -> np.ndarray:
        """Per-row temperature ``[n]`` (global where the slice has none)."""
        self._check_fitted()
        if slices is None:
            return np.full(n, self.global_temperature)
        s = _as_slices(slices, n, "SliceTemperature.predict_proba")
        return np.array([self.temperatures.get(k, self.global_temperature) for k in s], dtype=np.float64)

    def predict_proba(self, logits: np.ndarray, slices: Any = None) -> np.ndarray:
        self._check_fitted()
        z = _as_logits(logits, "SliceTemperature.predict_proba", self.num_classes)
        return softmax(z / self.temperatures_for(slices, len(z))[:, None], axis=1)

    @classmethod
    def from_dict(cls, d: dict) -> "SliceTemperature":
        obj = super().from_dict(d)
        obj.temperatures = {str(k): float(v) for k, v in d["temperatures"].items()}
        obj.slice_counts = {str(k): int(v) for k, v in d["slice_counts"].items()}
        return obj


CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.kind: cls
    for cls in (Identity, TemperatureScaling, ClasswiseTemperature, PlattScaling, BetaCalibration,
                IsotonicCalibration, DirichletCalibration, EnsembleTemperature, SliceTemperature)
}


def calibrator_from_dict(d: dict) -> Calibrator:
    """Rebuild any calibrator from its :meth:`~Calibrator.to_dict` output (dispatch on ``d["kind"]``)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in CALIBRATORS:
        raise ContractError(f"unknown calibrator kind {kind!r}; known kinds: {sorted(CALIBRATORS)}")
    return CALIBRATORS[kind].from_dict(d)


# --- metrics used for selection -----------------------------------------------------------

def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of the true class; probabilities floored at 1e-15."""
    p = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p, _PROB_FLOOR, 1.0))))


def _ece_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label confidence binned into ``n_bins`` equal-width bins ``(k/n, (k+1)/n]`` (0 goes to bin 0).

    Returns per-bin count, mean confidence and accuracy (NaN where a bin is empty).
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return count, mean_conf, acc


def _ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error: Σ_bins (n_b / N) · |accuracy_b − confidence_b|."""
    count, conf, acc = _ece_bins(probs, labels, n_bins)
    nonempty = count > 0
    return float(np.sum(count[nonempty] / count.sum() * np.abs(acc[nonempty] - conf[nonempty])))


def _brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier score. C = 2: mean (p1 − y)² (sklearn's ``brier_score_loss``); C > 2: mean Σ_c (p_c − 1[y=c])²."""
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - labels) ** 2))
    onehot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def _scores(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, float]:
    return {"oof_nll": _nll(probs, labels), "oof_ece": _ece(probs, labels, n_bins), "oof_brier": _brier(probs, labels)}


# --- cross-fitted selection -------------------------------------------------------------

@dataclass
class SelectionResult:
    """What :func:`select_calibrator` found.

    ``calibrator``: the winner refitted on all rows. ``table``: one row per method (in the
    order asked) with ``method, oof_nll, oof_ece, oof_brier``. ``uncalibrated``: the same row
    for the identity. ``oof_proba``: out-of-fold probabilities ``[N, C]`` per method (and
    ``"identity"``), e.g. for a reliability diagram of the winner that it did not fit.
    """

    method: str
    calibrator: Calibrator
    table: list[dict]
    uncalibrated: dict
    n_folds: int
    seed: int
    n: int
    oof_proba: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        """JSON-safe summary (no arrays): the winner, its parameters, the comparison table."""
        return {
            "kind": "calibrator_selection",
            "method": self.method,
            "calibrator": self.calibrator.to_dict(),
            "table": _jsonable(self.table),
            "uncalibrated": _jsonable(self.uncalibrated),
            "n_folds": int(self.n_folds),
            "seed": int(self.seed),
            "n": int(self.n),
        }


def _make(method: str, min_samples_per_slice: int) -> Calibrator:
    if method not in CALIBRATORS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {sorted(CALIBRATORS)}")
    cls = CALIBRATORS[method]
    return cls(min_samples_per_slice=min_samples_per_slice) if cls is SliceTemperature else cls()


def _fit_predict(cal: Calibrator, z_fit: np.ndarray, y_fit: np.ndarray, z_pred: np.ndarray,
                 s_fit: np.ndarray | None, s_pred: np.ndarray | None) -> np.ndarray:
    if cal.uses_slices:
        cal.fit(z_fit, y_fit, slices=s_fit)
        return cal.predict_proba(z_pred, slices=s_pred)
    cal.fit(z_fit, y_fit)
    return cal.predict_proba(z_pred)


def _pick_winner(table: list[dict], rel_tol: float = 1e-4) -> str:
    """Lowest ``oof_nll``; rows within ``rel_tol`` (relative) of it tie and the lowest ``oof_ece`` wins, then the first."""
    best_nll = min(r["oof_nll"] for r in table)
    tied = [r for r in table if r["oof_nll"] <= best_nll + rel_tol * abs(best_nll)]
    return min(tied, key=lambda r: r["oof_ece"])["method"]  # min() keeps the first among equal ECEs


def select_calibrator(
    logits: np.ndarray,
    labels: np.ndarray,
    methods: Iterable[str],
    n_folds: int = 5,
    seed: int = 0,
    slices: Any = None,
    min_samples_per_slice: int = 100,
    *,
    split: Split | str,
    n_bins: int = 15,
    ece_guard: bool = True,
) -> SelectionResult:
    """Pick a calibrator by K-fold cross-fitting on VAL_CALIB and refit it on all rows.

    For each method the rows are split by a seeded :class:`~sklearn.model_selection.StratifiedKFold`
    (stratified on the label, shuffled with ``seed``, the same folds for every method); each
    fold is predicted by a calibrator fitted on the other folds only. On those out-of-fold
    probabilities we compute NLL, top-label ECE (``n_bins`` equal-width bins) and Brier. The
    winner has the lowest OOF NLL; methods within 1e-4 (relative) of it are tied and the lowest
    OOF ECE among them wins (then the earlier one in ``methods``). With ``ece_guard`` only
    methods whose OOF ECE is not above the uncalibrated one compete, and the identity wins when
    none qualifies. ``split`` is the split tag of the data and must be VAL_CALIB
    (:class:`LeakageError` otherwise).
    """
    require_split(Purpose.FIT_POLICY, split)
    from sklearn.model_selection import StratifiedKFold

    methods = list(methods)
    if not methods:
        raise ValueError("select_calibrator: methods is empty; pass e.g. ['temperature', 'beta', 'isotonic']")
    for m in methods:
        _make(m, min_samples_per_slice)  # fail on an unknown name before any fitting
    if len(set(methods)) != len(methods):
        raise ValueError(f"select_calibrator: methods has duplicates: {methods}")
    z = _as_logits(logits, "select_calibrator")
    y = _as_labels(labels, len(z), z.shape[1], "select_calibrator")
    s = None if slices is None else _as_slices(slices, len(y), "select_calibrator")
    if s is None and any(CALIBRATORS[m].uses_slices for m in methods):
        raise ValueError("select_calibrator: 'slice_temperature' needs slices=<array of N slice labels>")
    n_folds = int(n_folds)
    classes, class_counts = np.unique(y, return_counts=True)
    if n_folds < 2:
        raise ValueError(f"select_calibrator: n_folds must be >= 2, got {n_folds}")
    if class_counts.min() < n_folds:
        raise ValueError(f"select_calibrator: class {classes[class_counts.argmin()]} has {class_counts.min()} rows, "
                         f"fewer than n_folds={n_folds}; lower n_folds or collect more VAL_CALIB data")
    folds = list(StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(seed)).split(np.zeros(len(y)), y))

    oof: dict[str, np.ndarray] = {}
    for m in ["identity", *[m for m in methods if m != "identity"]]:
        probs = np.full(z.shape, np.nan)
        for fit_idx, pred_idx in folds:
            cal = _make(m, min_samples_per_slice)
            probs[pred_idx] = _fit_predict(cal, z[fit_idx], y[fit_idx], z[pred_idx],
                                           None if s is None else s[fit_idx], None if s is None else s[pred_idx])
        assert np.isfinite(probs).all(), f"{m}: some rows got no out-of-fold prediction"
        oof[m] = probs

    table = [{"method": m, **_scores(oof[m], y, n_bins)} for m in methods]
    uncalibrated = {"method": "identity", **_scores(oof["identity"], y, n_bins)}
    # Never ship a calibrator that makes out-of-fold ECE worse: candidates must keep ECE at or
    # below the uncalibrated model's; the identity always qualifies (an already calibrated model).
    eligible = [r for r in table if r["oof_ece"] <= uncalibrated["oof_ece"]] if ece_guard else table
    winner = _pick_winner(eligible or [uncalibrated])

    final = _make(winner, min_samples_per_slice)
    if final.uses_slices:
        final.fit(z, y, slices=s)
    else:
        final.fit(z, y)
    return SelectionResult(method=winner, calibrator=final, table=table, uncalibrated=uncalibrated,
                           n_folds=n_folds, seed=int(seed), n=len(y), oof_proba=oof)


# --- reliability diagram ------------------------------------------------------------------

def reliability_diagram(probs: np.ndarray, labels: np.ndarray, path: str | os.PathLike, n_bins: int = 15,
                        title: str = "Reliability diagram") -> dict:
    """Write a top-label reliability diagram PNG to ``path`` (atomically) and return its numbers.

    ``probs`` is ``[N, C]`` probabilities or ``[N]`` class-1 probabilities of a binary model.
    Top panel: accuracy per confidence bin (bars, the same ``n_bins`` equal-width bins as the
    ECE), the gap to the mean confidence of each bin, and the diagonal. Bottom panel: rows per
    bin. Returns a JSON-safe dict: path, n, ece and per-bin edges / count / confidence / accuracy.
    """
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or not np.isfinite(p).all():
        raise ContractError(f"reliability_diagram: probs must be finite [N] or [N, C], got shape {list(np.shape(probs))}")
    y = _as_labels(labels, len(p), p.shape[1], "reliability_diagram")
    count, conf, acc = _ece_bins(p, y, n_bins)
    ece = _ece(p, y, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n_bins
    nonempty = count > 0

    fig = Figure(figsize=(5.0, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax, axc = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centers[nonempty], acc[nonempty], width=width, edgecolor="black", color="#4c72b0", label="accuracy")
    ax.bar(centers[nonempty], conf[nonempty] - acc[nonempty], bottom=acc[nonempty], width=width, color="#dd8452",
           alpha=0.5, edgecolor="#dd8452", hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nN={len(y)}, ECE={ece:.4f} ({n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    axc.bar(centers, count, width=width, edgecolor="black", color="#8c8c8c")
    for x, c in zip(centers[nonempty], count[nonempty]):
        axc.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=6, rotation=90)
    axc.set_xlabel("confidence (top-label probability)")
    axc.set_ylabel("count")
    axc.set_ylim(0, max(1.0, count.max()) * 1.35)
    fig.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    nan_to_none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731
    return {
        "path": str(path),
        "n": int(len(y)),
        "n_bins": int(n_bins),
        "ece": ece,
        "bin_edges": edges.tolist(),
        "bin_count": [int(c) for c in count],
        "bin_confidence": nan_to_none(conf),
        "bin_accuracy": nan_to_none(acc),
    }
