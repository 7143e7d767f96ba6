"""Classifier checkpoints: ``model.safetensors`` + ``config.json`` + ``MANIFEST.json`` (sha256)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from roadwork_ml.artifacts import atomic_path, atomic_write_json, verify_dir, write_manifest
from roadwork_ml.config import ModelConfig
from roadwork_ml.contracts import validate_state_dict
from roadwork_ml.models.classifier import RoadworkClassifier, build_classifier
from roadwork_ml.models.device import torch_device

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_checkpoint(
    model: RoadworkClassifier, model_cfg: ModelConfig, directory: str | Path, info: dict[str, Any] | None = None
) -> dict:
    """Write weights and config atomically, then hash them into the manifest; returns the manifest."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    validate_state_dict(state)
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "roadwork": "classifier/1"})
    # weights_path is cleared: the checkpoint itself now carries every weight.
    cfg = model_cfg.model_copy(update={"weights_path": None}).model_dump(mode="json")
    atomic_write_json(directory / CONFIG, {"model": cfg, "info": info or {}})
    return write_manifest(directory, extra={"kind": "classifier-checkpoint"})


def load_checkpoint(directory: str | Path, device: str | torch.device | None = None) -> tuple[RoadworkClassifier, dict]:
    """Verify hashes, rebuild the architecture from config, load weights strictly; returns (model
    in eval mode on ``device`` — default CUDA when available, else CPU — and config)."""
    directory = Path(directory)
    verify_dir(directory)
    meta = json.loads((directory / CONFIG).read_text())
    model_cfg = ModelConfig.model_validate(meta["model"])
    device = torch_device(device)
    if model_cfg.attention == "flash" and device.type != "cuda":
        # same weights, another kernel: flash kernels exist on CUDA only
        model_cfg = model_cfg.model_copy(update={"attention": "sdpa"})
    model = build_classifier(model_cfg)
    state = load_file(str(directory / WEIGHTS), device="cpu")
    validate_state_dict(state)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta
