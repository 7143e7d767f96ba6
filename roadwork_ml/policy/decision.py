"""The deployed decision path, from model outputs to what a caller receives: one code path
shared by the bundle predictor, the evaluation report and the drift monitor.

Inputs per image: aggregated ``logits`` [N, C] (log of aggregated probabilities), the 7
uncertainty ``features`` [N, 7] and, for a feature gate that reads them, mean-over-views
``embeddings`` [N, D], ``view_logits`` [N, V, C] and the decoded ``images`` uint8 [N, 3, H, W]
(or their ``image_quality`` [N, 3], computed in chunks; :class:`~roadwork_ml.policy.gate.GateInputs`). Outputs:

* ``calibrated`` [N, C] — the calibrator's probabilities;
* ``streetvision`` [N] — P(roadwork) with the MCC-optimal cut folded onto 0.5 (finite, in [0, 1]);
* ``label`` [N] — 1 where ``streetvision > 0.5``;
* ``accepted`` [N] — the active policy's verdict (thresholds: the sample exits; gate: gate
  confidence ≥ its cut; scrc: both SCRC thresholds pass); ``decision`` is "roadwork",
  "no_roadwork", or "defer" where not accepted;
* ``prediction_set`` [N, C] — split-conformal (LAC) set on the calibrated probabilities;
* ``gate_confidence`` [N] — 1 − P(wrong) when the policy uses the gate, else NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadwork_ml.numerics import softmax
from roadwork_ml.policy.calibration import Calibrator, calibrator_from_dict
from roadwork_ml.policy.conformal import conformal_from_dict
from roadwork_ml.policy.gate import FEATURE_GATE_KIND, FailureGate, FeatureGate, GateInputs, gate_kind
from roadwork_ml.policy.selection import PolicyKind
from roadwork_ml.policy.thresholds import ExitThresholds, fold_probability

DECISIONS = ("no_roadwork", "roadwork", "defer")
CALIBRATOR_FILE = "calibrator.json"
POLICY_FILE = "policy.json"
SETS_FILE = "prediction_sets.json"
FOLD_FILE = "streetvision.json"


@dataclass
class Decisions:
    calibrated: np.ndarray
    streetvision: np.ndarray
    label: np.ndarray
    accepted: np.ndarray
    decision: np.ndarray
    prediction_set: np.ndarray
    gate_confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


class DecisionPolicy:
    """Calibrator + the one active policy + the StreetVision fold + the conformal set method."""

    def __init__(
        self,
        calibrator: Calibrator,
        kind: str,
        params: dict,
        decision_cut: float,
        set_predictor,
        gate: FailureGate | FeatureGate | None = None,
    ):
        self.kind = PolicyKind(kind).value
        if self.kind in ("gate", "scrc") and gate is None:
            raise ValueError(f"policy {self.kind!r} needs the failure gate")
        self.calibrator, self.params, self.decision_cut, self.set_predictor, self.gate = (
            calibrator,
            params,
            float(decision_cut),
            set_predictor,
            gate,
        )
        self._thresholds = ExitThresholds.from_dict(params) if self.kind == "thresholds" else None
        self._scrc = conformal_from_dict(params) if self.kind == "scrc" else None
        strict = params.get("escalated") if self.kind == "scrc" and isinstance(params, dict) else None
        self._scrc_escalated = conformal_from_dict(strict) if strict else None
        # set while monitoring has escalated (roadwork_assets.escalation): SCRC at its stricter
        # risk; a bundle without the stricter fit then defers everything (the safe side)
        self.escalated = False

    @property
    def gate_needs(self) -> tuple[str, ...]:
        """Inputs beyond logits / features the gate reads (``embeddings``, ``view_logits``, ``images``)."""
        return self.gate.needs if isinstance(self.gate, FeatureGate) else ()

    def decide(
        self,
        logits: np.ndarray,
        features: np.ndarray,
        *,
        embeddings: np.ndarray | None = None,
        view_logits: np.ndarray | None = None,
        images=None,
        image_quality: np.ndarray | None = None,
    ) -> Decisions:
        logits = np.asarray(logits, dtype=np.float64)
        raw = softmax(logits, axis=1)
        cal = self.calibrator.predict_proba(logits)
        sv = fold_probability(raw[:, 1], self.decision_cut)
        label = (sv > 0.5).astype(np.int64)
        if isinstance(self.gate, FeatureGate):
            inputs = GateInputs(logits, features, embeddings, view_logits, images, image_quality)
            gate_conf = self.gate.confidence(inputs, cal)
        elif self.gate is not None:
            gate_conf = self.gate.confidence(features)
        else:
            gate_conf = np.full(len(raw), np.nan)
        if self.kind == "thresholds":
            accepted = self._thresholds.exits(raw[:, 1])
        elif self.kind == "gate":
            accepted = gate_conf >= float(self.params["cut"])
        else:
            accepted = self._scrc.accept(cal, gate_conf)
            if self.escalated:
                accepted = (
                    self._scrc_escalated.accept(cal, gate_conf)
                    if self._scrc_escalated is not None
                    else np.zeros(len(cal), dtype=bool)
                )
        decision = np.where(accepted, np.where(label == 1, "roadwork", "no_roadwork"), "defer")
        sets = self.set_predictor.predict_sets(cal)
        return Decisions(cal, sv, label, np.asarray(accepted, bool), decision, sets, gate_conf)

    # -- persistence: plain JSON (+ the gate's safetensors); nothing is unpickled -----------
    def save(self, directory: str | Path) -> list[str]:
        """Write the policy files into ``directory``; returns the names written."""
        from roadwork_ml.artifacts import atomic_write_json

        d = Path(directory)
        atomic_write_json(d / CALIBRATOR_FILE, self.calibrator.to_dict())
        atomic_write_json(d / POLICY_FILE, {"kind": self.kind, "params": self.params})
        atomic_write_json(
            d / FOLD_FILE,
            {
                "decision_cut": self.decision_cut,
                "meaning": "StreetVision output = P(roadwork) folded so this cut maps to 0.5",
            },
        )
        atomic_write_json(d / SETS_FILE, self.set_predictor.to_dict())
        names = [CALIBRATOR_FILE, POLICY_FILE, FOLD_FILE, SETS_FILE]
        if self.gate is not None:
            obj = self.gate.save(d)
            names += ["gate.json", obj["weights_file"]]
        return names

    @classmethod
    def load(cls, directory: str | Path) -> DecisionPolicy:
        d = Path(directory)
        policy = json.loads((d / POLICY_FILE).read_text())
        gate = load_gate(d) if policy["kind"] in ("gate", "scrc") else None
        return cls(
            calibrator_from_dict(json.loads((d / CALIBRATOR_FILE).read_text())),
            policy["kind"],
            policy["params"],
            json.loads((d / FOLD_FILE).read_text())["decision_cut"],
            conformal_from_dict(json.loads((d / SETS_FILE).read_text())),
            gate,
        )


def load_gate(directory: str | Path) -> FailureGate | FeatureGate:
    """The gate in ``directory``: a :class:`FeatureGate` or, for older artifacts, the MLP :class:`FailureGate`."""
    return FeatureGate.load(directory) if gate_kind(directory) == FEATURE_GATE_KIND else FailureGate.load(directory)
