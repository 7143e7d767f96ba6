"""TensorRT engine from the exported ONNX graph, a runner over torch CUDA buffers, and the
agreement check an engine must pass before it is shipped.

TensorRT 10 Python API: ``Builder`` → network (explicit batch) → ``OnnxParser`` →
``BuilderConfig`` (FP16 flag, workspace pool, one optimization profile over the dynamic batch
dim) → ``build_serialized_network``. ``tensorrt`` is imported lazily, inside the functions that
need it, so this module imports (and :func:`build_engine` fails with a clear
:class:`TensorRTUnavailable`) on machines without it.

An engine is specific to the GPU model and the TensorRT version that built it: build it on
the serving machine's GPU type (the ``tensorrt_engine`` asset runs where one is present).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from roadwork_ml.artifacts import atomic_write_bytes
from roadwork_ml.export.onnx_export import INPUT_NAME, OUTPUT_NAMES, decisions, onnx_signature
from roadwork_ml.numerics import softmax

MIN_TENSORRT_MAJOR = 10


class TensorRTUnavailable(RuntimeError):
    """TensorRT or CUDA is missing (or unusable) here; ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(f"cannot build or run a TensorRT engine: {reason}")
        self.reason = reason


class EngineRejected(RuntimeError):
    """The engine's outputs do not agree with the ONNX model's closely enough to ship it."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def tensorrt_available() -> tuple[bool, str]:
    """(True, "tensorrt X on <GPU>") when an engine can be built here, else (False, reason)."""
    try:
        import tensorrt as trt
    except ImportError:
        return (
            False,
            "tensorrt is not installed (on a CUDA machine: pip install -e '.[gpu]', TensorRT 10.x for CUDA 13)",
        )
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer) is "unavailable" too
        return False, f"tensorrt failed to import: {type(e).__name__}: {e}"
    version = getattr(trt, "__version__", "0")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT_MAJOR:
        return False, f"tensorrt {version} is installed, {MIN_TENSORRT_MAJOR}.x or newer is required"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (the TensorRT runner uses torch CUDA tensors as buffers)"
    if not torch.cuda.is_available():
        return (
            False,
            "CUDA is not available (torch.cuda.is_available() is False: no GPU, no driver, or a CPU-only torch build)",
        )
    return True, f"tensorrt {version} on {torch.cuda.get_device_name(0)}"


@dataclass(frozen=True)
class EngineInfo:
    """What :func:`build_engine` wrote. Batch sizes are images per call."""

    path: str
    sha256: str
    size_bytes: int
    onnx_path: str
    input_name: str
    input_size: int  # S, px
    min_batch: int
    opt_batch: int
    max_batch: int
    fp16: bool
    workspace_gb: float
    tensorrt_version: str
    device: str
    build_seconds: float
    outputs: dict[str, list[int]]  # name → dims with -1 for the batch dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_tensorrt():
    ok, reason = tensorrt_available()
    if not ok:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    return trt


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    input_size: int,
    min_batch: int = 1,
    opt_batch: int = 32,
    max_batch: int = 64,
    fp16: bool = True,
    workspace_gb: float = 4,
) -> EngineInfo:
    """Build a TensorRT engine for ``onnx_path`` (input ``images`` [batch, 3, S, S], S =
    ``input_size`` px) valid for batches ``min_batch`` ≤ B ≤ ``max_batch``, tuned for
    ``opt_batch``; FP16 kernels allowed when ``fp16`` (I/O stays float32); builder scratch
    memory up to ``workspace_gb`` GiB. Written atomically to ``engine_path``.

    Raises :class:`TensorRTUnavailable` (before anything is written) when TensorRT or CUDA is
    missing, ``ValueError`` for bad arguments or a graph that does not match ``input_size``,
    ``RuntimeError`` with the parser's / builder's messages when the build fails.
    """
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    if workspace_gb <= 0:
        raise ValueError(f"workspace_gb must be > 0, got {workspace_gb}")
    trt = _require_tensorrt()
    import torch

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    ins, _ = onnx_signature(onnx_path)
    if list(ins) != [INPUT_NAME] or ins[INPUT_NAME][1:] != [3, input_size, input_size]:
        raise ValueError(f"{onnx_path} takes {ins}, expected {INPUT_NAME} [batch, 3, {input_size}, {input_size}]")
    if fp16 and not hasattr(trt.BuilderFlag, "FP16"):
        raise TensorRTUnavailable(
            f"tensorrt {trt.__version__} has no BuilderFlag.FP16 (weak typing was removed in 11.x); install tensorrt 10.x or pass fp16=False"
        )

    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10: every network is explicit-batch; the flag is deprecated (0 where removed)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(1 << int(explicit) if explicit is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")
    inp = network.get_input(0)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    chw = (3, input_size, input_size)
    profile.set_shape(inp.name, (min_batch, *chw), (opt_batch, *chw), (max_batch, *chw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    outputs = {
        network.get_output(i).name: [int(d) for d in network.get_output(i).shape] for i in range(network.num_outputs)
    }
    data = bytes(serialized)
    digest = atomic_write_bytes(engine_path, data)
    return EngineInfo(
        path=str(engine_path),
        sha256=digest,
        size_bytes=len(data),
        onnx_path=str(onnx_path),
        input_name=inp.name,
        input_size=int(input_size),
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        fp16=fp16,
        workspace_gb=float(workspace_gb),
        tensorrt_version=trt.__version__,
        device=torch.cuda.get_device_name(0),
        build_seconds=round(time.perf_counter() - t0, 2),
        outputs=outputs,
    )


class TensorRTRunner:
    """Executes a serialized engine with torch CUDA tensors as I/O buffers.

    :meth:`run_torch` takes a CUDA float32 tensor ``[B, 3, S, S]`` and returns CUDA tensors
    (enqueued on torch's current stream, not synchronized); :meth:`run` takes / returns numpy
    like :class:`~roadwork_ml.export.onnx_export.OnnxRunner`. One runner = one execution
    context: do not share it between threads.
    """

    def __init__(self, engine_path: str | Path, device: int = 0):
        trt = _require_tensorrt()
        import torch

        self._torch = torch
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TensorRT engine {self.path} does not exist")
        self.device = torch.device("cuda", device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise RuntimeError(
                    f"TensorRT could not deserialize {self.path}: built by another TensorRT version or for another GPU? Rebuild it here."
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        if len(self.input_names) != 1:
            raise ValueError(
                f"{self.path} has inputs {self.input_names}; the roadwork engine has exactly one ({INPUT_NAME})"
            )
        self.input_name = self.input_names[0]
        dtypes = {
            trt.DataType.FLOAT: torch.float32,
            trt.DataType.HALF: torch.float16,
            trt.DataType.INT32: torch.int32,
            trt.DataType.INT8: torch.int8,
            trt.DataType.BOOL: torch.bool,
        }
        for extra in ("INT64", "BF16", "UINT8"):
            if hasattr(trt.DataType, extra):
                dtypes[getattr(trt.DataType, extra)] = {
                    "INT64": torch.int64,
                    "BF16": torch.bfloat16,
                    "UINT8": torch.uint8,
                }[extra]
        self.dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
        self.input_shape = [int(d) for d in self.engine.get_tensor_shape(self.input_name)]  # [-1, 3, S, S]

    def run_torch(self, images):
        """``images`` CUDA ``[B, 3, S, S]`` (float32, min_batch ≤ B ≤ max_batch) → {name: CUDA tensor}."""
        torch = self._torch
        if not (self.min_batch <= images.shape[0] <= self.max_batch):
            raise ValueError(
                f"{self.path.name} was built for batches {self.min_batch}..{self.max_batch}, got {images.shape[0]}"
            )
        if list(images.shape[1:]) != self.input_shape[1:]:
            raise ValueError(
                f"{self.path.name} takes {self.input_name} of shape {self.input_shape}, got {list(images.shape)}"
            )
        x = images.to(self.device, self.dtypes[self.input_name]).contiguous()
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise RuntimeError(f"TensorRT rejected input shape {tuple(x.shape)} for {self.input_name}")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        outs = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.path.name} failed")
        # a temporary ``x`` freed on return is safe: the caching allocator reuses its memory
        # only for work ordered after this launch on the same stream
        return outs

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """numpy float32 ``[B, 3, S, S]`` → {output name: numpy float32 array} (synchronous)."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        outs = self.run_torch(x)
        torch.cuda.current_stream(self.device).synchronize()
        return {k: v.float().cpu().numpy() for k, v in outs.items()}


class _Runner(Protocol):
    def run(self, images: np.ndarray) -> dict[str, np.ndarray]: ...


def engine_agreement(
    onnx_runner: _Runner,
    trt_runner: _Runner,
    images: np.ndarray,
    tolerance: float = 0.99,
    max_prob_diff: float | None = None,
    batch_size: int = 32,
    raise_on_reject: bool = True,
) -> dict:
    """Run both runners on ``images`` (float32 ``[N, 3, S, S]`` in [0, 1], ``batch_size`` per
    call) and compare: ``max_prob_diff`` (max |Δ| of softmax(logits)), ``mean_prob_diff``,
    ``max_view_prob_diff``, ``decision_agreement`` (same decision at 0.5, fraction of images).

    The engine is accepted when ``decision_agreement >= tolerance`` (and, when given, the max
    probability difference is ≤ ``max_prob_diff``). Otherwise :class:`EngineRejected` is raised,
    or, with ``raise_on_reject=False``, the report is returned with ``accepted`` False and the
    ``reason``. Any two objects with ``run(images) -> {name: array}`` can be compared.
    """
    x = np.ascontiguousarray(images, dtype=np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"engine_agreement needs images [N, 3, S, S] with N > 0, got {list(x.shape)}")
    ref_parts, got_parts = [], []
    for i in range(0, len(x), batch_size):
        ref_parts.append(onnx_runner.run(x[i : i + batch_size]))
        got_parts.append(trt_runner.run(x[i : i + batch_size]))
    ref = {k: np.concatenate([p[k] for p in ref_parts]) for k in OUTPUT_NAMES[:2]}
    got = {k: np.concatenate([p[k] for p in got_parts]) for k in OUTPUT_NAMES[:2]}
    p_ref, p_got = softmax(ref["logits"]), softmax(got["logits"])
    diff = np.abs(p_ref - p_got)
    report: dict[str, Any] = {
        "n": int(len(x)),
        "max_prob_diff": float(diff.max()),
        "mean_prob_diff": float(diff.mean()),
        "max_view_prob_diff": float(np.abs(softmax(ref["view_logits"]) - softmax(got["view_logits"])).max()),
        "decision_agreement": float((decisions(p_ref) == decisions(p_got)).mean()),
        "tolerance": tolerance,
        "max_prob_diff_allowed": max_prob_diff,
    }
    reasons = []
    if report["decision_agreement"] < tolerance:
        reasons.append(f"decision agreement {report['decision_agreement']:.4f} < required {tolerance}")
    if max_prob_diff is not None and report["max_prob_diff"] > max_prob_diff:
        reasons.append(f"max probability difference {report['max_prob_diff']:.3g} > allowed {max_prob_diff}")
    report["accepted"] = not reasons
    report["reason"] = "; ".join(reasons) or None
    if reasons and raise_on_reject:
        raise EngineRejected(f"engine rejected on {len(x)} images: {report['reason']}", report)
    return report
