"""Per-image photometric normalization at the model's input: luma and chroma gains undone.

The StreetVision validator's levels 2-3 scale each image's chroma by 0.4 or 0.3 (colour
saturation) and every pixel by 0.85 or 0.725 (colour contrast). Both are gains: with the luma
``Y = 0.299 R + 0.587 G + 0.114 B`` (BT.601, the validator's YCbCr) and the chroma residual
``C = RGB - Y``, saturation multiplies ``C`` by a factor and contrast multiplies ``Y`` and
``C``. A model that sees ``C / rms(C)`` and ``Y / mean(Y)`` sees the same image whatever the
gains, up to 8-bit rounding, so it cannot learn "orange" as a saturation level the validator
takes away. Hue and every spatial pattern are kept.

``mode``:

* ``none``: identity (the input as given).
* ``chroma``: ``C`` rescaled to a per-image RMS of ``chroma_target``.
* ``chroma_luma``: also ``Y`` rescaled to a per-image mean of ``luma_target``.

The floors keep an almost grey (or black) image from having its rounding noise amplified
without bound: an image whose chroma RMS is below ``chroma_floor`` is amplified by at most
``chroma_target / chroma_floor``, and an image whose mean luma is below ``luma_floor`` is
brightened by at most ``luma_target / luma_floor`` (a night scene stays darker than a day one).
``luma_power`` p > 1 measures the luma as the power mean ``mean(Y^p)^(1/p)`` instead of the
mean: still a gain (the validator's contrast step is undone exactly), but weighted toward the
bright pixels, so a night scene with lit lamps is brightened less than a uniformly dim one.
``min_luma`` > 0 leaves pixels darker than it out of both
statistics: the validator's rotation fills the corners with black, which would otherwise pull
the mean luma down (and brighten the rest) by an amount that depends on the angle.

Plain tensor arithmetic (no parameters or buffers), so it exports to ONNX and TensorRT with
the model and adds nothing to the state dict.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

InputNorm = Literal["none", "chroma", "chroma_luma"]
INPUT_NORMS: tuple[str, ...] = get_args(InputNorm)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # RGB order


class PhotometricNorm(nn.Module):
    """Image ``[B, 3, H, W]`` float RGB (about [0, 1]) → the same shape with per-image luma and
    chroma gains normalized (see the module docstring). Targets are in [0, 1] pixel units."""

    def __init__(
        self,
        mode: InputNorm = "chroma",
        chroma_target: float = 0.08,
        luma_target: float = 0.45,
        chroma_floor: float = 0.005,
        luma_floor: float = 0.02,
        min_luma: float = 0.0,
        luma_power: float = 1.0,
    ):
        super().__init__()
        if mode not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")
        if min(chroma_target, luma_target, chroma_floor, luma_floor) <= 0:
            raise ValueError("photometric targets and floors must be > 0")
        self.mode = mode
        self.chroma_target = float(chroma_target)
        self.luma_target = float(luma_target)
        self.chroma_floor = float(chroma_floor)
        self.luma_floor = float(luma_floor)
        if not 0 <= min_luma < 1:
            raise ValueError(f"min_luma must be in [0, 1), got {min_luma}")
        self.min_luma = float(min_luma)
        if luma_power < 1:
            raise ValueError(f"luma_power must be >= 1, got {luma_power}")
        self.luma_power = float(luma_power)

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, chroma_target={self.chroma_target}, luma_target={self.luma_target}, "
            f"chroma_floor={self.chroma_floor}, luma_floor={self.luma_floor}, min_luma={self.min_luma}, "
            f"luma_power={self.luma_power}"
        )

    def _luma_power(self, luma: torch.Tensor) -> torch.Tensor:
        return luma if self.luma_power == 1 else luma.clamp_min(0).pow(self.luma_power)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return images
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got {tuple(images.shape)}")
        w = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        luma = (images * w).sum(1, keepdim=True)  # [B, 1, H, W]
        chroma = images - luma  # [B, 3, H, W]; RGB = Y + C
        if self.min_luma > 0:  # statistics over the pixels brighter than min_luma
            keep = (luma > self.min_luma).to(images.dtype)
            n = keep.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
            rms = ((chroma.pow(2) * keep).sum(dim=(1, 2, 3), keepdim=True) / (3 * n)).sqrt()
            mean = (self._luma_power(luma) * keep).sum(dim=(1, 2, 3), keepdim=True) / n
        else:
            rms = chroma.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
            mean = self._luma_power(luma).mean(dim=(1, 2, 3), keepdim=True)
        if self.luma_power != 1:
            mean = mean.clamp_min(0).pow(1 / self.luma_power)
        chroma = chroma * (self.chroma_target / rms.clamp_min(self.chroma_floor))
        if self.mode == "chroma_luma":
            luma = luma * (self.luma_target / mean.clamp_min(self.luma_floor))
        return luma + chroma
