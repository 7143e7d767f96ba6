"""TensorRT engine build: a clear refusal without TensorRT / CUDA (nothing written), and the
agreement check an engine must pass. On a CUDA machine with TensorRT 10 the real build runs."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from roadwork_ml.export import tensorrt_build
from roadwork_ml.export.onnx_export import OnnxRunner, export_onnx
from roadwork_ml.export.tensorrt_build import (
    EngineRejected,
    TensorRTRunner,
    TensorRTUnavailable,
    build_engine,
    engine_agreement,
    tensorrt_available,
)

AVAILABLE, REASON = tensorrt_available()


class ToyMultiView(torch.nn.Module):
    """images [B, 3, S, S] → (log probs [B, 2], view logits [B, 2, 2], view embeddings [B, 2, 4]); V = 2 (image + flip)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Linear(3, 4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, images):
        views = torch.stack([images, images.flip(-1)], 1)  # [B, 2, 3, S, S]
        emb = self.embed(views.mean((-1, -2)) * 4.0)
        view_logits = self.head(emb)
        return view_logits.softmax(-1).mean(1).log(), view_logits, emb


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "model.onnx"
    export_onnx(ToyMultiView().eval(), path, 16)
    return path


def _images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


@pytest.mark.skipif(AVAILABLE, reason="TensorRT and CUDA are present here")
def test_unavailable_build_raises_and_writes_nothing(tmp_path, toy_onnx):
    assert not AVAILABLE and REASON
    if "tensorrt" not in sys.modules:
        assert "tensorrt is not installed" in REASON or "CUDA is not available" in REASON
    out = tmp_path / "engines" / "model.plan"
    with pytest.raises(TensorRTUnavailable) as err:
        build_engine(toy_onnx, out, 16)
    assert err.value.reason == REASON and REASON in str(err.value)
    assert not out.exists() and not out.parent.exists()  # nothing created, not even the folder
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TensorRTUnavailable):
        TensorRTRunner(tmp_path / "model.plan")


def test_bad_batch_arguments_are_refused_first(tmp_path, toy_onnx):
    with pytest.raises(ValueError, match="min_batch <= opt_batch <= max_batch"):
        build_engine(toy_onnx, tmp_path / "m.plan", 16, min_batch=8, opt_batch=4, max_batch=64)
    assert not (tmp_path / "m.plan").exists()


@pytest.mark.parametrize(
    "version,cuda,expect",
    [
        (None, False, "tensorrt is not installed"),
        ("8.6.1", False, "10.x or newer is required"),
        ("10.3.0", False, "CUDA is not available"),
    ],
)
def test_availability_reasons(monkeypatch, version, cuda, expect):
    if version is None:
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    ok, reason = tensorrt_available()
    assert not ok and expect in reason
    with pytest.raises(TensorRTUnavailable, match=expect):
        tensorrt_build._require_tensorrt()


class _Shifted:
    """Wraps a runner, adding ``shift`` to the class-1 logit (a stand-in for a drifting engine)."""

    def __init__(self, inner, shift: float):
        self.inner, self.shift = inner, shift

    def run(self, images):
        out = dict(self.inner.run(images))
        for k in ("logits", "view_logits"):
            out[k] = out[k].copy()
            out[k][..., 1] += self.shift
        return out


def test_engine_agreement_accepts_and_rejects(toy_onnx):
    ref = OnnxRunner(toy_onnx, intra_op_threads=1)
    x = _images(50)
    same = engine_agreement(
        ref, OnnxRunner(toy_onnx, intra_op_threads=1), x, tolerance=0.99, max_prob_diff=1e-5, batch_size=16
    )
    assert same["accepted"] and same["decision_agreement"] == 1.0 and same["max_prob_diff"] <= 1e-6 and same["n"] == 50

    far = _Shifted(ref, 5.0)  # every decision flips to class 1
    with pytest.raises(EngineRejected, match="decision agreement") as err:
        engine_agreement(ref, far, x, tolerance=0.99)
    assert err.value.report["accepted"] is False
    report = engine_agreement(ref, far, x, tolerance=0.99, raise_on_reject=False)
    assert not report["accepted"] and report["decision_agreement"] < 0.99 and "agreement" in report["reason"]

    near = _Shifted(ref, 1e-3)  # tiny drift: decisions agree, probabilities differ a little
    ok = engine_agreement(ref, near, x, tolerance=0.9)
    assert ok["accepted"] and 0 < ok["max_prob_diff"] < 1e-3
    with pytest.raises(EngineRejected, match="max probability difference"):
        engine_agreement(ref, near, x, tolerance=0.9, max_prob_diff=1e-6)


@pytest.mark.skipif(not AVAILABLE, reason=f"needs TensorRT and CUDA: {REASON}")
def test_build_and_run_engine_on_gpu(tmp_path, toy_onnx):  # pragma: no cover - GPU machines only
    info = build_engine(toy_onnx, tmp_path / "model.plan", 16, min_batch=1, opt_batch=8, max_batch=16, workspace_gb=1)
    assert (tmp_path / "model.plan").stat().st_size == info.size_bytes
    runner = TensorRTRunner(info.path)
    assert (runner.min_batch, runner.max_batch) == (1, 16)
    for b in (1, 5, 16):
        out = runner.run(_images(b, seed=b))
        assert out["logits"].shape == (b, 2) and out["view_embeddings"].shape == (b, 2, 4)
    report = engine_agreement(OnnxRunner(toy_onnx), runner, _images(40), tolerance=0.99, batch_size=16)
    assert report["accepted"] and report["max_prob_diff"] < 1e-2
