"""Selective conformal risk control (SCRC): two thresholds certified by Learn-Then-Test."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy.stats import binom

from roadwork_ml.contracts import ContractError, Split
from roadwork_ml.policy.conformal.core import (
    ConformalError,
    _check_alpha,
    _check_eps,
    _check_labels,
    _check_probs,
    _require_fitted,
)
from roadwork_ml.policy.estimator import PolicyEstimator

# --- selective conformal risk control: two thresholds, Learn-Then-Test -------------------


class SCRC(PolicyEstimator):
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

    def fit(self, probs: Any, labels: Any, gate_scores: Any, *, split: Split | str) -> SCRC:
        self.check_split(split)
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
