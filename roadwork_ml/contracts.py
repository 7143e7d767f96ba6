"""Contracts that must hold in code, not in a reviewer's head.

* The leakage contract: which split may feed which purpose. Functions that fit or
  evaluate call :func:`require_split` with the split tag that travels with their data.
* Artifact validators: logits tables, checkpoints, JSON policies.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import numpy as np


class LeakageError(RuntimeError):
    """Data from a split was used for a purpose that split must never serve."""


class ContractError(ValueError):
    """An artifact does not have the shape, keys or values its contract promises."""


class Split(str, Enum):
    TRAIN = "train"
    VAL_SELECT = "val_select"
    VAL_CALIB = "val_calib"
    VAL_TEST = "val_test"


class Purpose(str, Enum):
    FIT_MODEL = "fit_model"  # gradient steps on the backbone / head / aggregator
    MODEL_SELECTION = "model_selection"  # early stopping, hyper-parameter or aggregator choice
    FIT_POLICY = "fit_policy"  # calibrators, thresholds, gate, conformal
    FINAL_EVALUATION = "final_evaluation"  # the report; nothing is tuned on it
    MONITOR_REFERENCE = "monitor_reference"  # reference distributions for drift
    SELF_SUPERVISED = "self_supervised"  # label-free pre-training (ExPLoRA) on images only
    # a rolling drift reference from accepted production traffic only (no dataset split may serve it;
    # its own leakage rules: roadwork_ml.monitoring.rolling_reference)
    MONITOR_ROLLING_REFERENCE = "monitor_rolling_reference"


# Logged production images carry no split: they are no split's members, so they may feed
# only label-free purposes. This tag stands for them wherever a split tag is expected.
PRODUCTION_TRAFFIC = "production_traffic"


ALLOWED_SPLITS: dict[Purpose, frozenset[Split]] = {
    Purpose.FIT_MODEL: frozenset({Split.TRAIN}),
    Purpose.MODEL_SELECTION: frozenset({Split.VAL_SELECT}),
    Purpose.FIT_POLICY: frozenset({Split.VAL_CALIB}),
    Purpose.FINAL_EVALUATION: frozenset({Split.VAL_TEST}),
    Purpose.MONITOR_REFERENCE: frozenset({Split.VAL_CALIB}),
    # TRAIN images with their labels ignored; never a validation split, whose images would
    # then have shaped the backbone that is selected, calibrated and evaluated on them
    Purpose.SELF_SUPERVISED: frozenset({Split.TRAIN}),
    Purpose.MONITOR_ROLLING_REFERENCE: frozenset(),
}
TRAFFIC_PURPOSES: frozenset[Purpose] = frozenset({Purpose.SELF_SUPERVISED})


def require_split(purpose: Purpose | str, split: Split | str | Iterable[Split | str]) -> None:
    """Raise :class:`LeakageError` unless every given split may serve ``purpose``.
    ``PRODUCTION_TRAFFIC`` (logged serving images) may serve only label-free purposes."""
    purpose = Purpose(purpose)
    splits = [split] if isinstance(split, (str, Split)) else list(split)
    if not splits:
        raise LeakageError(f"{purpose.value}: data carries no split tag; refusing to guess")
    allowed = ALLOWED_SPLITS[purpose]
    for s in splits:
        if (s.value if isinstance(s, Split) else s) == PRODUCTION_TRAFFIC:
            if purpose not in TRAFFIC_PURPOSES:
                raise LeakageError(
                    f"{purpose.value} may not use unlabeled production traffic (only {sorted(p.value for p in TRAFFIC_PURPOSES)} may)"
                )
            continue
        s = Split(s)
        if s not in allowed:
            names = ", ".join(sorted(a.value for a in allowed))
            raise LeakageError(
                f"{purpose.value} may only use [{names}], got {s.value}: this would leak {s.value} into {purpose.value}"
            )


def assert_disjoint(assignments: dict[str, Iterable[str]], what: str = "record") -> None:
    """Raise :class:`LeakageError` if any ``what`` id appears in two splits."""
    seen: dict[str, str] = {}
    for split, ids in assignments.items():
        for i in ids:
            if i in seen and seen[i] != split:
                raise LeakageError(f"{what} {i!r} is in both {seen[i]} and {split}")
            seen[i] = split


# --- artifact validators -----------------------------------------------------------------


def validate_logits(logits: np.ndarray, labels: np.ndarray | None = None, num_classes: int = 2) -> None:
    """Logits are ``[N, num_classes]`` finite floats; labels ``[N]`` ints in ``[0, num_classes)``."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ContractError(f"logits must be [N, {num_classes}], got {list(logits.shape)}")
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits)).any(axis=1).sum())
        raise ContractError(f"logits contain non-finite values in {bad} rows")
    if labels is not None:
        if labels.shape != (logits.shape[0],):
            raise ContractError(f"labels must be [{logits.shape[0]}], got {list(labels.shape)}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ContractError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")


def validate_state_dict(state: dict, required_prefixes: Iterable[str] = ("backbone.", "head.")) -> None:
    """A classifier checkpoint holds backbone and head tensors, all finite."""
    for prefix in required_prefixes:
        if not any(k.startswith(prefix) for k in state):
            raise ContractError(f"checkpoint has no tensors under {prefix!r}")
    for key, tensor in state.items():
        arr = tensor.float().numpy() if hasattr(tensor, "numpy") else np.asarray(tensor)
        if not np.isfinite(arr).all():
            raise ContractError(f"checkpoint tensor {key!r} holds non-finite values")


def validate_policy_json(obj: dict, kind: str, required: Iterable[str]) -> None:
    """A serialized policy names its kind and carries the keys its loader needs."""
    if obj.get("kind") != kind:
        raise ContractError(f"expected a {kind!r} policy, got kind={obj.get('kind')!r}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ContractError(f"{kind} policy is missing {missing}")
