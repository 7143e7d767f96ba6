"""Camera effects and the frame renderer: lighting, weather, bloom, vignette, noise, blur, roll, JPEG."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from roadwork_ml.data.decode import encode_jpeg as _encode_jpeg
from roadwork_ml.data.synthetic.objects import _DRAW, _FLAT
from roadwork_ml.data.synthetic.painter import _draw_buildings, _draw_ground, _draw_sky_and_background, _Painter
from roadwork_ml.data.synthetic.randomness import _shade
from roadwork_ml.data.synthetic.scene import _DIMS
from roadwork_ml.data.synthetic.spec import _Z_NEAR, Color, SceneSpec


@lru_cache(maxsize=8)
def _grid(S: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return yy, xx


def _rgb_image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


@lru_cache(maxsize=48)
def _night_light(S: int, yh_px: int, base_x1000: int) -> Image.Image:
    """Night illumination (as a multiply image, tint included): a dim base plus the ego headlight beam."""
    base = base_x1000 / 1000.0
    yy, xx = _grid(S)
    r = np.clip((yy - yh_px) / max(S - yh_px, 1), 0.0, 1.0)
    width = S * (0.12 + 0.7 * r)
    beam = np.sqrt(r) * np.exp(-(((xx - S / 2) / width) ** 2)) * (r > 0.03)
    m = np.minimum(base + 0.9 * beam, 1.0)[..., None] * np.array([0.8, 0.88, 1.0], dtype=np.float32)
    return _rgb_image(m * 255.0)


@lru_cache(maxsize=48)
def _vignette(S: int, strength_x1000: int) -> Image.Image:
    yy, xx = _grid(S)
    c = (S - 1) / 2
    m = 1.0 - (strength_x1000 / 1000.0) * ((yy - c) ** 2 + (xx - c) ** 2) / (2 * c * c)
    return _rgb_image(np.repeat(m[..., None] * 255.0, 3, axis=2))


_NOISE_PAD = 32


@lru_cache(maxsize=40)
def _noise_tile(S: int, level: int) -> Image.Image:
    """A fixed Gaussian tile with std ``level``, stored as 128 + noise (uint8); frames crop a window."""
    n = np.random.default_rng(0x5EED + S).standard_normal((S + _NOISE_PAD, S + _NOISE_PAD, 3), dtype=np.float32) * level
    return _rgb_image(np.round(n) + 128.0)


@lru_cache(maxsize=32)
def _rain_tile(S: int, variant: int) -> Image.Image:
    """A 2S × 2S mask of rain streaks (drawn once per size); frames crop a random window."""
    rng = np.random.default_rng(0xA1 + 7 * variant + S)
    T = 2 * S
    mask = Image.new("L", (T, T), 0)
    d = ImageDraw.Draw(mask)
    L = S * 0.06
    lw = max(1, S // 200)
    for x, y, length in rng.random((int(T * 2.4), 3)):
        x0, y0 = x * T, y * T
        ll = L * (0.5 + length)
        d.line([(x0, y0), (x0 + 0.25 * ll, y0 + ll)], fill=int(90 + 100 * length), width=lw)
    return mask


@lru_cache(maxsize=64)
def _flat_rgb(S: int, color: Color) -> Image.Image:
    return Image.new("RGB", (S, S), color)


_LUMA = (0.299, 0.587, 0.114)


def _color_matrix(gain, saturation: float = 1.0) -> tuple[float, ...]:
    """12-tuple for ``Image.convert("RGB", matrix)``: saturation about the luma, then per-channel gain."""
    s = saturation
    rows = []
    for i in range(3):
        row = [(1 - s) * _LUMA[j] + (s if i == j else 0.0) for j in range(3)]
        rows.extend([gain[i] * v for v in row] + [0.0])
    return tuple(rows)


def _bloom(lights, S: int, scale: float) -> Image.Image | None:
    """All light halos at once: lights drawn at half resolution, blurred, scaled up (added later)."""
    if not lights:
        return None
    h = max(S // 2, 8)
    k = h / S
    layer = Image.new("RGB", (h, h), 0)
    d = ImageDraw.Draw(layer)
    for u, v, r, col, strength in lights:
        if strength == 0:
            continue
        if strength < 0:  # pool of light on the ground: broad, weak, flattened
            rx, ry, amp = r * k, r * k * 0.3, 0.3
        else:
            rx = ry = (r * 1.6 + 0.8) * k
            amp = min(strength, 2.5) * 0.5
        c = (
            min(255, int(col[0] * amp * scale)),
            min(255, int(col[1] * amp * scale)),
            min(255, int(col[2] * amp * scale)),
        )
        d.ellipse([u * k - rx, v * k - ry, u * k + rx, v * k + ry], fill=c)
    layer = layer.filter(ImageFilter.BoxBlur(max(1.0, S / 70)))
    if h != S:
        layer = layer.resize((S, S), Image.Resampling.BILINEAR)
    return layer


_FOG_COLOR = {"day": (198, 200, 204), "dawn": (165, 155, 150), "dusk": (150, 140, 138), "night": (45, 47, 55)}


def _post(
    im: Image.Image,
    emit: Image.Image | None,
    fog: Image.Image | None,
    p: _Painter,
    spec: SceneSpec,
    S: int,
    rng: np.random.Generator,
) -> Image.Image:
    """Lighting, weather and camera effects, all as C-level PIL operations on uint8 images."""
    tod = spec.time_of_day
    cam = spec.camera
    yh = int(round(p.yh))
    gain = [c * spec.exposure for c in cam.cast]
    # time of day: global illumination; lights and reflectors keep their brightness (emit mask)
    if tod == "night":
        q = max(1, S // 64)  # horizon quantised to ~1.5 % of the image: a few dozen beam maps per size
        light = _night_light(S, (yh // q) * q, 300 if spec.weather != "fog" else 340)
        if emit is not None:
            light = ImageChops.lighter(light, Image.merge("RGB", (emit, emit, emit)))
        im = ImageChops.multiply(im, light)
    elif tod in ("dawn", "dusk"):
        k = 0.72 if tod == "dusk" else 0.78
        dim = im.convert("RGB", _color_matrix((1.0 * k, 0.86 * k, 0.76 * k)))
        im = Image.composite(im, dim, emit) if emit is not None else dim
    if tod != "day":
        glow = _bloom(p.lights, S, 1.0 if tod == "night" else 0.6)
        if glow is not None:
            im = ImageChops.add(im, glow)
    # fog: blend toward grey by depth (ground rows by distance, objects by their own depth)
    if fog is not None:
        im = Image.composite(_flat_rgb(S, _FOG_COLOR[tod]), im, fog)
    saturation = cam.saturation
    if spec.rain > 0:
        saturation *= 0.8
        gain = [g * 0.82 for g in gain]
        tile = _rain_tile(S, int(rng.integers(0, 4)))
        ox, oy = (int(v) for v in rng.integers(0, S, size=2))
        mask = tile.crop((ox, oy, ox + S, oy + S))
        mask = ImageChops.multiply(mask, Image.new("L", (S, S), int(140 * spec.rain)))
        im = Image.composite(_flat_rgb(S, (200, 202, 208) if tod == "day" else (120, 120, 128)), im, mask)
    if spec.snow > 0:
        n = int(S * S * 0.008 * spec.snow)
        pts = rng.integers(0, S - 1, size=(n, 2))
        big = pts[: int(n * 0.3)]
        allp = np.concatenate([pts, big + (1, 0), big + (0, 1), big + (1, 1)])
        c = 240 if tod != "night" else 170
        ImageDraw.Draw(im).point(allp.ravel().tolist(), fill=(c, c, c + 4))
    # camera: saturation, exposure and colour cast, vignette
    im = im.convert("RGB", _color_matrix(gain, saturation))
    if cam.vignette >= 0.05:
        im = ImageChops.multiply(im, _vignette(S, int(round(cam.vignette * 40)) * 25))  # strength in steps of 0.025
    if tod == "night" and spec.weather == "clear" and yh > 2:
        stars = np.stack([rng.integers(0, S, size=S // 6), rng.integers(0, yh - 1, size=S // 6)], axis=1)
        ImageDraw.Draw(im).point(stars.ravel().tolist(), fill=(150, 150, 160))
    if cam.roll_deg:
        im = _roll(im, cam.roll_deg)
    sigma = spec.blur * S / 224
    if sigma >= 0.4:
        # one box pass with the Gaussian's variance: sigma^2 = ((2r+1)^2 - 1) / 12
        im = im.filter(ImageFilter.BoxBlur((math.sqrt(12 * sigma * sigma + 1) - 1) / 2))
    level = int(round(spec.noise * (1.5 if tod == "night" else 1.0)))
    if level >= 1:
        ox, oy = (int(v) for v in rng.integers(0, _NOISE_PAD, size=2))
        im = ImageChops.add(im, _noise_tile(S, level).crop((ox, oy, ox + S, oy + S)), 1.0, -128)  # im + noise, clipped
    return im


def _roll(im: Image.Image, deg: float) -> Image.Image:
    S = im.size[0]
    t = math.radians(deg)
    zoom = abs(math.cos(t)) + abs(math.sin(t))  # enough to hide the corners
    c, s = math.cos(t) / zoom, math.sin(t) / zoom
    cx = cy = S / 2
    coeffs = (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)
    return im.transform(im.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)


@lru_cache(maxsize=16)
def _base_image(S: int, horizon: float, top: Color, hor: Color, ground: Color) -> Image.Image:
    """Sky gradient above the horizon, plain ground below (frames of a sequence share it)."""
    yh = min(max(int(round(horizon * S)), 1), S - 1)
    arr = np.empty((S, S, 3), dtype=np.uint8)
    t = (np.arange(yh, dtype=np.float32) / max(yh - 1, 1)) ** 0.8
    a, b = np.asarray(top, dtype=np.float32), np.asarray(hor, dtype=np.float32)
    arr[:yh] = (a[None, :] * (1 - t[:, None]) + b[None, :] * t[:, None]).astype(np.uint8)[:, None, :]
    arr[yh:] = ground
    return Image.fromarray(arr, "RGB")


@lru_cache(maxsize=16)
def _fog_rows(S: int, horizon: float, focal: float, height_m: float, visibility: float) -> Image.Image:
    """Fog weight by row: the ground's distance below the horizon, (almost) opaque above it."""
    rows = np.arange(S, dtype=np.float32) + 0.5
    dy = rows - horizon * S
    zrow = np.where(dy > 0.5, focal * S * height_m / np.maximum(dy, 0.5), 1e4)
    w = np.minimum(0.9, 1.0 - np.exp(-zrow / visibility))
    w[rows < horizon * S] = 0.93
    return Image.fromarray(np.repeat((w * 255).astype(np.uint8)[:, None], S, axis=1), "L")


def render_scene(spec: SceneSpec, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Render one frame as an RGB ``image_size`` × ``image_size`` PIL image.

    ``rng`` only drives per-frame texture (clouds, rain streaks, snow flakes, sensor noise);
    the scene itself is fully described by ``spec``.
    """
    S = int(image_size)
    if S < 8:
        raise ValueError(f"image_size must be at least 8 px, got {image_size}")
    pal = spec.palette
    cam = spec.camera
    im = _base_image(S, cam.horizon, pal.sky_top, pal.sky_horizon, pal.ground).copy()
    emit = Image.new("L", (S, S), 0) if spec.time_of_day != "day" else None
    fog = None
    if spec.fog_visibility > 0:
        fog = _fog_rows(S, cam.horizon, cam.focal, cam.height_m, spec.fog_visibility).copy()
    p = _Painter(spec, S, im, emit, fog)
    p.shadow_col = _shade(spec.palette.road, 0.55)
    _draw_sky_and_background(p, spec, rng)
    _draw_ground(p, spec)
    _draw_buildings(p, spec)
    items = []
    for o in spec.objects:
        z = spec.object_z(o)
        if z < _Z_NEAR and o.kind not in _FLAT:
            continue
        if (
            z
            + (
                o.size
                if o.kind in _FLAT or o.kind in ("awning", "shop_sign") or (o.kind == "barrier" and o.variant == 1)
                else 0
            )
            < 0.8
        ):
            continue
        if z > 200:
            continue
        if o.kind not in _FLAT and o.kind not in ("awning", "shop_sign", "barrier"):
            ext = 2.5 * _DIMS.get(o.kind, (4.0, 1.0))[0] * o.size + 2.0
            uf = (o.x + p.kc * z * z - p.x0) / z * p.f + p.cx
            if uf + ext * p.f / z < 0 or uf - ext * p.f / z > S:
                continue
        items.append((0 if o.kind in _FLAT else 1, -z, o))
    items.sort(key=lambda t: (t[0], t[1]))
    for _, negz, o in items:
        _DRAW[o.kind](p, o, -negz)
    if cam.hood > 0:
        hy = S * (1 - cam.hood)
        p.d.chord([-0.3 * S, hy, 1.3 * S, hy + 2.2 * cam.hood * S], 180, 360, fill=cam.hood_color)
        p.d.arc(
            [-0.3 * S, hy, 1.3 * S, hy + 2.2 * cam.hood * S],
            200,
            340,
            fill=_shade(cam.hood_color, 1.8),
            width=max(1, S // 120),
        )
        if fog is not None:
            ImageDraw.Draw(fog).chord([-0.3 * S, hy, 1.3 * S, hy + 2.2 * cam.hood * S], 180, 360, fill=0)
    return _post(im, emit, fog, p, spec, S, rng)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """The synthetic cameras' JPEG: full-resolution chroma (4:4:4) at quality >= 90, else 4:2:0."""
    return _encode_jpeg(image, quality, subsampling=0 if quality >= 90 else 2)
