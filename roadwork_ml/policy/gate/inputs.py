"""What the feature gate reads per image, and the named feature blocks built from it.

One function (:func:`gate_blocks`) turns model outputs into the blocks of
:mod:`roadwork_ml.policy.failure_features`, so the gate asset (on VAL_CALIB) and every served
path (:class:`~roadwork_ml.policy.decision.DecisionPolicy` in the bundle predictor, the
evaluation report, the drift monitor) compute the same numbers from the same inputs.

View layout (:class:`~roadwork_ml.models.multiview.ViewSpec`): with flip TTA the V views are
``V/2`` base views followed by their horizontal flips. ``views`` = the std of P(roadwork) across
the base views (when there are >= 2) and the variance between the mean base-view and the mean
flipped-view P(roadwork) (when flip TTA is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from roadwork_ml.numerics import softmax
from roadwork_ml.policy.failure_features import TrainDistanceFeatures, failure_feature_blocks

__all__ = ["GateInputs", "gate_blocks", "view_probability_inputs"]


@dataclass
class GateInputs:
    """Per image: aggregated ``logits`` [N, C], the 7 uncertainty ``features`` [N, 7], mean-over-views
    ``embeddings`` [N, D], ``view_logits`` [N, V, C] and the decoded ``images`` uint8 [N, 3, H, W]
    (the last three may be None when the gate does not use them). ``quality`` [N, 3]: the
    image-quality block already computed (from the same decoded images) in place of ``images``,
    for callers that stream a split in chunks."""

    logits: Any
    features: Any
    embeddings: Any = None
    view_logits: Any = None
    images: Any = None
    quality: Any = None

    def __len__(self) -> int:
        return int(np.asarray(self.logits).shape[0])


def view_probability_inputs(view_logits: Any, flip: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(base-view P(roadwork) [N, V'] when V' >= 2 base views, else None; [N, 2] mean base vs mean
    flipped P(roadwork) when ``flip``, else None) from ``view_logits`` [N, V, C]."""
    p1 = softmax(np.asarray(view_logits, dtype=np.float64), axis=-1)[..., 1]
    n_base = p1.shape[1] // 2 if flip else p1.shape[1]
    if flip and (p1.shape[1] % 2 or n_base < 1):
        raise ValueError(f"flip TTA needs an even number of views, got {p1.shape[1]}")
    base = p1[:, :n_base] if n_base >= 2 else None
    tta = np.column_stack([p1[:, :n_base].mean(1), p1[:, n_base:].mean(1)]) if flip else None
    return base, tta


def _images_uint8(images: Any) -> np.ndarray:
    x = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)  # float in [0, 1]


def gate_blocks(
    inputs: GateInputs, distance: TrainDistanceFeatures | None, flip: bool, need: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """The feature blocks: ``max_prob`` [N, 1] (raw: softmax of the aggregated logits), ``softmax``
    [N, 7], ``distance`` [N, 4], ``views`` [N, k], ``quality`` [N, 3]. ``need=None``: every block
    whose inputs exist (the gate asset); otherwise exactly ``need``, and a block whose inputs are
    missing is an error (serving: the shipped gate must see what it was fitted on)."""
    want = set(need) if need is not None else {"max_prob", "softmax", "distance", "views", "quality"}
    probs = softmax(np.asarray(inputs.logits, dtype=np.float64), axis=1)
    base = tta = None
    if "views" in want and inputs.view_logits is not None:
        base, tta = view_probability_inputs(inputs.view_logits, flip)
    use_distance = "distance" in want and distance is not None and inputs.embeddings is not None
    blocks = failure_feature_blocks(
        inputs.features,
        probs.max(1),
        inputs.embeddings if use_distance else np.zeros((len(probs), 1)),
        probs.argmax(1),
        distance if use_distance else _NoDistance(),
        view_probs1=base,
        tta_probs1=tta,
        images=_images_uint8(inputs.images) if "quality" in want and inputs.images is not None else None,
    )
    if not use_distance:
        blocks.pop("distance")
    if "quality" in want and inputs.images is None and inputs.quality is not None:
        blocks["quality"] = np.asarray(inputs.quality, dtype=np.float64).reshape(len(probs), 3)
    if need is not None:
        missing = sorted(want - set(blocks))
        if missing:
            raise ValueError(
                f"the gate needs the feature blocks {missing}: pass the embeddings / view logits / images they come from"
            )
    return {k: v for k, v in blocks.items() if k in want}


class _NoDistance:
    """Stands in for the distance model when no block needs it (its output is dropped)."""

    def transform(self, embeddings: Any, predicted: Any) -> np.ndarray:
        return np.zeros((len(np.asarray(predicted)), 0))
