"""Does a served decision path reproduce the reference one? Two questions, held apart.

* **The model**: the served backend's outputs (e.g. ONNX Runtime through the bundle predictor)
  against the reference backend's (PyTorch, the ``val_calib_logits`` asset) on the same images:
  P(roadwork) and the uncertainty features within a tolerance, final decisions agreeing.
* **The policy**: the served policy (read from the bundle's files) against the reference policy
  (read from the policy assets) on the *same* model outputs: calibrated probabilities, StreetVision
  outputs and decisions equal to float64 rounding.

The calibrated probabilities of the two backends are reported, not held to the model's
tolerance: a calibrator's slope multiplies the backends' float32 difference, and isotonic
regression interpolates linearly between neighbouring calibration scores, so a VAL_CALIB image
that sits on a knot can move by slope × Δp (the demo measured 180 × 3e-6 = 5.8e-4 with every
decision equal). The part of the calibrated difference that is not the model's is the
policy's, and that part is compared exactly.

Decisions are held the same way. The policies' cuts are fitted on VAL_CALIB (a gate cut is a
quantile of its images' gate confidences), so an image can sit on a cut, where any float
difference decides it. An image is **on the edge** when the reference path decides it
differently once its outputs move by the tolerance (logit margin by ``tolerance`` x (1 +
|logit|) either way, the other outputs by that relative amount); every image off the edge must
get the same decision from both paths, and the edge count is reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from roadwork_ml.numerics import softmax
from roadwork_ml.policy.decision import DecisionPolicy, Decisions

POLICY_ATOL = 1e-9


@dataclass(frozen=True)
class ModelOutputs:
    """What a backend produced for N images: ``logits`` [N, C], ``features`` [N, F],
    ``embeddings`` [N, D] (mean over views), ``view_logits`` [N, V, C]."""

    logits: np.ndarray
    features: np.ndarray
    embeddings: np.ndarray
    view_logits: np.ndarray

    def decide(self, policy: DecisionPolicy, images=None) -> Decisions:
        return policy.decide(
            self.logits, self.features, embeddings=self.embeddings, view_logits=self.view_logits, images=images
        )

    def nudged(self, eps: float) -> ModelOutputs:
        """These outputs moved by ``eps`` towards roadwork (``eps`` > 0) or away from it: the
        roadwork logit up and the other down by ``|eps|`` x (1 + |logit|), the rest scaled by 1 + eps."""
        toward = np.where(np.arange(self.logits.shape[-1]) == 1, 1.0, -1.0)
        move = lambda z: z + eps * (1 + np.abs(z)) * toward
        return ModelOutputs(
            move(self.logits), self.features * (1 + eps), self.embeddings * (1 + eps), move(self.view_logits)
        )


@dataclass(frozen=True)
class DecisionPathParity:
    n: int
    max_raw_prob_diff: float  # |Δ P(roadwork)| before calibration, served vs reference backend
    max_feature_diff: float  # the 7 uncertainty features, served vs reference backend
    decision_agreement: float  # share of images with the same final decision, served vs reference backend
    edge_images: int  # images whose reference decision a move within the tolerance changes
    off_edge_disagreements: int  # images off the edge decided differently by the two paths
    max_policy_prob_diff: float  # calibrated probabilities, served vs reference policy, same outputs
    policy_decisions_equal: bool  # decisions and StreetVision outputs, served vs reference policy
    max_calibrated_prob_diff: float  # reported: the model's difference through the calibrator's slope
    streetvision_valid: bool  # every served StreetVision output finite and in [0, 1]

    def failures(self, tolerance: float) -> list[str]:
        """What did not hold, one line each (empty when the paths agree)."""
        rules = [
            (self.max_raw_prob_diff <= tolerance, f"P(roadwork) differs by {self.max_raw_prob_diff:.2e} > {tolerance}"),
            (self.max_feature_diff <= tolerance, f"features differ by {self.max_feature_diff:.2e} > {tolerance}"),
            (
                self.off_edge_disagreements == 0,
                f"{self.off_edge_disagreements} image(s) decided differently that no move within the tolerance explains",
            ),
            (
                self.max_policy_prob_diff <= POLICY_ATOL,
                f"the served policy's calibrated probabilities differ by {self.max_policy_prob_diff:.2e}",
            ),
            (self.policy_decisions_equal, "the served policy decides differently on the same outputs"),
            (self.streetvision_valid, "a StreetVision output is not finite in [0, 1]"),
        ]
        return [why for ok, why in rules if not ok]

    def passed(self, tolerance: float) -> bool:
        return not self.failures(tolerance)

    def as_dict(self) -> dict:
        return asdict(self)


def decision_path_parity(
    served: ModelOutputs,
    served_decisions: Decisions,
    served_policy: DecisionPolicy,
    reference: ModelOutputs,
    reference_policy: DecisionPolicy,
    tolerance: float,
    images=None,
) -> DecisionPathParity:
    """Compare a served path (``served`` outputs, the ``served_decisions`` its predictor returned,
    ``served_policy``) with the reference path on the same N images; ``tolerance`` sets the
    edge (module docstring)."""
    n = len(served.logits)
    if len(reference.logits) != n or len(served_decisions.calibrated) != n:
        raise ValueError(
            f"decision_path_parity: {n} served images, {len(reference.logits)} reference, "
            f"{len(served_decisions.calibrated)} served decisions"
        )
    ref = reference.decide(reference_policy, images)
    same_inputs = reference.decide(served_policy, images)
    edge = np.zeros(n, dtype=bool)
    for eps in (tolerance, -tolerance):
        edge |= reference.nudged(eps).decide(reference_policy, images).decision != ref.decision
    differs = served_decisions.decision != ref.decision
    sv = served_decisions.streetvision
    raw = lambda z: softmax(np.asarray(z, dtype=np.float64), axis=1)[:, 1]
    return DecisionPathParity(
        n=n,
        max_raw_prob_diff=float(np.abs(raw(served.logits) - raw(reference.logits)).max()),
        max_feature_diff=float(np.abs(served.features - reference.features).max()),
        decision_agreement=float(1 - differs.mean()),
        edge_images=int(edge.sum()),
        off_edge_disagreements=int((differs & ~edge).sum()),
        max_policy_prob_diff=float(np.abs(same_inputs.calibrated - ref.calibrated).max()),
        policy_decisions_equal=bool(
            np.array_equal(same_inputs.decision, ref.decision)
            and np.allclose(same_inputs.streetvision, ref.streetvision, rtol=0, atol=POLICY_ATOL)
        ),
        max_calibrated_prob_diff=float(np.abs(served_decisions.calibrated - ref.calibrated).max()),
        streetvision_valid=bool(np.isfinite(sv).all() and sv.min() >= 0 and sv.max() <= 1),
    )
