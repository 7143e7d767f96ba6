"""The failure-predictor gate (phase 3): predict, from the uncertainty features, whether
the classifier's prediction is wrong.

Score convention
----------------
* :meth:`FailureGate.predict_score` returns ``P(wrong)`` in ``[0, 1]`` — higher means the
  classifier's prediction is more likely wrong. This is the score whose AUROC / AUPRC for
  detecting errors we report.
* :meth:`FailureGate.confidence` returns ``1 - P(wrong)`` — higher means more trustworthy.
  The SCRC rule ACCEPTS a prediction when ``confidence >= λ1``; everything downstream of the
  gate (SCRC, the bundle, serving) uses ``confidence``.
* :meth:`FailureGate.to_module` gives an ``nn.Module`` mapping raw features ``[N, 7]`` to
  ``confidence`` ``[N]`` (standardization included) for exported graphs.

The baseline it must beat is the classifier's own confidence: error score ``1 - max_prob``
(confidence ``max_prob``).

Fitting happens on ``VAL_CALIB`` only (:class:`~roadwork_ml.contracts.Purpose.FIT_POLICY`).
Because SCRC is calibrated on the same split, use the *out-of-fold* confidences from
:func:`cross_fit_gate` (``CrossFitResult.oof_confidence``) there, not the refit gate's
in-sample scores, which are optimistic.

The gate that ships today is :class:`FeatureGate` (:mod:`.feature_gate`): a logistic
regression on the feature set :mod:`.choice` picks by nested group cross-fitting, with features
beyond the softmax (TRAIN distances, flip-TTA variance, image quality), or max-prob when that
does not beat max-prob with a paired-bootstrap interval above 0. :class:`FailureGate` (the MLP
on the 7 uncertainty features) stays loadable for bundles written before.

Files: ``gate.safetensors`` (MLP weights, BatchNorm buffers, standardization mean/std) and
``gate.json`` (config, feature names, metrics, sha256 of the weights). No pickle anywhere.
"""

from __future__ import annotations

from roadwork_ml.policy.gate.crossfit import CrossFitResult, cross_fit_gate
from roadwork_ml.policy.gate.estimator import GATE_JSON_FILE, GATE_KIND, GATE_WEIGHTS_FILE, FailureGate
from roadwork_ml.policy.gate.feature_gate import FEATURE_GATE_KIND, FeatureGate, gate_kind
from roadwork_ml.policy.gate.inputs import GateInputs, gate_blocks
from roadwork_ml.policy.gate.model import MODE_MAX_PROB, MODE_MLP, GateConfig, GateMLP

__all__ = [
    "GateConfig",
    "GateMLP",
    "FailureGate",
    "FeatureGate",
    "FEATURE_GATE_KIND",
    "GateInputs",
    "gate_blocks",
    "gate_kind",
    "CrossFitResult",
    "cross_fit_gate",
    "GATE_WEIGHTS_FILE",
    "GATE_JSON_FILE",
    "GATE_KIND",
    "MODE_MLP",
    "MODE_MAX_PROB",
]
