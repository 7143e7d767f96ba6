"""Image tensors for training and inference, and batch-wise augmentation on tensors."""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


def augment_batch_frames(
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
    served_side: int | None = None,
    jpeg_prob: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop (affine zoom + shift), horizontal flip, brightness/contrast jitter,
    and with probability ``saturation_prob`` a chroma factor drawn from U(``saturation``).

    With probability ``geometry_prob`` a sample gets the StreetVision validator's geometry
    instead of the zoom/shift: a rotation by U(-``rotation``, ``rotation``) degrees with black
    corners, then a square crop of U(``geometry_scale``) of the area at a uniform position.

    With probability ``noise_prob`` a sample gets the validator's Gaussian colour noise
    (:func:`validator_noise`), a variance drawn from ``noise_variances``, after the colour steps
    as in the validator's level 3.

    With probability ``jpeg_prob`` a sample ends as every validator image does
    (:func:`validator_jpeg`): 8 bits and a Pillow JPEG at quality 75 at ``noise_size`` px.

    ``images``: float ``[B, 3, H, W]`` in [0, 1]; returns ``[B, 3, out_size, out_size]`` (default:
    the input's shape), clamped to [0, 1], and each sample's frame: the affine ``theta`` ``[B, 2, 3]``
    that maps an output position (``[-1, 1]`` coordinates) to where it was taken from in the
    input (:func:`boxes_in_frame` reads it). A larger input than ``out_size`` makes the zoom and
    crop sample real pixels, then an antialiased resize brings the batch to ``out_size``.
    ``served_side`` (the served path's ``inference.input_size``): both resizes, the batch's to
    ``out_size`` and the noise's from ``noise_size``, go the way a served image goes instead
    (:func:`served_resize`), so training sees the sharpness and noise the model is served.
    One affine grid for the whole batch keeps this a handful of tensor ops per step. With
    ``saturation_prob`` and ``geometry_prob`` 0 no extra random numbers are drawn, so the
    stream is as before (likewise ``noise_prob`` and ``jpeg_prob``).
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
        out, theta = _validator_geometry(images, out, theta, flip, rand, geometry_prob, rotation, geometry_scale)
    if out_size is not None and tuple(out.shape[-2:]) != (out_size, out_size):
        out = served_resize(out, out_size, served_side)
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
        out = validator_noise(out, generator, noise_prob, noise_variances, noise_size, served_side)
    if jpeg_prob > 0:
        out = validator_jpeg(out, generator, jpeg_prob, noise_size, served_side)
    return out.clamp_(0, 1), theta


def augment_batch(images: torch.Tensor, generator: torch.Generator, **kwargs) -> torch.Tensor:
    """:func:`augment_batch_frames` without the frames: the augmented ``[B, 3, S, S]`` batch."""
    return augment_batch_frames(images, generator, **kwargs)[0]


def _validator_geometry(images, out, frame, flip, rand, prob, rotation, scale) -> tuple[torch.Tensor, torch.Tensor]:
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
    return torch.where(chosen.view(b, 1, 1, 1), geo, out), torch.where(chosen.view(b, 1, 1), theta, frame)


def boxes_in_frame(theta: torch.Tensor, boxes: torch.Tensor, grid: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """How much of each box an augmented sample still shows.

    ``theta``: ``[B, 2, 3]`` frames from :func:`augment_batch_frames`; ``boxes``: ``[B, K, 4]``
    ``(u0, v0, u1, v1)`` in fractions of the input image's width and height, NaN rows for
    padding. Each box is sampled on a ``grid`` x ``grid`` lattice; a point is kept when the
    frame shows it. Returns ``(share, height)``, each ``[B, K]``: the share of the box's area
    kept, and the vertical extent of the kept points as a share of the frame's height (one
    lattice step of margin, as :func:`roadwork_ml.evaluation.geometry_oracle.kept_fraction`);
    0 for padding and for boxes that leave the frame.
    """
    b, k, _ = boxes.shape
    theta = theta.to(torch.float64)
    t = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    box = torch.nan_to_num(boxes.to(torch.float64), nan=0.0)
    u0, v0, u1, v1 = box.unbind(-1)  # [B, K]
    xs = (u0[..., None] + (u1 - u0)[..., None] * t)[..., None, :].expand(b, k, grid, grid)
    ys = (v0[..., None] + (v1 - v0)[..., None] * t)[..., :, None].expand(b, k, grid, grid)
    src = torch.stack([xs * 2 - 1, ys * 2 - 1], dim=-1)  # input positions, [-1, 1] coordinates
    inv = torch.linalg.inv(theta[:, :, :2])  # [B, 2, 2]: input offset -> output offset
    rel = src - theta[:, None, None, None, :, 2]
    out = torch.einsum("bij,bkgmj->bkgmi", inv, rel)  # [B, K, grid, grid, 2]
    kept = (out.abs() <= 1).all(dim=-1)
    valid = ~torch.isnan(boxes).any(dim=-1) & (u1 > u0) & (v1 > v0)
    share = kept.flatten(2).double().mean(dim=-1) * valid
    oy = out[..., 1]
    top = torch.where(kept, oy, torch.full_like(oy, torch.inf)).flatten(2).amin(dim=-1)
    bottom = torch.where(kept, oy, torch.full_like(oy, -torch.inf)).flatten(2).amax(dim=-1)
    step = (v1 - v0) * 2 / grid * inv[:, None, 1, 1].abs()  # one lattice step in output units
    height = torch.where(share > 0, ((bottom - top + step) / 2).clamp(max=1.0), torch.zeros_like(share))
    return share.float(), height.float()


def objects_visible(
    theta: torch.Tensor, boxes: torch.Tensor, min_share: float = 0.5, min_height: float = 0.015
) -> torch.Tensor:
    """bool ``[B]``: whether any box keeps at least ``min_share`` of its area in the sample's frame
    at a visible height of at least ``min_height`` of the frame (the synthetic generator's own
    visibility rule, as :func:`roadwork_ml.evaluation.geometry_oracle.object_visible` applies it
    to the validator's frame). ``theta``, ``boxes``: as :func:`boxes_in_frame`."""
    share, height = boxes_in_frame(theta, boxes)
    return ((share >= min_share) & (height >= min_height)).any(dim=-1)


# Unit Gaussian noise on the validator's Y, Cb, Cr → RGB in [0, 1] units: its DeeperForensics
# conversion (roadwork_ml.augment.streetvision) scales Y by 255/219 and Cb, Cr by 255/224 on the
# way back, then OpenCV's YCrCb → BGR mixes them (R = Y + 1.403 Cr, G = Y - 0.344 Cb - 0.714 Cr,
# B = Y + 1.773 Cb). Rows R, G, B; columns Y, Cb, Cr.
_NOISE_TO_RGB = (
    (255 / 219, 0.0, 1.403 * 255 / 224),
    (255 / 219, -0.344 * 255 / 224, -0.714 * 255 / 224),
    (255 / 219, 1.773 * 255 / 224, 0.0),
)


def served_resize(images: torch.Tensor, size: int | tuple[int, int], served_side: int | None = None) -> torch.Tensor:
    """Float ``[B, 3, H, W]`` → ``[B, 3, *size]`` (an int: square). Without ``served_side``: one
    antialiased bilinear resize. With it, the served path's two steps: antialiased to
    ``served_side`` (the bundle's ``inference.input_size``,
    :func:`roadwork_ml.evaluation.report.resize_images`), then bilinear without antialias to the
    model's input (the global view, :mod:`roadwork_ml.models.multiview`); at 2x that second step
    is a 2 x 2 box, sharper than one antialiased resize and less kind to noise (1.25x its
    standard deviation, 224 → 128 → 64 against 224 → 64)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if served_side is None:
        return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    if tuple(images.shape[-2:]) != (served_side, served_side):
        images = F.interpolate(
            images, size=(served_side, served_side), mode="bilinear", antialias=True, align_corners=False
        )
    if (served_side, served_side) != size:
        images = F.interpolate(images, size=size, mode="bilinear", antialias=False, align_corners=False)
    return images


def validator_noise(
    images: torch.Tensor,
    generator: torch.Generator,
    prob: float,
    variances: Sequence[float] = (0.001, 0.002),
    size: int = 224,
    served_side: int | None = None,
) -> torch.Tensor:
    """The StreetVision validator's Gaussian colour noise on a share ``prob`` of float
    ``[B, 3, H, W]`` RGB in [0, 1] (returns a new tensor, unclamped).

    The validator adds independent N(0, variance) to Y, Cb and Cr (YCbCr/255 units) of its
    ``size``-px image; a model that takes ``H`` < ``size`` px sees that noise through the
    resize. So the noise is drawn at ``size`` px, mixed into RGB (``_NOISE_TO_RGB``) and brought
    to ``H`` x ``W`` by one antialiased bilinear resize, or (``served_side``) by the served path's
    two steps (:func:`served_resize`): the noise the model sees has the validator's amplitude
    and spectrum at the model's input (its 9-13 grey
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
        rgb = served_resize(rgb, (h, w), served_side)
    out = images.clone()
    out[chosen.to(images.device)] += rgb.to(images.device, images.dtype)
    return out


def validator_jpeg(
    images: torch.Tensor,
    generator: torch.Generator,
    prob: float,
    size: int = 224,
    served_side: int | None = None,
) -> torch.Tensor:
    """The validator's closing step on a share ``prob`` of float ``[B, 3, H, W]`` RGB in [0, 1]
    (returns a new tensor): every image it sends is truncated to 8 bits and JPEG-encoded by Pillow
    at quality 75 at ``size`` px (:func:`roadwork_ml.augment.streetvision.jpeg_roundtrip`).

    A chosen sample is resized to ``size`` (bilinear, antialiased), truncated (floor of x * 255)
    and sent through the JPEG round trip; what that changed is brought back to ``H`` x ``W`` as a
    served image is (:func:`served_resize`) and added to the sample. Only the codec's error is
    added: resizing the sample itself up and back would blur it, a change the validator does not
    make. The codec quantizes chroma coarsely: after the validator's colour-saturation step
    (chroma x 0.4 or 0.3) a chroma-normalizing model (``model.input_norm``) scales its error back
    up with the colour, which the float chroma step alone never shows the model
    (docs/training_recipe.md, twelfth pass)."""
    from roadwork_ml.augment.streetvision import jpeg_roundtrip

    b, _, h, w = images.shape
    chosen = (torch.rand(b, generator=generator) < prob).nonzero().flatten()
    out = images.clone()
    if len(chosen) == 0:
        return out
    x = images[chosen.to(images.device)].detach().float().clamp(0, 1).cpu()
    if (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    u8 = np.ascontiguousarray((x * 255).floor().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    threads = min(torch.get_num_threads(), len(u8))
    if threads > 1:  # Pillow's codec releases the GIL
        with ThreadPoolExecutor(threads) as pool:
            back = np.stack(list(pool.map(jpeg_roundtrip, u8)))
    else:
        back = np.stack([jpeg_roundtrip(img) for img in u8])
    error = torch.from_numpy(back).permute(0, 3, 1, 2).float().div_(255) - x
    if (h, w) != (size, size):
        error = served_resize(error, (h, w), served_side)
    out[chosen.to(images.device)] += error.to(images.device, images.dtype)
    return out


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the Y of the validator's YCbCr


def desaturate(images: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale the chroma of float ``[B, 3, H, W]`` RGB around its BT.601 luma by ``factor`` (``[B, 1, 1, 1]`` or scalar)."""
    w = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    luma = (images * w).sum(dim=1, keepdim=True)
    return luma + (images - luma) * factor
