"""The shipped failure gate: a logistic regression on the chosen feature set, or max-prob.

:class:`FeatureGate` is what the ``gate`` asset fits and the bundle serves. Mode
``"logistic"``: ``P(wrong) = sigmoid(((x - mean) / scale) @ coef + intercept)`` over the chosen
blocks (:func:`~roadwork_ml.policy.gate.inputs.gate_blocks`), ``confidence = 1 - P(wrong)``.
Mode ``"max_prob_fallback"``: the failure predictor did not beat max-prob, so
``confidence = calibrated max prob``.

Files (no pickle): ``gate.json`` (mode, chosen set and blocks, flip layout, the scaler and
coefficients as JSON numbers, the selection record, the sha256 of the arrays file) and
``gate.safetensors`` (the TRAIN-distance model's arrays when the set uses them, else a
one-element placeholder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from roadwork_ml.artifacts import IntegrityError, atomic_path, atomic_write_json, sha256_file
from roadwork_ml.contracts import ContractError
from roadwork_ml.policy.failure_features import TrainDistanceFeatures
from roadwork_ml.policy.gate.inputs import GateInputs, gate_blocks

FEATURE_GATE_KIND = "feature_gate"
MODE_LOGISTIC = "logistic"
MODE_FALLBACK = "max_prob_fallback"
GATE_JSON_FILE, GATE_WEIGHTS_FILE = "gate.json", "gate.safetensors"
FORMAT_VERSION = 1
_BLOCK_INPUTS = {"distance": "embeddings", "views": "view_logits", "quality": "images"}


class FeatureGate:
    """See the module notes. Build with :meth:`fit_logistic` or :meth:`max_prob_fallback`."""

    kind = FEATURE_GATE_KIND

    def __init__(
        self,
        mode: str,
        flip: bool,
        chosen: str | None = None,
        blocks: tuple[str, ...] = (),
        lr: dict | None = None,
        distance: TrainDistanceFeatures | None = None,
        record: dict | None = None,
    ):
        if mode not in (MODE_LOGISTIC, MODE_FALLBACK):
            raise ContractError(f"feature gate: unknown mode {mode!r}")
        if mode == MODE_LOGISTIC and (not blocks or lr is None):
            raise ContractError("feature gate: a logistic gate needs its blocks and coefficients")
        if "distance" in blocks and distance is None:
            raise ContractError("feature gate: the chosen set uses TRAIN distances but no distance model was given")
        self.mode, self.flip, self.chosen, self.blocks = mode, bool(flip), chosen, tuple(blocks)
        self.lr, self.distance, self.record = lr, distance, dict(record or {})

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def fit_logistic(
        cls,
        blocks: dict[str, np.ndarray],
        chosen: str,
        block_names: tuple[str, ...],
        failure: Any,
        flip: bool,
        distance: TrainDistanceFeatures | None,
        record: dict | None = None,
    ) -> FeatureGate:
        """Standardise + logistic regression (C = 1, as in the cross-fitting) on all rows of the chosen set."""
        from roadwork_ml.policy.failure_features import _model

        x = _stack(blocks, block_names)
        pipe = _model().fit(x, np.asarray(failure, dtype=np.int64))
        scaler, reg = pipe[0], pipe[-1]
        lr = {
            "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(),
            "coef": reg.coef_[0].tolist(),
            "intercept": float(reg.intercept_[0]),
        }
        return cls(
            MODE_LOGISTIC, flip, chosen, block_names, lr, distance if "distance" in block_names else None, record
        )

    @classmethod
    def max_prob_fallback(cls, flip: bool, record: dict | None = None) -> FeatureGate:
        return cls(MODE_FALLBACK, flip, record=record)

    # --- prediction --------------------------------------------------------------------------
    @property
    def needs(self) -> tuple[str, ...]:
        """The inputs beyond logits / features this gate reads: embeddings, view_logits, images."""
        return tuple(_BLOCK_INPUTS[b] for b in self.blocks if b in _BLOCK_INPUTS)

    def score_matrix(self, x: Any) -> np.ndarray:
        """``P(wrong)`` [N] for the stacked chosen-set features ``x`` [N, k]."""
        lr = self.lr
        z = (np.asarray(x, dtype=np.float64) - np.asarray(lr["mean"])) / np.asarray(lr["scale"])
        logit = z @ np.asarray(lr["coef"]) + lr["intercept"]
        return 1.0 / (1.0 + np.exp(-logit))

    def confidence(self, inputs: GateInputs, calibrated: Any) -> np.ndarray:
        """``1 - P(wrong)`` [N]; max-prob fallback: the calibrated max prob (``calibrated`` [N, C])."""
        if self.mode == MODE_FALLBACK:
            return np.asarray(calibrated, dtype=np.float64).max(axis=1)
        blocks = gate_blocks(inputs, self.distance, self.flip, need=self.blocks)
        return 1.0 - self.score_matrix(_stack(blocks, self.blocks))

    # --- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> dict:
        """Write ``gate.safetensors`` then ``gate.json`` (atomically); return the JSON object."""
        from safetensors.numpy import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = self.distance.to_arrays() if self.distance is not None else {"placeholder": np.zeros(1)}
        with atomic_path(d / GATE_WEIGHTS_FILE) as tmp:
            save_file(arrays, str(tmp), metadata={"kind": FEATURE_GATE_KIND})
        obj = {
            "kind": FEATURE_GATE_KIND,
            "format_version": FORMAT_VERSION,
            "mode": self.mode,
            "flip": self.flip,
            "chosen": self.chosen,
            "blocks": list(self.blocks),
            "logistic": self.lr,
            "has_distance": self.distance is not None,
            "score_convention": {
                "P(wrong)": "sigmoid(((x - mean) / scale) @ coef + intercept) over the chosen blocks",
                "confidence": "1 - P(wrong); max_prob_fallback: the calibrated max prob. SCRC accepts when confidence >= lambda1",
            },
            "record": self.record,
            "weights_file": GATE_WEIGHTS_FILE,
            "weights_sha256": sha256_file(d / GATE_WEIGHTS_FILE),
        }
        atomic_write_json(d / GATE_JSON_FILE, obj)
        return obj

    @classmethod
    def load(cls, directory: str | Path) -> FeatureGate:
        from safetensors.numpy import load_file

        d = Path(directory)
        obj = json.loads((d / GATE_JSON_FILE).read_text())
        if obj.get("kind") != FEATURE_GATE_KIND:
            raise ContractError(f"{d / GATE_JSON_FILE} is not a feature gate (kind {obj.get('kind')!r})")
        digest = sha256_file(d / GATE_WEIGHTS_FILE)
        if digest != obj.get("weights_sha256"):
            raise IntegrityError(
                f"{d / GATE_WEIGHTS_FILE}: sha256 {digest[:12]}… does not match {GATE_JSON_FILE}; re-run the gate asset"
            )
        distance = (
            TrainDistanceFeatures.from_arrays(load_file(str(d / GATE_WEIGHTS_FILE))) if obj["has_distance"] else None
        )
        return cls(
            obj["mode"], obj["flip"], obj["chosen"], tuple(obj["blocks"]), obj["logistic"], distance, obj["record"]
        )


def gate_kind(directory: str | Path) -> str | None:
    """The ``kind`` in a gate directory's gate.json (None when absent)."""
    p = Path(directory) / GATE_JSON_FILE
    return json.loads(p.read_text()).get("kind") if p.is_file() else None


def describe_gate(directory: str | Path) -> str:
    """One plain sentence on the gate in a bundle or gate artifact: what ships and why (from gate.json)."""
    p = Path(directory) / GATE_JSON_FILE
    if not p.is_file():
        return "no gate: the active policy does not use it"
    obj = json.loads(p.read_text())
    if obj.get("kind") != FEATURE_GATE_KIND:
        return "gate: the failure-predictor MLP on the 7 softmax features (written before the feature gate)"
    return str((obj.get("record") or {}).get("headline", f"gate: {obj.get('mode')}"))


def _stack(blocks: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    n = len(next(iter(blocks.values())))
    return np.column_stack([np.asarray(blocks[b], dtype=np.float64).reshape(n, -1) for b in names])
