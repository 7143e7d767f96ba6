"""Image tensors for training and inference, and batch-wise augmentation on tensors."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def load_image_tensor(path: str | Path, size: int) -> torch.Tensor:
    """Decode one stored (already sanitized) image and resize it to ``[3, size, size]`` uint8."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def image_bytes_to_tensor(data: bytes, size: int) -> torch.Tensor:
    return load_image_tensor(io.BytesIO(data), size)  # type: ignore[arg-type]


def load_image_batch(paths: Sequence[str | Path], size: int, progress: bool = False) -> torch.Tensor:
    """Decode many images into one ``[N, 3, size, size]`` uint8 tensor (fits in RAM for small sets)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    iterator = enumerate(paths)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(paths), desc=f"decode {size}px", leave=False)
    for i, p in iterator:
        out[i] = load_image_tensor(p, size)
    return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` → float32 in [0, 1] (the model's input contract)."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.7, 1.0),
    max_shift: float = 0.1,
    jitter: float = 0.2,
    flip_prob: float = 0.5,
) -> torch.Tensor:
    """Random resized crop (affine zoom + shift), horizontal flip, brightness/contrast jitter.

    ``images``: float ``[B, 3, H, W]`` in [0, 1]; returns the same shape, clamped to [0, 1].
    One affine grid for the whole batch keeps this a handful of tensor ops per step.
    """
    b = images.shape[0]
    dev = images.device
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(dev)
    zoom = scale[0] + (scale[1] - scale[0]) * rand(b)
    flip = torch.where(rand(b) < flip_prob, -1.0, 1.0).to(dev)
    tx = (rand(b) * 2 - 1) * max_shift
    ty = (rand(b) * 2 - 1) * max_shift
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = zoom * flip
    theta[:, 1, 1] = zoom
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = 1 + (rand(b, 1, 1, 1) * 2 - 1) * jitter
    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * jitter
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean * brightness
    return out.clamp_(0, 1)
