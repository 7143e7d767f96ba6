"""Device placement, ORT providers, refusing an unintended random init, ONNX external data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from roadwork_ml.config import load_profile
from roadwork_ml.export.onnx_export import export_onnx, onnx_parity
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.device import autocast_dtype, ort_providers, require_initialisation, torch_device
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier
from roadwork_ml.training.checkpoint import load_checkpoint, save_checkpoint


def test_ort_providers_prefer_tensorrt_then_cuda():
    p = load_profile("production")
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    got = ort_providers(p, available=gpu, cache_dir="/tmp/trt")
    assert [x if isinstance(x, str) else x[0] for x in got] == gpu
    assert got[0][1]["trt_fp16_enable"] is True and got[0][1]["trt_engine_cache_path"] == "/tmp/trt"
    # parity checks need fp32 numerics: no TensorRT, no TF32
    assert ort_providers(p, available=gpu, exact=True) == [
        ("CUDAExecutionProvider", {"use_tf32": 0}),
        "CPUExecutionProvider",
    ]
    assert ort_providers(p, available=["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in ort_providers(p)  # this machine's real build


def test_device_and_precision_defaults():
    assert torch_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert autocast_dtype(torch.device("cpu"), True) is None
    assert autocast_dtype(torch.device("cuda"), True) is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), False) is None


def test_production_without_weights_is_refused_unless_intended():
    p = load_profile("production")
    with pytest.raises(ValueError, match="allow_random_init"):
        require_initialisation(p.model)
    require_initialisation(load_profile("production", ["model.allow_random_init=true"]).model)
    require_initialisation(load_profile("production", ["model.init_from=explora_checkpoint"]).model)
    require_initialisation(load_profile("production", ["model.weights_path=/w.safetensors"]).model)
    require_initialisation(load_profile("tiny").model)  # the small profiles say random init is intended


def test_checkpoint_loads_on_the_available_device(tmp_path):
    p = load_profile("tiny")
    save_checkpoint(build_classifier(p.model), p.model, tmp_path)
    model, _ = load_checkpoint(tmp_path)
    assert next(model.parameters()).device.type == torch_device().type


def test_onnx_external_data_path(tmp_path):
    """Over the threshold the weights go to <model>.onnx.data (the >2 GiB path, here with a 1 KiB threshold)."""
    p = load_profile("tiny")
    torch.manual_seed(0)
    mv = MultiViewClassifier(build_classifier(p.model), view_spec(p.model, p.inference), "mean").eval()
    path = tmp_path / "model.onnx"
    info = export_onnx(mv, path, p.inference.input_size, external_data_threshold=1024)
    data = tmp_path / "model.onnx.data"
    assert info.external_data == "model.onnx.data" and data.is_file() and info.external_data_sha256
    graph = onnx.load(str(path), load_external_data=False).graph
    external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    inline = [t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    assert external and sum(int(np.prod(t.dims)) * 4 for t in external) <= data.stat().st_size
    assert all(len(t.raw_data) <= 1024 for t in inline)  # the graph file no longer holds the weights
    assert sorted(x.name for x in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]  # no temp leftovers
    images = torch.rand(
        6, 3, p.inference.input_size, p.inference.input_size, generator=torch.Generator().manual_seed(0)
    )
    assert onnx_parity(mv, path, images).passed(p.export.parity_tolerance)
    small = export_onnx(mv, tmp_path / "single.onnx", p.inference.input_size)
    assert small.external_data is None and not (tmp_path / "single.onnx.data").exists()


def test_ort_providers_without_tensorrt():
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_providers(None, available=gpu, tensorrt=False) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
