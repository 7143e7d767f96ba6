"""Int8 dynamic quantization of the exported multi-view graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadwork_ml.artifacts import sha256_file
from roadwork_ml.config import load_profile
from roadwork_ml.export.onnx_export import OnnxRunner, decisions, export_onnx, onnx_signature
from roadwork_ml.export.quantize import quantize_int8_dynamic
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier
from roadwork_ml.numerics import softmax


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    """A ViT whose weights are mostly Linear layers (width 192, 2 blocks), exported once."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    p = load_profile("tiny")
    cfg = p.model.model_copy(update={"embed_dim": 192, "depth": 2, "num_heads": 3})
    torch.manual_seed(0)
    mv = MultiViewClassifier(build_classifier(cfg), view_spec(cfg, p.inference), "mean").eval()
    path = tmp_path_factory.mktemp("fp32") / "model.onnx"
    export_onnx(mv, path, p.inference.input_size)
    yield path, p.inference.input_size
    torch.set_num_threads(old)


def test_quantize_int8_dynamic(fp32_model, tmp_path):
    src, size = fp32_model
    out = tmp_path / "int8" / "model.int8.onnx"
    info = quantize_int8_dynamic(src, out)
    assert out.is_file() and info["sha256"] == sha256_file(out)
    assert info["output_bytes"] == out.stat().st_size and info["input_bytes"] == src.stat().st_size
    assert info["output_bytes"] < 0.5 * info["input_bytes"], info  # int8 weights: ~4x smaller
    assert info["preprocessed"] and info["preprocess_error"] is None
    assert info["quantized_nodes"].get("MatMulInteger", 0) > 0
    assert onnx_signature(out) == onnx_signature(src)  # same names and dims: a drop-in file
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp files left

    x = torch.rand(24, 3, size, size, generator=torch.Generator().manual_seed(5)).numpy()
    ref = OnnxRunner(src, intra_op_threads=1).run(x)
    got = OnnxRunner(out, intra_op_threads=1).run(x)
    p_ref, p_got = softmax(ref["logits"]), softmax(got["logits"])
    max_prob_diff = float(np.abs(p_ref - p_got).max())
    print(
        f"int8: {info['input_bytes']} → {info['output_bytes']} bytes, max prob diff {max_prob_diff:.2e}, agreement {(decisions(p_ref) == decisions(p_got)).mean():.3f}"
    )
    assert max_prob_diff < 0.05
    assert np.isfinite(got["view_embeddings"]).all()


def test_quantize_without_preprocess_and_matmul_only(fp32_model, tmp_path):
    src, _ = fp32_model
    info = quantize_int8_dynamic(src, tmp_path / "q.onnx", op_types=("MatMul", "Gemm"), preprocess=False)
    assert not info["preprocessed"] and "ConvInteger" not in info["quantized_nodes"]
    assert info["output_bytes"] < info["input_bytes"]


def test_quantize_refuses_bad_paths(fp32_model, tmp_path):
    src, _ = fp32_model
    with pytest.raises(FileNotFoundError):
        quantize_int8_dynamic(tmp_path / "nope.onnx", tmp_path / "out.onnx")
    with pytest.raises(ValueError, match="overwrite"):
        quantize_int8_dynamic(src, src)
