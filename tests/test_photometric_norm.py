"""Per-image photometric normalization (model.input_norm): the validator's colour-saturation and
colour-contrast gains undone by construction, checked against Pillow's ImageEnhance as an
independent implementation of those gains, through the classifier and its ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from roadwork_ml.augment.streetvision import apply_distortion
from roadwork_ml.config import load_profile
from roadwork_ml.export.onnx_export import export_onnx, onnx_parity
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier
from roadwork_ml.models.photometric import PhotometricNorm


def scene(seed: int = 0, size: int = 96) -> np.ndarray:
    """uint8 RGB [H, W, 3]: smooth colour gradients, an orange block and pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack(
        [0.5 + 0.3 * np.sin(6 * xx + seed), 0.5 + 0.25 * np.cos(5 * yy), 0.45 + 0.25 * np.sin(3 * (xx + yy))], -1
    )
    rgb[30:55, 20:45] = (0.95, 0.45, 0.08)
    rgb = rgb + rng.normal(0, 0.02, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 255


def pil_gain(rgb: np.ndarray, saturation: float = 1.0, brightness: float = 1.0) -> np.ndarray:
    """Pillow's chroma gain (blend with its ITU-R 601 greyscale) then pixel gain."""
    img = ImageEnhance.Color(Image.fromarray(rgb)).enhance(saturation)
    return np.asarray(ImageEnhance.Brightness(img).enhance(brightness))


def validator(rgb: np.ndarray, cs: int, cc: int) -> np.ndarray:
    """The validator's colour saturation then colour contrast (BGR inside, as the validator runs them)."""
    bgr = apply_distortion(apply_distortion(rgb[:, :, ::-1].copy(), "CS", cs), "CC", cc)
    return bgr[:, :, ::-1].copy()


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.mark.parametrize("saturation,brightness", [(0.4, 1.0), (0.3, 1.0), (0.3, 0.725), (0.4, 0.85)])
def test_pillow_gains_are_undone(saturation, brightness):
    rgb = scene()
    x, xd = tensor(rgb), tensor(pil_gain(rgb, saturation, brightness))
    norm = PhotometricNorm("chroma_luma")
    raw = mean_abs(x, xd)
    normed = mean_abs(norm(x), norm(xd))
    assert raw > 0.04  # the gains change the input a lot ...
    assert normed < 0.012 and normed < raw / 6  # ... and almost nothing after the normalization
    # chroma alone undoes the saturation gain, not the pixel gain
    chroma = mean_abs(PhotometricNorm("chroma")(x), PhotometricNorm("chroma")(xd))
    if brightness == 1.0:
        assert chroma < 0.012
    else:
        assert chroma > 0.05


@pytest.mark.parametrize("cs,cc", [(1, 0), (2, 0), (2, 2), (1, 1)])
def test_validator_colour_steps_are_undone(cs, cc):
    rgb = scene(seed=3)
    x, xd = tensor(rgb), tensor(validator(rgb, cs, cc))
    norm = PhotometricNorm("chroma_luma")
    assert mean_abs(x, xd) > 0.05
    assert mean_abs(norm(x), norm(xd)) < 0.012


def test_hue_and_structure_kept_and_none_is_identity():
    rgb = scene(seed=1)
    x = tensor(rgb)
    assert torch.equal(PhotometricNorm("none")(x), x)
    out = PhotometricNorm("chroma_luma")(x)
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma_in, luma_out = (x * w).sum(1), (out * w).sum(1)
    chroma_in, chroma_out = x - (x * w).sum(1, keepdim=True), out - luma_out[:, None]
    # luma is rescaled, chroma rescaled: both are per-image gains, so correlation is exactly 1
    assert np.corrcoef(luma_in.flatten(), luma_out.flatten())[0, 1] > 0.9999
    assert np.corrcoef(chroma_in.flatten(), chroma_out.flatten())[0, 1] > 0.9999
    assert abs(float(luma_out.mean()) - 0.45) < 1e-4
    assert abs(float(chroma_out.pow(2).mean().sqrt()) - 0.08) < 1e-4


def test_grey_and_black_images_stay_bounded():
    norm = PhotometricNorm("chroma_luma", chroma_target=0.08, chroma_floor=0.005)
    grey = torch.full((1, 3, 8, 8), 0.5)
    grey[0, 0, 0, 0] += 1 / 255  # one rounding step of colour
    out = norm(grey)
    assert torch.isfinite(out).all()
    chroma = out - (out * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert float(chroma.abs().max()) <= 1 / 255 * (0.08 / 0.005) + 1e-6  # amplified at most target / floor
    assert torch.isfinite(norm(torch.zeros(2, 3, 8, 8))).all()
    with pytest.raises(ValueError, match="input_norm"):
        PhotometricNorm("gray_world")
    with pytest.raises(ValueError, match="RGB"):
        norm(torch.zeros(1, 1, 8, 8))


def test_classifier_logits_invariant_and_state_dict_unchanged():
    torch.manual_seed(0)
    plain = build_classifier(load_profile("demo", ["model.input_norm=none"]).model).eval()
    torch.manual_seed(0)
    normed = build_classifier(load_profile("demo", ["model.input_norm=chroma_luma"]).model).eval()
    assert plain.state_dict().keys() == normed.state_dict().keys()  # checkpoints load either way
    normed.load_state_dict(plain.state_dict())
    rgb = np.stack([scene(seed=s, size=64) for s in range(4)])
    x = torch.cat([tensor(r) for r in rgb])
    xd = torch.cat([tensor(validator(r, 2, 2)) for r in rgb])
    with torch.no_grad():
        p = [torch.softmax(m(a), 1)[:, 1] for m in (plain, normed) for a in (x, xd)]
    assert float((p[0] - p[1]).abs().max()) > 3 * float((p[2] - p[3]).abs().max())


@pytest.mark.parametrize("extra", [[], ["model.input_norm_luma_power=4", "model.input_norm_luma_floor=0.25"]])
def test_onnx_export_matches_torch(tmp_path, extra):
    p = load_profile("demo", ["model.input_norm=chroma_luma", *extra])
    torch.manual_seed(0)
    model = build_classifier(p.model)
    mv = MultiViewClassifier(model, view_spec(p.model, p.inference), "mean", top_k=1).eval()
    size = p.inference.input_size
    export_onnx(mv, tmp_path / "model.onnx", size)
    x = torch.stack([tensor(scene(seed=s, size=size))[0] for s in range(6)])
    x[3] = 0.5  # a flat grey image: the floors, not a division by zero
    report = onnx_parity(mv, tmp_path / "model.onnx", x, batch_size=4)
    assert report.n == 6 and report.max_prob_diff <= 1e-4, report


def test_black_rotation_corners_stay_out_of_the_statistics():
    """The validator rotates with a black fill: with min_luma the normalization of the image
    inside the corners is about what it was without them; with the plain mean it is brightened."""
    import torchvision.transforms.v2.functional as TF

    x = tensor(scene(seed=2, size=96))
    rotated = TF.rotate(x, 20.0, fill=[0.0])
    inside = (rotated.sum(1, keepdim=True) > 0.05).expand_as(x)
    ref = TF.rotate(PhotometricNorm("chroma_luma")(x), 20.0, fill=[0.0])  # normalized, then rotated
    robust = PhotometricNorm("chroma_luma", min_luma=0.02)(rotated)
    plain = PhotometricNorm("chroma_luma")(rotated)
    err_robust = float((robust - ref)[inside].abs().mean())
    err_plain = float((plain - ref)[inside].abs().mean())
    # what remains is the content the rotation cut off (the image's own corners)
    assert err_robust < 0.025 and err_plain > 3 * err_robust


def test_luma_floor_caps_the_brightening_of_dark_images():
    """A mean luma below the floor is brightened as if it were the floor (gain target / floor);
    above it the gain is exact. The profile's model.input_norm_luma_floor reaches the model."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    day, night = tensor(scene(seed=1)), tensor(scene(seed=1)) * 0.3  # mean luma about 0.5 and 0.15
    norm = PhotometricNorm("chroma_luma", luma_target=0.45, luma_floor=0.25)
    for img, gain in ((day, 0.45 / float((day * w).sum(1).mean())), (night, 0.45 / 0.25)):
        y_in, y_out = (img * w).sum(1), (norm(img) * w).sum(1)
        assert float((y_out - gain * y_in).abs().max()) < 1e-5, gain
    # the old fixed floor (0.02) brightens the night image to the target: 3.0x, not 1.8x
    assert abs(float((PhotometricNorm("chroma_luma")(night) * w).sum(1).mean()) - 0.45) < 1e-4
    model = build_classifier(load_profile("demo", ["model.input_norm_luma_floor=0.25"]).model)
    assert model.input_norm.luma_floor == 0.25
    assert build_classifier(load_profile("demo").model).input_norm.luma_floor == 0.02


def test_luma_power_mean_is_a_gain_weighted_to_bright_pixels():
    """luma_power p: the statistic is mean(Y^p)^(1/p), so the validator's pixel gains are still
    undone exactly, and a dim scene with one bright lamp is brightened less than by the mean."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    night = tensor(scene(seed=2)) * 0.3
    night[..., 40:44, 40:44] = 1.0  # a lamp
    norm = PhotometricNorm("chroma_luma", luma_power=4.0)
    for cc in (0.85, 0.725):  # the validator's colour-contrast gains
        assert float((norm(night * cc) - norm(night)).abs().max()) < 1e-5
    y = (night * w).sum(1)
    p4 = float(y.pow(4).mean() ** 0.25)
    assert abs(float((norm(night) * w).sum(1).mean()) - 0.45 * float(y.mean()) / p4) < 1e-5
    plain = float((PhotometricNorm("chroma_luma")(night) * w).sum(1).mean())
    assert abs(plain - 0.45) < 1e-4 and plain > 1.3 * float((norm(night) * w).sum(1).mean())
    with pytest.raises(ValueError, match="luma_power"):
        PhotometricNorm("chroma_luma", luma_power=0.5)
    model = build_classifier(load_profile("demo", ["model.input_norm_luma_power=4"]).model)
    assert model.input_norm.luma_power == 4.0
