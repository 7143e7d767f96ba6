"""The feature gate: the decision rule the gate asset applies (falls back to max-prob when the
features carry nothing beyond it, ships the chosen set when one does), and the served gate in a
bundle computing, from images, the confidence training computed from the same images."""

import numpy as np
import pytest
import torch

from roadwork_ml.config import load_profile
from roadwork_ml.contracts import Split
from roadwork_ml.policy.failure_features import TrainDistanceFeatures
from roadwork_ml.policy.gate import FeatureGate, GateInputs, gate_blocks
from roadwork_ml.policy.gate.choice import SHIPS_GATE, SHIPS_MAX_PROB, beats_max_prob, choose_gate

N, D = 800, 6


def _blocks(rng, signal: bool):
    """VAL_CALIB-like blocks in sequences of 4. Failures follow 1 - max_prob; with ``signal`` a
    quarter of the sequences sit off the TRAIN set (``distance``) where the model, still confident,
    is wrong 60 % of the time."""
    groups = np.repeat(np.arange(N // 4), 4)
    max_prob = rng.uniform(0.55, 1.0, N)
    softmax = np.column_stack([max_prob, 1 - max_prob + rng.normal(0, 0.01, N), rng.normal(size=(N, 5))])
    distance = rng.normal(size=(N, 4))
    fail = rng.random(N) < (1 - max_prob)
    if signal:
        ood = np.repeat(rng.random(N // 4) < 0.25, 4)
        distance[ood, 0] += 3.0
        fail = np.where(ood, rng.random(N) < 0.6, fail)
    blocks = {"max_prob": max_prob[:, None], "softmax": softmax, "distance": distance}
    return blocks, fail.astype(np.int64), groups


def test_falls_back_to_max_prob_when_the_features_add_nothing():
    blocks, fail, groups = _blocks(np.random.default_rng(3), signal=False)
    choice = choose_gate(blocks, fail, groups, flip=False, distance=None, n_folds=5, n_resamples=300, seed=0)
    c = choice.comparison
    assert choice.ships == SHIPS_MAX_PROB and not beats_max_prob(c) and c["interval"][0] <= 0
    assert choice.gate.mode == "max_prob_fallback" and choice.gate.needs == ()
    assert choice.headline.startswith("gate: falls back to max-prob") and f"{c['difference']:+.3f}" in choice.headline
    assert set(choice.crossfit.set_auroc) == {"max_prob", "softmax", "softmax+distance"}
    assert len(choice.crossfit.fold_choices) == 5
    record = choice.to_dict()
    assert len(record["within_fold"]) == 5 and set(record["within_fold_mean"]) == {"gate_auroc", "max_prob_auroc"}
    # the fallback's confidence is the calibrated max prob, whatever the features say
    cal = np.array([[0.2, 0.8], [0.7, 0.3]])
    conf = choice.gate.confidence(GateInputs(np.zeros((2, 2)), np.zeros((2, 7))), cal)
    assert conf == pytest.approx([0.8, 0.7])


def test_ships_the_feature_set_that_carries_signal():
    blocks, fail, groups = _blocks(np.random.default_rng(4), signal=True)
    dist = TrainDistanceFeatures(n_neighbors=3).fit(np.random.default_rng(0).normal(size=(50, D)), np.arange(50) % 2)
    choice = choose_gate(blocks, fail, groups, flip=False, distance=dist, n_folds=5, n_resamples=300, seed=0)
    c = choice.comparison
    assert choice.ships == SHIPS_GATE and beats_max_prob(c) and c["interval"][0] > 0
    assert choice.crossfit.chosen == "softmax+distance" and choice.gate.blocks == ("softmax", "distance")
    assert choice.gate.distance is dist and choice.gate.needs == ("embeddings",)
    assert c["gate_auroc"] - c["max_prob_auroc"] > 0.05 and choice.auprc["gate"] > choice.auprc["max_prob"]
    # the shipped refit scores what sklearn's pipeline scores (coefficients kept as JSON numbers)
    from roadwork_ml.policy.failure_features import _model

    x = np.column_stack([blocks["softmax"], blocks["distance"]])
    ref = _model().fit(x, fail).predict_proba(x)[:, 1]
    assert np.abs(choice.gate.score_matrix(x) - ref).max() < 1e-10


def test_too_few_errors_fall_back_without_a_comparison():
    blocks, fail, groups = _blocks(np.random.default_rng(5), signal=True)
    fail[:] = 0
    fail[:3] = 1
    choice = choose_gate(blocks, fail, groups, flip=False, distance=None)
    assert choice.ships == SHIPS_MAX_PROB and choice.comparison is None and "too few" in choice.headline


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny global + 3x3 tiles + flip-TTA model (20 views), a distance model fitted on 'TRAIN'
    outputs, a logistic gate on every block fitted on 'VAL_CALIB' outputs, written into a bundle."""
    from roadwork_ml.export.bundle import write_bundle
    from roadwork_ml.models import build_classifier
    from roadwork_ml.models.inference import multiview_model, predict_views
    from roadwork_ml.policy.calibration import TemperatureScaling
    from roadwork_ml.policy.conformal import SCRC, SplitConformalLAC
    from roadwork_ml.policy.decision import DecisionPolicy

    torch.manual_seed(0)
    torch.set_num_threads(1)
    prof = load_profile("tiny")
    inf = prof.inference.model_copy(update={"flip_tta": True})
    mv = multiview_model(
        build_classifier(prof.model).eval(), prof.model, inf, {"multi_view": True, "aggregator": "mean", "top_k": 1}
    )
    s = inf.input_size
    gen = torch.Generator().manual_seed(1)
    train_images = torch.randint(0, 256, (60, 3, s, s), dtype=torch.uint8, generator=gen)
    calib_images = torch.randint(0, 256, (40, 3, s, s), dtype=torch.uint8, generator=gen)
    calib_images[:10] //= 4  # dark: image quality varies
    tr = predict_views(mv, train_images, 16)
    dist = TrainDistanceFeatures(n_neighbors=5).fit(tr.embeddings, np.arange(60) % 2)
    out = predict_views(mv, calib_images, 16)
    inputs = GateInputs(out.logits, out.features, out.embeddings, out.view_logits, calib_images)
    blocks = gate_blocks(inputs, dist, flip=True)
    assert blocks["views"].shape == (40, 2) and blocks["quality"].shape == (40, 3)
    from roadwork_ml.policy.failure_features import image_quality

    streamed = GateInputs(
        out.logits, out.features, out.embeddings, out.view_logits, quality=image_quality(calib_images.numpy())
    )
    assert np.array_equal(gate_blocks(streamed, dist, flip=True)["quality"], blocks["quality"])
    fail = (np.arange(40) % 3 == 0).astype(np.int64)
    names = ("softmax", "distance", "views", "quality")
    gate = FeatureGate.fit_logistic(blocks, "all", names, fail, True, dist, {"headline": "test gate"})
    x = np.column_stack([blocks[b] for b in names])
    trained_conf = 1.0 - gate.score_matrix(x)
    y = np.arange(40) % 2
    cal = TemperatureScaling().fit(out.logits.astype(np.float64), y, split=Split.VAL_CALIB)
    probs = cal.predict_proba(out.logits.astype(np.float64))
    scrc = SCRC(0.4, 0.2, n_grid=10).fit(probs, y, trained_conf, split=Split.VAL_CALIB)
    lac = SplitConformalLAC(0.1).fit(probs, y, split=Split.VAL_CALIB)
    policy = DecisionPolicy(cal, "scrc", scrc.to_dict(), 0.5, lac, gate)
    d = tmp_path_factory.mktemp("fg") / "bundle"
    manifest = write_bundle(
        d,
        mv,
        prof.model,
        inf,
        {"multi_view": True, "aggregator": "mean", "top_k": 1},
        policy,
        profile=prof.model_dump(mode="json"),
        splits_fingerprint="f" * 64,
        metrics={},
        onnx_export=lambda m, p, size: (p.write_bytes(b"not used by the torch backend"), {})[1],
    )
    return d, manifest, calib_images, trained_conf


def test_served_gate_confidence_equals_training_time(served):
    from roadwork_ml.serving.predictor import BundlePredictor

    d, manifest, images, trained_conf = served
    assert {"gate.json", "gate.safetensors"} <= set(manifest["files"])
    predictor = BundlePredictor(d, backend="torch", threads=1)
    assert predictor.policy.gate.needs == ("embeddings", "view_logits", "images")
    served_conf = predictor.predict_tensor(images, batch_size=7).decisions.gate_confidence
    assert np.isfinite(served_conf).all() and served_conf.std() > 1e-3
    assert np.abs(served_conf - trained_conf).max() < 1e-6


def test_bundle_verification_covers_the_gate_files(served, tmp_path):
    import shutil

    from roadwork_ml.artifacts import IntegrityError
    from roadwork_ml.export.bundle import verify_bundle
    from roadwork_ml.export.content_identity import content_id

    d = tmp_path / "b"
    shutil.copytree(served[0], d)
    assert {"gate", "gate_weights"} <= set(content_id(d).parts)
    data = bytearray((d / "gate.safetensors").read_bytes())
    data[-1] ^= 1
    (d / "gate.safetensors").write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        verify_bundle(d)


def test_scrc_versus_reports_each_confidence_at_the_same_alpha():
    from roadwork_ml.policy.suite import HeldOut, scrc_versus

    def held(coverage, risk):
        return HeldOut([{"method": "lac", "value": 0.9}, {"method": "scrc", "value": risk, "coverage": coverage}])

    v = scrc_versus({"shipped": held(0.9, 0.05), "max_prob": held(0.85, 0.04)}, 0.1, "feature_gate")
    assert v["coverage_gain"] == pytest.approx(0.05) and v["risk_shipped"] == 0.05 and v["scrc_alpha"] == 0.1
