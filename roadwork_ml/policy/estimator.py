"""The one estimator convention of the policy layer (calibrators, conformal methods, the gate, thresholds).

scikit-learn style:

* the constructor stores hyper-parameters only, one attribute per argument of the same name
  (:meth:`PolicyEstimator.get_params` reads them back through the signature);
* ``fit(..., *, split)`` learns; ``split`` is a required keyword, checked against the leakage
  contract (:data:`roadwork_ml.contracts.ALLOWED_SPLITS`) before any data is touched, so a
  fit on the wrong split, or on data with no split tag, raises :class:`LeakageError`;
* everything learned lives in public attributes whose names end in ``_`` and that do not
  exist before ``fit``;
* one generic JSON round trip: :meth:`to_dict` writes ``{"kind", "format_version", "params",
  "fitted"}`` and :meth:`from_dict` rebuilds the estimator from it (constructor with
  ``params``, then each fitted attribute); :func:`estimator_from_dict` dispatches on ``kind``
  over every registered estimator. No pickle.

JSON encoding of values: ``None``/bool/int/str as themselves; finite floats as JSON numbers
(Python writes the shortest repr, which reads back to the same double); non-finite floats as
``{"__float__": "inf" | "-inf" | "nan"}`` (strict JSON has no Infinity); numpy arrays as
``{"__ndarray__": nested lists, "dtype": ...}`` (float32/float64 values round-trip exactly);
lists/tuples as lists; dicts need string keys. :meth:`to_dict` can put arrays in a side table
instead (``arrays={}``), which :class:`~roadwork_ml.policy.gate.FailureGate` uses to store its
weights as safetensors next to the JSON.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from roadwork_ml.contracts import ContractError, LeakageError, Purpose, Split, require_split

__all__ = [
    "PolicyEstimator",
    "NotFittedError",
    "ESTIMATORS",
    "all_estimators",
    "estimator_from_dict",
    "encode_value",
    "decode_value",
]

E = TypeVar("E", bound="PolicyEstimator")

ESTIMATORS: dict[str, type[PolicyEstimator]] = {}

_RESERVED = ("kind", "format_version", "params", "fitted")


class NotFittedError(RuntimeError):
    """An estimator was used (predict, to_dict) before ``fit`` or ``from_dict``."""


class PolicyEstimator:
    """Base class of every policy estimator; subclasses set ``kind`` and implement ``fit``."""

    kind: ClassVar[str] = ""
    format_version: ClassVar[int] = 2
    fit_purpose: ClassVar[Purpose] = Purpose.FIT_POLICY

    def __init_subclass__(cls, register: bool = True, **kw: Any) -> None:
        """A subclass with its own ``kind`` joins :data:`ESTIMATORS` (``register=False``: a test double)."""
        super().__init_subclass__(**kw)
        if register and cls.__dict__.get("kind"):
            if cls.kind in ESTIMATORS and ESTIMATORS[cls.kind] is not cls:
                raise TypeError(
                    f"estimator kind {cls.kind!r} is registered twice ({ESTIMATORS[cls.kind].__name__}, {cls.__name__})"
                )
            ESTIMATORS[cls.kind] = cls

    # --- hyper-parameters ---------------------------------------------------------------
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """Constructor arguments (the hyper-parameters), in signature order."""
        sig = inspect.signature(cls.__init__)
        return tuple(
            n
            for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        )

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.param_names()}

    # --- fitted state -------------------------------------------------------------------
    def fitted_attributes(self) -> dict[str, Any]:
        """Every learned attribute (public, name ending in ``_``), in assignment order."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted_attributes())

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(..., split='val_calib') or from_dict() first"
            )

    def check_split(self, split: Split | str | Iterable[Split | str] | None) -> None:
        """Raise :class:`LeakageError` unless ``split`` may serve :attr:`fit_purpose` (None is refused)."""
        if split is None:
            raise LeakageError(
                f"{type(self).__name__}.fit: split is required (the leakage contract allows "
                f"{sorted(s.value for s in _allowed(self.fit_purpose))})"
            )
        require_split(self.fit_purpose, split)

    # --- JSON ---------------------------------------------------------------------------
    def to_dict(self, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """JSON-safe ``{"kind", "format_version", "params", "fitted"}``.

        ``arrays``: when given, numpy arrays go into this dict (keyed by their path, e.g.
        ``"fitted.weights_.net.0.weight"``) and the JSON holds ``{"__array__": key}``.
        """
        self.check_fitted()
        return {
            "kind": self.kind,
            "format_version": self.format_version,
            "params": {k: encode_value(v, arrays, f"params.{k}") for k, v in self.get_params().items()},
            "fitted": {k: encode_value(v, arrays, f"fitted.{k}") for k, v in self.fitted_attributes().items()},
        }

    @classmethod
    def from_dict(cls: type[E], d: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> E:
        """Rebuild from :meth:`to_dict`'s output (extra top-level keys are annotations and ignored)."""
        if not isinstance(d, Mapping):
            raise ContractError(f"{cls.__name__}.from_dict: expected a JSON object, got {type(d).__name__}")
        if d.get("kind") != cls.kind:
            raise ContractError(f"expected a {cls.kind!r} estimator, got kind={d.get('kind')!r}")
        if d.get("format_version") != cls.format_version:
            raise ContractError(
                f"{cls.kind}: format_version {d.get('format_version')!r} is not supported "
                f"(expected {cls.format_version}); re-fit and re-save it"
            )
        params, fitted = d.get("params"), d.get("fitted")
        if not isinstance(params, Mapping) or not isinstance(fitted, Mapping):
            raise ContractError(f"{cls.kind}: 'params' and 'fitted' must be JSON objects")
        names = cls.param_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ContractError(f"{cls.kind}: unknown hyper-parameters {unknown}; known: {list(names)}")
        obj = cls(**{k: decode_value(v, arrays) for k, v in params.items()})
        if not fitted:
            raise ContractError(f"{cls.kind}: 'fitted' is empty; only fitted estimators are serialized")
        for k, v in fitted.items():
            if not (isinstance(k, str) and k.endswith("_") and not k.startswith("_")):
                raise ContractError(f"{cls.kind}: fitted attribute names end in '_', got {k!r}")
            setattr(obj, k, decode_value(v, arrays))
        obj._restored()
        return obj

    def _restored(self) -> None:
        """Hook after :meth:`from_dict` set the fitted attributes (rebuild caches, check shapes)."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params}){'' if self.is_fitted else ' [unfitted]'}"


def _allowed(purpose: Purpose) -> frozenset[Split]:
    from roadwork_ml.contracts import ALLOWED_SPLITS

    return ALLOWED_SPLITS[purpose]


def all_estimators() -> dict[str, type[PolicyEstimator]]:
    """kind → class of every policy estimator (imports the modules that define them)."""
    import roadwork_ml.policy.calibration  # noqa: F401  (defining a subclass registers it)
    import roadwork_ml.policy.conformal  # noqa: F401
    import roadwork_ml.policy.gate  # noqa: F401
    import roadwork_ml.policy.thresholds  # noqa: F401

    return dict(ESTIMATORS)


def estimator_from_dict(d: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> PolicyEstimator:
    """Rebuild any registered estimator from its :meth:`PolicyEstimator.to_dict` output."""
    all_estimators()
    kind = d.get("kind") if isinstance(d, Mapping) else None
    if kind not in ESTIMATORS:
        raise ContractError(f"unknown estimator kind {kind!r}; known kinds: {sorted(ESTIMATORS)}")
    return ESTIMATORS[kind].from_dict(d, arrays)


# --- value encoding ------------------------------------------------------------------------


def encode_value(v: Any, arrays: dict[str, np.ndarray] | None = None, path: str = "") -> Any:
    """A JSON-safe form of ``v`` that :func:`decode_value` turns back into an equal value."""
    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "biuf":
            raise TypeError(f"{path}: only numeric/bool arrays serialize, got dtype {v.dtype}")
        if arrays is not None:
            arrays[path] = np.ascontiguousarray(v)
            return {"__array__": path}
        data = [encode_value(x) for x in v.ravel().tolist()]
        return {"__ndarray__": data, "dtype": v.dtype.str, "shape": list(v.shape)}
    if isinstance(v, (list, tuple)):
        return [encode_value(x, arrays, f"{path}.{i}") for i, x in enumerate(v)]
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError(f"{path}: dict keys must be strings to round-trip through JSON, got {k!r}")
            if k in ("__float__", "__ndarray__", "__array__"):
                raise TypeError(f"{path}: key {k!r} is reserved by the encoding")
            out[k] = encode_value(x, arrays, f"{path}.{k}")
        return out
    raise TypeError(f"{path}: cannot serialize {type(v).__name__} as JSON")


def decode_value(v: Any, arrays: Mapping[str, np.ndarray] | None = None) -> Any:
    if isinstance(v, list):
        return [decode_value(x, arrays) for x in v]
    if isinstance(v, Mapping):
        if "__float__" in v:
            return float(v["__float__"])
        if "__ndarray__" in v:
            flat = [decode_value(x) for x in v["__ndarray__"]]
            return np.asarray(flat, dtype=np.dtype(v["dtype"])).reshape(v["shape"])
        if "__array__" in v:
            if arrays is None or v["__array__"] not in arrays:
                raise ContractError(f"array {v['__array__']!r} is referenced but was not provided")
            return np.asarray(arrays[v["__array__"]])
        return {k: decode_value(x, arrays) for k, x in v.items()}
    return v
