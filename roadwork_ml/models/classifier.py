"""The roadwork classifier: normalization + backbone + head, from a float image to logits."""

from __future__ import annotations

import torch
from torch import nn

from roadwork_ml.config import ModelConfig
from roadwork_ml.models.backbone import create_backbone
from roadwork_ml.models.photometric import PhotometricNorm


class ClassificationHead(nn.Module):
    """``[B, D]`` pooled features → ``[B, C]`` logits; linear, or one hidden layer when ``hidden > 0``."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_features, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class RoadworkClassifier(nn.Module):
    """Image ``[B, 3, H, W]`` float in [0, 1] → logits ``[B, C]``.

    The optional per-image photometric normalization (``input_norm``) and the mean/std
    normalization (buffers) live inside the module so every export of the model (ONNX,
    TensorRT) takes the same plain [0, 1] input.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: ClassificationHead,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        input_norm: PhotometricNorm | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.input_norm = input_norm if input_norm is not None else PhotometricNorm("none")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def embed_dim(self) -> int:
        return int(self.backbone.num_features)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``[B, D]``."""
        return self.backbone((self.input_norm(images) - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))

    def forward_with_embedding(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(images)
        return self.head(emb), emb


def build_classifier(cfg: ModelConfig) -> RoadworkClassifier:
    """The one factory for the classifier every profile trains, exports and serves."""
    backbone = create_backbone(cfg)
    data_cfg = getattr(backbone, "pretrained_cfg", None) or {}
    mean = tuple(data_cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(data_cfg.get("std", (0.229, 0.224, 0.225)))
    head = ClassificationHead(int(backbone.num_features), cfg.num_classes, cfg.head_hidden, cfg.head_dropout)
    model = RoadworkClassifier(
        backbone,
        head,
        mean,
        std,
        PhotometricNorm(
            cfg.input_norm,
            chroma_floor=cfg.input_norm_chroma_floor,
            luma_floor=cfg.input_norm_luma_floor,
            min_luma=cfg.input_norm_min_luma,
            luma_power=cfg.input_norm_luma_power,
        ),
    )
    if cfg.freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return model
