"""distortion_breakdown: one validator distortion at a time finds what a model is sensitive to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadwork_ml.evaluation.distortions import distortion_breakdown, distortion_rows


def _scenes(n: int = 20, side: int = 64) -> tuple[list[torch.Tensor], np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    imgs = []
    for label in y:
        base = np.array([240, 130, 20] if label else [80, 80, 80], dtype=np.float64)  # orange vs dark grey
        img = base + rng.normal(0, 6, size=(side, side, 3))
        imgs.append(torch.from_numpy(np.clip(img, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous())
    return imgs, y


def _colour_detector(batch: torch.Tensor) -> np.ndarray:
    """P(roadwork) from the share of strongly orange pixels (red minus blue above 80 grey levels)."""
    x = batch.to(torch.int32)
    orange = (x[:, 0] - x[:, 2]) > 80
    return np.clip(orange.float().mean(dim=(1, 2)).numpy() * 2, 0, 1)


def test_a_colour_model_loses_exactly_on_the_saturation_rows():
    imgs, y = _scenes()
    rows = {r["name"]: r for r in distortion_breakdown(_colour_detector, imgs, y, seed=1, batch_size=8)}
    assert [name for name, *_ in distortion_rows()] == list(rows)
    assert rows["level_0"]["mcc"] == pytest.approx(1.0) and rows["geometry"]["mcc"] == pytest.approx(1.0)
    # chroma x0.3 takes red-minus-blue from ~220 to ~66: every positive is missed
    assert rows["CS2"]["mcc_drop"] == pytest.approx(1.0) and rows["CS2"]["positive_rate"] == 0.0
    assert rows["CS2"]["mean_p_positive"] < 0.05
    for name in ("CC1", "CC2", "JPEG1", "JPEG2", "GNC1", "GNC2", "GB1", "GB2"):
        assert rows[name]["mcc_drop"] < 0.05, name  # the other steps keep the orange
    assert rows["CS2"]["auroc"] <= 0.75  # a drop in ranking, not only a shifted threshold


def test_a_colour_blind_model_loses_nothing():
    imgs, y = _scenes()
    luma = lambda b: np.clip((b.float().mean(dim=(1, 2, 3)).numpy() - 100) / 20, 0, 1)  # noqa: E731
    rows = distortion_breakdown(luma, imgs, y, seed=1, severities=(1,), batch_size=8)
    assert [r["name"] for r in rows][:3] == ["level_0", "geometry", "CS1"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["geometry"]["mcc"] == pytest.approx(1.0)  # it does tell the classes apart, by brightness
    assert abs(by_name["CS1"]["mcc_drop"]) < 0.05


def test_labels_must_match_images():
    imgs, y = _scenes(4)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        distortion_breakdown(_colour_detector, imgs, y[:3])


def test_without_the_closing_jpeg_each_row_sees_the_validators_image_before_the_codec():
    from roadwork_ml.augment.streetvision import validator_augment
    from roadwork_ml.evaluation.distortions import _params

    imgs, y = _scenes(4)
    seen: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for jpeg in (True, False):

        def record(batch: torch.Tensor, jpeg=jpeg) -> np.ndarray:
            seen[jpeg].append(batch.clone())
            return _colour_detector(batch)

        distortion_breakdown(record, imgs, y, seed=1, severities=(2,), batch_size=8, jpeg=jpeg)
    names = [name for name, *_ in distortion_rows((2,))]
    cs2 = names.index("CS2")
    for i, img in enumerate(imgs):
        prm = _params(1, 3, {"CS": 2}, i, 64, 64)
        assert torch.equal(seen[False][cs2][i], validator_augment(img, prm, jpeg=False))
        assert torch.equal(seen[True][cs2][i], validator_augment(img, prm, jpeg=True))
    assert not torch.equal(seen[False][cs2], seen[True][cs2])
