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

Modules: :mod:`.core` (checks, quantile, class scores), :mod:`.sets` (LAC, APS, RAPS, CRC),
:mod:`.scrc` (SCRC). Every estimator follows :class:`~roadwork_ml.policy.estimator.PolicyEstimator`.
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

from collections.abc import Mapping
from typing import Any

from roadwork_ml.contracts import ContractError
from roadwork_ml.policy.conformal.core import (
    ConformalError,
    conformal_quantile,
    conformal_rank,
    lac_class_scores,
    raps_class_scores,
)
from roadwork_ml.policy.conformal.scrc import SCRC
from roadwork_ml.policy.conformal.sets import APS, RAPS, ConformalRiskControl, SplitConformalLAC

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
