"""Training augmentation policies, run per sample in DataLoader workers.

``validator``: what the miner will be sent. With probability ``source_prob`` the stored
photo is used as it is (its own source's photo style); otherwise, with probability
``style_prob`` another source's photo style (JPEG quality, blur, noise from that source's
synthetic style in the profile) is applied first, then a StreetVision level drawn with
``level_probs`` is applied exactly as the validator does it (:mod:`roadwork_ml.augment.streetvision`),
at the validator's 224 px. The result is resized to the model's input like any 224-px
image a miner receives.

``legacy`` (today's recipe) is batch-wise on the device: :func:`roadwork_ml.data.transforms.augment_batch`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

from roadwork_ml.augment.streetvision import IMAGE_SIZE, draw_level, draw_params, validator_augment
from roadwork_ml.training.dataset import resize_uint8

__all__ = ["PhotoStyle", "ValidatorPolicy", "apply_photo_style", "photo_styles"]


@dataclass(frozen=True)
class PhotoStyle:
    """A source camera's look: JPEG quality range, blur radius up to ``blur_max`` px at 224 px, noise std up to ``noise_std`` grey levels."""

    jpeg_quality: tuple[int, int]
    blur_max: float
    noise_std: float

    @classmethod
    def from_synthetic(cls, style) -> PhotoStyle:
        """From a :class:`roadwork_ml.config.SyntheticStyle`."""
        return cls(tuple(style.jpeg_quality), float(style.blur_max), float(style.noise_std))


def photo_styles(profile) -> list[PhotoStyle]:
    """Each configured source's photo style (``profile.data.sources``), for the validator policy."""
    return [PhotoStyle.from_synthetic(s.synthetic) for s in profile.data.sources.values()]


def apply_photo_style(img: torch.Tensor, style: PhotoStyle, rng: np.random.Generator) -> torch.Tensor:
    """uint8 ``[3, H, W]`` → same shape: Gaussian noise, blur, then JPEG at a quality from the style's range."""
    hwc = img.permute(1, 2, 0).numpy().astype(np.float32)
    if style.noise_std > 0:
        hwc = hwc + rng.normal(0.0, rng.uniform(0, style.noise_std), hwc.shape)
    pil = Image.fromarray(np.clip(np.rint(hwc), 0, 255).astype(np.uint8))
    if style.blur_max > 0:
        radius = rng.uniform(0, style.blur_max) * max(pil.size) / IMAGE_SIZE
        pil = pil.filter(ImageFilter.GaussianBlur(radius))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)))
    buf.seek(0)
    with Image.open(buf) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1)


class ValidatorPolicy:
    """Per-sample transform ``(uint8 [3, H, W], seed) -> uint8 [3, size, size]`` (a dataset ``transform``).

    Args:
        size: the model's input side. level_probs: P(level 0..3). source_prob: P(keep the
            stored photo, only resized). style_prob: P(apply one of ``styles`` before the level).
        styles: photo styles to draw from (one per source). validator_size: the validator's side.
        jpeg: end with the validator's Pillow JPEG q75 round trip.
    """

    def __init__(
        self,
        size: int,
        level_probs: Sequence[float],
        source_prob: float = 0.0,
        style_prob: float = 0.0,
        styles: Sequence[PhotoStyle] = (),
        validator_size: int = IMAGE_SIZE,
        jpeg: bool = True,
    ):
        if style_prob > 0 and not styles:
            raise ValueError("style_prob > 0 needs at least one photo style")
        if not (0 <= source_prob <= 1 and 0 <= style_prob <= 1):
            raise ValueError(
                f"probabilities must lie in [0, 1], got source_prob {source_prob}, style_prob {style_prob}"
            )
        draw_level(np.random.default_rng(0), level_probs)  # validates the probabilities
        self.size, self.level_probs = int(size), tuple(float(p) for p in level_probs)
        self.source_prob, self.style_prob = float(source_prob), float(style_prob)
        self.styles, self.validator_size, self.jpeg = tuple(styles), int(validator_size), bool(jpeg)

    def __call__(self, img: torch.Tensor, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        if rng.random() < self.source_prob:
            return resize_uint8(img, self.size)
        if self.styles and rng.random() < self.style_prob:
            img = apply_photo_style(img, self.styles[int(rng.integers(len(self.styles)))], rng)
        level = draw_level(rng, self.level_probs)
        prm = draw_params(rng, level, int(img.shape[-2]), int(img.shape[-1]))
        out = validator_augment(img, prm, self.validator_size, jpeg=self.jpeg)
        return resize_uint8(out, self.size)
