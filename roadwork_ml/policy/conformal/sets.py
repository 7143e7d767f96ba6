"""Split-conformal prediction sets (LAC, APS, RAPS) and conformal risk control of false negatives."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.policy.conformal.core import (
    _TIE_TOL,
    ConformalError,
    _check_alpha,
    _check_eps,
    _check_labels,
    _check_probs,
    _check_u,
    _plugin_uniform_label_threshold,
    _require_fitted,
    conformal_quantile,
    lac_class_scores,
    raps_class_scores,
)
from roadwork_ml.policy.estimator import PolicyEstimator

# --- prediction-set estimators -----------------------------------------------------------


class _SetConformal(PolicyEstimator):
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

    # subclasses -------------------------------------------------------------------------
    def class_scores(self, probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

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

    def fit(self, probs: Any, labels: Any, *, split: Split | str, u: Any = None) -> _SetConformal:
        """Calibrate the threshold on ``VAL_CALIB`` probabilities and labels.

        ``u`` (randomized methods only) overrides the seeded per-row uniforms.
        """
        self.check_split(split)
        p = _check_probs(probs)
        y = _check_labels(labels, p.shape[0], p.shape[1])
        if p.shape[0] == 0:
            raise ConformalError("fit needs at least one calibration row")
        uu = self._fit_u(p.shape[0], u)
        all_scores = self.class_scores(p, uu)
        true_scores = all_scores[np.arange(p.shape[0]), y]
        if self.contamination_eps > 0 and self.contamination_model == "uniform_label":
            self.threshold_ = _plugin_uniform_label_threshold(
                true_scores, all_scores, self.alpha, self.contamination_eps
            )
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
        super().__init__(
            alpha, allow_empty=allow_empty, contamination_eps=contamination_eps, contamination_model=contamination_model
        )
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


# --- conformal risk control: false negatives ---------------------------------------------


class ConformalRiskControl(PolicyEstimator):
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

    def fit(self, probs: Any, labels: Any, *, split: Split | str) -> ConformalRiskControl:
        self.check_split(split)
        p = _check_probs(probs)
        y = _check_labels(labels, p.shape[0], p.shape[1])
        if self.positive_class >= p.shape[1]:
            raise ConformalError(f"positive_class {self.positive_class} is not a column of probs [N, {p.shape[1]}]")
        pos = y == self.positive_class
        t = 1.0 - p[pos, self.positive_class]  # a positive row is missed iff t > lambda
        n = int(pos.sum()) if self.conditional else int(p.shape[0])
        if n == 0:
            raise ConformalError(
                "no calibration rows to control the risk on" + (" (no positives)" if self.conditional else "")
            )
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
