"""Failure-predictor gate: it learns what max-prob misses, round-trips exactly, is seeded, refuses leaks."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from roadwork_ml.artifacts import IntegrityError
from roadwork_ml.contracts import LeakageError, Split
from roadwork_ml.policy.gate import (
    GATE_JSON_FILE,
    GATE_WEIGHTS_FILE,
    FailureGate,
    GateConfig,
    GateMLP,
    cross_fit_gate,
)
from roadwork_ml.policy.uncertainty import FEATURE_INDEX, uncertainty_features

MP = FEATURE_INDEX["max_prob"]


def make_views(n: int, seed: int, V: int = 10):
    """Per-view probabilities whose mean (hence max_prob) and spread are drawn independently.

    An image is wrong with probability 0.8 when its views disagree strongly relative to the
    room its mean leaves (``r > 0.7``: a non-linear function of cross-view variance and
    max_prob), else 0.03, or 0.33 when max_prob < 0.6. max_prob alone sees only the last part.
    """
    rng = np.random.default_rng(seed)
    mu = rng.uniform(0.03, 0.97, n)
    r = rng.uniform(0, 1, n)
    s = r * (np.minimum(mu, 1 - mu) - 0.01)
    signs = rng.permuted(np.tile(np.r_[np.ones(V // 2), -np.ones(V // 2)], (n, 1)), axis=1)
    p1 = mu[:, None] + s[:, None] * signs
    feats = uncertainty_features(np.stack([1 - p1, p1], axis=-1))
    p_wrong = np.where(r > 0.7, 0.8, 0.03 + 0.3 * (feats[:, MP] < 0.6))
    return feats, (rng.uniform(size=n) < p_wrong).astype(np.int64)


@pytest.fixture(scope="module")
def learned():
    feats, wrong = make_views(1500, seed=0)
    return feats, wrong, cross_fit_gate(feats, wrong, n_folds=5, seed=0, split="val_calib")


def test_config_defaults_and_architecture():
    cfg = GateConfig()
    assert (cfg.hidden_sizes, cfg.dropouts, cfg.pos_weight, cfg.lr, cfg.epochs, cfg.batch_size) == (
        (128, 64, 32),
        (0.2, 0.1, 0.05),
        2.0,
        1e-3,
        20,
        256,
    )
    assert GateConfig.from_dict(cfg.to_dict()) == cfg
    m = GateMLP()
    kinds = [type(layer).__name__ for layer in m.net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 3 + ["Linear"]
    assert [(l.in_features, l.out_features) for l in m.net if isinstance(l, torch.nn.Linear)] == [
        (7, 128),
        (128, 64),
        (64, 32),
        (32, 1),
    ]
    assert [l.p for l in m.net if isinstance(l, torch.nn.Dropout)] == [0.2, 0.1, 0.05]
    assert m.eval()(torch.randn(5, 7)).shape == (5,)


def test_gate_beats_max_prob_out_of_fold(learned):
    feats, wrong, res = learned
    # oracle: recompute every reported metric with sklearn from the returned arrays
    gate_auc = roc_auc_score(wrong, res.oof_gate_score)
    base_auc = roc_auc_score(wrong, 1 - feats[:, MP])
    assert res.pooled["gate_auroc"] == pytest.approx(gate_auc, abs=1e-12)
    assert res.pooled["baseline_auroc"] == pytest.approx(base_auc, abs=1e-12)
    assert res.pooled["gate_auprc"] == pytest.approx(average_precision_score(wrong, res.oof_gate_score), abs=1e-12)
    assert res.pooled["baseline_auprc"] == pytest.approx(average_precision_score(wrong, 1 - feats[:, MP]), abs=1e-12)
    for f in res.per_fold:
        te = res.fold_ids == f["fold"]
        assert f["gate_auroc"] == pytest.approx(roc_auc_score(wrong[te], res.oof_gate_score[te]), abs=1e-12)
        assert f["baseline_auroc"] == pytest.approx(roc_auc_score(wrong[te], 1 - feats[te, MP]), abs=1e-12)
        assert f["gate_auroc"] > f["baseline_auroc"]
    print(
        f"\nOOF AUROC gate {gate_auc:.4f} vs max-prob {base_auc:.4f}; "
        f"AUPRC gate {res.pooled['gate_auprc']:.4f} vs {res.pooled['baseline_auprc']:.4f} (error rate {wrong.mean():.3f})"
    )
    assert gate_auc > 0.75
    assert gate_auc - base_auc > 0.15
    assert res.n_folds_used == 5 and res.fallback is None and res.gate_beats_baseline
    assert np.isfinite(res.oof_gate_score).all() and set(np.unique(res.fold_ids)) == set(range(5))
    np.testing.assert_allclose(res.oof_confidence, 1 - res.oof_gate_score)

    # the refit gate generalizes to fresh data from the same process
    f2, w2 = make_views(2000, seed=1)
    assert roc_auc_score(w2, res.gate.predict_score(f2)) > roc_auc_score(w2, 1 - f2[:, MP]) + 0.15
    json.dumps(res.to_dict(), allow_nan=False)


def test_conventions(learned):
    feats, _, res = learned
    g = res.gate
    s, c, pr = g.predict_score(feats[:50]), g.confidence(feats[:50]), g.predict_proba(feats[:50])
    assert s.shape == (50,) and s.dtype == np.float64 and ((s >= 0) & (s <= 1)).all()
    np.testing.assert_allclose(c, 1 - s, atol=0)
    np.testing.assert_allclose(pr, np.stack([1 - s, s], 1), atol=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-g.predict_logit(feats[:50]))), s, atol=1e-12)
    with torch.no_grad():
        mod_conf = g.to_module()(torch.from_numpy(feats[:50]).float()).double().numpy()
    np.testing.assert_allclose(mod_conf, c, atol=1e-6)


def test_feature_constant_at_fit_is_ignored(learned):
    """Fit without embeddings (epistemic variance is always 0), serve with them: no blow-up."""
    feats, _, res = learned
    g, epi = res.gate, FEATURE_INDEX["epistemic_feature_variance"]
    assert g.metrics_["constant_features"] == ["epistemic_feature_variance"]
    served = feats[:100].copy()
    served[:, epi] = np.random.default_rng(0).uniform(0, 0.05, 100)
    assert np.array_equal(g.predict_score(served), g.predict_score(feats[:100]))
    with torch.no_grad():
        np.testing.assert_allclose(
            g.to_module()(torch.from_numpy(served).float()).numpy(), g.confidence(feats[:100]), atol=1e-6
        )


def test_save_load_roundtrip_exact_without_pickle(learned, tmp_path, monkeypatch):
    feats, _, res = learned
    obj = res.gate.save(tmp_path / "gate")
    assert sorted(p.name for p in (tmp_path / "gate").iterdir()) == sorted([GATE_JSON_FILE, GATE_WEIGHTS_FILE])
    raw = (tmp_path / "gate" / GATE_WEIGHTS_FILE).read_bytes()
    assert not raw.startswith(b"\x80") and not raw.startswith(b"PK")  # neither a pickle nor a torch zip
    on_disk = json.loads((tmp_path / "gate" / GATE_JSON_FILE).read_text())
    assert on_disk["kind"] == "failure_gate" and on_disk["params"]["feature_names"][0] == "max_prob"
    assert on_disk["fitted"]["metrics_"]["cross_fit"]["pooled"]["gate_auroc"] == pytest.approx(res.pooled["gate_auroc"])
    assert obj["weights_sha256"] == on_disk["weights_sha256"]

    def refuse(*a, **k):
        raise AssertionError("pickle / torch.load must not be used to load a gate")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = FailureGate.load(tmp_path / "gate")
    assert np.array_equal(loaded.predict_score(feats), res.gate.predict_score(feats))
    assert np.array_equal(loaded.confidence(feats), res.gate.confidence(feats))
    # BatchNorm running statistics travelled too
    for k, v in res.gate.weights_.items():
        assert np.array_equal(loaded.weights_[k], v) and loaded.weights_[k].dtype == v.dtype, k
    assert "running_mean" in " ".join(res.gate.weights_)


def test_tampered_weights_are_refused(learned, tmp_path):
    _, _, res = learned
    res.gate.save(tmp_path)
    w = tmp_path / GATE_WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        FailureGate.load(tmp_path)


def test_determinism_by_seed():
    feats, wrong = make_views(600, seed=3)
    a = FailureGate(seed=7, epochs=5).fit(feats, wrong, split="val_calib")
    torch.manual_seed(123)
    b = FailureGate(seed=7, epochs=5).fit(feats, wrong, split=Split.VAL_CALIB)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3)), "fit must not consume the global torch RNG"
    c = FailureGate(seed=8, epochs=5).fit(feats, wrong, split="val_calib")
    assert np.array_equal(a.predict_score(feats), b.predict_score(feats))
    assert all(np.array_equal(v, b.weights_[k]) for k, v in a.weights_.items())
    assert not np.array_equal(a.predict_score(feats), c.predict_score(feats))
    assert a.metrics_["loss_history"] == b.metrics_["loss_history"]

    r1 = cross_fit_gate(feats, wrong, n_folds=3, seed=1, config=GateConfig(epochs=3), split="val_calib")
    r2 = cross_fit_gate(feats, wrong, n_folds=3, seed=1, config=GateConfig(epochs=3), split="val_calib")
    assert np.array_equal(r1.oof_gate_score, r2.oof_gate_score) and np.array_equal(r1.fold_ids, r2.fold_ids)


@pytest.mark.parametrize("bad", ["train", "val_test", "val_select", Split.TRAIN, ["val_calib", "val_test"]])
def test_leakage_refused(bad):
    feats, wrong = make_views(50, seed=4)
    with pytest.raises(LeakageError):
        FailureGate().fit(feats, wrong, split=bad)
    with pytest.raises(LeakageError):
        cross_fit_gate(feats, wrong, split=bad)


@pytest.mark.parametrize("n_wrong", [0, 1, 3])
def test_too_few_errors_falls_back_to_max_prob(n_wrong, tmp_path):
    feats, _ = make_views(400, seed=5)
    wrong = np.zeros(400, dtype=np.int64)
    wrong[np.argsort(feats[:, MP])[:n_wrong]] = 1  # the least confident ones are wrong
    res = cross_fit_gate(feats, wrong, n_folds=5, split="val_calib")
    assert res.fallback and "max_prob" in res.fallback and res.n_folds_used == 0
    assert res.gate.mode_ == "max_prob_fallback"
    np.testing.assert_array_equal(res.gate.confidence(feats), feats[:, MP])
    if n_wrong:
        assert res.pooled["baseline_auroc"] == pytest.approx(roc_auc_score(wrong, 1 - feats[:, MP]))
    else:
        assert res.pooled["baseline_auroc"] is None
    json.dumps(res.to_dict(), allow_nan=False)
    res.gate.save(tmp_path)
    assert np.array_equal(FailureGate.load(tmp_path).predict_score(feats), res.gate.predict_score(feats))
    assert res.gate.to_module()(torch.from_numpy(feats).float()).numpy() == pytest.approx(feats[:, MP], abs=1e-7)


def test_few_errors_reduce_folds():
    feats, _ = make_views(300, seed=6)
    wrong = np.zeros(300, dtype=np.int64)
    wrong[np.random.default_rng(0).choice(300, 6, replace=False)] = 1
    res = cross_fit_gate(feats, wrong, n_folds=5, config=GateConfig(epochs=2), split="val_calib")
    assert res.fallback is None and res.n_folds_used == 3 and res.notes
    assert all(f["n_wrong"] >= 2 for f in res.per_fold)
    assert np.isfinite(res.oof_gate_score).all() and res.gate.mode_ == "mlp"


def test_odd_batch_and_bad_inputs():
    feats, wrong = make_views(257, seed=7)  # last batch of 1 row would break BatchNorm
    FailureGate(epochs=1).fit(feats, wrong, split="val_calib")
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        FailureGate().fit(feats[:, :5], wrong, split="val_calib")
    with pytest.raises(ValueError, match="0/1"):
        FailureGate().fit(feats, wrong * 2, split="val_calib")
    with pytest.raises(RuntimeError, match="not fitted"):
        FailureGate().predict_score(feats)
