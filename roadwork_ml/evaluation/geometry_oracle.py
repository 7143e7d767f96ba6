"""What the validator's geometry leaves of the roadwork: an object-level oracle.

Level 1 (and levels 2-3, which share each image's rotation and crop in the emulation, as
:func:`roadwork_ml.evaluation.streetvision.image_params` draws them) rotates the image by up to
20 degrees and keeps a square of 20-100 % of its area. On a positive image the crop can leave
every roadwork object out of the frame while the label stays "roadwork". Given the roadwork
boxes of each image (synthetic scenes know them:
:func:`roadwork_ml.data.synthetic.roadwork_boxes`), :func:`kept_fraction` measures how much of a
box is still in the validator's frame, and :func:`oracle_outputs` is a detector that sees
objects perfectly: P(roadwork) = 1 when a roadwork object is still visible, else 0. Its MCC
drop from level 0 to level 1 is the part of the level gap that no classifier relying on the
objects can win back.

Boxes are ``(u0, v0, u1, v1)`` in fractions of the (square or not) image the validator receives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from roadwork_ml.augment.streetvision import ValidatorParams

Box = tuple[float, float, float, float]

__all__ = ["kept_fraction", "object_visible", "oracle_outputs"]


def _frame(params: ValidatorParams, height: int, width: int) -> tuple[float, tuple[int, int, int, int]]:
    """(rotation in degrees, crop (top, left, h, w) in pixels) of a draw; level 0 = the centre square."""
    if params.level == 0:
        side = min(height, width)
        return 0.0, (round((height - side) / 2.0), round((width - side) / 2.0), side, side)
    return params.angle, params.crop


def kept_fraction(box: Box, params: ValidatorParams, height: int, width: int, grid: int = 16) -> tuple[float, float]:
    """``(share of the box's area in the validator's frame, visible height as a share of the frame)``.

    The box is sampled on a ``grid`` x ``grid`` lattice of points; each point is rotated about
    the image centre as ``torchvision``'s ``rotate`` turns the pixels (counter-clockwise for a
    positive angle, no expansion: points rotated off the image are lost) and kept when it falls
    in the crop. Visible height: the vertical extent of the kept points over the crop's height.
    """
    u0, v0, u1, v1 = box
    if u1 <= u0 or v1 <= v0:
        return 0.0, 0.0
    angle, (top, left, ch, cw) = _frame(params, height, width)
    t = (np.arange(grid) + 0.5) / grid
    xs = (u0 + (u1 - u0) * t)[None, :] * width
    ys = (v0 + (v1 - v0) * t)[:, None] * height
    xs, ys = np.broadcast_to(xs, (grid, grid)), np.broadcast_to(ys, (grid, grid))
    cx, cy = width / 2.0, height / 2.0
    a = math.radians(angle)
    dx, dy = xs - cx, ys - cy
    # image coordinates (y down): a counter-clockwise turn on screen by `a`
    rx = cx + dx * math.cos(a) + dy * math.sin(a)
    ry = cy - dx * math.sin(a) + dy * math.cos(a)
    on_image = (rx >= 0) & (rx < width) & (ry >= 0) & (ry < height)
    in_crop = on_image & (ry >= top) & (ry < top + ch) & (rx >= left) & (rx < left + cw)
    share = float(in_crop.mean())
    if not in_crop.any():
        return 0.0, 0.0
    rows = ry[in_crop]
    extent = float(rows.max() - rows.min()) + height * (v1 - v0) / grid  # one lattice step of margin
    return share, min(extent / ch, 1.0)


def object_visible(
    boxes: Sequence[Box],
    params: ValidatorParams,
    height: int,
    width: int,
    min_share: float = 0.5,
    min_height: float = 0.015,
) -> bool:
    """Whether any box keeps at least ``min_share`` of its area in the frame at a visible height of
    at least ``min_height`` of the frame: the synthetic generator's own visibility rule, applied
    to the frame the validator sends."""
    for box in boxes:
        share, h = kept_fraction(box, params, height, width)
        if share >= min_share and h >= min_height:
            return True
    return False


def oracle_outputs(
    boxes_per_image: Sequence[Sequence[Box]],
    params: Sequence[ValidatorParams],
    height: int,
    width: int,
    min_share: float = 0.5,
) -> np.ndarray:
    """P(roadwork) ``[N]`` (0.0 / 1.0) of a perfect object detector on the frames of ``params``."""
    if len(boxes_per_image) != len(params):
        raise ValueError(f"{len(boxes_per_image)} images' boxes but {len(params)} draws")
    return np.array(
        [float(object_visible(b, p, height, width, min_share)) for b, p in zip(boxes_per_image, params, strict=True)]
    )
