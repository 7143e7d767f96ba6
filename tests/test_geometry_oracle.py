"""The object-level oracle of the validator's geometry: box bookkeeping checked against the
emulation's own torchvision rotation and crop applied to a mask image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from roadwork_ml.augment.streetvision import ValidatorParams
from roadwork_ml.config import load_profile
from roadwork_ml.data.synthetic import make_sequence, roadwork_boxes
from roadwork_ml.evaluation.geometry_oracle import kept_fraction, object_visible, oracle_outputs
from roadwork_ml.evaluation.streetvision import image_params

SIDE = 224


def mask_share(box, prm: ValidatorParams, side: int = SIDE) -> float:
    """Share of a box's pixels that the emulation's rotation + crop keep, measured on a mask."""
    u0, v0, u1, v1 = box
    m = torch.zeros(1, side, side)
    m[0, round(v0 * side) : round(v1 * side), round(u0 * side) : round(u1 * side)] = 1.0
    area = float(m.sum())
    r = TF.rotate(m, prm.angle, interpolation=InterpolationMode.NEAREST, expand=False, fill=[0.0])
    top, left, ch, cw = prm.crop
    return float(r[0, top : top + ch, left : left + cw].sum()) / area


@pytest.mark.parametrize("index", range(12))
def test_kept_fraction_matches_the_rotated_cropped_mask(index):
    rng = np.random.default_rng(index)
    u0, v0 = rng.uniform(0.05, 0.7, 2)
    w, h = rng.uniform(0.08, 0.3, 2)
    box = (float(u0), float(v0), float(min(u0 + w, 1.0)), float(min(v0 + h, 1.0)))
    prm = image_params(0, index, 1, SIDE, SIDE)
    share, _height = kept_fraction(box, prm, SIDE, SIDE, grid=32)
    assert abs(share - mask_share(box, prm)) < 0.05


def test_inside_outside_and_level_zero():
    inside = ValidatorParams(1, 0.0, (0, 0, 112, 112))  # top-left quarter, no rotation
    assert kept_fraction((0.1, 0.1, 0.3, 0.3), inside, SIDE, SIDE) == (1.0, pytest.approx(0.4, abs=0.02))
    assert kept_fraction((0.6, 0.6, 0.9, 0.9), inside, SIDE, SIDE) == (0.0, 0.0)
    half = kept_fraction((0.4, 0.1, 0.6, 0.3), inside, SIDE, SIDE)[0]
    assert half == pytest.approx(0.5, abs=0.01)
    assert object_visible([(0.4, 0.1, 0.6, 0.3)], inside, SIDE, SIDE, min_share=0.5)
    assert not object_visible([(0.45, 0.1, 0.65, 0.3)], inside, SIDE, SIDE, min_share=0.5)
    # level 0: the centre square of a landscape image drops the sides
    assert kept_fraction((0.0, 0.4, 0.1, 0.6), ValidatorParams(0), 100, 200)[0] == 0.0
    assert kept_fraction((0.45, 0.4, 0.55, 0.6), ValidatorParams(0), 100, 200)[0] == 1.0
    # rotating 90 degrees counter-clockwise moves the top-centre to the left-centre
    turned = ValidatorParams(1, 90.0, (0, 0, SIDE, SIDE // 4))  # the left quarter only
    assert kept_fraction((0.45, 0.0, 0.55, 0.2), turned, SIDE, SIDE)[0] > 0.95
    assert kept_fraction((0.45, 0.8, 0.55, 1.0), turned, SIDE, SIDE)[0] == 0.0


def test_oracle_outputs_and_scene_boxes():
    style = load_profile("demo").data.sources["natix"].synthetic
    specs = [s for i in range(40) for s in make_sequence("natix", style, 7, i)]
    pos = [s for s in specs if s.roadwork]
    neg = [s for s in specs if not s.roadwork]
    assert pos and neg
    assert all(roadwork_boxes(s) for s in pos) and not any(roadwork_boxes(s) for s in neg)
    boxes = [roadwork_boxes(s) for s in pos + neg]
    whole = [ValidatorParams(0)] * len(boxes)
    out = oracle_outputs(boxes, whole, SIDE, SIDE)
    assert out.tolist() == [1.0] * len(pos) + [0.0] * len(neg)
    corner = [ValidatorParams(1, 0.0, (0, 0, 45, 45))] * len(boxes)  # the sky corner: no roadwork there
    assert oracle_outputs(boxes, corner, SIDE, SIDE).sum() < len(pos) / 4
    with pytest.raises(ValueError, match="draws"):
        oracle_outputs(boxes, whole[:-1], SIDE, SIDE)
