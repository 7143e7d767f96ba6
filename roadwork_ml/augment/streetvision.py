"""The StreetVision (subnet 72) validator's augmentation, reproduced: the one source of truth.

Validator code v2.0.4 (see shared DATA_FORMATS.md). Each challenge image gets one level,
each with probability 1/4, then is converted to 8 bits (``x * 255`` truncated), encoded
as a Pillow JPEG at the default quality 75 and sent at 224x224.

* Level 0: RGB, centre crop to a square of the short side, resize to 224x224 (PIL bilinear).
* Level 1 (no centre crop): float [0, 1]; rotation by U(-20, 20) degrees always
  (nearest neighbour, black fill, no expansion); RandomResizedCrop to 224 with scale
  U(0.2, 1) and a square aspect ratio (bilinear, antialiased). The validator's flips never fire.
* Level 2: level 1, then colour saturation, colour contrast and "JPEG", in that order,
  each with a severity drawn uniformly from {0, 1} (0 = skipped).
* Level 3: level 1, then saturation, contrast, JPEG, Gaussian noise, Gaussian blur, each
  with a severity drawn uniformly from {0, 1, 2}.

The distortions are DeeperForensics-1.0's: each converts the float image to 8-bit BGR
(``floor(x * 255)``), applies the OpenCV code below, and converts back to float.
:data:`SEVERITY_TABLES` lists severities 1-5 (3-5 exist but are never drawn).

Randomness comes from a numpy ``Generator`` per image (the validator draws from torch's and
numpy's global generators; the distributions are the same).
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

# OpenCV's own thread pool does not survive fork(): a DataLoader worker forked after the parent
# ran a parallel cv2 call can hang in its first cv2 call. Augmentations run one image per
# worker process anyway, so OpenCV runs sequentially everywhere (as albumentations does).
cv2.setNumThreads(0)

__all__ = [
    "DISTORTION_ORDER",
    "IMAGE_SIZE",
    "JPEG_QUALITY",
    "LEVELS",
    "LEVEL_PROBS",
    "SEVERITY_TABLES",
    "ValidatorParams",
    "apply_distortion",
    "draw_params",
    "jpeg_roundtrip",
    "validator_augment",
]

LEVELS = (0, 1, 2, 3)
LEVEL_PROBS = (0.25, 0.25, 0.25, 0.25)
IMAGE_SIZE = 224
JPEG_QUALITY = 75  # Pillow's default
MAX_ROTATION = 20.0  # degrees
RRC_SCALE = (0.2, 1.0)
RRC_RATIO = (1.0, 1.0)

# DeeperForensics-1.0 parameter tables, severity 1..5 (index severity - 1).
SEVERITY_TABLES: dict[str, tuple[float, ...]] = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),  # colour saturation: chroma factor
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),  # colour contrast: pixel factor
    "JPEG": (2, 3, 4, 5, 6),  # down/up-sampling factor
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),  # Gaussian noise variance, YCbCr/255 units
    "GB": (7, 9, 13, 17, 21),  # Gaussian blur kernel side, sigma = kernel / 6
}
# Per level: the distortions in the validator's order and the highest severity drawn.
DISTORTION_ORDER: dict[int, tuple[tuple[str, ...], int]] = {
    2: (("CS", "CC", "JPEG"), 1),
    3: (("CS", "CC", "JPEG", "GNC", "GB"), 2),
}


# --------------------------------------------------------------------------- DeeperForensics
def _bgr2ycbcr(img_bgr: np.ndarray) -> np.ndarray:
    img = cv2.cvtColor(img_bgr.astype(np.float32), cv2.COLOR_BGR2YCR_CB)
    ycbcr = img[:, :, (0, 2, 1)].astype(np.float32)
    ycbcr[:, :, 0] = (ycbcr[:, :, 0] * (235 - 16) + 16) / 255.0
    ycbcr[:, :, 1:] = (ycbcr[:, :, 1:] * (240 - 16) + 16) / 255.0
    return ycbcr


def _ycbcr2bgr(img_ycbcr: np.ndarray) -> np.ndarray:
    ycbcr = img_ycbcr.astype(np.float32)
    ycbcr[:, :, 0] = (ycbcr[:, :, 0] * 255.0 - 16) / (235 - 16)
    ycbcr[:, :, 1:] = (ycbcr[:, :, 1:] * 255.0 - 16) / (240 - 16)
    ycrcb = ycbcr[:, :, (0, 2, 1)].astype(np.float32)
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCR_CB2BGR)


def _unclipped_uint8(arr: np.ndarray) -> np.ndarray:
    # The validator casts without clipping (out-of-range values wrap as numpy casts them).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return arr.astype(np.uint8)


def color_saturation(img: np.ndarray, factor: float) -> np.ndarray:
    ycbcr = _bgr2ycbcr(img)
    ycbcr[:, :, 1] = 0.5 + (ycbcr[:, :, 1] - 0.5) * factor
    ycbcr[:, :, 2] = 0.5 + (ycbcr[:, :, 2] - 0.5) * factor
    return _unclipped_uint8(_ycbcr2bgr(ycbcr))


def color_contrast(img: np.ndarray, factor: float) -> np.ndarray:
    return (img.astype(np.float32) * factor).astype(np.uint8)


def jpeg_downup(img: np.ndarray, factor: int) -> np.ndarray:
    """The validator's "JPEG": shrink by ``factor`` and scale back up, bilinear both ways."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // factor, h // factor))
    return cv2.resize(small, (w, h))


def gaussian_noise_color(img: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    ycbcr = _bgr2ycbcr(img) / 255
    noisy = (ycbcr + math.sqrt(variance) * rng.standard_normal(ycbcr.shape)) * 255
    return np.clip(_ycbcr2bgr(noisy), 0, 255).astype(np.uint8)


def gaussian_blur(img: np.ndarray, kernel: int) -> np.ndarray:
    return cv2.GaussianBlur(img, (kernel, kernel), kernel * 1.0 / 6)


def apply_distortion(bgr: np.ndarray, kind: str, severity: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One DeeperForensics distortion on uint8 BGR ``[H, W, 3]`` at ``severity`` 1..5 (0 returns the input)."""
    if severity == 0:
        return bgr
    if not 1 <= severity <= 5 or kind not in SEVERITY_TABLES:
        raise ValueError(f"unknown distortion {kind!r} severity {severity}")
    param = SEVERITY_TABLES[kind][severity - 1]
    if kind == "CS":
        return color_saturation(bgr, param)
    if kind == "CC":
        return color_contrast(bgr, param)
    if kind == "JPEG":
        return jpeg_downup(bgr, int(param))
    if kind == "GNC":
        return gaussian_noise_color(bgr, param, rng if rng is not None else np.random.default_rng())
    return gaussian_blur(bgr, int(param))


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ValidatorParams:
    """One image's draw. ``crop`` = (top, left, height, width) in the rotated image."""

    level: int
    angle: float = 0.0
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    severities: dict[str, int] = field(default_factory=dict)
    noise_seed: int = 0


def _rrc_params(rng: np.random.Generator, h: int, w: int) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` with scale (0.2, 1) and ratio (1, 1)."""
    area = h * w
    log_ratio = (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*RRC_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        cw = round(math.sqrt(target * ratio))
        ch = round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h  # fallback: torchvision's central crop at the nearest allowed ratio (square)
    if in_ratio < min(RRC_RATIO):
        cw, ch = w, round(w / min(RRC_RATIO))
    elif in_ratio > max(RRC_RATIO):
        ch, cw = h, round(h * max(RRC_RATIO))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def draw_params(rng: np.random.Generator, level: int, height: int, width: int) -> ValidatorParams:
    """Draw the random parameters of ``level`` for an image of ``height`` x ``width``."""
    if level not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}, got {level!r}")
    if level == 0:
        return ValidatorParams(0)
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    crop = _rrc_params(rng, height, width)  # rotation keeps the size (no expansion)
    severities: dict[str, int] = {}
    if level in DISTORTION_ORDER:
        kinds, top = DISTORTION_ORDER[level]
        severities = {k: int(rng.integers(0, top + 1)) for k in kinds}
    return ValidatorParams(level, angle, crop, severities, int(rng.integers(0, 2**63 - 1)))


# --------------------------------------------------------------------------- pipeline
def _to_8bit(x: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [0, 1] → uint8 HWC, truncating ``x * 255`` (as the validator does)."""
    return (x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _center_square(img: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    side = min(h, w)
    top, left = round((h - side) / 2.0), round((w - side) / 2.0)
    return img[:, top : top + side, left : left + side]


def _resize_pil_bilinear(hwc: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(hwc).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def jpeg_roundtrip(hwc: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """uint8 ``[H, W, 3]`` RGB through a Pillow JPEG at ``quality`` (the validator's closing step) and back."""
    buf = io.BytesIO()
    Image.fromarray(hwc).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def augment_float(img: torch.Tensor, prm: ValidatorParams, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Levels 1-3 up to (not including) the final 8-bit step: uint8 ``[3, H, W]`` → float ``[3, size, size]`` in [0, 1]."""
    x = img.float().div(255.0)
    x = TF.rotate(x, prm.angle, interpolation=InterpolationMode.NEAREST, expand=False, fill=[0.0])
    top, left, ch, cw = prm.crop
    x = TF.resized_crop(x, top, left, ch, cw, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if prm.level in DISTORTION_ORDER:
        rng = np.random.default_rng(prm.noise_seed)
        for kind in DISTORTION_ORDER[prm.level][0]:
            sev = prm.severities.get(kind, 0)
            if sev == 0:
                continue
            bgr = np.ascontiguousarray(np.floor(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)[:, :, ::-1])
            out = apply_distortion(bgr, kind, sev, rng)
            x = torch.from_numpy(np.ascontiguousarray(out[:, :, ::-1])).permute(2, 0, 1).float().div(255.0)
    return x


def validator_augment(
    img: torch.Tensor, prm: ValidatorParams, size: int = IMAGE_SIZE, jpeg: bool = True
) -> torch.Tensor:
    """What a miner receives: uint8 RGB ``[3, H, W]`` → uint8 ``[3, size, size]`` after the level,
    the truncating 8-bit conversion and (``jpeg``) a Pillow JPEG round trip at quality 75."""
    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"expected a uint8 tensor [3, H, W] (RGB); got {img.dtype} {tuple(img.shape)}")
    if prm.level == 0:
        sq = _center_square(img).permute(1, 2, 0).contiguous().numpy()
        x = torch.from_numpy(_resize_pil_bilinear(sq, size).copy()).permute(2, 0, 1).float().div(255.0)
    else:
        x = augment_float(img, prm, size)
    hwc = _to_8bit(x)
    if jpeg:
        hwc = jpeg_roundtrip(hwc)
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1).contiguous()


def draw_level(rng: np.random.Generator, probs: Sequence[float] = LEVEL_PROBS) -> int:
    """A level drawn with ``probs`` (the validator: 1/4 each)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (len(LEVELS),) or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"level probabilities must be {len(LEVELS)} non-negative numbers summing to 1, got {list(probs)}"
        )
    return int(rng.choice(len(LEVELS), p=p / p.sum()))
