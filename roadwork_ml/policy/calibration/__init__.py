"""Post-hoc calibrators for the classifier's logits, cross-fitted model selection, reliability plots.

Every calibrator has one scikit-learn-style API::

    cal = TemperatureScaling().fit(logits, labels, split="val_calib")  # logits [N, C], labels [N]
    probs = cal.predict_proba(logits)                     # [N, C], rows sum to 1
    d = cal.to_dict()                                     # JSON-safe, carries "kind"
    cal2 = calibrator_from_dict(d)                        # same predictions, bit for bit

The convention (hyper-parameters in the constructor, fitted attributes ending in ``_``, a
required ``split``, the JSON round trip) is :class:`~roadwork_ml.policy.estimator.PolicyEstimator`'s.
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

Modules: :mod:`.calibrators` (the estimators), :mod:`.selection` (cross-fitted choice and
its private metrics), :mod:`.reliability` (the diagram), :mod:`._fitting` (input checks, LBFGS).

The NLL / ECE / Brier helpers in :mod:`.selection` are private on purpose (the calibration-selection
criterion must not change when the reporting metrics in :mod:`roadwork_ml.evaluation`
change); their definitions are written next to them.
"""

from __future__ import annotations

from roadwork_ml.policy.calibration._fitting import _PROB_FLOOR  # noqa: F401  (re-exported for tests)
from roadwork_ml.policy.calibration.calibrators import (
    CALIBRATORS,
    BetaCalibration,
    Calibrator,
    ClasswiseTemperature,
    DirichletCalibration,
    EnsembleTemperature,
    Identity,
    IsotonicCalibration,
    PlattScaling,
    SliceTemperature,
    TemperatureScaling,
    calibrator_from_dict,
)
from roadwork_ml.policy.calibration.reliability import reliability_diagram
from roadwork_ml.policy.calibration.selection import SelectionResult, _pick_winner, select_calibrator  # noqa: F401

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
