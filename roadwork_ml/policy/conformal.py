"""Conformal prediction sets and conformal risk control for the roadwork classifier.

Every estimator here is fitted on ``VAL_CALIB`` only: ``fit(..., split=...)`` calls
:func:`roadwork_ml.contracts.require_split` with :attr:`Purpose.FIT_POLICY` and raises
:class:`~roadwork_ml.contracts.LeakageError` on any other split. The probabilities (and
gate scores) passed to ``fit`` must come from a model, calibrator and gate that were
*not* fitted on the same rows; otherwise the calibration scores are not exchangeable
with test scores and none of the guarantees below hold.

Estimators (``probs`` is ``[N, C]`` class probabilities, rows summing to 1):

* :class:`SplitConformalLAC` -- score ``1 - p_y`` (Sadinle, Lei & Wasserman 2019, "LAC");
* :class:`APS` -- adaptive prediction sets (Romano, Sesia & Candes 2020);
* :class:`RAPS` -- regularized APS (Angelopoulos, Bates, Malik & Jordan 2021);
* :class:`ConformalRiskControl` -- false-negative control (Angelopoulos et al. 2022, CRC);
* :class:`SCRC` -- selective risk control with two thresholds (Learn-Then-Test).

All have ``fit``, ``predict_sets`` (boolean ``[N, C]``) and JSON-safe ``to_dict`` /
``from_dict`` with a ``"kind"`` key; :func:`conformal_from_dict` rebuilds any of them
through :data:`CONFORMAL_REGISTRY`.

Finite-sample quantile
----------------------
Split conformal uses the ``k``-th smallest of the ``n`` calibration scores with
``k = ceil((n + 1)(1 - alpha))``, i.e. the empirical quantile at level ``k / n`` taken as
an order statistic (``numpy.quantile(..., method="inverted_cdf")`` / ``"lower"``).
Note: the often-copied ``np.quantile(s, k / n, method="higher")`` returns the
``(k + 1)``-th smallest score for ``k < n`` (its virtual index is ``k - k/n``, which it
rounds *up*), which over-covers by ``1/(n + 1)`` and breaks the upper bound below;
:func:`conformal_quantile` returns the ``k``-th order statistic exactly.
If ``k > n`` (too few calibration points for the level: ``n < 1/alpha - 1``) the
threshold is ``+inf`` and every prediction set is the full label set.

For continuous (tie-free) scores and exchangeable data the marginal coverage then
satisfies ``1 - alpha <= P(Y in C(X)) <= 1 - alpha + 1/(n + 1)``; with ties (the
non-randomized APS/RAPS scores have an atom at the largest cumulative mass) only the
lower bound holds.

Randomization
-------------
Randomized APS/RAPS draw one ``U ~ Uniform(0, 1)`` per row, at fit *and* at predict
time. Fit draws come from ``seed`` (stored in ``to_dict``). ``predict_sets(probs,
seed=...)`` takes its own seed: the same seed gives the same sets; ``seed=None`` draws
fresh OS entropy (valid, not reproducible). Never reuse one fixed ``U`` for every test
row (for example by predicting row by row with a constant seed): validity needs a fresh
``U`` per test row. Seed per batch, or derive a seed from a stable request id.

Contamination (label noise in the calibration set)
--------------------------------------------------
``contamination_eps = eps`` assumes Huber contamination of the calibration data: each
calibration row is, independently with probability ``eps``, drawn from an arbitrary
contaminating law ``Q`` (for label noise: the image is clean, its label is replaced by
an arbitrary, possibly adversarial, label), while test data are clean (law ``P``).

Reference: J. Clarkson, W. Xu, M. Cucuringu, G. Reinert, "Split Conformal Prediction
under Data Contamination", COPA 2024, PMLR 230:5-27 (arXiv:2407.07700). They bound the
clean-test coverage of standard split conformal in terms of ``eps`` and a distance
between the clean and contaminating score laws, and propose "Contamination Robust
Conformal Prediction" (CRCP) for classification under label noise. Only the abstract of
the paper was available while writing this module, so the two adjustments below are
derived here, not transcribed from the paper:

``contamination_model="huber"`` (default; worst case, finite-sample valid).
    Write ``F_mix = (1 - eps) F_P + eps F_Q`` for the calibration score CDF. Split
    conformal at level ``alpha'`` guarantees ``E[1 - F_mix(q)] <= alpha'``, and
    ``1 - F_mix(q) >= (1 - eps)(1 - F_P(q))`` for *every* ``Q``, so the clean
    miscoverage is at most ``alpha' / (1 - eps)``. We therefore calibrate at
    ``alpha' = alpha * (1 - eps)``, which gives clean coverage ``>= 1 - alpha`` for
    any contaminating law. The bound is attained when the contaminated scores are
    always covered (e.g. labels flipped to the model's own prediction), so it cannot
    be improved without assumptions on ``Q``. It is less conservative than the plain
    total-variation argument (``miscoverage <= alpha' + eps``, i.e. ``alpha' = alpha -
    eps``) and than ``(alpha - eps)/(1 - eps)``; it is more conservative than the
    paper's CRCP whenever contamination is not adversarial: for random label noise the
    contaminated scores are mostly *larger* (standard conformal already over-covers,
    as the paper reports) and CRCP shrinks the sets instead, which the worst-case rule
    never does.

``contamination_model="uniform_label"`` (plug-in, in the spirit of CRCP; asymptotic).
    Assumes the noisy label equals the true label with probability ``1 - eps`` and is
    uniform over the ``C`` classes otherwise (binary "flip with probability rho" is
    ``eps = 2 * rho``). Then ``Q`` is the law of ``s(X, U_label)``, which is estimable
    from the calibration inputs alone: ``F_Q_hat(t) = mean_{i,c} 1[s(x_i, c) <= t]``.
    The clean CDF is estimated by ``F_P_hat = (F_n - eps F_Q_hat) / (1 - eps)`` and the
    threshold is the smallest calibration score with ``F_P_hat >= k / n``. This is
    consistent as ``n -> inf`` but has no finite-sample guarantee; it is not known to
    match the paper's exact finite-sample correction.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np
from scipy.stats import binom

from roadwork_ml.contracts import ContractError, Purpose, require_split, validate_policy_json

__all__ = [
    "APS",
    "CONFORMAL_REGISTRY",
    "ConformalError",
    "ConformalRiskControl",
    "RAPS",
    "SCRC",
    "SplitConformalLAC",
    "conformal_from_dict",
    "conformal_quantile",
    "conformal_rank",
    "lac_class_scores",
    "raps_class_scores",
]

# Absolute slack when comparing a score with a threshold: cumulative sums of
# probabilities carry round-off (a full cumulative mass may be 1 +- 2e-16).
_TIE_TOL = 1e-12
_FORMAT_VERSION = 1
_CONTAMINATION_MODELS = ("huber", "uniform_label")


class ConformalError(ValueError):
    """A conformal estimator was misconfigured, misused or is not fitted."""


# --- small helpers -----------------------------------------------------------------------

def _enc(x: float | None) -> float | str | None:
    """JSON-safe float: +-inf become the strings 'inf' / '-inf' (strict JSON has no Infinity)."""
    if x is None:
        return None
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if math.isnan(x):
        raise ConformalError("refusing to serialize NaN")
    return x


def _dec(x: Any) -> float | None:
    if x is None:
        return None
    if isinstance(x, str):
        if x in ("inf", "-inf"):
            return float(x)
        raise ContractError(f"expected a number or 'inf'/'-inf', got {x!r}")
    return float(x)


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ConformalError(f"{name} must lie in (0, 1), got {alpha}")
    return alpha


def _check_eps(eps: float, model: str) -> float:
    eps = float(eps)
    if not 0.0 <= eps < 1.0:
        raise ConformalError(f"contamination_eps must lie in [0, 1), got {eps}")
    if model not in _CONTAMINATION_MODELS:
        raise ConformalError(f"contamination_model must be one of {_CONTAMINATION_MODELS}, got {model!r}")
    return eps


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ContractError(f"{name} must be [N, C] class probabilities with C >= 2, got shape {list(p.shape)}")
    if not np.isfinite(p).all():
        raise ContractError(f"{name} holds non-finite values in {int((~np.isfinite(p)).any(axis=1).sum())} rows")
    if p.size and (p.min() < -1e-9 or p.max() > 1 + 1e-9):
        raise ContractError(f"{name} must lie in [0, 1], got range [{p.min():.3g}, {p.max():.3g}]; pass softmax outputs, not logits")
    bad = np.abs(p.sum(axis=1) - 1.0) > 1e-6
    if bad.any():
        raise ContractError(f"{name} rows must sum to 1 (+-1e-6); {int(bad.sum())} rows do not (first: row {int(np.argmax(bad))})")
    return p


def _check_labels(labels: Any, n: int, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ContractError(f"labels must be [{n}], got shape {list(y.shape)}")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ContractError("labels must be integer class indices")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise ContractError(f"labels must be integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ContractError(f"labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _check_u(u: Any, n: int) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n,):
        raise ConformalError(f"u must be [{n}] uniforms, got shape {list(u.shape)}")
    if u.size and (not np.isfinite(u).all() or u.min() < 0.0 or u.max() > 1.0):
        raise ConformalError("u must lie in [0, 1]")
    return u


def _require_fitted(obj: Any, attr: str) -> None:
    if getattr(obj, attr, None) is None:
        raise ConformalError(f"{type(obj).__name__} is not fitted: call fit(..., split='val_calib') or from_dict() first")


# --- the finite-sample quantile ----------------------------------------------------------

def conformal_rank(n: int, alpha: float) -> int:
    """``k = ceil((n + 1)(1 - alpha))``, robust to round-off (``100 * 0.9`` is 90, not 91).

    ``k > n`` means the level cannot be reached with ``n`` points (threshold ``+inf``).
    """
    if n < 0:
        raise ConformalError(f"n must be >= 0, got {n}")
    x = (n + 1) * (1.0 - float(alpha))
    r = round(x)
    k = int(r) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else math.ceil(x)
    return max(k, 1)


def conformal_quantile(scores: Any, alpha: float, axis: int = -1) -> np.ndarray | float:
    """The split-conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score.

    Equal to the empirical quantile at level ``ceil((n+1)(1-alpha))/n`` read as an order
    statistic; ``+inf`` when that level exceeds 1. Works on a batch: ``scores`` of shape
    ``[B, n]`` with ``axis=-1`` returns ``B`` thresholds (one per calibration split).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 0:
        raise ConformalError("scores must have at least one dimension")
    n = s.shape[axis]
    if n == 0:
        raise ConformalError("no calibration scores: the conformal quantile needs n >= 1")
    k = conformal_rank(n, alpha)
    if k > n:
        out = np.full(np.delete(np.array(s.shape), axis % s.ndim), np.inf) if s.ndim > 1 else np.inf
        return float(out) if np.ndim(out) == 0 else out
    q = np.take(np.partition(s, k - 1, axis=axis), k - 1, axis=axis)
    return float(q) if np.ndim(q) == 0 else q


# --- non-conformity scores of every class ------------------------------------------------

def lac_class_scores(probs: np.ndarray) -> np.ndarray:
    """LAC score of each class as the label: ``1 - p_c``."""
    return 1.0 - np.asarray(probs, dtype=np.float64)


def raps_class_scores(
    probs: np.ndarray,
    u: np.ndarray | None = None,
    *,
    k_reg: int = 0,
    lambda_reg: float = 0.0,
) -> np.ndarray:
    """RAPS score of each class (APS when ``lambda_reg == 0``), shape ``[N, C]``.

    ``E(x, y, u) = rho_x(y) + u * pi_x(y) + lambda_reg * max(0, o_x(y) - k_reg)`` with
    ``rho_x(y)`` the total probability of the classes ranked above ``y``, ``pi_x(y)``
    the probability of ``y`` and ``o_x(y)`` its 1-based rank by decreasing probability
    (ties broken by class index). ``u=None`` is the non-randomized score (``u = 1``:
    the cumulative mass up to and including ``y``). One ``u`` per row is shared by all
    classes, so the set ``{y : E(x, y, u) <= tau}`` is the top-``L`` classes.
    """
    p = np.asarray(probs, dtype=np.float64)
    n, c = p.shape
    order = np.argsort(-p, axis=1, kind="stable")
    sorted_p = np.take_along_axis(p, order, axis=1)
    mass_above = np.zeros_like(sorted_p)
    if c > 1:
        mass_above[:, 1:] = np.cumsum(sorted_p[:, :-1], axis=1)
    rank = np.arange(1, c + 1, dtype=np.float64)[None, :]
    penalty = float(lambda_reg) * np.maximum(0.0, rank - float(k_reg))
    uu = 1.0 if u is None else np.asarray(u, dtype=np.float64).reshape(n, 1)
    e_sorted = mass_above + uu * sorted_p + penalty
    out = np.empty_like(e_sorted)
    np.put_along_axis(out, order, e_sorted, axis=1)
    return out


def _plugin_uniform_label_threshold(true_scores: np.ndarray, all_scores: np.ndarray, alpha: float, eps: float) -> float:
    """Smallest calibration score ``t`` with ``(F_n(t) - eps F_Q(t)) / (1 - eps) >= k/n``."""
    n = true_scores.size
    k = conformal_rank(n, alpha)
    if k > n:
        return math.inf
    level = k / n
    t = np.sort(true_scores)
    f_n = np.searchsorted(t, t, side="right") / n
    q_sorted = np.sort(all_scores.ravel())
    f_q = np.searchsorted(q_sorted, t, side="right") / q_sorted.size
    f_clean = (f_n - eps * f_q) / (1.0 - eps)
    hit = np.nonzero(f_clean >= level - 1e-12)[0]
    return float(t[hit[0]]) if hit.size else math.inf


# --- prediction-set estimators -----------------------------------------------------------

class _SetConformal:
    """Split conformal over a class-score function; sets are ``{c : score_c <= threshold}``."""

    kind: ClassVar[str] = ""
    randomized: bool = False

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        allow_empty: bool = True,
        contamination_eps: float = 0.0,
        contamination_model: str = "huber",
    ) -> None:
        self.alpha = _check_alpha(alpha)
        self.allow_empty = bool(allow_empty)
        self.contamination_eps = _check_eps(contamination_eps, contamination_model)
        self.contamination_model = contamination_model
        self.threshold_: float | None = None
        self.n_calibration_: int | None = None

    # subclasses -------------------------------------------------------------------------
    def class_scores(self, probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict:
        return {}

    # API --------------------------------------------------------------------------------
    @property
    def effective_alpha(self) -> float:
        """The level the calibration quantile is taken at (``alpha (1 - eps)`` under Huber)."""
        if self.contamination_eps > 0 and self.contamination_model == "huber":
            return self.alpha * (1.0 - self.contamination_eps)
        return self.alpha

    def _fit_u(self, n: int, u: Any) -> np.ndarray | None:
        if not self.randomized:
            if u is not None:
                raise ConformalError(f"{type(self).__name__} is not randomized; do not pass u")
            return None
        if u is not None:
            return _check_u(u, n)
        return np.random.default_rng([0, self.seed]).random(n)

    def _predict_u(self, n: int, seed: int | None, u: Any) -> np.ndarray | None:
        if not self.randomized:
            if u is not None:
                raise ConformalError(f"{type(self).__name__} is not randomized; do not pass u")
            return None
        if u is not None:
            return _check_u(u, n)
        rng = np.random.default_rng() if seed is None else np.random.default_rng([1, int(seed)])
        return rng.random(n)

    def fit(self, probs: Any, labels: Any, *, split: Any, u: Any = None) -> "_SetConformal":
        """Calibrate the threshold on ``VAL_CALIB`` probabilities and labels.

        ``u`` (randomized methods only) overrides the seeded per-row uniforms.
        """
        require_split(Purpose.FIT_POLICY, split)
        p = _check_probs(probs)
        y = _check_labels(labels, p.shape[0], p.shape[1])
        if p.shape[0] == 0:
            raise ConformalError("fit needs at least one calibration row")
        uu = self._fit_u(p.shape[0], u)
        all_scores = self.class_scores(p, uu)
        true_scores = all_scores[np.arange(p.shape[0]), y]
        if self.contamination_eps > 0 and self.contamination_model == "uniform_label":
            self.threshold_ = _plugin_uniform_label_threshold(true_scores, all_scores, self.alpha, self.contamination_eps)
        else:
            self.threshold_ = float(conformal_quantile(true_scores, self.effective_alpha))
        self.n_calibration_ = int(p.shape[0])
        self.n_classes_ = int(p.shape[1])
        return self

    def predict_sets(self, probs: Any, *, seed: int | None = None, u: Any = None) -> np.ndarray:
        """Boolean ``[N, C]`` prediction sets. Randomized methods: see ``seed`` in the module doc."""
        _require_fitted(self, "threshold_")
        p = _check_probs(probs)
        if p.shape[1] != self.n_classes_:
            raise ContractError(f"{self.kind} was calibrated on {self.n_classes_} classes, got probs [N, {p.shape[1]}]")
        uu = self._predict_u(p.shape[0], seed, u)
        sets = self.class_scores(p, uu) <= self.threshold_ + _TIE_TOL
        if not self.allow_empty and p.shape[0]:
            sets[np.arange(p.shape[0]), np.argmax(p, axis=1)] = True
        return sets

    def to_dict(self) -> dict:
        _require_fitted(self, "threshold_")
        return {
            "kind": self.kind,
            "version": _FORMAT_VERSION,
            "alpha": self.alpha,
            "effective_alpha": self.effective_alpha,
            "allow_empty": self.allow_empty,
            "contamination_eps": self.contamination_eps,
            "contamination_model": self.contamination_model,
            "threshold": _enc(self.threshold_),
            "n_calibration": self.n_calibration_,
            "n_classes": self.n_classes_,
            **self._params(),
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "_SetConformal":
        validate_policy_json(dict(obj), cls.kind, ["alpha", "threshold", "n_calibration", *cls._param_keys()])
        kwargs = {k: obj[k] for k in cls._param_keys()}
        est = cls(
            obj["alpha"],
            allow_empty=obj.get("allow_empty", True),
            contamination_eps=obj.get("contamination_eps", 0.0),
            contamination_model=obj.get("contamination_model", "huber"),
            **kwargs,
        )
        est.threshold_ = _dec(obj["threshold"])
        est.n_calibration_ = int(obj["n_calibration"])
        est.n_classes_ = int(obj.get("n_classes", 2))
        return est

    @classmethod
    def _param_keys(cls) -> tuple[str, ...]:
        return ()


class SplitConformalLAC(_SetConformal):
    """Split conformal with the LAC score ``1 - p_y``; sets ``{c : p_c >= 1 - threshold}``.

    Gives the smallest average set size among valid split-conformal rules (Sadinle et
    al. 2019). Sets may be empty when no class is probable enough (``allow_empty=False``
    adds the top class; coverage stays ``>= 1 - alpha``).
    """

    kind: ClassVar[str] = "lac"

    def class_scores(self, probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        return lac_class_scores(probs)


class RAPS(_SetConformal):
    """Regularized adaptive prediction sets (Angelopoulos, Bates, Malik, Jordan, ICLR 2021).

    Score ``rho_x(y) + u pi_x(y) + lambda_reg (o_x(y) - k_reg)^+`` (see
    :func:`raps_class_scores`); ``randomized=False`` uses ``u = 1``. Randomized sets
    may be empty (that is what makes the coverage exact); ``allow_empty=False`` always
    keeps the top class (coverage ``>= 1 - alpha``, no longer tight).
    """

    kind: ClassVar[str] = "raps"

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        k_reg: int = 1,
        lambda_reg: float = 0.01,
        randomized: bool = True,
        seed: int = 0,
        allow_empty: bool = True,
        contamination_eps: float = 0.0,
        contamination_model: str = "huber",
    ) -> None:
        super().__init__(alpha, allow_empty=allow_empty, contamination_eps=contamination_eps, contamination_model=contamination_model)
        if int(k_reg) != k_reg or k_reg < 0:
            raise ConformalError(f"k_reg must be a non-negative integer, got {k_reg}")
        if not (lambda_reg >= 0 and math.isfinite(lambda_reg)):
            raise ConformalError(f"lambda_reg must be finite and >= 0, got {lambda_reg}")
        self.k_reg = int(k_reg)
        self.lambda_reg = float(lambda_reg)
        self.randomized = bool(randomized)
        self.seed = int(seed)

    def class_scores(self, probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        return raps_class_scores(probs, u if self.randomized else None, k_reg=self.k_reg, lambda_reg=self.lambda_reg)

    def _params(self) -> dict:
        return {"k_reg": self.k_reg, "lambda_reg": self.lambda_reg, "randomized": self.randomized, "seed": self.seed}

    @classmethod
    def _param_keys(cls) -> tuple[str, ...]:
        return ("k_reg", "lambda_reg", "randomized", "seed")


class APS(RAPS):
    """Adaptive prediction sets (Romano, Sesia, Candes, NeurIPS 2020): RAPS with ``lambda_reg = 0``.

    Score ``rho_x(y) + u pi_x(y)`` (randomized) or ``rho_x(y) + pi_x(y)`` (not).
    """

    kind: ClassVar[str] = "aps"

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        randomized: bool = True,
        seed: int = 0,
        allow_empty: bool = True,
        contamination_eps: float = 0.0,
        contamination_model: str = "huber",
    ) -> None:
        super().__init__(
            alpha,
            k_reg=0,
            lambda_reg=0.0,
            randomized=randomized,
            seed=seed,
            allow_empty=allow_empty,
            contamination_eps=contamination_eps,
            contamination_model=contamination_model,
        )

    def _params(self) -> dict:
        return {"randomized": self.randomized, "seed": self.seed}

    @classmethod
    def _param_keys(cls) -> tuple[str, ...]:
        return ("randomized", "seed")


# --- conformal risk control: false negatives ---------------------------------------------

class ConformalRiskControl:
    """Conformal risk control of false negatives (Angelopoulos, Bates, Fisch, Lei, Schuster 2022).

    Set family (nested, growing in ``lambda``): ``C_lambda(x) = {c : p_c >= 1 - lambda}``,
    ``lambda in [0, 1]`` (computed as ``1 - p_c <= lambda``). Loss of a row:
    ``L(lambda) = 1[y = positive_class and positive_class not in C_lambda(x)]``, which is
    non-increasing in ``lambda`` (monotone, as CRC requires), bounded by ``B = 1`` and 0
    at ``lambda = 1``. The fitted

        lambda_hat = inf{lambda : n/(n+1) * R_n(lambda) + B/(n+1) <= alpha}

    (``lambda_hat = 1`` if no ``lambda`` qualifies, i.e. ``alpha < 1/(n+1)``) satisfies
    ``E[L_{n+1}(lambda_hat)] <= alpha`` for exchangeable data. It is tight: with
    tie-free scores the risk is ``floor(alpha (n+1)) / (n+1) >= alpha - 1/(n+1)`` when
    positives are plentiful.

    ``conditional=False`` (default) controls ``P(Y = 1 and 1 not in C)`` -- misses over all
    images. ``conditional=True`` calibrates on the positive rows only and controls the
    class-conditional false-negative rate ``P(1 not in C | Y = 1)`` (positives are
    exchangeable among themselves), which is usually what "FNR" means; it needs
    ``n_pos >= 1/alpha - 1`` positives to be non-trivial.
    """

    kind: ClassVar[str] = "crc_fnr"

    def __init__(self, alpha: float = 0.05, *, positive_class: int = 1, conditional: bool = False) -> None:
        self.alpha = _check_alpha(alpha)
        if int(positive_class) != positive_class or positive_class < 0:
            raise ConformalError(f"positive_class must be a class index, got {positive_class}")
        self.positive_class = int(positive_class)
        self.conditional = bool(conditional)
        self.lambda_: float | None = None
        self.n_calibration_: int | None = None
        self.feasible_: bool | None = None

    def fit(self, probs: Any, labels: Any, *, split: Any) -> "ConformalRiskControl":
        require_split(Purpose.FIT_POLICY, split)
        p = _check_probs(probs)
        y = _check_labels(labels, p.shape[0], p.shape[1])
        if self.positive_class >= p.shape[1]:
            raise ConformalError(f"positive_class {self.positive_class} is not a column of probs [N, {p.shape[1]}]")
        pos = y == self.positive_class
        t = 1.0 - p[pos, self.positive_class]  # a positive row is missed iff t > lambda
        n = int(pos.sum()) if self.conditional else int(p.shape[0])
        if n == 0:
            raise ConformalError("no calibration rows to control the risk on" + (" (no positives)" if self.conditional else ""))
        # (n/(n+1)) R_n + 1/(n+1) <= alpha  <=>  #misses <= alpha (n+1) - 1
        budget = self.alpha * (n + 1) - 1.0
        if budget < -1e-9:
            self.lambda_, self.feasible_ = 1.0, False
        else:
            m = int(math.floor(budget + 1e-9))
            if t.size <= m:
                self.lambda_ = 0.0
            else:
                self.lambda_ = float(np.sort(t)[::-1][m])  # the (m+1)-th largest
            self.feasible_ = True
        self.n_calibration_ = n
        self.n_classes_ = int(p.shape[1])
        return self

    def predict_sets(self, probs: Any) -> np.ndarray:
        _require_fitted(self, "lambda_")
        p = _check_probs(probs)
        return (1.0 - p) <= self.lambda_ + _TIE_TOL

    def to_dict(self) -> dict:
        _require_fitted(self, "lambda_")
        return {
            "kind": self.kind,
            "version": _FORMAT_VERSION,
            "alpha": self.alpha,
            "positive_class": self.positive_class,
            "conditional": self.conditional,
            "lambda": _enc(self.lambda_),
            "feasible": self.feasible_,
            "n_calibration": self.n_calibration_,
            "n_classes": self.n_classes_,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "ConformalRiskControl":
        validate_policy_json(dict(obj), cls.kind, ["alpha", "lambda", "positive_class", "conditional", "n_calibration"])
        est = cls(obj["alpha"], positive_class=obj["positive_class"], conditional=obj["conditional"])
        est.lambda_ = _dec(obj["lambda"])
        est.feasible_ = obj.get("feasible")
        est.n_calibration_ = int(obj["n_calibration"])
        est.n_classes_ = int(obj.get("n_classes", 2))
        return est


# --- selective conformal risk control: two thresholds, Learn-Then-Test -------------------

class SCRC:
    """Selective risk control: accept the top class only when ``gate >= lambda_gate`` AND
    ``max_prob >= lambda_conf``; otherwise return the full set ``{0, 1}`` (defer).

    Guarantee (Learn-Then-Test, Angelopoulos, Bates, Candes, Jordan, Lei 2021)::

        P_calibration( R(lambda_hat) > alpha ) <= delta,
        R(lambda) = P( argmax p(X) != Y | X accepted under lambda )

    for a fresh test point exchangeable with the calibration rows (i.i.d.), where the
    selective risk of a rule that accepts nothing is defined as 0. This is a
    high-probability bound on the *population selective risk* (the ratio), not on an
    expectation.

    Procedure:

    1. the calibration rows are split at random (``seed``) into an *ordering* part
       (``order_fraction``) and a *testing* part;
    2. the grid: ``lambda_gate`` in ``{-inf}`` and quantiles of the ordering part's gate
       scores, ``lambda_conf`` in ``{-inf}`` and quantiles of its max probabilities
       (``n_grid`` values each);
    3. each grid point gets an exact binomial p-value for ``H0: R(lambda) > alpha`` on the
       testing part: with ``n_acc`` accepted rows and ``k`` errors among them,
       ``p = BinomCDF(k; n_acc, alpha)`` (``p = 1`` if ``n_acc = 0``). Given ``n_acc`` the
       errors are ``Binomial(n_acc, R(lambda))``, so ``p`` is super-uniform under ``H0``;
    4. fixed-sequence testing along an order built from the ordering part only (grid and
       order use no row of the testing part, which is what makes the fixed sequence
       valid: it controls the family-wise error at ``delta``). Points are rejected in
       that order at level ``delta`` until the first failure.
       ``ordering="path"`` (default) orders by coverage: for every coverage level of
       the ordering part it takes the lowest-risk grid point reaching that coverage
       (a 2-D -> 1-D risk/coverage frontier), and walks this path by increasing
       coverage, starting at the point whose p-value, predicted from the ordering part
       at the testing part's size, is smallest. (Starting at the lowest coverage would
       stall at once: a rule that accepts few rows cannot reach a p-value below
       ``delta`` -- with zero errors it needs ``log(delta)/log(1-alpha)`` accepted
       rows.) ``ordering="pvalue"`` orders every grid point by its ordering-part
       p-value (ties: larger coverage first); it was slightly less powerful in our
       simulations;
    5. among the certified (rejected) grid points, the one with the largest accepted
       fraction on all calibration rows is chosen (any choice inside the certified set
       keeps the guarantee). If none is certified the rule accepts nothing.

    ``contamination_eps``: label-only Huber contamination (each calibration label is,
    with probability ``eps``, replaced by an arbitrary label; images and gate scores are
    unaffected). Then ``P_noisy(accepted & wrong) >= (1 - eps) P_clean(accepted & wrong)``
    while ``P(accepted)`` is unchanged, so ``R_clean <= R_noisy / (1 - eps)``; the tests
    run at ``alpha (1 - eps)`` and the guarantee above holds for the clean risk.

    ``gate_scores`` follow :mod:`roadwork_ml.policy.gate`'s ``confidence`` convention
    (higher = more trustworthy). The guarantee is exact only when the gate (and model,
    calibrator) were trained on rows disjoint from these: e.g. fit the gate on one part
    of ``VAL_CALIB`` and SCRC on the other. Out-of-fold (cross-fitted) confidences are a
    good approximation but not covered by the finite-sample statement, because each
    row's score then depends on the other calibration rows' labels and the deployed
    (refit) gate differs from the fold gates.
    """

    kind: ClassVar[str] = "scrc"

    def __init__(
        self,
        alpha: float = 0.05,
        delta: float = 0.1,
        *,
        n_grid: int = 20,
        order_fraction: float = 0.3,
        seed: int = 0,
        contamination_eps: float = 0.0,
        ordering: str = "path",
    ) -> None:
        self.alpha = _check_alpha(alpha)
        self.delta = _check_alpha(delta, "delta")
        if ordering not in ("path", "pvalue"):
            raise ConformalError(f"ordering must be 'path' or 'pvalue', got {ordering!r}")
        self.ordering = ordering
        if int(n_grid) != n_grid or n_grid < 2:
            raise ConformalError(f"n_grid must be an integer >= 2, got {n_grid}")
        if not 0.0 < order_fraction < 1.0:
            raise ConformalError(f"order_fraction must lie in (0, 1), got {order_fraction}")
        self.n_grid = int(n_grid)
        self.order_fraction = float(order_fraction)
        self.seed = int(seed)
        self.contamination_eps = _check_eps(contamination_eps, "huber")
        self.lambda_gate_: float | None = None
        self.lambda_conf_: float | None = None

    @property
    def effective_alpha(self) -> float:
        return self.alpha * (1.0 - self.contamination_eps)

    def _grid(self, values: np.ndarray) -> np.ndarray:
        levels = np.arange(self.n_grid - 1) / (self.n_grid - 1)
        qs = np.quantile(values, levels, method="inverted_cdf") if values.size else np.array([])
        return np.unique(np.concatenate([[-np.inf], qs]))

    def _sequence(self, acc_a: np.ndarray, err_a: np.ndarray, p_a: np.ndarray, n_test: int, a_eff: float) -> np.ndarray:
        """The fixed testing order, built from the ordering part only."""
        if self.ordering == "pvalue":
            return np.lexsort((-acc_a, p_a))
        # path: for each coverage level c (ordering part), the lowest-risk grid point with coverage >= c
        risk_a = np.where(acc_a > 0, err_a / np.maximum(acc_a, 1), np.inf)
        by_cov = np.lexsort((risk_a, -acc_a))  # coverage descending, then risk ascending
        best = np.empty_like(by_cov)
        cur = by_cov[0]
        for t, idx in enumerate(by_cov):
            if risk_a[idx] < risk_a[cur]:
                cur = idx
            best[t] = cur
        # the path point for coverage level acc_a[by_cov[t]] is best[t]; keep the last t per level
        levels = acc_a[by_cov]
        last_of_level = np.r_[levels[1:] != levels[:-1], True]
        path = best[last_of_level][::-1]  # increasing coverage level
        path = path[acc_a[path] > 0]
        if path.size == 0:
            return np.lexsort((-acc_a, p_a))
        keep = np.r_[True, path[1:] != path[:-1]]
        path = path[keep]
        _, first = np.unique(path, return_index=True)
        path = path[np.sort(first)]
        m = np.maximum(np.rint(acc_a[path] * (n_test / self.n_order_)), 1)  # expected accepted rows in the testing part
        k = np.floor(risk_a[path] * m)
        predicted = binom.cdf(k, m, a_eff)
        start = int(np.argmin(predicted))
        return path[start:]

    def fit(self, probs: Any, labels: Any, gate_scores: Any, *, split: Any) -> "SCRC":
        require_split(Purpose.FIT_POLICY, split)
        p = _check_probs(probs)
        n = p.shape[0]
        y = _check_labels(labels, n, p.shape[1])
        g = np.asarray(gate_scores, dtype=np.float64)
        if g.shape != (n,):
            raise ContractError(f"gate_scores must be [{n}], got shape {list(g.shape)}")
        if np.isnan(g).any():
            raise ContractError("gate_scores contain NaN")
        if n < 2:
            raise ConformalError("SCRC needs at least 2 calibration rows (ordering + testing parts)")
        conf = p.max(axis=1)
        wrong = np.argmax(p, axis=1) != y

        perm = np.random.default_rng([2, self.seed]).permutation(n)
        n_order = min(max(int(round(self.order_fraction * n)), 1), n - 1)
        self.n_order_ = n_order
        part_a, part_b = perm[:n_order], perm[n_order:]
        grid_gate = self._grid(g[part_a])
        grid_conf = self._grid(conf[part_a])

        # cell of each row: index of the largest gate / confidence threshold it passes
        gi = np.searchsorted(grid_gate, g, side="right") - 1  # >= 0 since grid[0] = -inf
        ci = np.searchsorted(grid_conf, conf, side="right") - 1
        shape = (grid_gate.size, grid_conf.size)
        wrong_i = wrong.astype(np.int64)

        def counts(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Accepted rows and errors for every grid point: g >= grid_gate[i] and conf >= grid_conf[j]."""
            cell = gi[rows] * shape[1] + ci[rows]
            out = []
            for w in (None, wrong_i[rows]):
                h = np.bincount(cell, weights=w, minlength=shape[0] * shape[1]).reshape(shape)
                out.append(np.rint(h[::-1, ::-1].cumsum(0).cumsum(1)[::-1, ::-1]).astype(np.int64))
            return out[0], out[1]

        a_eff = self.effective_alpha

        def pvalues(n_acc: np.ndarray, n_err: np.ndarray) -> np.ndarray:
            pv = binom.cdf(n_err, np.maximum(n_acc, 1), a_eff)
            return np.where(n_acc > 0, pv, 1.0)

        acc_a, err_a = counts(part_a)
        acc_b, err_b = counts(part_b)
        p_a = pvalues(acc_a, err_a).ravel()
        p_b = pvalues(acc_b, err_b).ravel()
        order = self._sequence(acc_a.ravel(), err_a.ravel(), p_a, part_b.size, a_eff)
        passed = p_b[order] <= self.delta
        n_certified = int(np.argmin(passed)) if not passed.all() else passed.size
        certified = order[:n_certified]

        acc_all, err_all = (c.ravel() for c in counts(np.arange(n)))
        self.n_grid_points_ = int(p_b.size)
        self.n_certified_ = n_certified
        self.n_test_ = int(part_b.size)
        self.n_calibration_ = int(n)
        if n_certified == 0:
            self.lambda_gate_, self.lambda_conf_ = math.inf, math.inf
            self.certified_ = False
            self.p_value_ = float(p_b[order[0]]) if order.size else 1.0
            self.calibration_coverage_ = 0.0
            self.calibration_selective_risk_ = 0.0
            return self
        # largest coverage; ties -> fewer calibration errors -> earlier in the sequence
        pos = np.arange(n_certified)
        best = certified[np.lexsort((pos, err_all[certified], -acc_all[certified]))[0]]
        i, j = np.unravel_index(best, (grid_gate.size, grid_conf.size))
        self.lambda_gate_ = float(grid_gate[i])
        self.lambda_conf_ = float(grid_conf[j])
        self.certified_ = True
        self.p_value_ = float(p_b[best])
        self.calibration_coverage_ = float(acc_all[best] / n)
        self.calibration_selective_risk_ = float(err_all[best] / acc_all[best]) if acc_all[best] else 0.0
        return self

    def accept(self, probs: Any, gate_scores: Any) -> np.ndarray:
        """Boolean ``[N]``: True where the model's top class is returned as a singleton."""
        _require_fitted(self, "lambda_gate_")
        p = _check_probs(probs)
        g = np.asarray(gate_scores, dtype=np.float64)
        if g.shape != (p.shape[0],):
            raise ContractError(f"gate_scores must be [{p.shape[0]}], got shape {list(g.shape)}")
        return (g >= self.lambda_gate_) & (p.max(axis=1) >= self.lambda_conf_)

    def predict_sets(self, probs: Any, gate_scores: Any) -> np.ndarray:
        """Boolean ``[N, C]``: ``{argmax}`` where accepted, every class where deferred."""
        ok = self.accept(probs, gate_scores)
        p = np.asarray(probs, dtype=np.float64)
        sets = np.ones(p.shape, dtype=bool)
        rows = np.nonzero(ok)[0]
        sets[rows] = False
        sets[rows, np.argmax(p[rows], axis=1)] = True
        return sets

    def to_dict(self) -> dict:
        _require_fitted(self, "lambda_gate_")
        return {
            "kind": self.kind,
            "version": _FORMAT_VERSION,
            "alpha": self.alpha,
            "delta": self.delta,
            "effective_alpha": self.effective_alpha,
            "n_grid": self.n_grid,
            "order_fraction": self.order_fraction,
            "seed": self.seed,
            "ordering": self.ordering,
            "contamination_eps": self.contamination_eps,
            "lambda_gate": _enc(self.lambda_gate_),
            "lambda_conf": _enc(self.lambda_conf_),
            "certified": self.certified_,
            "p_value": self.p_value_,
            "n_calibration": self.n_calibration_,
            "n_certified": self.n_certified_,
            "calibration_coverage": self.calibration_coverage_,
            "calibration_selective_risk": self.calibration_selective_risk_,
            "guarantee": f"P(selective risk > {self.alpha}) <= {self.delta} (Learn-Then-Test, fixed sequence, exact binomial)",
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> "SCRC":
        validate_policy_json(dict(obj), cls.kind, ["alpha", "delta", "lambda_gate", "lambda_conf", "certified"])
        est = cls(
            obj["alpha"],
            obj["delta"],
            n_grid=obj.get("n_grid", 20),
            order_fraction=obj.get("order_fraction", 0.3),
            seed=obj.get("seed", 0),
            contamination_eps=obj.get("contamination_eps", 0.0),
            ordering=obj.get("ordering", "path"),
        )
        est.lambda_gate_ = _dec(obj["lambda_gate"])
        est.lambda_conf_ = _dec(obj["lambda_conf"])
        est.certified_ = bool(obj["certified"])
        est.p_value_ = obj.get("p_value")
        est.n_calibration_ = obj.get("n_calibration")
        est.n_certified_ = obj.get("n_certified")
        est.calibration_coverage_ = obj.get("calibration_coverage")
        est.calibration_selective_risk_ = obj.get("calibration_selective_risk")
        return est


CONFORMAL_REGISTRY: dict[str, type] = {
    SplitConformalLAC.kind: SplitConformalLAC,
    APS.kind: APS,
    RAPS.kind: RAPS,
    ConformalRiskControl.kind: ConformalRiskControl,
    SCRC.kind: SCRC,
}


def conformal_from_dict(obj: Mapping[str, Any]):
    """Rebuild any estimator of this module from its ``to_dict()`` output."""
    kind = obj.get("kind") if isinstance(obj, Mapping) else None
    if kind not in CONFORMAL_REGISTRY:
        raise ContractError(f"unknown conformal policy kind {kind!r}; expected one of {sorted(CONFORMAL_REGISTRY)}")
    return CONFORMAL_REGISTRY[kind].from_dict(obj)
