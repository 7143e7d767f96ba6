"""Per-source flavours, seeded random streams and the colour helpers scene generation draws from."""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass

import numpy as np

from roadwork_ml.data.synthetic.spec import Color


@dataclass(frozen=True)
class _Flavour:
    diversity: float  # 0 = a few stock palettes/layouts, 1 = anything goes (Mapillary)
    layouts: tuple[float, float, float]  # urban, suburban, highway
    horizon: tuple[float, float]
    focal: tuple[float, float]
    cam_height: tuple[float, float]
    cast: float
    hood_prob: float
    roll_max: float
    vignette: tuple[float, float]
    zone_density: float
    saturation: tuple[float, float]


_FLAVOURS: dict[str, _Flavour] = {
    # dashcams: wide lens, low mount, visible bonnet, colour casts, vignetting
    "natix": _Flavour(
        0.35, (0.45, 0.30, 0.25), (0.42, 0.54), (0.55, 0.75), (1.2, 1.5), 0.10, 0.6, 0.0, (0.15, 0.45), 1.0, (0.75, 1.0)
    ),
    # ROADWork: good cameras, work zones dense with devices
    "roadwork": _Flavour(
        0.55, (0.55, 0.30, 0.15), (0.38, 0.50), (0.70, 1.00), (1.3, 1.7), 0.04, 0.0, 0.0, (0.0, 0.10), 1.4, (0.95, 1.15)
    ),
    # Mapillary: crowd-sourced, anything from bikes to car roofs, tilted, every city palette
    "mapillary": _Flavour(
        1.0, (0.40, 0.35, 0.25), (0.32, 0.58), (0.50, 1.05), (1.1, 2.6), 0.12, 0.15, 3.0, (0.0, 0.30), 1.0, (0.7, 1.25)
    ),
}
_DEFAULT_FLAVOUR = _Flavour(
    0.6, (0.45, 0.30, 0.25), (0.38, 0.54), (0.6, 0.95), (1.2, 1.8), 0.08, 0.2, 1.0, (0.0, 0.25), 1.0, (0.85, 1.1)
)


def _flavour(source: str) -> _Flavour:
    return _FLAVOURS.get(source, _DEFAULT_FLAVOUR)


# --------------------------------------------------------------------------- seeding / small helpers


def _rng(seed: int, source: str, *keys: int) -> np.random.Generator:
    entropy = [int(seed) % (1 << 64), zlib.crc32(source.encode("utf-8")), *[int(k) for k in keys]]
    return np.random.default_rng(np.random.SeedSequence(entropy))


class _Rand:
    """Scalar draws from a numpy Generator, buffered: one vectorised call per 256 numbers.

    Scene generation makes hundreds of scalar draws; ``Generator.random()`` costs microseconds
    each, a list lookup does not. The stream is still the Generator's, so seeding is unchanged.
    """

    __slots__ = ("_g", "_buf", "_i")

    def __init__(self, g: np.random.Generator):
        self._g = g
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._g.random(256).tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x


def _u(rng, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def _int(rng, lo: int, hi: int) -> int:
    """An integer in [lo, hi)."""
    return lo + min(int(rng.random() * (hi - lo)), hi - lo - 1)


def _pick(rng, items, p=None):
    """One of ``items`` (weights ``p``, need not sum to one)."""
    if p is None:
        return items[min(int(rng.random() * len(items)), len(items) - 1)]
    r = rng.random() * sum(p)
    acc = 0.0
    for item, w in zip(items, p, strict=True):
        acc += w
        if r < acc:
            return item
    return items[-1]


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (int(r * 255), int(g * 255), int(b * 255))


def _jit(rng: _Rand, c: Color, amount: float) -> Color:
    return tuple(int(min(255, max(0, v + amount * (2 * rng.random() - 1)))) for v in c)  # type: ignore[return-value]


def _shade(c: Color, k: float) -> Color:
    return (min(255, int(c[0] * k)), min(255, int(c[1] * k)), min(255, int(c[2] * k)))


def _mix(a: Color, b: Color, t: float) -> Color:
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def _is_orange(c: Color) -> bool:
    h, s, v = colorsys.rgb_to_hsv(c[0] / 255, c[1] / 255, c[2] / 255)
    return 0.02 <= h <= 0.12 and s > 0.45 and v > 0.35


def _non_orange(rng: _Rand, c: Color) -> Color:
    """Push a colour out of the orange hue band (used for scenery, so only roadwork/distractors are orange)."""
    if not _is_orange(c):
        return c
    h, s, v = colorsys.rgb_to_hsv(c[0] / 255, c[1] / 255, c[2] / 255)
    return _hsv(h, min(s, 0.35), v) if rng.random() < 0.5 else _hsv(_pick(rng, (0.0, 0.15, 0.6)), s, v)


# --------------------------------------------------------------------------- colours

_CONE_ORANGE = ((255, 95, 15), (250, 110, 30), (240, 80, 10), (255, 120, 40))
_WHITE = (240, 240, 235)
_BARRIER_RED = (215, 30, 35)
_HIVIS = ((205, 245, 40), (255, 115, 20), (230, 250, 60))
_CAR_COLORS = (
    (235, 235, 235),
    (190, 192, 196),
    (30, 30, 34),
    (110, 112, 118),
    (35, 55, 110),
    (150, 25, 30),
    (40, 80, 50),
    (200, 190, 165),
    (70, 90, 140),
    (120, 30, 40),
    (225, 200, 60),
    (90, 60, 40),
)
_ORANGE_THINGS = ((235, 110, 25), (225, 90, 20), (245, 130, 30), (230, 100, 10), (250, 140, 50))
_AUTUMN = ((215, 110, 25), (200, 80, 20), (235, 150, 40), (225, 95, 15))
_CLOTHES = (
    (40, 40, 50),
    (60, 70, 110),
    (120, 120, 125),
    (230, 230, 230),
    (90, 40, 50),
    (40, 90, 60),
    (150, 140, 110),
    (20, 30, 60),
)
_SKIN = ((240, 200, 170), (200, 150, 110), (140, 95, 65), (90, 60, 40))

_SKY = {
    # (top, horizon) before lighting; night/dusk skies are darkened by the lighting pass
    "day": ((60, 120, 205), (175, 205, 235)),
    "dawn": ((90, 100, 165), (245, 185, 150)),
    "dusk": ((70, 75, 150), (250, 160, 100)),
    "night": ((35, 45, 100), (85, 85, 115)),
}
_OVERCAST = ((140, 146, 158), (195, 198, 204))
