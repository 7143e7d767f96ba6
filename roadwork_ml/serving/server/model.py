"""One loaded champion: its verified bundle on ``instances`` predictors, image decoding, the
batch function the batcher runs, and the projection its inference-log embeddings use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadwork_ml.artifacts import sha256_file
from roadwork_ml.export.bundle import MANIFEST
from roadwork_ml.serving.predictor import CLASS_NAMES, BundlePredictor


@dataclass
class BatchOutputs:
    """Per-image arrays of one batch (aligned on axis 0), and the model that produced them."""

    probability: np.ndarray  # [N] calibrated P(roadwork)
    streetvision: np.ndarray  # [N] StreetVision probability (folded at 0.5)
    decision: np.ndarray  # [N] object: roadwork | no_roadwork | defer
    prediction_set: np.ndarray  # [N, C] bool
    features: np.ndarray  # [N, 7] uncertainty features
    logits: np.ndarray  # [N, C]
    embeddings: np.ndarray  # [N, D] mean over views
    model: ServedModel

    def rows(self, start: int, stop: int) -> BatchOutputs:
        s = slice(start, stop)
        return BatchOutputs(
            self.probability[s],
            self.streetvision[s],
            self.decision[s],
            self.prediction_set[s],
            self.features[s],
            self.logits[s],
            self.embeddings[s],
            self.model,
        )

    def prediction_set_names(self) -> list[str]:
        """Each image's prediction set as ``"no_roadwork|roadwork"`` (empty string = empty set)."""
        return ["|".join(CLASS_NAMES[c] for c in np.flatnonzero(row)) for row in self.prediction_set]


class ServedModel:
    """A bundle loaded for serving (every file's hash verified by :class:`BundlePredictor`).

    ``version``: the protocol's model version (registry version number, or the weights'
    sha256 prefix); ``log_version``: the inference log's ``model_version`` (e.g.
    ``roadwork-classifier/3``). ``reference_dir``: a ``reference_profile`` whose PCA projection
    the logged embeddings go through (needed only when the server writes the log).
    ``escalation_file``: the platform's escalation state (``roadwork_assets.escalation``); while
    the file exists, an SCRC decision policy decides at its stricter risk (defers more)."""

    def __init__(
        self,
        bundle: str | Path,
        version: str | None = None,
        log_version: str | None = None,
        *,
        backend: str = "onnx",
        engine: str | Path | None = None,
        threads: int | None = None,
        instances: int = 1,
        device: str | None = None,
        reference_dir: str | Path | None = None,
        escalation_file: str | Path | None = None,
    ):
        self.path = Path(bundle)
        self.escalation_file = Path(escalation_file) if escalation_file else None
        self.predictors = [
            BundlePredictor(
                self.path,
                backend=backend,
                device=device,
                engine=engine,
                threads=threads or None,
            )
            for _ in range(instances)
        ]
        first = self.predictors[0]
        self.backend = first.backend
        self.version = version or first.model_version
        self.log_version = log_version or self.version
        self.bundle_sha256 = sha256_file(self.path / MANIFEST)
        self.input_size = first.input_size
        self.embed_dim = int(first.config["embed_dim"])
        self.num_classes = int(first.config["num_classes"])
        self.projection = None
        if reference_dir is not None:
            from roadwork_ml.monitoring.reference import ReferenceProfile

            self.projection = ReferenceProfile.load(reference_dir).projection
            if self.projection is None or self.projection.input_dim != self.embed_dim:
                got = None if self.projection is None else self.projection.input_dim
                raise ValueError(
                    f"reference profile {reference_dir} projects {got}-d embeddings, the bundle's are {self.embed_dim}-d: use the reference_profile built for this champion"
                )

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded image → float32 ``[3, S, S]`` in [0, 1] through the ingestion decoder's
        rules (bomb limit, min side, EXIF, any mode to RGB); raises DecodeError with the reason."""
        return self.predictors[0].load_image(data).numpy().astype(np.float32) * np.float32(1 / 255)

    def run(self, instance: int, images: np.ndarray) -> BatchOutputs:
        """``images`` float32 ``[B, 3, S, S]`` in [0, 1] → :class:`BatchOutputs` (on this thread)."""
        predictor = self.predictors[instance]
        predictor.policy.escalated = self.escalated  # one stat per batch: set or cleared without a restart
        out = predictor.predict_tensor(images, batch_size=max(1, len(images)))
        d = out.decisions
        return BatchOutputs(
            d.calibrated[:, 1].astype(np.float32),
            np.asarray(d.streetvision, dtype=np.float32),
            np.asarray(d.decision, dtype=object),
            np.asarray(d.prediction_set, dtype=bool),
            out.features.astype(np.float32),
            out.logits.astype(np.float32),
            out.embeddings,
            self,
        )

    @property
    def escalated(self) -> bool:
        """Whether the platform has escalated (its escalation file exists)."""
        return self.escalation_file is not None and self.escalation_file.exists()

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Run every instance once per batch size so the first requests do not pay for
        allocation and kernel selection."""
        for i in range(len(self.predictors)):
            for b in sorted(set(batch_sizes)):
                self.run(
                    i,
                    np.full((b, 3, self.input_size, self.input_size), 0.5, dtype=np.float32),
                )

    def info(self) -> dict[str, str]:
        return {
            "version": self.version,
            "log_version": self.log_version,
            "backend": self.backend,
            "bundle_manifest_sha256": self.bundle_sha256,
        }
