"""Triton Inference Server model repository for the exported model, and a config validator.

Layout written by :func:`write_triton_repository`::

    <out_dir>/<model_name>_onnx/config.pbtxt     platform onnxruntime_onnx
    <out_dir>/<model_name>_onnx/1/model.onnx
    <out_dir>/<model_name>_trt/config.pbtxt      platform tensorrt_plan (only with an engine)
    <out_dir>/<model_name>_trt/1/model.plan

Both models batch on the server (``dynamic_batching``); with ``max_batch_size > 0`` Triton
adds the batch dim itself, so every ``dims`` below excludes it: input ``images`` [3, S, S]
FP32, outputs ``logits`` [C], ``view_logits`` [V, C], ``view_embeddings`` [V, D].

Configs are built as ``tritonclient.grpc.model_config_pb2.ModelConfig`` messages and printed
with protobuf's text format, so they parse by construction; :func:`validate_config` parses a
config.pbtxt the same way Triton does and adds semantic checks against the ONNX graph.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from roadwork_ml.artifacts import atomic_path, atomic_write_bytes, sha256_file
from roadwork_ml.export.onnx_export import INPUT_NAME, OUTPUT_NAMES, onnx_signature

KNOWN_PLATFORMS = (
    "onnxruntime_onnx",
    "tensorrt_plan",
    "pytorch_libtorch",
    "tensorflow_savedmodel",
    "tensorflow_graphdef",
)
DEFAULT_FILENAMES = {
    "onnxruntime_onnx": "model.onnx",
    "tensorrt_plan": "model.plan",
    "pytorch_libtorch": "model.pt",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
}
_ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    16: "TYPE_BF16",
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class TritonConfigError(ValueError):
    """A config.pbtxt does not parse as a Triton ModelConfig, or is semantically wrong."""


def _pb2():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _config(
    name: str,
    platform: str,
    max_batch_size: int,
    input_size: int,
    n_views: int,
    num_classes: int,
    embed_dim: int,
    preferred: Sequence[int],
    delay_us: int,
    kind: str,
    instance_count: int,
    intra_op_threads: int | None,
):
    pb = _pb2()
    cfg = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch_size)
    cfg.input.add(name=INPUT_NAME, data_type=pb.TYPE_FP32, dims=[3, input_size, input_size])
    dims = {"logits": [num_classes], "view_logits": [n_views, num_classes], "view_embeddings": [n_views, embed_dim]}
    for out in OUTPUT_NAMES:
        cfg.output.add(name=out, data_type=pb.TYPE_FP32, dims=dims[out])
    cfg.dynamic_batching.preferred_batch_size.extend(int(b) for b in preferred)
    cfg.dynamic_batching.max_queue_delay_microseconds = int(delay_us)
    cfg.instance_group.add(count=instance_count, kind=pb.ModelInstanceGroup.Kind.Value(kind))
    if intra_op_threads is not None and platform == "onnxruntime_onnx":
        # onnxruntime backend parameter: threads per ORT session (one session per instance)
        cfg.parameters["intra_op_thread_count"].string_value = str(int(intra_op_threads))
    return cfg


def _copy_atomic(src: Path, dst: Path) -> str:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return sha256_file(dst)


def write_triton_repository(
    out_dir: str | Path,
    model_name: str,
    onnx_path: str | Path,
    input_size: int,
    n_views: int,
    num_classes: int,
    embed_dim: int,
    max_batch_size: int = 64,
    preferred_batch_sizes: Sequence[int] = (8, 16, 32),
    max_queue_delay_us: int = 2000,
    engine_path: str | Path | None = None,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
    intra_op_threads: int | None = None,
) -> dict[str, Any]:
    """Write ``<model_name>_onnx`` (and ``<model_name>_trt`` when ``engine_path`` is given) into
    the Triton model repository ``out_dir``; every file atomically.

    ``input_size`` S (px), ``n_views`` V, ``num_classes`` C, ``embed_dim`` D give the dims (they
    are checked against the ONNX graph); ``max_batch_size`` images per server-side batch;
    ``max_queue_delay_us`` µs a request may wait for a fuller batch. ``instance_kind``
    (``KIND_CPU`` or ``KIND_GPU``) applies to the ONNX model; the TensorRT model always runs
    on ``KIND_GPU``. ``intra_op_threads`` sets the onnxruntime backend's thread count.

    Returns {"repository": path, "models": {name: {"config", "model_file", "platform", "sha256"}}}.
    """
    if not _NAME.match(model_name):
        raise ValueError(f"model_name {model_name!r} must be letters, digits, '_', '.', '-' only (it names a folder)")
    if max_batch_size <= 0:
        raise ValueError(f"max_batch_size must be > 0 (the configs batch on the server), got {max_batch_size}")
    if any(not 0 < int(b) <= max_batch_size for b in preferred_batch_sizes):
        raise ValueError(
            f"preferred_batch_sizes {list(preferred_batch_sizes)} must lie in 1..max_batch_size={max_batch_size}"
        )
    if instance_kind not in ("KIND_CPU", "KIND_GPU"):
        raise ValueError(f"instance_kind must be 'KIND_CPU' or 'KIND_GPU', got {instance_kind!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    if engine_path is not None and not Path(engine_path).is_file():
        raise FileNotFoundError(f"TensorRT engine {engine_path} does not exist")
    out = Path(out_dir)
    common = dict(
        max_batch_size=max_batch_size,
        input_size=input_size,
        n_views=n_views,
        num_classes=num_classes,
        embed_dim=embed_dim,
        preferred=preferred_batch_sizes,
        delay_us=max_queue_delay_us,
        instance_count=instance_count,
    )
    plan = [(f"{model_name}_onnx", "onnxruntime_onnx", onnx_path, instance_kind, intra_op_threads)]
    if engine_path is not None:
        plan.append((f"{model_name}_trt", "tensorrt_plan", Path(engine_path), "KIND_GPU", None))

    from google.protobuf import text_format

    models: dict[str, Any] = {}
    for name, platform, src, kind, threads in plan:
        cfg = _config(name, platform, kind=kind, intra_op_threads=threads, **common)
        text = f"# written by roadwork_ml.export.triton; dims exclude the batch dim (max_batch_size > 0)\n{text_format.MessageToString(cfg)}"
        validate_config(text, onnx_path=onnx_path)  # the dims passed in must be the graph's
        model_file = out / name / "1" / DEFAULT_FILENAMES[platform]
        digest = _copy_atomic(src, model_file)
        config_path = out / name / "config.pbtxt"
        atomic_write_bytes(config_path, text.encode())
        models[name] = {
            "config": str(config_path),
            "model_file": str(model_file),
            "platform": platform,
            "sha256": digest,
        }
    return {"repository": str(out), "models": models}


def _read(path_or_text: str | Path) -> tuple[str, Path | None]:
    if isinstance(path_or_text, Path):
        return path_or_text.read_text(), path_or_text
    if (
        "\n" not in path_or_text
        and len(path_or_text) < 4096
        and (path_or_text.endswith(".pbtxt") or Path(path_or_text).is_file())
    ):
        p = Path(path_or_text)
        if not p.is_file():
            raise FileNotFoundError(f"Triton config {p} does not exist")
        return p.read_text(), p
    return path_or_text, None


def _sibling_onnx(config_path: Path, cfg) -> Path | None:
    """The highest numeric version's ONNX file next to ``config_path``, if any."""
    versions = sorted((int(p.name), p) for p in config_path.parent.iterdir() if p.is_dir() and p.name.isdigit())
    fname = cfg.default_model_filename or DEFAULT_FILENAMES["onnxruntime_onnx"]
    for _, d in reversed(versions):
        if (d / fname).is_file():
            return d / fname
    return None


def validate_config(path_or_text: str | Path, onnx_path: str | Path | None = None):
    """Parse a Triton ``config.pbtxt`` (a path, or the text itself) into a
    ``tritonclient.grpc.model_config_pb2.ModelConfig`` and check it.

    Raises :class:`TritonConfigError` naming every problem: a syntax error or unknown field
    (protobuf's message, with line:column), an unknown platform, ``max_batch_size`` ≤ 0, an
    input/output without a data type or dims, no ``dynamic_batching``, preferred batch sizes
    outside 1..max_batch_size, a TensorRT plan on CPU instances, and — when the ONNX model is
    known (``onnx_path``, or ``1/model.onnx`` next to an onnxruntime config file) — input and
    output names, data types and dims that differ from the graph's (batch dim excluded).
    """
    from google.protobuf import text_format

    text, source = _read(path_or_text)
    where = str(source) if source else "config text"
    pb = _pb2()
    cfg = pb.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise TritonConfigError(f"{where} is not a valid Triton ModelConfig: {e}") from e

    problems: list[str] = []
    if not cfg.name:
        problems.append("name is empty")
    if cfg.platform not in KNOWN_PLATFORMS and not cfg.backend:
        problems.append(f"platform {cfg.platform!r} is not one of {KNOWN_PLATFORMS} and no backend is set")
    if cfg.max_batch_size <= 0:
        problems.append(f"max_batch_size is {cfg.max_batch_size}; it must be > 0 so Triton batches requests")
    if not cfg.input:
        problems.append("no input is declared")
    if not cfg.output:
        problems.append("no output is declared")
    for kind, tensors in (("input", cfg.input), ("output", cfg.output)):
        for t in tensors:
            if not t.name:
                problems.append(f"an {kind} has no name")
            if t.data_type == pb.TYPE_INVALID:
                problems.append(f"{kind} {t.name!r} has no data_type")
            if not t.dims:
                problems.append(f"{kind} {t.name!r} has no dims")
            elif any(d == 0 or d < -1 for d in t.dims):
                problems.append(f"{kind} {t.name!r} has dims {list(t.dims)}; each must be > 0 or -1 (variable)")
    if not cfg.HasField("dynamic_batching"):
        problems.append("dynamic_batching is missing (the server would run every request alone)")
    else:
        bad = [b for b in cfg.dynamic_batching.preferred_batch_size if not 0 < b <= cfg.max_batch_size]
        if bad:
            problems.append(f"preferred_batch_size {bad} outside 1..max_batch_size={cfg.max_batch_size}")
    if cfg.platform == "tensorrt_plan" and any(g.kind == pb.ModelInstanceGroup.KIND_CPU for g in cfg.instance_group):
        problems.append("a tensorrt_plan model cannot run on KIND_CPU instances")

    if onnx_path is None and source is not None and cfg.platform == "onnxruntime_onnx":
        onnx_path = _sibling_onnx(source, cfg)
    if onnx_path is not None and Path(onnx_path).is_file():
        problems += _compare_with_onnx(cfg, Path(onnx_path))

    if problems:
        raise TritonConfigError(
            f"{where} (model {cfg.name!r}) has {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )
    return cfg


def _compare_with_onnx(cfg, onnx_path: Path) -> list[str]:
    import onnx

    pb = _pb2()
    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    graph = {v.name: v for v in list(model.graph.input) + list(model.graph.output) if v.name not in inits}
    ins, outs = onnx_signature(onnx_path)
    problems = []
    for kind, declared, actual in (("input", cfg.input, ins), ("output", cfg.output, outs)):
        names = [t.name for t in declared]
        if sorted(names) != sorted(actual):
            problems.append(f"{kind} names {names} differ from the ONNX graph's {list(actual)} ({onnx_path.name})")
            continue
        for t in declared:
            dims = actual[t.name]
            if cfg.max_batch_size > 0:
                if not dims or isinstance(dims[0], int) and dims[0] > 0:
                    problems.append(
                        f"{kind} {t.name!r}: the ONNX dim 0 is {dims[:1]}, not a dynamic batch dim, but max_batch_size > 0"
                    )
                    continue
                dims = dims[1:]
            expected = [d if isinstance(d, int) and d > 0 else -1 for d in dims]
            if list(t.dims) != expected:
                problems.append(
                    f"{kind} {t.name!r}: dims {list(t.dims)} differ from the ONNX graph's {expected} (batch dim excluded)"
                )
            elem = graph[t.name].type.tensor_type.elem_type
            want = _ONNX_TO_TRITON.get(elem)
            if want is not None and pb.DataType.Name(t.data_type) != want:
                problems.append(
                    f"{kind} {t.name!r}: data_type {pb.DataType.Name(t.data_type)} differs from the ONNX graph's {want}"
                )
    return problems
