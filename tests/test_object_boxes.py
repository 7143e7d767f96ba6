"""Which roadwork boxes the batch step's zoom and crop keep: against the warped pixels
themselves, against the evaluation's object oracle, and the lost-object loss weights."""

import json
import math

import numpy as np
import pytest
import torch

from roadwork_ml.augment.streetvision import ValidatorParams
from roadwork_ml.data.transforms import augment_batch_frames, boxes_in_frame, objects_visible
from roadwork_ml.evaluation.geometry_oracle import kept_fraction
from roadwork_ml.training.object_boxes import boxes_from_tags, boxes_tensor

SIDE = 96


def _box_masks(boxes: torch.Tensor) -> torch.Tensor:
    """float [B, 3, SIDE, SIDE]: 1 inside each sample's first box (pixel centres), else 0."""
    t = (torch.arange(SIDE) + 0.5) / SIDE
    u0, v0, u1, v1 = (boxes[:, 0, i].view(-1, 1, 1) for i in range(4))
    inside = (t.view(1, 1, -1) >= u0) & (t.view(1, 1, -1) < u1) & (t.view(1, -1, 1) >= v0) & (t.view(1, -1, 1) < v1)
    return inside.float()[:, None].repeat(1, 3, 1, 1)


def test_kept_share_matches_the_warped_pixels():
    """Render each box as a white mask, warp it with the batch step itself, and count how much of
    it the output shows (area scales by 1 / side^2 through the zoom): the lattice estimate agrees."""
    gen = torch.Generator().manual_seed(5)
    b = 64
    lo = torch.rand(b, 2, generator=gen) * 0.7
    size = 0.1 + torch.rand(b, 2, generator=gen) * 0.2
    boxes = torch.cat([lo, lo + size], dim=1)[:, None, :].clamp(0, 1)
    masks = _box_masks(boxes)
    out, frames = augment_batch_frames(
        masks, torch.Generator().manual_seed(11), geometry_prob=1.0, jitter=0.0, flip_prob=0.5
    )
    share, height = boxes_in_frame(frames, boxes, grid=24)
    share, height = share[:, 0], height[:, 0]
    det = torch.linalg.det(frames[:, :, :2]).abs()  # output area per input area is 1 / det
    seen = (out[:, 0] > 0.5).float().sum(dim=(1, 2)) * det / masks[:, 0].sum(dim=(1, 2))
    assert (share - seen).abs().max() < 0.12
    assert (share - seen).abs().mean() < 0.03
    # the draws span the cases: boxes fully kept, fully lost and cut
    assert (share > 0.95).sum() >= 5 and (share < 0.05).sum() >= 5 and ((share > 0.2) & (share < 0.8)).sum() >= 5
    # visible height: the rows of the output that show the mask
    rows = (out[:, 0] > 0.5).any(dim=2).float().sum(dim=1) / SIDE
    some = share > 0.3
    assert (height[some] - rows[some]).abs().max() < 0.1


@pytest.mark.parametrize("angle", [0.0, 12.0, -17.0])
def test_agrees_with_the_object_oracle_on_the_same_rotation_and_crop(angle):
    """The evaluation's oracle (:func:`kept_fraction`, a validator frame in pixels) and the batch
    step's frame built for the same rotation and square crop give the same kept share (the batch
    step's angle turns the other way round, which its symmetric draw does not notice)."""
    side_px, top, left = 60, 10, 24
    h = w = 100
    params = ValidatorParams(level=1, angle=angle, crop=(top, left, side_px, side_px))
    s = side_px / w
    cx = (left + side_px / 2) / w * 2 - 1
    cy = (top + side_px / 2) / h * 2 - 1
    a = math.radians(-angle)
    cos, sin = math.cos(a), math.sin(a)
    theta = torch.tensor([[[s * cos, s * sin, cos * cx + sin * cy], [-s * sin, s * cos, -sin * cx + cos * cy]]])
    rng = np.random.default_rng(1)
    for _ in range(30):
        u0, v0 = rng.uniform(0, 0.8, 2)
        box = (u0, v0, u0 + rng.uniform(0.05, 0.2), v0 + rng.uniform(0.05, 0.2))
        ours, _h = boxes_in_frame(theta, torch.tensor([[box]], dtype=torch.float32), grid=16)
        ref, _ = kept_fraction(box, params, h, w, grid=16)
        assert float(ours[0, 0]) == pytest.approx(ref, abs=1e-6)


def test_objects_visible_needs_half_of_a_box_and_a_visible_height():
    frames = torch.tensor([[[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]]])  # the top-left quarter, 2x zoom
    nan = [float("nan")] * 4
    inside = torch.tensor([[[0.1, 0.1, 0.3, 0.3], nan]])
    outside = torch.tensor([[[0.6, 0.6, 0.9, 0.9], nan]])
    cut = torch.tensor([[[0.4, 0.1, 0.7, 0.2], nan]])  # a third of it inside
    both = torch.tensor([[[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.3, 0.3]]])
    assert objects_visible(frames, inside).tolist() == [True]
    assert objects_visible(frames, outside).tolist() == [False]
    assert objects_visible(frames, cut).tolist() == [False]
    assert objects_visible(frames, both).tolist() == [True]
    assert objects_visible(frames, torch.tensor([[nan, nan]])).tolist() == [False]
    tiny = torch.tensor([[[0.1, 0.1, 0.3, 0.105]]])  # 0.005 of the image = 0.01 of the frame
    assert objects_visible(frames, tiny).tolist() == [False]
    assert objects_visible(frames, tiny, min_height=0.005).tolist() == [True]


def test_frames_are_the_identity_without_zoom_or_geometry():
    x = torch.rand(3, 3, 16, 16)
    out, frames = augment_batch_frames(
        x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), max_shift=0.0, flip_prob=0.0
    )
    assert torch.allclose(frames, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))


def test_boxes_from_tags_pads_and_rejects_bad_boxes():
    tags = [
        json.dumps({"roadwork_boxes": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]]}),
        json.dumps({"roadwork_boxes": []}),
        json.dumps({"frame": 3}),
        "{}",
    ]
    boxes, bad = boxes_from_tags(tags)
    assert boxes.shape == (4, 2, 4) and bad == []
    assert torch.allclose(boxes[0], torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.7]]))
    assert torch.isnan(boxes[1:]).all()
    assert boxes_from_tags(["{}", json.dumps({"frame": 1})]) == (None, [])
    # a malformed row is unknown (NaN) and named; the other rows keep their boxes
    corrupt = [tags[0], json.dumps({"roadwork_boxes": [[0.5, 0.1, 0.2, 0.3]]}), json.dumps({"roadwork_boxes": "x"})]
    boxes, bad = boxes_from_tags(corrupt)
    assert bad == [1, 2] and torch.isnan(boxes[1:]).all() and not torch.isnan(boxes[0]).any()
    with pytest.raises(ValueError, match="row 1: .* empty"):
        boxes_tensor([[], [[0.3, 0.2, 0.1, 0.4]]])
    with pytest.raises(ValueError, match="row 0: .* fractions"):
        boxes_tensor([[[0.1, 0.2, 1.3, 0.4]]])
