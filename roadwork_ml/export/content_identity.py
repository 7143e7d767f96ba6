"""A model's content identity, and the promotion rule that keeps a rollback in place.

Content identity (:func:`content_id`): sha256 over what decides the served answers, and
nothing else — the weights (every tensor of ``model.safetensors``: name, dtype, shape and
raw bytes, in sorted name order, so safetensors header metadata or tensor order do not
matter), the calibrator (``calibrator.json``) and the decision policy (``policy.json`` plus
``gate.json`` / ``gate.safetensors`` when present), the JSON files canonicalised (sorted keys,
compact separators). Registry version, creation time, git commit and the manifest are not
part of it: re-bundling the same weights gives the same identity.

Promotion rule (:func:`promotion_verdict`), a pure function of the champion history:

* a candidate whose content equals a version that was *rolled back* is refused, unless the run
  forces it with a stated reason (then it is allowed, marked ``forced``, for the audit log);
* a candidate equal to the current champion's content is refused as a no-op (unless forced);
* a forced promotion of a rolled-back content lifts that block (a human decided), until the
  next rollback of it.

So after retrain -> rollback, a routine ``bundle+`` of the same weights stays a challenger
until a retrain on new data produces different content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

__all__ = [
    "ContentIdentity",
    "PromotionEvent",
    "PromotionVerdict",
    "content_id",
    "content_id_from_parts",
    "promotion_verdict",
]

_WEIGHTS, _CALIBRATOR, _POLICY, _GATE_JSON, _GATE_WEIGHTS = (
    "model.safetensors",
    "calibrator.json",
    "policy.json",
    "gate.json",
    "gate.safetensors",
)


@dataclass(frozen=True)
class ContentIdentity:
    """``sha256``: the content identity (hex); ``parts``: sha256 of each component, for the audit log."""

    sha256: str
    parts: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tensor_digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _json_digest(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    ).hexdigest()


def content_id_from_parts(
    weights: dict[str, np.ndarray],
    calibrator: Any,
    policy: Any,
    gate: Any = None,
    gate_weights: dict[str, np.ndarray] | None = None,
) -> ContentIdentity:
    """Identity from in-memory parts: ``weights`` name -> array, JSON-able calibrator / policy / gate."""
    parts = {"weights": _tensor_digest(weights), "calibrator": _json_digest(calibrator), "policy": _json_digest(policy)}
    if gate is not None:
        parts["gate"] = _json_digest(gate)
    if gate_weights is not None:
        parts["gate_weights"] = _tensor_digest(gate_weights)
    return ContentIdentity(sha256=_json_digest(parts), parts=parts)


def _load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (TypeError, ValueError):  # bfloat16 and friends have no numpy dtype: hash torch's bytes
        from safetensors.torch import load_file as load_torch

        return {
            k: v.contiguous().view(-1).view(__import__("torch").uint8).numpy() for k, v in load_torch(str(path)).items()
        }


def content_id(bundle_dir: str | Path) -> ContentIdentity:
    """Identity of a bundle directory (see module notes); raises FileNotFoundError naming a missing part."""
    d = Path(bundle_dir)
    for name in (_WEIGHTS, _CALIBRATOR, _POLICY):
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d} has no {name}: not a model bundle")
    read = lambda name: json.loads((d / name).read_text())
    return content_id_from_parts(
        _load_tensors(d / _WEIGHTS),
        read(_CALIBRATOR),
        read(_POLICY),
        gate=read(_GATE_JSON) if (d / _GATE_JSON).is_file() else None,
        gate_weights=_load_tensors(d / _GATE_WEIGHTS) if (d / _GATE_WEIGHTS).is_file() else None,
    )


@dataclass(frozen=True)
class PromotionEvent:
    """One change of champion: ``kind`` promote / rollback / forced_promote; ``content_id`` of the new
    champion; for a rollback, ``from_content_id`` is the content that was rolled back."""

    kind: Literal["promote", "rollback", "forced_promote"]
    version: str
    content_id: str
    from_version: str | None = None
    from_content_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PromotionVerdict:
    """``allowed``: may become champion; ``forced``: only because the run forced it; ``reason``: for the UI and audit log;
    ``blocked_by``: the rolled-back version whose content the candidate repeats (None if none);
    ``repeats``: what the candidate's content equals — ``"rolled_back"``, ``"champion"`` or ``"nothing"``."""

    allowed: bool
    forced: bool
    reason: str
    blocked_by: str | None = None
    repeats: Literal["nothing", "rolled_back", "champion"] = "nothing"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state(history: Sequence[PromotionEvent]) -> tuple[dict[str, str], str | None, str | None]:
    """(rolled-back content -> version, current champion content, current champion version)."""
    blocked: dict[str, str] = {}
    champion = champion_version = None
    for e in history:
        if e.kind == "rollback":
            if e.from_content_id is None:
                raise ValueError(f"rollback to {e.version} does not say which content it rolled back")
            blocked[e.from_content_id] = e.from_version or "?"
        elif e.kind == "forced_promote":
            blocked.pop(e.content_id, None)
        elif e.kind != "promote":
            raise ValueError(f"unknown promotion event kind {e.kind!r}")
        champion, champion_version = e.content_id, e.version
    return blocked, champion, champion_version


def promotion_verdict(
    candidate_content_id: str, history: Sequence[PromotionEvent], force: bool = False, force_reason: str | None = None
) -> PromotionVerdict:
    """May a bundle with ``candidate_content_id`` become champion, given the ordered champion ``history``?

    ``force`` requires a non-empty ``force_reason`` (ValueError otherwise): the override is audited.
    """
    if force and not (force_reason and force_reason.strip()):
        raise ValueError("a forced promotion needs a reason (it goes to the audit log)")
    blocked, champion, champion_version = _state(history)
    short = candidate_content_id[:12]
    if candidate_content_id in blocked:
        v = blocked[candidate_content_id]
        if force:
            return PromotionVerdict(
                True,
                True,
                f"forced: content {short} equals rolled-back version {v}; reason: {force_reason}",
                v,
                "rolled_back",
            )
        return PromotionVerdict(
            False,
            False,
            f"content {short} equals version {v}, which was rolled back; stays challenger until a retrain "
            "produces different weights, calibrator or policy (or a run forces it with a reason)",
            v,
            "rolled_back",
        )
    if candidate_content_id == champion:
        if force:
            return PromotionVerdict(
                True,
                True,
                f"forced: content {short} is already the champion's ({champion_version}); reason: {force_reason}",
                repeats="champion",
            )
        return PromotionVerdict(
            False,
            False,
            f"content {short} is already the champion's ({champion_version}): nothing to promote",
            repeats="champion",
        )
    return PromotionVerdict(True, False, f"content {short} is new (not a rolled-back version, not the champion)")
