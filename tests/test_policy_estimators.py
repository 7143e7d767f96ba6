"""The one estimator convention (roadwork_ml.policy.estimator) holds for every registered estimator:
hyper-parameters only in the constructor, fitted attributes end in ``_``, ``split`` is a required
keyword checked against the leakage contract, and one strict-JSON round trip rebuilds an estimator
whose predictions are identical."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from roadwork_ml.contracts import ContractError, LeakageError, Split
from roadwork_ml.policy.estimator import (
    PolicyEstimator,
    all_estimators,
    decode_value,
    encode_value,
    estimator_from_dict,
)
from roadwork_ml.policy.uncertainty import FEATURE_NAMES

N = 400
ESTIMATORS = all_estimators()


def _data(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, N)
    logits = np.stack([np.zeros(N), 3.0 * (2 * y - 1) + rng.normal(0, 2.5, N)], axis=1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    feats = rng.normal(size=(N, len(FEATURE_NAMES)))
    feats[:, FEATURE_NAMES.index("max_prob")] = probs.max(1)
    return {
        "y": y,
        "logits": logits,
        "probs": probs,
        "feats": feats,
        "gate": rng.random(N),
        "slices": np.array(["a", "b", "c", "d"])[np.arange(N) % 4],
        "wrong": (probs.argmax(1) != y).astype(int),
    }


def _cases(d: dict) -> dict:
    """kind → (fresh estimator, fit args, extra fit kwargs, prediction function)."""
    cases = {}
    for kind, cls in ESTIMATORS.items():
        module = cls.__module__
        if module.startswith("roadwork_ml.policy.calibration"):
            kw = {"slices": d["slices"]} if cls.uses_slices else {}
            pred = (
                (lambda e: e.predict_proba(d["logits"], slices=d["slices"]))
                if cls.uses_slices
                else (lambda e: e.predict_proba(d["logits"]))
            )
            cases[kind] = (cls(), (d["logits"], d["y"]), kw, pred)
        elif kind == "scrc":
            cases[kind] = (
                cls(0.2, 0.2, n_grid=8),
                (d["probs"], d["y"], d["gate"]),
                {},
                lambda e: e.predict_sets(d["probs"], d["gate"]),
            )
        elif module.startswith("roadwork_ml.policy.conformal"):
            cases[kind] = (
                cls(),
                (d["probs"], d["y"]),
                {},
                lambda e: e.predict_sets(d["probs"]) if e.kind == "crc_fnr" else e.predict_sets(d["probs"], seed=3),
            )
        elif kind == "failure_gate":
            cases[kind] = (
                cls(epochs=2, batch_size=64),
                (d["feats"], d["wrong"]),
                {},
                lambda e: e.predict_score(d["feats"]),
            )
        elif kind == "thresholds":
            cases[kind] = (cls(0.1, 0.2, 101), (d["probs"][:, 1], d["y"]), {}, lambda e: e.exits(d["probs"][:, 1]))
    return cases


DATA = _data()
CASES = _cases(DATA)
KINDS = sorted(ESTIMATORS)


def test_every_policy_estimator_is_registered_and_covered():
    # importing the policy modules registers 9 calibrators, 5 conformal methods, the gate and thresholds
    expected = {
        "identity",
        "temperature",
        "classwise_temperature",
        "platt",
        "beta",
        "isotonic",
        "dirichlet",
        "ensemble_temperature",
        "slice_temperature",
        "lac",
        "aps",
        "raps",
        "crc_fnr",
        "scrc",
        "failure_gate",
        "thresholds",
    }
    assert expected <= set(ESTIMATORS)
    assert set(CASES) == set(ESTIMATORS), f"add a case for {set(ESTIMATORS) - set(CASES)}"


@pytest.mark.parametrize("kind", KINDS)
def test_constructor_stores_hyper_parameters_only(kind):
    est = CASES[kind][0]
    assert isinstance(est, PolicyEstimator)
    assert not est.is_fitted and est.fitted_attributes() == {}
    assert not [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
    for name in est.param_names():
        assert hasattr(est, name), f"{kind}: constructor argument {name!r} is not stored under its own name"
    sig = inspect.signature(type(est).fit).parameters["split"]
    assert sig.kind is inspect.Parameter.KEYWORD_ONLY and sig.default is inspect.Parameter.empty


@pytest.mark.parametrize("kind", KINDS)
def test_fit_refuses_a_missing_or_wrong_split(kind):
    est, args, kw, _ = CASES[kind]
    with pytest.raises(TypeError, match="split"):
        type(est)(**est.get_params()).fit(*args, **kw)
    for bad in (None, "val_test", Split.TRAIN, "val_select", ["val_calib", "val_test"]):
        fresh = type(est)(**est.get_params())
        with pytest.raises(LeakageError):
            fresh.fit(*args, split=bad, **kw)
        assert not fresh.is_fitted, f"{kind}: a refused fit must not leave fitted state behind"


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip_is_exact(kind):
    est, args, kw, predict = CASES[kind]
    fitted = type(est)(**est.get_params()).fit(*args, split=Split.VAL_CALIB, **kw)
    assert fitted.is_fitted and all(k.endswith("_") for k in fitted.fitted_attributes())
    d = fitted.to_dict()
    assert set(d) == {"kind", "format_version", "params", "fitted"} and d["kind"] == kind
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN / Infinity tokens, no pickle
    for rebuilt in (estimator_from_dict(json.loads(text)), type(est).from_dict(json.loads(text))):
        assert type(rebuilt) is type(fitted)
        assert rebuilt.get_params() == fitted.get_params()
        assert json.dumps(rebuilt.to_dict(), allow_nan=False) == text
        np.testing.assert_array_equal(predict(rebuilt), predict(fitted))


@pytest.mark.parametrize("kind", KINDS)
def test_from_dict_rejects_foreign_or_broken_documents(kind):
    est, args, kw, _ = CASES[kind]
    d = type(est)(**est.get_params()).fit(*args, split="val_calib", **kw).to_dict()
    other = "temperature" if kind != "temperature" else "platt"
    with pytest.raises(ContractError, match="expected a"):
        type(est).from_dict({**d, "kind": other})
    with pytest.raises(ContractError, match="format_version"):
        type(est).from_dict({**d, "format_version": 1})
    with pytest.raises(ContractError, match="unknown hyper-parameters"):
        type(est).from_dict({**d, "params": {**d["params"], "pickle": "x"}})
    with pytest.raises(ContractError, match="end in '_'"):
        type(est).from_dict({**d, "fitted": {**d["fitted"], "sneaky": 1}})
    with pytest.raises(ContractError, match="unknown estimator kind"):
        estimator_from_dict({**d, "kind": "pickle"})
    with pytest.raises(Exception, match="not fitted"):
        type(est)(**est.get_params()).to_dict()


def test_value_encoding_round_trips_arrays_and_non_finite_floats():
    values = {
        "f64": np.array([[1.0, -0.0], [np.pi, 1e-300]]),
        "f32": np.array([0.1, 1 / 3], dtype=np.float32),
        "bool": np.array([True, False]),
        "i64": np.arange(3, dtype=np.int64),
        "empty": np.zeros((0, 2)),
        "inf": float("inf"),
        "ninf": -np.inf,
        "nested": {"a": [1, 2.5, None, "s", True]},
    }
    text = json.dumps(encode_value(values), allow_nan=False)
    back = decode_value(json.loads(text))
    for k in ("f64", "f32", "bool", "i64", "empty"):
        assert back[k].dtype == values[k].dtype and back[k].shape == values[k].shape
        assert np.array_equal(back[k], values[k]) and back[k].tobytes() == values[k].tobytes()
    assert back["inf"] == np.inf and back["ninf"] == -np.inf and back["nested"] == values["nested"]
    assert np.isnan(decode_value(json.loads(json.dumps(encode_value(float("nan")), allow_nan=False))))
    with pytest.raises(TypeError, match="string"):
        encode_value({1: 2})
    with pytest.raises(TypeError, match="cannot serialize"):
        encode_value(object())
