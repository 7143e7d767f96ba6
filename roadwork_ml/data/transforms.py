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


def load_verified_batch(
    paths: Sequence[str | Path], sha256: Sequence[str], size: int, progress: bool = False
) -> torch.Tensor:
    """:func:`load_image_batch` after checking each file's sha256 against ``sha256`` (the
    source_images manifest's); a changed file raises ``IntegrityError`` naming it."""
    from roadwork_ml.artifacts import IntegrityError, sha256_file

    for path, digest in zip(paths, sha256, strict=True):
        if sha256_file(path) != digest:
            raise IntegrityError(
                f"{path} changed since source_images wrote it (sha256 mismatch): re-materialize source_images"
            )
    return load_image_batch(paths, size, progress=progress)


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
    saturation: tuple[float, float] = (1.0, 1.0),
    saturation_prob: float = 0.0,
    geometry_prob: float = 0.0,
    rotation: float = 20.0,
    geometry_scale: tuple[float, float] = (0.2, 1.0),
    noise_prob: float = 0.0,
    noise_variances: Sequence[float] = (0.001, 0.002),
    noise_size: int = 224,
    out_size: int | None = None,
) -> torch.Tensor:
    """Random resized crop (affine zoom + shift), horizontal flip, brightness/contrast jitter,
    and with probability ``saturation_prob`` a chroma factor drawn from U(``saturation``).

    With probability ``geometry_prob`` a sample gets the StreetVision validator's geometry
    instead of the zoom/shift: a rotation by U(-``rotation``, ``rotation``) degrees with black
    corners, then a square crop of U(``geometry_scale``) of the area at a uniform position.

    With probability ``noise_prob`` a sample gets the validator's Gaussian colour noise
    (:func:`validator_noise`), a variance drawn from ``noise_variances``, after the colour steps
    as in the validator's level 3.

    ``images``: float ``[B, 3, H, W]`` in [0, 1]; returns ``[B, 3, out_size, out_size]`` (default:
    the input's shape), clamped to [0, 1]. A larger input than ``out_size`` makes the zoom and
    crop sample real pixels, then an antialiased resize brings the batch to ``out_size``.
    One affine grid for the whole batch keeps this a handful of tensor ops per step. With
    ``saturation_prob`` and ``geometry_prob`` 0 no extra random numbers are drawn, so the
    stream is as before (likewise ``noise_prob``).
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
    if geometry_prob > 0:
        out = _validator_geometry(images, out, flip, rand, geometry_prob, rotation, geometry_scale)
    if out_size is not None and tuple(out.shape[-2:]) != (out_size, out_size):
        out = F.interpolate(out, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    brightness = 1 + (rand(b, 1, 1, 1) * 2 - 1) * jitter
    contrast = 1 + (rand(b, 1, 1, 1) * 2 - 1) * jitter
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean * brightness
    if saturation_prob > 0:
        # the StreetVision validator's worst distortion: its colour-saturation step scales the
        # chroma to 0.4 or 0.3 around the luma (levels 2-3)
        factor = saturation[0] + (saturation[1] - saturation[0]) * rand(b, 1, 1, 1)
        factor = torch.where(rand(b, 1, 1, 1) < saturation_prob, factor, torch.ones_like(factor))
        out = desaturate(out, factor)
    if noise_prob > 0:
        out = validator_noise(out, generator, noise_prob, noise_variances, noise_size)
    return out.clamp_(0, 1)


def _validator_geometry(images, out, flip, rand, prob, rotation, scale) -> torch.Tensor:
    b = images.shape[0]
    chosen = rand(b) < prob
    angle = torch.deg2rad((rand(b) * 2 - 1) * rotation)
    side = torch.sqrt(scale[0] + (scale[1] - scale[0]) * rand(b))  # crop side, fraction of the image side
    cx = (rand(b) * 2 - 1) * (1 - side)
    cy = (rand(b) * 2 - 1) * (1 - side)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output u -> crop centre c + side * u in the rotated image -> R(-angle) back to the source
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = side * cos * flip
    theta[:, 0, 1] = side * sin
    theta[:, 1, 0] = -side * sin * flip
    theta[:, 1, 1] = side * cos
    theta[:, 0, 2] = cos * cx + sin * cy
    theta[:, 1, 2] = -sin * cx + cos * cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    geo = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(chosen.view(b, 1, 1, 1), geo, out)


# Unit Gaussian noise on the validator's Y, Cb, Cr → RGB in [0, 1] units: its DeeperForensics
# conversion (roadwork_ml.augment.streetvision) scales Y by 255/219 and Cb, Cr by 255/224 on the
# way back, then OpenCV's YCrCb → BGR mixes them (R = Y + 1.403 Cr, G = Y - 0.344 Cb - 0.714 Cr,
# B = Y + 1.773 Cb). Rows R, G, B; columns Y, Cb, Cr.
_NOISE_TO_RGB = (
    (255 / 219, 0.0, 1.403 * 255 / 224),
    (255 / 219, -0.344 * 255 / 224, -0.714 * 255 / 224),
    (255 / 219, 1.773 * 255 / 224, 0.0),
)


def validator_noise(
    images: torch.Tensor,
    generator: torch.Generator,
    prob: float,
    variances: Sequence[float] = (0.001, 0.002),
    size: int = 224,
) -> torch.Tensor:
    """The StreetVision validator's Gaussian colour noise on a share ``prob`` of float
    ``[B, 3, H, W]`` RGB in [0, 1] (returns a new tensor, unclamped).

    The validator adds independent N(0, variance) to Y, Cb and Cr (YCbCr/255 units) of its
    ``size``-px image; a model that takes ``H`` < ``size`` px sees that noise through the
    resize. So the noise is drawn at ``size`` px, mixed into RGB (``_NOISE_TO_RGB``) and brought
    to ``H`` x ``W`` by the same antialiased bilinear resize the served path uses: the noise the
    model sees has the validator's amplitude and spectrum at the model's input (its 9-13 grey
    levels of luma at 224 px are ~2-3 at 64 px)."""
    b, _, h, w = images.shape
    chosen = torch.rand(b, generator=generator) < prob
    k = int(chosen.sum())
    if k == 0:
        return images.clone()
    pick = torch.randint(len(variances), (k,), generator=generator)
    sigma = torch.tensor(variances, dtype=torch.float32)[pick].sqrt().view(k, 1, 1, 1)
    ycc = torch.randn(k, 3, size, size, generator=generator) * sigma
    rgb = torch.einsum("ij,bjhw->bihw", torch.tensor(_NOISE_TO_RGB, dtype=torch.float32), ycc)
    if (h, w) != (size, size):
        rgb = F.interpolate(rgb, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    out = images.clone()
    out[chosen.to(images.device)] += rgb.to(images.device, images.dtype)
    return out


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the Y of the validator's YCbCr


def desaturate(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale the chroma of float ``[B, 3, H, W]`` RGB around its BT.601 luma by ``factor`` (``[B, 1, 1, 1]`` or scalar)."""
    w = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    luma = (images * w).sum(dim=1, keepdim=True)
    return luma + (images - luma) * factor
