"""ONNX export of the whole multi-view graph: signature, dynamic batch, parity with PyTorch."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from roadwork_ml.artifacts import sha256_file
from roadwork_ml.config import load_profile
from roadwork_ml.export.onnx_export import OUTPUT_NAMES, OnnxRunner, export_onnx, onnx_parity, onnx_signature
from roadwork_ml.models.aggregator import AttentionAggregator
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier


def make_mv(profile: str, aggregator: str, seed: int = 0) -> tuple[MultiViewClassifier, int]:
    """A random-init multi-view model of ``profile`` (tiny: ViT, 1 + 3×3 tiles; demo: resnet10t, flip TTA)."""
    p = load_profile(profile)
    torch.manual_seed(seed)
    model = build_classifier(p.model)
    attention = AttentionAggregator(model.embed_dim).eval() if aggregator == "attention" else None
    mv = MultiViewClassifier(model, view_spec(p.model, p.inference), aggregator, top_k=3, attention=attention).eval()
    return mv, p.inference.input_size


def images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True, scope="module")
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# every aggregator on the ViT multi-view model (V = 10); resnet10t with flip TTA (V = 2)
CASES = [
    ("tiny", "mean", 10),
    ("tiny", "topk", 10),
    ("tiny", "global", 10),
    ("tiny", "attention", 10),
    ("demo", "mean", 2),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(profile, aggregator) → (model, input size, onnx path, info); each exported once per module."""
    cache: dict = {}

    def get(profile: str, aggregator: str):
        if (profile, aggregator) not in cache:
            mv, size = make_mv(profile, aggregator)
            path = tmp_path_factory.mktemp(f"{profile}-{aggregator}") / "model.onnx"
            cache[profile, aggregator] = (mv, size, path, export_onnx(mv, path, size))
        return cache[profile, aggregator]

    return get


@pytest.mark.parametrize("profile,aggregator,n_views", CASES, ids=[f"{p}-{a}" for p, a, _ in CASES])
def test_export_parity_and_signature(exported, profile, aggregator, n_views):
    mv, size, path, info = exported(profile, aggregator)

    assert info.n_views == n_views and info.num_classes == 2 and info.opset == 18
    assert info.sha256 == sha256_file(path) and info.size_bytes == path.stat().st_size
    assert "dynamo" in info.exporter
    json.dumps(info.to_dict())  # JSON-ready for the bundle's config.json
    onnx.checker.check_model(str(path))
    ins, outs = onnx_signature(path)
    d = mv.model.embed_dim
    assert ins == {"images": ["batch", 3, size, size]}
    assert outs == {
        "logits": ["batch", 2],
        "view_logits": ["batch", n_views, 2],
        "view_embeddings": ["batch", n_views, d],
    }
    assert list(outs) == list(OUTPUT_NAMES) == info.output_names
    assert not mv.training  # mode restored

    report = onnx_parity(mv, path, images(40, size), batch_size=16)
    assert report.n == 40
    assert report.max_prob_diff <= 1e-4, report
    assert report.max_view_prob_diff <= 1e-4, report
    assert report.max_embedding_diff <= 1e-3, report
    assert report.decision_agreement == 1.0
    assert report.passed(1e-4)


def test_dynamic_batch_and_runner(exported):
    mv, size, path, _ = exported("tiny", "topk")
    runner = OnnxRunner(path, intra_op_threads=1)
    assert runner.input_name == "images" and runner.output_names == list(OUTPUT_NAMES)
    for b in (1, 3, 17):
        x = images(b, size, seed=b)
        out = runner.run(x.numpy())
        with torch.no_grad():
            ref = mv(x)
        assert (
            out["logits"].shape == (b, 2)
            and out["view_logits"].shape == (b, 10, 2)
            and out["view_embeddings"].shape == (b, 10, mv.model.embed_dim)
        )
        np.testing.assert_allclose(np.exp(out["logits"]), ref[0].exp().numpy(), atol=1e-5)
    x = images(7, size).numpy()
    batched = runner.run_batched(x, batch_size=3)
    whole = runner.run(x)
    np.testing.assert_allclose(batched["view_logits"], whole["view_logits"], atol=1e-5)
    with pytest.raises(ValueError, match="takes images of shape"):
        runner.run(np.zeros((2, 3, size + 1, size + 1), np.float32))


def test_uint8_images_and_missing_provider(exported, tmp_path):
    mv, size, path, _ = exported("demo", "mean")
    u8 = (images(5, size) * 255).to(torch.uint8)
    report = onnx_parity(mv, path, u8, batch_size=4)
    assert report.n == 5 and report.max_prob_diff <= 1e-4
    with pytest.raises(ValueError, match="not available"):
        OnnxRunner(path, providers=("NoSuchExecutionProvider",))
    with pytest.raises(FileNotFoundError):
        OnnxRunner(tmp_path / "missing.onnx")


def test_failed_export_leaves_nothing(tmp_path):
    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)

        def forward(self, images):
            return self.lin(images.mean((2, 3))), images

    path = tmp_path / "bad.onnx"
    with pytest.raises(Exception, match="3 tensors"):
        export_onnx(TwoOutputs(), path, 8)
    assert not path.exists() and list(tmp_path.iterdir()) == []
