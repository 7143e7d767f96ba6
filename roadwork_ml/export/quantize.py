"""Int8 dynamic quantization of an exported ONNX model (ONNX Runtime, CPU serving).

Weights of MatMul / Gemm (and, by default, Conv) become int8 (QInt8, per tensor); activations
are quantized on the fly at run time (``DynamicQuantizeLinear`` → ``MatMulInteger`` /
``ConvInteger``). No calibration data is needed. The quantized graph keeps the fp32 model's
input and outputs (names, dtypes, dims), so :class:`~roadwork_ml.export.onnx_export.OnnxRunner`
and the parity helpers run it unchanged. ``ConvInteger`` / ``MatMulInteger`` are CPU kernels in
ONNX Runtime: the int8 model is for CPU serving, not for the CUDA EP or TensorRT.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from roadwork_ml.artifacts import atomic_path, sha256_file

log = logging.getLogger(__name__)

DEFAULT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm", "Conv")


def quantize_int8_dynamic(
    onnx_in: str | Path,
    onnx_out: str | Path,
    op_types: Sequence[str] | None = DEFAULT_OP_TYPES,
    per_channel: bool = False,
    preprocess: bool = True,
) -> dict:
    """Quantize ``onnx_in``'s weights to int8 into ``onnx_out`` (written atomically).

    ``preprocess`` first runs ONNX Runtime's ``quant_pre_process`` (symbolic shape inference +
    graph optimization), which the quantizer recommends; if it fails on a graph, the raw graph
    is quantized instead and the reason is returned under ``preprocess_error``.
    ``op_types``: the operator types whose weights are quantized (None = every type ORT supports).

    Returns sizes in bytes (``input_bytes``, ``output_bytes``), ``size_ratio`` (out / in),
    ``sha256`` of the output, ``quantized_nodes`` (count per integer op type), ``seconds``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(onnx_in), Path(onnx_out)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model {src} does not exist")
    if src.resolve() == dst.resolve():
        raise ValueError(f"quantize_int8_dynamic would overwrite its input {src}: choose another output path")
    t0 = time.perf_counter()
    preprocessed, pre_error = False, None
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".roadwork-quant-", dir=dst.parent) as tmpdir:
        model_in = src
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = Path(tmpdir) / "preprocessed.onnx"
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                model_in, preprocessed = pre, True
            except Exception as e:  # noqa: BLE001 - the raw graph still quantizes; say why
                pre_error = f"{type(e).__name__}: {e}"
                log.warning("quant_pre_process failed on %s (%s); quantizing the graph without it", src, pre_error)
        with atomic_path(dst) as tmp:
            quantize_dynamic(
                str(model_in),
                str(tmp),
                op_types_to_quantize=list(op_types) if op_types is not None else None,
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
            )
            onnx.checker.check_model(str(tmp))
    counts: dict[str, int] = {}
    for node in onnx.load(str(dst), load_external_data=False).graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearMatMul", "QGemm"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    size_in, size_out = src.stat().st_size, dst.stat().st_size
    return {
        "input": str(src),
        "output": str(dst),
        "input_bytes": size_in,
        "output_bytes": size_out,
        "size_ratio": round(size_out / size_in, 4),
        "sha256": sha256_file(dst),
        "weight_type": "QInt8",
        "per_channel": per_channel,
        "op_types": list(op_types) if op_types is not None else None,
        "preprocessed": preprocessed,
        "preprocess_error": pre_error,
        "quantized_nodes": counts,
        "seconds": round(time.perf_counter() - t0, 3),
    }
