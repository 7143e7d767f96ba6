"""``BundlePredictor``: a verified bundle in, per-image decisions out.

Backends: ONNX Runtime on CPU (default without CUDA), PyTorch (CPU or CUDA), TensorRT (CUDA,
given an engine built from the bundle's ONNX by the ``tensorrt_engine`` asset). Every backend
produces the same three tensors (logits, view logits, view embeddings); the uncertainty
features and the decision path after that are shared numpy code
(:class:`~roadwork_ml.policy.decision.DecisionPolicy`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from roadwork_ml.config import DecodeConfig
from roadwork_ml.export.bundle import ONNX, WEIGHTS, load_bundle, rebuild_model
from roadwork_ml.export.identity import bundle_identity
from roadwork_ml.models.inference import view_features
from roadwork_ml.policy.decision import Decisions
from roadwork_ml.policy.uncertainty import FEATURE_NAMES
from roadwork_ml.serving.inputs import IMAGE_SUFFIXES, ScanResult, missing_reason, safe_text, scan_inputs  # noqa: F401 (IMAGE_SUFFIXES re-exported)

CLASS_NAMES = ("no_roadwork", "roadwork")


@dataclass
class Outputs:
    """Model outputs and decisions for N images (arrays aligned on the first axis)."""

    logits: np.ndarray
    features: np.ndarray
    embeddings: np.ndarray  # [N, D], mean over views
    decisions: Decisions
    view_logits: np.ndarray | None = None  # [N, V, C], what a feature gate reads

    def records(self, ids: list[str] | None = None) -> list[dict]:
        """One JSON-ready dict per image."""
        d = self.decisions
        out = []
        for i in range(len(d)):
            rec = {
                "probability": float(d.calibrated[i, 1]),
                "streetvision_probability": float(d.streetvision[i]),
                "decision": str(d.decision[i]),
                "prediction_set": [CLASS_NAMES[c] for c in np.flatnonzero(d.prediction_set[i])],
                "features": {n: float(v) for n, v in zip(FEATURE_NAMES, self.features[i], strict=False)},
            }
            if np.isfinite(d.gate_confidence[i]):
                rec["gate_confidence"] = float(d.gate_confidence[i])
            if ids is not None:
                rec = {"image": ids[i], **rec}
            out.append(rec)
        return out


@dataclass
class BadInput:
    image: str
    reason: str


@dataclass
class PathResults:
    records: list[dict] = field(default_factory=list)
    errors: list[BadInput] = field(default_factory=list)
    outputs: Outputs | None = None  # the arrays behind ``records``, when asked for


def _pick_backend(backend: str, engine: str | Path | None) -> str:
    if backend != "auto":
        return backend
    if torch.cuda.is_available():
        return "tensorrt" if engine else "torch"
    return "onnx"


class BundlePredictor:
    """Load a bundle (every hash verified, nothing unpickled) and predict.

    ``backend``: "auto" | "onnx" | "torch" | "tensorrt"; ``device`` for torch ("cpu", "cuda");
    ``threads``: intra-op threads for ONNX Runtime / torch on CPU (None = library default).
    """

    def __init__(
        self,
        bundle: str | Path,
        backend: str = "auto",
        device: str | None = None,
        engine: str | Path | None = None,
        threads: int | None = None,
    ):
        self.path = Path(bundle)
        self.manifest, self.config, self.policy = load_bundle(self.path)
        self.identity = bundle_identity(self.path)
        self.input_size = int(self.config["input_size"])
        self.n_views = int(self.config["n_views"])
        self.decode_cfg = DecodeConfig.model_validate(self.config["profile"]["data"]["decode"])
        self.backend = _pick_backend(backend, engine)
        if self.backend == "onnx":
            from roadwork_ml.export.onnx_export import OnnxRunner
            from roadwork_ml.models.device import ort_providers

            # CUDA EP when this onnxruntime build has it (the gpu extra); TensorRT is its own backend
            self._onnx = OnnxRunner(self.path / ONNX, providers=ort_providers(tensorrt=False), intra_op_threads=threads)
        elif self.backend == "torch":
            from safetensors.torch import load_file

            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            if threads:
                torch.set_num_threads(threads)
            self._torch = rebuild_model(self.config, load_file(str(self.path / WEIGHTS))).to(self.device)
        elif self.backend == "tensorrt":
            from roadwork_ml.export.tensorrt_build import TensorRTRunner

            if engine is None:
                raise ValueError("the tensorrt backend needs engine=PATH (built by the tensorrt_engine asset)")
            self._trt = TensorRTRunner(engine)
        else:
            raise ValueError(f"backend must be auto, onnx, torch or tensorrt, got {backend!r}")

    @property
    def model_version(self) -> str:
        """The model's id in logs: registry ``name/version`` or ``sha256:<manifest hash>`` (:mod:`~roadwork_ml.export.identity`)."""
        return self.identity.tag

    # -- tensors ---------------------------------------------------------------------------
    def raw_outputs(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images ``[N, 3, S, S]`` (uint8, or float in [0, 1]) → (logits [N,C], view_logits [N,V,C],
        view_embeddings [N,V,D]) as float32 numpy arrays."""
        x = torch.as_tensor(images)
        x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
        if tuple(x.shape[1:]) != (3, self.input_size, self.input_size):
            raise ValueError(f"images must be [N, 3, {self.input_size}, {self.input_size}], got {list(x.shape)}")
        if self.backend == "onnx":
            out = self._onnx.run(x.numpy())
            return out["logits"], out["view_logits"], out["view_embeddings"]
        if self.backend == "torch":
            with torch.no_grad():
                logits, vl, ve = self._torch(x.to(self.device))
            return logits.float().cpu().numpy(), vl.float().cpu().numpy(), ve.float().cpu().numpy()
        out = self._trt.run(x.numpy())
        return out["logits"], out["view_logits"], out["view_embeddings"]

    def predict_tensor(self, images: torch.Tensor | np.ndarray, batch_size: int = 32) -> Outputs:
        parts = [self.raw_outputs(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        if not parts:
            raise ValueError("predict_tensor got no images")
        logits, vl, ve = (np.concatenate([p[k] for p in parts]) for k in range(3))
        features = view_features(logits, vl, ve)
        embeddings = ve.mean(1)
        decisions = self.policy.decide(logits, features, embeddings=embeddings, view_logits=vl, images=images)
        return Outputs(logits, features, embeddings, decisions, view_logits=vl)

    # -- the monitoring inference log --------------------------------------------------------
    def inference_log(
        self,
        outputs: Outputs,
        image_ids: list[str],
        projection,
        *,
        model_version: str | None = None,
        timestamps=None,
        sources=None,
        camera_ids=None,
        hours=None,
        weathers=None,
        labels=None,
        sequence_ids=None,
    ):
        """Rows of the monitoring inference log (:mod:`roadwork_ml.monitoring.inference_log`) for
        ``outputs``: calibrated probability, decision, the 7 features, the embedding through
        ``projection`` (the reference profile's PCA) and slice metadata; unknown metadata is
        "unknown" / -1, timestamps default to now (UTC), labels to "not yet" (-1), sequence ids to null."""
        from datetime import datetime

        from roadwork_ml.data.records import UNKNOWN, time_of_day
        from roadwork_ml.monitoring.inference_log import build_log

        n = len(image_ids)
        hours = [-1] * n if hours is None else list(hours)
        return build_log(
            [datetime.now(UTC)] * n if timestamps is None else timestamps,
            image_ids,
            [UNKNOWN] * n if sources is None else sources,
            [UNKNOWN] * n if camera_ids is None else camera_ids,
            model_version or self.model_version,
            outputs.decisions.calibrated[:, 1],
            list(outputs.decisions.decision),
            outputs.features,
            projection.transform(outputs.embeddings),
            hours,
            [time_of_day(h) for h in hours],
            [UNKNOWN] * n if weathers is None else weathers,
            labels=labels,
            sequence_ids=sequence_ids,
        )

    # -- files -----------------------------------------------------------------------------
    def load_image(self, data: bytes) -> torch.Tensor:
        """Encoded bytes → ``[3, S, S]`` uint8 through the same safe decoder as ingestion
        (bomb limit, EXIF orientation, every mode to RGB); raises DecodeError with a reason."""
        from roadwork_ml.data.decode import safe_open, to_rgb

        img = to_rgb(safe_open(data, self.decode_cfg))
        if img.size != (self.input_size, self.input_size):
            img = img.resize((self.input_size, self.input_size), Image.Resampling.BILINEAR, reducing_gap=None)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    def predict_paths(
        self,
        paths: Iterable[str | Path],
        batch_size: int = 32,
        progress: bool = False,
        keep_outputs: bool = False,
        scan: ScanResult | None = None,
    ) -> Iterator[PathResults]:
        """Files and folders (recursively, image suffixes only; :func:`~roadwork_ml.serving.inputs.scan_inputs`),
        in batches; a file that cannot be read or decoded, a dangling symlink or a folder that
        cannot be listed becomes a :class:`BadInput` with the reason, never an exception.
        ``scan``: an already computed scan of ``paths`` (the caller's, to report skipped files)."""
        scan = scan if scan is not None else scan_inputs(paths)
        files = scan.files
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(files), desc="predict", unit="img")
        if scan.problems:
            yield PathResults(errors=[BadInput(p, why) for p, why in scan.problems])
        for start in range(0, len(files), batch_size):
            res = PathResults()
            tensors, ids = [], []
            for f in files[start : start + batch_size]:
                try:
                    tensors.append(self.load_image(Path(f).read_bytes()))
                    ids.append(str(f))
                except FileNotFoundError:
                    res.errors.append(BadInput(str(f), missing_reason(str(f))))
                except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, never fatal
                    res.errors.append(BadInput(str(f), safe_text(f"{type(exc).__name__}: {exc}")))
            if tensors:
                out = self.predict_tensor(torch.stack(tensors), batch_size)
                res.records = out.records(ids)
                res.outputs = out if keep_outputs else None
            if bar is not None:
                bar.update(len(tensors) + len(res.errors))
            yield res
        if bar is not None:
            bar.close()


def expand_paths(paths: Iterable[str | Path]) -> Iterator[str]:
    """Each file as given; each folder's image files recursively, sorted (the image candidates
    of :func:`~roadwork_ml.serving.inputs.scan_inputs`, which also reports what it skipped)."""
    yield from scan_inputs(paths).files


def append_day_logs(root: str | Path, rows) -> list[Path]:
    """Merge ``rows`` into ``<root>/day=YYYY-MM-DD/log.parquet`` by their timestamps' UTC day:
    an image already logged that day is replaced, never counted twice; each file is rewritten
    atomically."""
    import pandas as pd

    from roadwork_ml.monitoring.inference_log import day_path, read_log, write_log

    written = []
    for day, part in rows.groupby(rows["timestamp"].dt.date):
        path = day_path(root, day)
        if path.exists():
            part = pd.concat([read_log(path), part], ignore_index=True).drop_duplicates("image_id", keep="last")
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_log(path, part.reset_index(drop=True)))
    return written
