"""The inference path every consumer shares: multi-view forward, aggregation, uncertainty features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from roadwork_ml.config import InferenceConfig, ModelConfig
from roadwork_ml.data.transforms import to_float
from roadwork_ml.models.classifier import RoadworkClassifier
from roadwork_ml.models.device import autocast_dtype, memory_layout
from roadwork_ml.models.multiview import MultiViewClassifier, ViewSpec
from roadwork_ml.policy.uncertainty import uncertainty_features


@dataclass
class ViewOutputs:
    """Per image: ``logits`` [N, C] (log of aggregated probabilities), ``view_logits`` [N, V, C],
    ``embeddings`` [N, D] (mean over views), ``features`` [N, 7] (uncertainty features);
    ``view_embeddings`` [N, V, D] only when asked for (it is V times the size)."""

    logits: np.ndarray
    view_logits: np.ndarray
    embeddings: np.ndarray
    features: np.ndarray
    view_embeddings: np.ndarray | None = None


def view_spec(model_cfg: ModelConfig, inf: InferenceConfig, multi_view: bool | None = None) -> ViewSpec:
    multi = inf.multi_view if multi_view is None else multi_view
    return ViewSpec(size=model_cfg.img_size, grid=inf.grid, overlap=inf.overlap, flip=inf.flip_tta, multi=multi)


def multiview_model(
    model: RoadworkClassifier,
    model_cfg: ModelConfig,
    inf: InferenceConfig,
    choice: dict | None = None,
    attention: torch.nn.Module | None = None,
) -> MultiViewClassifier:
    """The served model. ``choice`` (from the view_aggregator artifact: ``multi_view``,
    ``aggregator``, ``top_k``) overrides the profile; ``attention`` is the trained aggregator."""
    if choice is None:
        if inf.aggregator in ("auto", "attention", "topk"):
            raise ValueError(
                f"aggregator {inf.aggregator!r} is chosen / trained by the view_aggregator asset: pass its choice"
            )
        choice = {"multi_view": inf.multi_view, "aggregator": inf.aggregator, "top_k": 1}
    spec = view_spec(model_cfg, inf, choice["multi_view"])
    return MultiViewClassifier(
        model, spec, choice["aggregator"], int(choice["top_k"]) or 1, attention, view_chunk=inf.view_chunk
    ).eval()


def global_view_probability(model: RoadworkClassifier, model_cfg: ModelConfig, inf: InferenceConfig):
    """``predict(uint8 [B, 3, H, W]) -> P(roadwork) [B]`` (float64 numpy) as the served global
    view computes it: resized to ``inf.input_size``, the global view (plus the profile's flip
    TTA), mean of the views' probabilities; batches of ``inf.batch_size``. For benchmarks that
    score a torch model on the StreetVision emulation without building a bundle."""
    from roadwork_ml.evaluation.report import resize_images

    mv = multiview_model(model, model_cfg, inf, choice={"multi_view": False, "aggregator": "mean", "top_k": 1})

    @torch.no_grad()
    def predict(batch: torch.Tensor) -> np.ndarray:
        out = []
        for s in range(0, batch.shape[0], inf.batch_size):
            x = to_float(resize_images(batch[s : s + inf.batch_size], inf.input_size))
            out.append(mv(x)[0].exp()[:, 1])
        return torch.cat(out).double().numpy()

    return predict


def view_features(logits: np.ndarray, view_logits: np.ndarray, view_embeddings: np.ndarray) -> np.ndarray:
    """The 7 uncertainty features ``[N, 7]`` from a multi-view model's outputs: aggregated
    ``logits`` [N, C] (log of aggregated probabilities), ``view_logits`` [N, V, C] and
    ``view_embeddings`` [N, V, D]. Every backend (PyTorch, ONNX Runtime, TensorRT) goes through here."""
    view_probs = torch.from_numpy(np.asarray(view_logits)).double().softmax(-1).numpy()
    decision = np.exp(np.asarray(logits, dtype=np.float64))
    decision /= decision.sum(1, keepdims=True)
    return uncertainty_features(view_probs, np.asarray(view_embeddings, dtype=np.float64), decision_probs=decision)


def _image_batches(images, batch_size: int, loader):
    """uint8/float batches in order from a tensor ``[N, 3, H, W]`` or a streaming ImageDataset."""
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    from roadwork_ml.config import LoaderConfig
    from roadwork_ml.training.dataset import build_loader, iterate_batches

    for batch in iterate_batches(build_loader(images, loader or LoaderConfig(), batch_size, shuffle=False)):
        yield batch.images


@torch.no_grad()
def predict_views(
    mv: MultiViewClassifier,
    images,
    batch_size: int,
    progress: bool = False,
    keep_view_embeddings: bool = False,
    loader=None,
    amp: bool | None = None,
    channels_last: bool = True,
) -> ViewOutputs:
    """Run ``mv`` over uint8 or float images ``[N, 3, H, W]``, or over a streaming
    :class:`~roadwork_ml.training.dataset.ImageDataset` (decoded by ``loader``: a LoaderConfig,
    so a split is never held in memory), in batches of ``batch_size`` images, in order, on
    ``mv``'s device; ``amp`` (default: on when that device is CUDA) runs it in bf16 autocast;
    ``channels_last`` (the profile's ``inference.channels_last``) runs the convolutions in that
    layout (:func:`~roadwork_ml.models.device.memory_layout`). Outputs are float32 on the CPU either way."""
    device = next(mv.parameters()).device
    dtype = autocast_dtype(device, device.type == "cuda" if amp is None else amp)
    mv.eval()
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    batches = _image_batches(images, batch_size, loader)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(images) // batch_size), desc="inference", leave=False)
    with memory_layout(mv, channels_last):
        for chunk in batches:
            x = to_float(chunk.to(device, non_blocking=True))
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits, view_logits, view_emb = mv(x)
            parts.append((logits.float().cpu(), view_logits.float().cpu(), view_emb.float().cpu()))
    if not parts:
        raise ValueError("predict_views got no images")
    logits = torch.cat([p[0] for p in parts]).numpy()
    view_logits = torch.cat([p[1] for p in parts]).numpy()
    view_emb = torch.cat([p[2] for p in parts]).numpy()
    features = view_features(logits, view_logits, view_emb)
    return ViewOutputs(
        logits=logits,
        view_logits=view_logits,
        embeddings=view_emb.mean(1),
        features=features,
        view_embeddings=view_emb if keep_view_embeddings else None,
    )
