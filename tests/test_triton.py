"""Triton model repository: configs parse as Triton ModelConfig and match the ONNX graph."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from roadwork_ml.artifacts import sha256_file
from roadwork_ml.config import load_profile
from roadwork_ml.export.onnx_export import export_onnx, onnx_signature
from roadwork_ml.export.triton import TritonConfigError, validate_config, write_triton_repository
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny ViT, 1 + 3×3 views (V = 10), exported once: (onnx path, info)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    p = load_profile("tiny")
    torch.manual_seed(0)
    mv = MultiViewClassifier(build_classifier(p.model), view_spec(p.model, p.inference), "mean").eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    info = export_onnx(mv, path, p.inference.input_size)
    yield path, info
    torch.set_num_threads(old)


def _write(tmp_path: Path, exported, **kw) -> dict:
    path, info = exported
    return write_triton_repository(
        tmp_path / "repo", "roadwork", path, info.input_size, info.n_views, info.num_classes, info.embed_dim, **kw
    )


def test_repository_layout_and_configs_parse(tmp_path, exported):
    onnx_path, info = exported
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not a real engine: only copied")
    repo = _write(tmp_path, exported, engine_path=engine, instance_kind="KIND_GPU", intra_op_threads=2)
    root = tmp_path / "repo"
    assert set(repo["models"]) == {"roadwork_onnx", "roadwork_trt"}
    assert (root / "roadwork_onnx" / "1" / "model.onnx").is_file() and (
        root / "roadwork_trt" / "1" / "model.plan"
    ).is_file()
    assert repo["models"]["roadwork_onnx"]["sha256"] == sha256_file(onnx_path)
    assert repo["models"]["roadwork_trt"]["sha256"] == sha256_file(engine)
    assert not [p for p in root.rglob(".*")]  # no temp files left behind

    ins, outs = onnx_signature(onnx_path)
    for name, platform in (("roadwork_onnx", "onnxruntime_onnx"), ("roadwork_trt", "tensorrt_plan")):
        cfg_path = root / name / "config.pbtxt"
        cfg = validate_config(cfg_path, onnx_path=onnx_path)  # a Path
        assert validate_config(str(cfg_path)).name == name  # a str path (ONNX found next to it for _onnx)
        assert validate_config(cfg_path.read_text()).platform == platform  # the text itself
        assert cfg.name == name and cfg.platform == platform and cfg.max_batch_size == 64
        assert (
            list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]
            and cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        )
        # names and dims are the ONNX graph's, without the batch dim
        assert {t.name: list(t.dims) for t in cfg.input} == {k: v[1:] for k, v in ins.items()}
        assert {t.name: list(t.dims) for t in cfg.output} == {k: v[1:] for k, v in outs.items()}
        assert {t.name: list(t.dims) for t in cfg.output} == {
            "logits": [2],
            "view_logits": [10, 2],
            "view_embeddings": [10, info.embed_dim],
        }
    onnx_cfg = validate_config(root / "roadwork_onnx" / "config.pbtxt")
    assert onnx_cfg.instance_group[0].kind == onnx_cfg.instance_group[0].KIND_GPU
    assert onnx_cfg.parameters["intra_op_thread_count"].string_value == "2"
    trt_cfg = validate_config(root / "roadwork_trt" / "config.pbtxt")
    assert trt_cfg.instance_group[0].kind == trt_cfg.instance_group[0].KIND_GPU


def test_cpu_repository_without_engine(tmp_path, exported):
    repo = _write(tmp_path, exported, max_batch_size=32, preferred_batch_sizes=(4, 32))
    assert set(repo["models"]) == {"roadwork_onnx"}
    cfg = validate_config(Path(repo["models"]["roadwork_onnx"]["config"]))
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_CPU and cfg.max_batch_size == 32
    assert not (tmp_path / "repo" / "roadwork_trt").exists()


def test_typo_field_is_rejected_with_location(tmp_path, exported):
    text = Path(_write(tmp_path, exported)["models"]["roadwork_onnx"]["config"]).read_text()
    bad = text.replace("max_batch_size", "max_batch_sizes")
    with pytest.raises(TritonConfigError, match=r'no field named "max_batch_sizes"') as err:
        validate_config(bad)
    assert "not a valid Triton ModelConfig" in str(err.value) and ":" in str(err.value)
    with pytest.raises(TritonConfigError, match="not a valid Triton ModelConfig"):
        validate_config(text.replace("dims: 3", "dims: [3", 1))  # syntax error


def test_wrong_dims_names_and_semantics_are_rejected(tmp_path, exported):
    onnx_path, info = exported
    cfg_path = Path(_write(tmp_path, exported)["models"]["roadwork_onnx"]["config"])
    text = cfg_path.read_text()
    # view_logits is [V, C] = [10, 2]; claim 9 views
    wrong_dims = text.replace("dims: 10\n  dims: 2", "dims: 9\n  dims: 2", 1)
    assert wrong_dims != text
    with pytest.raises(TritonConfigError, match=r"'view_logits': dims \[9, 2\] differ from the ONNX graph's \[10, 2\]"):
        validate_config(wrong_dims, onnx_path=onnx_path)
    # the same text next to the ONNX file is checked without naming the file
    cfg_path.write_text(wrong_dims)
    with pytest.raises(TritonConfigError, match="differ from the ONNX graph"):
        validate_config(cfg_path)
    with pytest.raises(TritonConfigError, match="output names"):
        validate_config(text.replace('name: "logits"', 'name: "probs"'), onnx_path=onnx_path)
    with pytest.raises(TritonConfigError, match="max_batch_size is 0"):
        validate_config(text.replace("max_batch_size: 64", "max_batch_size: 0"))
    with pytest.raises(TritonConfigError, match="dynamic_batching is missing"):
        validate_config(re.sub(r"dynamic_batching \{[^}]*\}\n", "", text))
    with pytest.raises(TritonConfigError, match="platform 'onnx' is not one of"):
        validate_config(text.replace('platform: "onnxruntime_onnx"', 'platform: "onnx"'))
    with pytest.raises(TritonConfigError, match="has no data_type"):
        validate_config(text.replace("data_type: TYPE_FP32", "", 1))
    # dims passed to the writer that differ from the graph are refused before anything is written
    with pytest.raises(TritonConfigError, match="differ from the ONNX graph"):
        write_triton_repository(tmp_path / "repo2", "roadwork", onnx_path, info.input_size, 9, 2, info.embed_dim)
    assert not (tmp_path / "repo2").exists()


def test_writer_argument_checks(tmp_path, exported):
    onnx_path, info = exported
    args = (onnx_path, info.input_size, info.n_views, info.num_classes, info.embed_dim)
    with pytest.raises(ValueError, match="max_batch_size must be > 0"):
        write_triton_repository(tmp_path, "roadwork", *args, max_batch_size=0)
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        write_triton_repository(tmp_path, "roadwork", *args, max_batch_size=16, preferred_batch_sizes=(8, 32))
    with pytest.raises(ValueError, match="model_name"):
        write_triton_repository(tmp_path, "road/work", *args)
    with pytest.raises(FileNotFoundError, match="engine"):
        write_triton_repository(tmp_path, "roadwork", *args, engine_path=tmp_path / "missing.plan")
