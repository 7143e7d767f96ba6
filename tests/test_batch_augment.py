"""The legacy batch augmentation's chroma step against the validator's own colour-saturation code."""

import numpy as np
import pytest
import torch

from roadwork_ml.augment.streetvision import SEVERITY_TABLES, apply_distortion
from roadwork_ml.data.transforms import augment_batch, desaturate, validator_noise


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 236, size=(48, 48, 3), dtype=np.uint8)
    img[10:30, 10:30] = (255, 140, 0)  # a saturated orange patch, like a cone
    return img


@pytest.mark.parametrize("severity", [1, 2])
def test_desaturate_matches_the_validators_colour_saturation(severity):
    rgb = _scene(severity)
    ref_bgr = apply_distortion(rgb[:, :, ::-1].copy(), "CS", severity)
    ref = ref_bgr[:, :, ::-1].astype(np.float64)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    factor = SEVERITY_TABLES["CS"][severity - 1]
    ours = (desaturate(x, factor)[0].permute(1, 2, 0).numpy() * 255).astype(np.float64)
    # the validator truncates to uint8 after a float round trip: at most ~1 grey level apart
    assert np.abs(ours - ref).max() <= 1.5
    # and it really removed colour: the patch's chroma shrank by the factor
    chroma_in = np.ptp(rgb[15, 15].astype(float))
    chroma_out = np.ptp(ours[15, 15])
    assert chroma_out == pytest.approx(chroma_in * factor, abs=2.0)


def test_desaturate_extremes():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(desaturate(x, 1.0), x, atol=1e-6)
    grey = desaturate(x, 0.0)
    assert torch.allclose(grey[:, 0], grey[:, 1], atol=1e-6) and torch.allclose(grey[:, 1], grey[:, 2], atol=1e-6)


def test_saturation_prob_zero_keeps_the_random_stream_and_output():
    x = torch.rand(16, 3, 12, 12)
    a = augment_batch(x.clone(), torch.Generator().manual_seed(3))
    b = augment_batch(x.clone(), torch.Generator().manual_seed(3), saturation=(0.3, 1.0), saturation_prob=0.0)
    assert torch.equal(a, b)


def test_saturation_step_desaturates_about_the_requested_share():
    n = 2000
    x = torch.rand(n, 3, 4, 4)
    x[:, 0] = 0.9  # strongly coloured input: chroma spread per image is large
    x[:, 2] = 0.1
    out = augment_batch(
        x.clone(), torch.Generator().manual_seed(0), max_shift=0, jitter=0, flip_prob=0,
        scale=(1.0, 1.0), saturation=(0.3, 0.3), saturation_prob=0.4,
    )  # fmt: skip
    spread_in = (x.amax(1) - x.amin(1)).mean(dim=(1, 2))
    spread_out = (out.amax(1) - out.amin(1)).mean(dim=(1, 2))
    ratio = spread_out / spread_in
    desaturated = ratio < 0.5
    assert desaturated.float().mean().item() == pytest.approx(0.4, abs=0.04)
    assert ratio[desaturated].mean().item() == pytest.approx(0.3, abs=0.02)
    assert ratio[~desaturated].min().item() > 0.95


def _plain(**kw):
    return dict(scale=(1.0, 1.0), max_shift=0.0, jitter=0.0, flip_prob=0.0, **kw)


def test_geometry_without_rotation_or_crop_is_the_identity():
    x = torch.rand(3, 3, 16, 16)
    out = augment_batch(
        x.clone(),
        torch.Generator().manual_seed(0),
        **_plain(geometry_prob=1.0, rotation=0.0, geometry_scale=(1.0, 1.0)),
    )
    assert torch.allclose(out, x, atol=1e-5)


def test_geometry_crops_the_requested_area_on_the_requested_share():
    n, side = 1000, 32
    ramp = torch.linspace(0, 1, side).view(1, 1, 1, side).expand(n, 3, side, side).contiguous()
    out = augment_batch(
        ramp.clone(), torch.Generator().manual_seed(0),
        **_plain(geometry_prob=0.3, rotation=0.0, geometry_scale=(0.25, 0.25)),
    )  # fmt: skip
    width = out[:, 0, side // 2, -1] - out[:, 0, side // 2, 0]  # ramp range left to right
    cropped = width < 0.75
    assert cropped.float().mean().item() == pytest.approx(0.3, abs=0.05)
    assert width[cropped].mean().item() == pytest.approx(0.5 * (side - 1) / side, abs=0.03)  # side sqrt(0.25)
    assert width[~cropped].min().item() > 0.9


def test_geometry_rotation_leaves_black_corners():
    x = torch.ones(200, 3, 32, 32)
    out = augment_batch(
        x.clone(),
        torch.Generator().manual_seed(0),
        **_plain(geometry_prob=1.0, rotation=20.0, geometry_scale=(1.0, 1.0)),
    )
    corner_dark = out[:, :, :3, :3].mean(dim=(1, 2, 3)) < 0.7
    assert corner_dark.float().mean().item() > 0.5  # full-frame crops of a rotated frame show the fill
    assert out[:, :, 14:18, 14:18].min().item() > 0.99  # the centre stays image


def _stripes(side: int) -> torch.Tensor:
    """float [1, 3, side, side]: vertical stripes of period 4 px at 128 px (fine detail)."""
    x = torch.arange(side, dtype=torch.float32) * 128 / side
    row = (torch.sin(x * 2 * np.pi / 4) > 0).float()
    return row.view(1, 1, 1, side).expand(1, 3, side, side).contiguous()


def _detail(x: torch.Tensor) -> float:
    """Mean absolute horizontal gradient: how much fine detail survived."""
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


def test_out_size_resizes_with_antialias_and_keeps_the_stream():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    kw = dict(scale=(1.0, 1.0), max_shift=0.0, jitter=0.0, flip_prob=0.0)
    out = augment_batch(x.clone(), torch.Generator().manual_seed(1), out_size=16, **kw)
    ref = torch.nn.functional.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    assert out.shape == (4, 3, 16, 16) and torch.allclose(out, ref.clamp(0, 1), atol=1e-5)
    # out_size equal to the input: the same draws and output as before the knob existed
    a = augment_batch(x.clone(), torch.Generator().manual_seed(2))
    b = augment_batch(x.clone(), torch.Generator().manual_seed(2), out_size=32)
    assert torch.equal(a, b)


def test_zoomed_crops_from_a_larger_source_keep_detail():
    """The validator crops a 224-px photo: a zoom sampled from the photo keeps fine detail that a
    zoom of the already shrunken model input has lost."""
    kw = dict(scale=(0.45, 0.45), max_shift=0.0, jitter=0.0, flip_prob=0.0)
    big = _stripes(128)
    small = torch.nn.functional.interpolate(big, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    from_big = augment_batch(big, torch.Generator().manual_seed(0), out_size=32, **kw)
    from_small = augment_batch(small, torch.Generator().manual_seed(0), **kw)
    assert from_big.shape == from_small.shape == (1, 3, 32, 32)
    assert _detail(from_big) > 3 * _detail(from_small)


def _validator_noise_at_the_model_input(variance_severity: int, side: int, n: int = 8) -> np.ndarray:
    """The validator's own noise code (cv2 YCbCr round trip, uint8) on a mid-grey 224-px image,
    resized to ``side`` px as the served path resizes; returns the noise, RGB in [0, 1], [n, 3, side, side]."""
    grey = np.full((224, 224, 3), 128, np.uint8)
    rng = np.random.default_rng(7)
    noisy = np.stack([apply_distortion(grey, "GNC", variance_severity, rng)[:, :, ::-1] for _ in range(n)])
    x = torch.from_numpy(noisy.copy()).permute(0, 3, 1, 2).float() / 255
    clean = torch.full_like(x, 128 / 255)
    resize = lambda t: torch.nn.functional.interpolate(t, size=(side, side), mode="bilinear", antialias=True)
    return (resize(x) - resize(clean)).numpy()


@pytest.mark.parametrize("severity", [1, 2])
def test_validator_noise_has_the_validators_amplitude_and_colour_at_the_model_input(severity):
    side = 64
    ref = _validator_noise_at_the_model_input(severity, side)
    x = torch.full((8, 3, side, side), 128 / 255)
    variance = SEVERITY_TABLES["GNC"][severity - 1]
    ours = (validator_noise(x, torch.Generator().manual_seed(1), 1.0, (variance,), size=224) - x).numpy()
    ref_std, our_std = ref.std(axis=(0, 2, 3)), ours.std(axis=(0, 2, 3))
    # per channel (R, G, B): the validator's 9-13 grey levels of luma at 224 px, shrunk by the resize
    assert np.allclose(our_std, ref_std, rtol=0.08), (our_std * 255, ref_std * 255)
    # the colour of the noise: R, G, B correlated as the YCbCr mix makes them (R-B 0.29, R-G 0.02)
    corr = lambda a: np.corrcoef(a.transpose(1, 0, 2, 3).reshape(3, -1))
    assert np.abs(corr(ours) - corr(ref)).max() < 0.06
    assert corr(ref)[0, 2] > 0.2 and abs(corr(ref)[0, 1]) < 0.1
    # the naive step (the variance drawn straight at the model's 64 px, the same in every channel)
    # is over twice too strong and colourless
    naive = np.random.default_rng(0).normal(0, np.sqrt(variance), ours.shape)
    assert naive.std() > 2 * ref_std.max() and np.abs(corr(naive) - corr(ref)).max() > 0.2


def test_noise_step_hits_the_requested_share_and_keeps_the_stream_when_off():
    x = torch.full((400, 3, 16, 16), 0.5)
    noisy = augment_batch(x, torch.Generator().manual_seed(3), **_plain(noise_prob=0.5, noise_size=32))
    changed = (noisy - 0.5).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 0.42 < changed.float().mean() < 0.58
    off = augment_batch(x, torch.Generator().manual_seed(3), noise_prob=0.0)
    assert torch.equal(off, augment_batch(x, torch.Generator().manual_seed(3)))


def _served_view(images_u8: torch.Tensor, input_size: int = 128, side: int = 64) -> torch.Tensor:
    """The served path itself: the bundle's resize to ``inference.input_size`` (uint8) and the
    multi-view model's global view at the model's input."""
    from roadwork_ml.evaluation.report import resize_images
    from roadwork_ml.models.multiview import ViewSpec, make_views

    x = resize_images(images_u8, input_size).float() / 255
    return make_views(x, ViewSpec(size=side, multi=False, grid=3, overlap=0.0, flip=False))[:, 0]


def test_served_resize_matches_the_served_path():
    from roadwork_ml.data.transforms import served_resize

    g = torch.Generator().manual_seed(2)
    u8 = (torch.rand(4, 3, 224, 224, generator=g) * 255).round().to(torch.uint8)
    ours = served_resize(u8.float() / 255, 64, 128)
    assert (ours - _served_view(u8)).abs().max() < 0.6 / 255  # the served path rounds to uint8 at 128 px
    one_step = served_resize(u8.float() / 255, 64)
    assert (one_step - _served_view(u8)).abs().mean() > 5 * (ours - _served_view(u8)).abs().mean()


@pytest.mark.parametrize("severity", [1, 2])
def test_noise_through_the_served_steps_has_the_served_amplitude(severity):
    """The validator's own noise on a grey 224-px image, through the real served path (224 -> 128
    antialiased, uint8, -> 64 global view): ``served_side=128`` reproduces its standard deviation;
    one antialiased resize (the default) leaves ~20 % less."""
    variance = SEVERITY_TABLES["GNC"][severity - 1]
    grey = np.full((224, 224, 3), 128, np.uint8)
    rng = np.random.default_rng(7)
    noisy = np.stack([apply_distortion(grey, "GNC", severity, rng)[:, :, ::-1] for _ in range(8)])
    u8 = torch.from_numpy(noisy.copy()).permute(0, 3, 1, 2).contiguous()
    ref = (_served_view(u8) - _served_view(torch.full_like(u8, 128))).std(dim=(0, 2, 3))
    x = torch.full((8, 3, 64, 64), 128 / 255)
    served = (validator_noise(x, torch.Generator().manual_seed(1), 1.0, (variance,), 224, 128) - x).std(dim=(0, 2, 3))
    direct = (validator_noise(x, torch.Generator().manual_seed(1), 1.0, (variance,), 224) - x).std(dim=(0, 2, 3))
    assert torch.allclose(served, ref, rtol=0.08), (served * 255, ref * 255)
    assert (direct < 0.88 * ref).all(), (direct * 255, ref * 255)


def test_served_side_input_size_resolves_to_the_profiles_inference_input_size():
    from roadwork_ml.config import ProfileError, load_profile
    from roadwork_ml.training.trainer import legacy_augment

    assert load_profile("demo", ["train.augmentation.served_side=input_size"]).train.augmentation.served_side == 128
    p = load_profile("demo", ["train.augmentation.served_side=input_size", "inference.input_size=96"])
    assert p.train.augmentation.served_side == 96
    with pytest.raises(ProfileError, match="served_side: must be a positive side"):
        load_profile("demo", ["train.augmentation.served_side=0"])
    # a TrainConfig made outside a profile cannot carry the unresolved name into training
    aug = p.train.augmentation.model_copy(update={"served_side": "input_size"})
    cfg = p.train.model_copy(update={"augmentation": aug})
    with pytest.raises(ValueError, match="resolved to inference.input_size"):
        legacy_augment(torch.rand(2, 3, 8, 8), torch.Generator().manual_seed(0), cfg)


def _road_scene(n: int = 6, side: int = 64, seed: int = 0) -> torch.Tensor:
    """Float ``[n, 3, side, side]``: a grey road with a few small orange blobs, smooth enough to
    be a photo the codec treats as one (random pixels are not)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, side, side), 0.45) + 0.05 * torch.linspace(-1, 1, side).view(1, 1, side, 1)
    orange = torch.tensor([0.95, 0.5, 0.1]).view(3, 1, 1)
    for i in range(n):
        for _ in range(3):
            r, c = torch.randint(4, side - 12, (2,), generator=g).tolist()
            x[i, :, r : r + 8, c : c + 6] = orange
    return x


def test_jpeg_step_is_pillows_quality_75_round_trip_of_the_truncated_image():
    import io

    from PIL import Image

    from roadwork_ml.data.transforms import validator_jpeg

    x = _road_scene(side=32)
    out = validator_jpeg(x, torch.Generator().manual_seed(0), 1.0, size=32)
    for i in range(len(x)):  # at the validator's own side: truncate to 8 bits, encode at 75, decode
        hwc = (x[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(hwc).save(buf, format="JPEG", quality=75)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
        assert np.allclose(out[i].permute(1, 2, 0).numpy(), ref, atol=1e-6)
    assert (out - x).abs().amax() > 5 / 255  # the codec changed something: a lossy round trip


def test_jpeg_step_adds_the_codecs_error_without_the_resampling_blur():
    """At the model's 32 px the codec works at 224 px; resizing the sample there and back would
    blur it, so only the codec's error comes back. A flat 8-bit grey survives unchanged, and a
    sharp edge keeps its step where the naive round trip softens it."""
    import torch.nn.functional as F

    from roadwork_ml.data.transforms import served_resize, validator_jpeg

    g = lambda: torch.Generator().manual_seed(0)
    flat = torch.full((2, 3, 32, 32), 128 / 255)
    assert torch.allclose(validator_jpeg(flat, g(), 1.0, size=224), flat, atol=1e-6)
    edge = torch.full((1, 3, 32, 32), 64 / 255)
    edge[..., 16:] = 192 / 255
    ours = validator_jpeg(edge, g(), 1.0, size=224)
    up = F.interpolate(edge, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    naive = served_resize(up, 32)
    step = lambda t: float((t[0, :, :, 16] - t[0, :, :, 15]).mean())
    assert step(edge) - step(ours) < 0.02  # the codec rings a little at the edge
    assert step(edge) - step(naive) > 0.1  # the resampling blurs it


def test_jpeg_step_hits_its_share_and_keeps_the_stream_when_off():
    x = _road_scene(n=200, side=32)
    out = augment_batch(x, torch.Generator().manual_seed(4), **_plain(jpeg_prob=0.5, noise_size=32))
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert 0.40 < changed.float().mean() < 0.60
    off = augment_batch(x, torch.Generator().manual_seed(4), **_plain(jpeg_prob=0.0))
    assert torch.equal(off, augment_batch(x, torch.Generator().manual_seed(4), **_plain()))


def test_the_profiles_jpeg_prob_reaches_the_batch_step():
    from roadwork_ml.config import load_profile
    from roadwork_ml.training.trainer import legacy_augment

    x = _road_scene(n=4, side=32)
    out = {}
    for prob in (0.0, 1.0):
        cfg = load_profile("demo", [f"train.augmentation.jpeg_prob={prob}"]).train
        out[prob], _ = legacy_augment(x, torch.Generator().manual_seed(0), cfg)
    # with the codec every sample also ends on a JPEG decode: different from the same draw without it
    assert ((out[1.0] - out[0.0]).abs().amax(dim=(1, 2, 3)) > 1e-3).all()
    with pytest.raises(Exception, match="less than or equal to 1"):
        load_profile("demo", ["train.augmentation.jpeg_prob=1.5"])
