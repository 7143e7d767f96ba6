"""Policy exclusivity: a deployed decision uses exactly one policy.

The platform fits three decision policies on ``VAL_CALIB`` (see ``DESIGN.md``):

* ``thresholds`` -- the phase-2 exit thresholds on the calibrated probability;
* ``gate``       -- the phase-3 failure-predictor gate;
* ``scrc``       -- the phase-5 selective conformal risk control (two thresholds,
  :class:`roadwork_ml.policy.conformal.SCRC`).

They answer the same question ("do we accept the model's class for this image, or
defer?") with different guarantees, and stacking them silently changes what each one
guarantees (an SCRC bound certified on every calibration image says nothing about the
images a gate has already filtered). So a deployed configuration names exactly one of
them, and :func:`validate_active_policy` refuses anything else with a
:class:`PolicyConfigError` that says what was active and how to fix it.

How a value counts as *active*:

* ``True`` -> active; ``False`` / ``None`` -> inactive;
* a ``dict`` -> active, unless it holds ``"enabled": False`` (``"enabled"`` must then be
  a bool). The dict is the policy's parameters and travels in :class:`ActivePolicy`.

Anything else (a string, a number, an unknown policy name) is a configuration error,
not a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class PolicyConfigError(ValueError):
    """The deployed policy configuration does not name exactly one valid policy."""


class PolicyKind(str, Enum):
    THRESHOLDS = "thresholds"
    GATE = "gate"
    SCRC = "scrc"


_KINDS = tuple(k.value for k in PolicyKind)


def _is_active(name: str, value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        enabled = value.get("enabled", True)
        if not isinstance(enabled, bool):
            raise PolicyConfigError(
                f"policy {name!r}: 'enabled' must be true or false, got {enabled!r}; fix the deployed policy config"
            )
        return enabled
    raise PolicyConfigError(
        f"policy {name!r}: expected true/false, null or a parameter mapping, got {type(value).__name__} {value!r}"
    )


def validate_active_policy(policies: Mapping[str, bool | dict | None]) -> str:
    """Return the name of the one active policy; raise :class:`PolicyConfigError` otherwise.

    ``policies`` maps policy names (``thresholds``, ``gate``, ``scrc``) to ``True`` /
    ``False`` / ``None`` or a parameter dict (see the module docstring). Zero active
    policies, several active ones, an unknown name or a value of the wrong type raise.
    """
    if not isinstance(policies, Mapping):
        raise PolicyConfigError(
            f"policies must be a mapping of {list(_KINDS)} to bool/dict/None, got {type(policies).__name__}"
        )
    unknown = sorted(str(k) for k in policies if k not in _KINDS)
    if unknown:
        raise PolicyConfigError(f"unknown policy name(s) {unknown}; expected a subset of {list(_KINDS)}")
    active = [name for name in _KINDS if name in policies and _is_active(name, policies[name])]
    if not active:
        raise PolicyConfigError(
            f"no decision policy is active (given: {dict(policies)!r}); enable exactly one of {list(_KINDS)}"
        )
    if len(active) > 1:
        raise PolicyConfigError(
            f"{len(active)} decision policies are active ({active}); a deployed decision uses exactly one of "
            f"{list(_KINDS)}: disable all but one"
        )
    return active[0]


@dataclass(frozen=True)
class ActivePolicy:
    """The one policy a deployment uses, with its parameters (empty when given as ``True``)."""

    kind: PolicyKind
    params: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, policies: Mapping[str, bool | dict | None]) -> ActivePolicy:
        name = validate_active_policy(policies)
        value = policies[name]
        params = {k: v for k, v in value.items() if k != "enabled"} if isinstance(value, Mapping) else {}
        return cls(kind=PolicyKind(name), params=params)

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ActivePolicy:
        try:
            kind = PolicyKind(obj["kind"])
        except (KeyError, ValueError) as exc:
            raise PolicyConfigError(f"active policy needs 'kind' in {list(_KINDS)}, got {obj.get('kind')!r}") from exc
        params = obj.get("params") or {}
        if not isinstance(params, Mapping):
            raise PolicyConfigError(f"active policy 'params' must be a mapping, got {type(params).__name__}")
        return cls(kind=kind, params=dict(params))


__all__ = ["ActivePolicy", "PolicyConfigError", "PolicyKind", "validate_active_policy"]
