"""Procedural street scenes: the synthetic stand-in for a source without a configured path.

Each scene is a small 3-D world (a road on a ground plane, buildings along it, vehicles,
trees, poles, people and — for positives — a roadwork zone) seen through a pinhole
camera and painted far-to-near with PIL ``ImageDraw``; lighting, weather and camera
effects are numpy passes. Everything that defines a scene lives in a :class:`SceneSpec`
(in metres and image fractions, independent of the pixel size), so one spec renders at
any ``image_size``.

What makes the task learnable but not trivial:

* positives hold at least one clearly visible roadwork object (nearest at least ~6 % of
  the image height), usually several: cones, striped barriers, drums, orange diamond
  signs, work vehicles with arrow boards, workers in striped hi-vis vests — on or at
  the edge of the road, in perspective;
* hard negatives hold orange things that are *not* roadwork (orange cars and vans,
  orange awnings and shop signs, amber traffic lights, people in plain orange jackets
  on the sidewalk, orange bins and balls, autumn trees), so "any orange pixel" is not the
  answer; roadwork is told apart by shape (cone triangles, stripes, barrier bars) and
  placement on the road. Positives sometimes carry such distractors too.

Scenes come in sequences: frames of a sequence share camera, hour, weather, layout and
roadwork presence, and the camera moves forward a little between frames. A camera
(``<source>-cam-NNN``) fixes horizon height, focal length, colour cast, JPEG quality,
vignette and (for dashcams) a visible bonnet.

Determinism: every random choice flows from ``np.random.SeedSequence`` entropy built
from ``(seed, crc32(source), purpose, index...)``. Sequence ``s`` depends on nothing but
the seed, source, style and ``s``, so the first ``k`` records of a run of ``n`` are the
first ``k`` records of any longer run, byte for byte.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from roadwork_ml.config import SyntheticStyle
from roadwork_ml.data.records import WEATHERS, ImageRecord, time_of_day

__all__ = [
    "CameraSpec",
    "RoadSpec",
    "Palette",
    "Building",
    "SceneObject",
    "SceneSpec",
    "ROADWORK_KINDS",
    "generate_source",
    "make_sequence",
    "render_scene",
    "visible_objects",
    "encode_jpeg",
]

Color = tuple[int, int, int]

ROADWORK_KINDS = ("cone", "barrier", "drum", "work_sign", "work_vehicle", "worker", "excavation")

_TAG_CAMERA = 1
_TAG_SEQUENCE = 2
_TAG_FRAME = 3
_NIGHT_HOURS = (20, 21, 22, 23, 0, 1, 2, 3, 4, 5)
_OTHER_HOURS = tuple(range(6, 20))
_MIN_ROADWORK_HEIGHT = 0.09  # nearest roadwork object: fraction of image height (guaranteed per frame)
_MIN_ORANGE_AREA = 0.005  # hard negatives: orange area of the best distractor, fraction of the image
_Z_NEAR = 1.2  # metres: objects closer than this are behind the lens / under the bonnet


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class CameraSpec:
    """One physical camera; frames of a sequence share it."""

    camera_id: str
    horizon: float  # horizon row, fraction of image height
    focal: float  # focal length, fraction of image side
    height_m: float  # lens height above the road
    cast: tuple[float, float, float]  # per-channel gain (colour cast)
    saturation: float
    vignette: float  # 0 = none; darkening at the corners
    hood: float  # fraction of image height covered by the bonnet / dashboard (0 = none)
    hood_color: Color
    roll_deg: float
    jpeg_quality: int  # the camera's base quality; frames jitter around it


@dataclass(frozen=True)
class RoadSpec:
    n_lanes: int
    lane_width: float
    ego_lane: int  # lane the camera drives in, 0 = leftmost
    n_oncoming: int  # leftmost lanes carry oncoming traffic
    curvature: float  # 1/m; lateral offset of the road centre is curvature * z^2 / 2
    shoulder: float  # paved strip beyond the edge line (m)
    sidewalk: float  # 0 = none
    verge: float  # grass strip beyond the sidewalk / shoulder (m)
    dash_period: float
    dash_phase: float
    centre_style: str  # "double_yellow", "white_dashed", "solid_white", "none"
    edge_lines: bool
    crosswalk_z: float  # < 0: none
    guardrail: bool

    @property
    def width(self) -> float:
        return self.n_lanes * self.lane_width

    def lane_center(self, i: int) -> float:
        return -self.width / 2 + (i + 0.5) * self.lane_width

    def lane_left(self, i: int) -> float:
        return -self.width / 2 + i * self.lane_width

    @property
    def edge_right(self) -> float:
        return self.width / 2 + self.shoulder

    @property
    def edge_left(self) -> float:
        return -self.width / 2 - self.shoulder


@dataclass(frozen=True)
class Palette:
    sky_top: Color
    sky_horizon: Color
    road: Color
    sidewalk: Color
    curb: Color
    ground: Color
    marking: Color
    skyline: Color
    clouds: bool


@dataclass(frozen=True)
class Building:
    side: int  # -1 left, +1 right of the road
    x: float  # |lateral| position of the facade (m)
    z0: float
    z1: float
    height: float
    color: Color
    window: Color
    kind: str  # "block" or "house"
    roof: Color
    floor_h: float
    win_spacing: float
    lit: float  # share of windows lit at night


@dataclass(frozen=True)
class SceneObject:
    """An upright (or flat) thing in the world. ``x`` is lateral (m, road centre = 0, right > 0)
    relative to the road (curvature is added when drawn); ``z`` is the depth at frame 0."""

    kind: str
    x: float
    z: float
    role: str = "scenery"  # "roadwork", "distractor" or "scenery"
    tag: str = ""  # name used in the record's tags
    color: Color = (128, 128, 128)
    color2: Color = (240, 240, 240)
    size: float = 1.0  # scale; for barriers/awnings the width or length in metres
    variant: int = 0
    speed: float = 0.0  # m per frame along z, relative to the world
    facing: int = 1  # +1: seen from behind, -1: seen from the front

    @property
    def name(self) -> str:
        return self.tag or self.kind


@dataclass(frozen=True)
class SceneSpec:
    """Everything that defines one frame. Units are metres and image fractions."""

    roadwork: bool
    hard_negative: bool
    hour: int
    weather: str
    layout: str  # "urban", "suburban", "highway"
    camera: CameraSpec
    road: RoadSpec
    palette: Palette
    buildings: tuple[Building, ...] = ()
    objects: tuple[SceneObject, ...] = ()
    skyline: tuple[tuple[float, float, float], ...] = ()  # (centre u, width, height) fractions
    frame: int = 0
    advance: float = 0.0  # metres the camera moved since frame 0
    lateral: float = 0.0  # camera offset from the ego-lane centre (m)
    exposure: float = 1.0
    blur: float = 0.0  # Gaussian radius at 224 px
    noise: float = 0.0  # Gaussian noise std, uint8 units
    jpeg_quality: int = 90
    rain: float = 0.0  # intensity 0..1
    snow: float = 0.0  # intensity 0..1 (flakes and white ground)
    fog_visibility: float = 0.0  # metres; 0 = no fog
    sequence_len: int = 1

    @property
    def time_of_day(self) -> str:
        return time_of_day(self.hour)

    @property
    def camera_x(self) -> float:
        return self.road.lane_center(self.road.ego_lane) + self.lateral

    def object_z(self, o: SceneObject) -> float:
        return o.z - self.advance + o.speed * self.frame


# --------------------------------------------------------------------------- flavours


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
    "natix": _Flavour(0.35, (0.45, 0.30, 0.25), (0.42, 0.54), (0.55, 0.75), (1.2, 1.5), 0.10, 0.6, 0.0, (0.15, 0.45), 1.0, (0.75, 1.0)),
    # ROADWork: good cameras, work zones dense with devices
    "roadwork": _Flavour(0.55, (0.55, 0.30, 0.15), (0.38, 0.50), (0.70, 1.00), (1.3, 1.7), 0.04, 0.0, 0.0, (0.0, 0.10), 1.4, (0.95, 1.15)),
    # Mapillary: crowd-sourced, anything from bikes to car roofs, tilted, every city palette
    "mapillary": _Flavour(1.0, (0.40, 0.35, 0.25), (0.32, 0.58), (0.50, 1.05), (1.1, 2.6), 0.12, 0.15, 3.0, (0.0, 0.30), 1.0, (0.7, 1.25)),
}
_DEFAULT_FLAVOUR = _Flavour(0.6, (0.45, 0.30, 0.25), (0.38, 0.54), (0.6, 0.95), (1.2, 1.8), 0.08, 0.2, 1.0, (0.0, 0.25), 1.0, (0.85, 1.1))


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
    (235, 235, 235), (190, 192, 196), (30, 30, 34), (110, 112, 118), (35, 55, 110), (150, 25, 30),
    (40, 80, 50), (200, 190, 165), (70, 90, 140), (120, 30, 40), (225, 200, 60), (90, 60, 40),
)
_ORANGE_THINGS = ((235, 110, 25), (225, 90, 20), (245, 130, 30), (230, 100, 10), (250, 140, 50))
_AUTUMN = ((215, 110, 25), (200, 80, 20), (235, 150, 40), (225, 95, 15))
_CLOTHES = ((40, 40, 50), (60, 70, 110), (120, 120, 125), (230, 230, 230), (90, 40, 50), (40, 90, 60), (150, 140, 110), (20, 30, 60))
_SKIN = ((240, 200, 170), (200, 150, 110), (140, 95, 65), (90, 60, 40))

_SKY = {
    # (top, horizon) before lighting; night/dusk skies are darkened by the lighting pass
    "day": ((60, 120, 205), (175, 205, 235)),
    "dawn": ((90, 100, 165), (245, 185, 150)),
    "dusk": ((70, 75, 150), (250, 160, 100)),
    "night": ((35, 45, 100), (85, 85, 115)),
}
_OVERCAST = ((140, 146, 158), (195, 198, 204))


# --------------------------------------------------------------------------- scene generation


def _camera(source: str, style: SyntheticStyle, seed: int, idx: int) -> CameraSpec:
    fl = _flavour(source)
    rng = _Rand(_rng(seed, source, _TAG_CAMERA, idx))
    cast = tuple(float(1.0 + fl.cast * (2 * rng.random() - 1)) for _ in range(3))
    hood = _u(rng, 0.06, 0.14) if rng.random() < fl.hood_prob else 0.0
    roll = _u(rng, -fl.roll_max, fl.roll_max) if (fl.roll_max > 0 and rng.random() < 0.35) else 0.0
    q_lo, q_hi = style.jpeg_quality
    return CameraSpec(
        camera_id=f"{source}-cam-{idx:03d}",
        horizon=_u(rng, *fl.horizon),
        focal=_u(rng, *fl.focal),
        height_m=_u(rng, *fl.cam_height),
        cast=cast,  # type: ignore[arg-type]
        saturation=_u(rng, *fl.saturation),
        vignette=_u(rng, *fl.vignette),
        hood=hood,
        hood_color=_pick(rng, ((20, 20, 22), (35, 35, 38), (60, 62, 66), (25, 30, 45), (90, 20, 25))),
        roll_deg=roll,
        jpeg_quality=int(_int(rng, q_lo, q_hi + 1)),
    )


def _palette(rng: _Rand, fl: _Flavour, tod: str, weather: str, layout: str) -> Palette:
    top, hor = _SKY[tod]
    if weather != "clear" and tod == "day":
        top, hor = _OVERCAST
    elif weather != "clear":
        top, hor = _mix(top, _OVERCAST[0], 0.5), _mix(hor, _OVERCAST[1], 0.4)
    if rng.random() < fl.diversity * 0.5:
        top = _hsv(_u(rng, 0.55, 0.68), _u(rng, 0.2, 0.7), _u(rng, 0.4, 0.9)) if tod == "day" and weather == "clear" else top
    top, hor = _jit(rng, top, 18), _jit(rng, hor, 18)
    g = int(_u(rng, 65, 105))
    road = (g, g, g + int(_u(rng, 0, 6)))
    if rng.random() < fl.diversity * 0.35:  # concrete, reddish or brownish asphalt
        road = _pick(rng, ((150, 148, 142), (110, 80, 75), (105, 95, 80), (125, 125, 130)))
    road = _jit(rng, road, 6)
    sw = int(_u(rng, 140, 185))
    sidewalk = _jit(rng, (sw, sw - 3, sw - 8), 10)
    if rng.random() < fl.diversity * 0.3:
        sidewalk = _pick(rng, ((165, 120, 110), (175, 165, 140), (120, 120, 125)))
    if layout == "urban":
        ground = _jit(rng, (100, 98, 92), 15)
    else:
        ground = _hsv(_u(rng, 0.2, 0.3), _u(rng, 0.35, 0.65), _u(rng, 0.35, 0.6))
        if rng.random() < fl.diversity * 0.3:
            ground = _hsv(_u(rng, 0.1, 0.16), _u(rng, 0.25, 0.45), _u(rng, 0.45, 0.7))  # dry grass
    marking = _jit(rng, (235, 235, 228), 10)
    skyline = _mix(hor, (90, 100, 120), _u(rng, 0.35, 0.6))
    return Palette(top, hor, road, sidewalk, _shade(sidewalk, 1.1), _non_orange(rng, ground), marking, skyline, rng.random() < 0.5)


def _building_color(rng: _Rand, fl: _Flavour) -> Color:
    if rng.random() < fl.diversity:
        c = _hsv(rng.random(), _u(rng, 0.08, 0.45), _u(rng, 0.35, 0.9))
    else:
        c = _pick(rng, ((190, 180, 160), (160, 90, 75), (140, 140, 145), (215, 210, 200), (120, 100, 85), (175, 160, 130), (95, 95, 105)))
        c = _jit(rng, c, 18)
    return _non_orange(rng, c)


def _road(rng: _Rand, layout: str, fl: _Flavour) -> RoadSpec:
    if layout == "highway":
        n = int(_pick(rng, (2, 3, 4), (0.4, 0.4, 0.2)))
        oncoming = 0
        lw = _u(rng, 3.4, 3.8)
        shoulder, sidewalk, verge = _u(rng, 1.5, 3.0), 0.0, _u(rng, 4, 12)
        centre = "none"
    elif layout == "urban":
        n = int(_pick(rng, (2, 3, 4), (0.55, 0.2, 0.25)))
        oncoming = n // 2 if rng.random() < 0.8 else 0
        lw = _u(rng, 3.0, 3.5)
        shoulder, sidewalk, verge = _u(rng, 0.3, 2.4), _u(rng, 2.0, 4.5), 0.0
        centre = _pick(rng, ("double_yellow", "white_dashed", "solid_white"), (0.4, 0.3, 0.3)) if oncoming else "none"
    else:
        n = int(_pick(rng, (2, 3), (0.8, 0.2)))
        oncoming = 1 if rng.random() < 0.85 else 0
        lw = _u(rng, 2.9, 3.4)
        shoulder, sidewalk, verge = _u(rng, 0.3, 2.2), _u(rng, 1.4, 2.2), _u(rng, 1.0, 3.5)
        centre = _pick(rng, ("double_yellow", "white_dashed", "none"), (0.4, 0.4, 0.2)) if oncoming else "none"
    ego = int(_int(rng, oncoming, n))
    curv = _u(rng, -0.0022, 0.0022) if rng.random() < 0.5 + 0.3 * fl.diversity else 0.0
    return RoadSpec(
        n_lanes=n, lane_width=lw, ego_lane=ego, n_oncoming=oncoming, curvature=curv,
        shoulder=shoulder, sidewalk=sidewalk, verge=verge,
        dash_period=_u(rng, 8, 13), dash_phase=_u(rng, 0, 10), centre_style=centre,
        edge_lines=layout == "highway" or rng.random() < 0.5,
        crosswalk_z=_u(rng, 12, 40) if layout == "urban" and rng.random() < 0.35 else -1.0,
        guardrail=layout == "highway" and rng.random() < 0.65,
    )


def _buildings(rng: _Rand, layout: str, road: RoadSpec, fl: _Flavour) -> list[Building]:
    out: list[Building] = []
    if layout == "highway":
        return out
    for side in (-1, 1):
        if rng.random() < (0.12 if layout == "urban" else 0.2):
            continue
        base_x = (road.width / 2 + road.shoulder + road.sidewalk + road.verge)
        z = _u(rng, -8, 2)
        while z < 160:
            if layout == "urban":
                w = _u(rng, 8, 28)
                if rng.random() < 0.12:  # side street / gap
                    z += _u(rng, 8, 15)
                    continue
                h = _u(rng, 6, 32)
                x = base_x + 0.2
                kind = "block"
            else:
                w = _u(rng, 8, 14)
                gap = _u(rng, 4, 14)
                h = _u(rng, 3.5, 6.5)
                x = base_x + _u(rng, 4, 10)
                kind = "house"
            col = _building_color(rng, fl)
            out.append(
                Building(
                    side=side, x=x, z0=z, z1=z + w, height=h, color=col,
                    window=_pick(rng, ((55, 65, 80), (80, 95, 115), (40, 45, 55), (110, 125, 140))),
                    kind=kind,
                    roof=_pick(rng, ((120, 50, 40), (70, 70, 75), (95, 75, 60), (50, 55, 65))),
                    floor_h=_u(rng, 2.9, 3.6), win_spacing=_u(rng, 2.2, 4.0), lit=_u(rng, 0.1, 0.6),
                )
            )
            z += w + (gap if kind == "house" else 0.0)
    return out


def _skyline(rng: _Rand, layout: str) -> list[tuple[float, float, float]]:
    if layout == "urban":
        n = int(_int(rng, 4, 12))
        return [(_u(rng, 0.1, 0.9), _u(rng, 0.04, 0.14), _u(rng, 0.03, 0.22)) for _ in range(n)]
    n = int(_int(rng, 3, 7))  # hills: (centre, width, height)
    return [(_u(rng, -0.1, 1.1), _u(rng, 0.25, 0.7), _u(rng, 0.02, 0.09)) for _ in range(n)]


def _scenery(rng: _Rand, layout: str, road: RoadSpec) -> list[SceneObject]:
    objs: list[SceneObject] = []
    W2 = road.width / 2
    # moving traffic
    n_veh = int(_int(rng, 0, 6 if layout != "suburban" else 4))
    for _ in range(n_veh):
        lane = int(_int(rng, 0, road.n_lanes))
        oncoming = lane < road.n_oncoming
        z = _u(rng, 10, 90) if lane != road.ego_lane else _u(rng, 18, 90)
        kind = _pick(rng, ("car", "van", "truck", "bus"), (0.7, 0.15, 0.1, 0.05))
        col = _pick(rng, _CAR_COLORS)
        if kind == "bus":
            col = _pick(rng, ((200, 30, 40), (30, 90, 170), (235, 235, 235), (40, 130, 80)))
        objs.append(
            SceneObject(kind, road.lane_center(lane) + _u(rng, -0.3, 0.3), z, color=_jit(rng, col, 10),
                        speed=_u(rng, -2.5, -1.0) if oncoming else _u(rng, -0.3, 0.4), facing=-1 if oncoming else 1,
                        variant=int(_int(rng, 0, 3)))
        )
    # parked cars
    if layout != "highway" and road.shoulder > 1.8 and rng.random() < 0.7:
        for side in (-1, 1):
            if rng.random() < 0.4:
                continue
            z = _u(rng, 4, 15)
            while z < 70:
                objs.append(SceneObject("car", side * (W2 + road.shoulder - 1.0), z, color=_jit(rng, _pick(rng, _CAR_COLORS), 12),
                                        facing=int(_pick(rng, (1, -1))), variant=int(_int(rng, 0, 3))))
                z += _u(rng, 5.5, 14)
    # poles, trees, signs along the road side
    side_x = W2 + road.shoulder + (road.sidewalk * 0.25 if road.sidewalk else 0.8)
    if layout == "highway":
        side_x = W2 + road.shoulder + 1.0
    for side in (-1, 1):
        if rng.random() < 0.7:
            z = _u(rng, 3, 25)
            period = _u(rng, 20, 40)
            while z < 150:
                objs.append(SceneObject("streetlight", side * side_x, z, color=_pick(rng, ((110, 110, 115), (60, 70, 60), (150, 150, 150))), size=_u(rng, 0.85, 1.15)))
                z += period
        tree_p = {"urban": 0.45, "suburban": 0.85, "highway": 0.7}[layout]
        if rng.random() < tree_p:
            tx = side * (W2 + road.shoulder + (road.sidewalk * 0.65 if road.sidewalk else 0) + road.verge * _u(rng, 0.3, 1.0) + (_u(rng, 2, 8) if layout == "highway" else 0.5))
            z = _u(rng, 2, 14)
            while z < 120:
                green = _hsv(_u(rng, 0.22, 0.36), _u(rng, 0.45, 0.8), _u(rng, 0.3, 0.6))
                objs.append(SceneObject("tree", tx + _u(rng, -0.5, 0.5), z, color=green, size=_u(rng, 0.7, 1.3), variant=int(_int(rng, 0, 3))))
                z += _u(rng, 7, 18)
    for _ in range(int(_int(rng, 0, 4))):
        side = int(_pick(rng, (-1, 1)))
        objs.append(SceneObject("sign_pole", side * (W2 + road.shoulder + 0.4), _u(rng, 6, 60), variant=int(_int(rng, 0, 5))))
    if road.crosswalk_z > 0:
        for side in (-1, 1):
            objs.append(SceneObject("traffic_light", side * (W2 + road.shoulder + 0.3), road.crosswalk_z - 1.0, variant=int(_pick(rng, (0, 2))), color=(35, 35, 38)))
    if layout != "highway" and road.sidewalk > 0:
        for _ in range(int(_int(rng, 0, 6 if layout == "urban" else 3))):
            side = int(_pick(rng, (-1, 1)))
            x = side * (W2 + road.shoulder + _u(rng, 0.5, road.sidewalk - 0.3))
            objs.append(SceneObject("person", x, _u(rng, 4, 50), color=_pick(rng, _CLOTHES), color2=_pick(rng, _SKIN),
                                    variant=int(_int(rng, 0, 2)), speed=_u(rng, -0.2, 0.2)))
        for _ in range(int(_int(rng, 0, 3))):
            side = int(_pick(rng, (-1, 1)))
            objs.append(SceneObject("bin", side * (W2 + road.shoulder + road.sidewalk * 0.8), _u(rng, 5, 40),
                                    color=_pick(rng, ((40, 90, 50), (60, 60, 65), (30, 60, 120), (25, 25, 28)))))
    # flat stuff: patches and manholes
    for _ in range(int(_int(rng, 0, 3))):
        lane = int(_int(rng, 0, road.n_lanes))
        objs.append(SceneObject("patch", road.lane_center(lane) + _u(rng, -1, 1), _u(rng, 5, 50), size=_u(rng, 1.0, 3.0),
                                color=(int(_u(rng, 45, 75)),) * 3))  # type: ignore[arg-type]
    return objs


def _zone(rng: _Rand, layout: str, road: RoadSpec, density: float, z0: float, length: float) -> list[SceneObject]:
    """A roadwork zone starting at depth ``z0`` (frame 0) and ``length`` metres long."""
    objs: list[SceneObject] = []
    ego = road.ego_lane
    same_dir = list(range(road.n_oncoming, road.n_lanes))
    neighbours = [l for l in (ego - 1, ego + 1) if l in same_dir]
    pattern = _pick(rng, ("lane_closure", "shoulder", "road_closed", "work_area"), (0.42, 0.22, 0.14, 0.22))
    if pattern == "lane_closure" and not neighbours:
        pattern = "shoulder"
    stripe_col = _pick(rng, (_BARRIER_RED, (250, 110, 20)))
    cone_col = _pick(rng, _CONE_ORANGE)

    def n_of(lo: int, hi: int) -> int:
        return max(1, int(round(_int(rng, lo, hi + 1) * density)))

    def device(x: float, z: float, kind: str) -> None:
        if kind == "cone":
            objs.append(SceneObject("cone", x, z, "roadwork", color=_jit(rng, cone_col, 8), size=_u(rng, 0.95, 1.3), variant=int(_int(rng, 0, 2))))
        elif kind == "drum":
            objs.append(SceneObject("drum", x, z, "roadwork", color=_jit(rng, (245, 100, 20), 10), size=_u(rng, 0.95, 1.15), variant=int(_int(rng, 0, 2))))
        else:  # barrier board parallel to the road
            objs.append(SceneObject("barrier", x, z, "roadwork", color=stripe_col, size=_u(rng, 1.8, 3.0), variant=1))

    def worker(x: float, z: float) -> None:
        objs.append(SceneObject("worker", x, z, "roadwork", color=_pick(rng, _HIVIS), color2=_pick(rng, _SKIN),
                                size=_u(rng, 0.95, 1.08), variant=int(_int(rng, 0, 3)), speed=_u(rng, -0.15, 0.15)))

    def truck(x: float, z: float) -> None:
        objs.append(SceneObject("work_vehicle", x, z, "roadwork", color=_pick(rng, ((240, 190, 20), (240, 110, 20), (232, 232, 226))),
                                color2=stripe_col, variant=int(_int(rng, 0, 2)), facing=1))

    def sign(x: float, z: float, variant: int | None = None) -> None:
        objs.append(SceneObject("work_sign", x, z, "roadwork", color=_jit(rng, (255, 135, 0), 8), size=_u(rng, 1.0, 1.35),
                                variant=int(_int(rng, 0, 2)) if variant is None else variant))

    dev_kind = _pick(rng, ("cone", "drum", "panel"), (0.55, 0.3, 0.15))
    if pattern == "lane_closure":
        c = int(_pick(rng, neighbours))
        side = 1 if c > ego else -1
        x_line = road.lane_left(max(c, ego))  # boundary between ego and closed lane
        x_far = x_line + side * road.lane_width * 0.85
        taper = _u(rng, 8, 20)
        n_taper = n_of(3, 6)
        for i in range(n_taper):
            t = i / max(n_taper - 1, 1)
            device(x_far + (x_line + side * 0.3 - x_far) * t, z0 + taper * t, "cone" if dev_kind == "panel" else dev_kind)
        z = z0 + taper + _u(rng, 2, 5)
        while z < z0 + length:
            device(x_line + side * 0.3, z, dev_kind)
            z += _u(rng, 3, 6) if dev_kind != "panel" else _u(rng, 3.5, 6)
        xc = road.lane_center(c)
        if rng.random() < 0.5:
            truck(xc, z0 + taper + _u(rng, 3, 14))
        if rng.random() < 0.65:
            for _ in range(n_of(1, 3)):
                worker(xc + _u(rng, -1.0, 1.0), z0 + taper + _u(rng, 0, 12))
        if rng.random() < 0.35:
            objs.append(SceneObject("barrier", xc, z0 + taper + _u(rng, 0.5, 3), "roadwork", color=stripe_col, size=road.lane_width * 0.75, variant=int(_pick(rng, (0, 2)))))
        if rng.random() < 0.6:
            sx = (road.edge_right + 0.6) if side > 0 else (road.lane_left(road.n_oncoming) - 0.4)
            sign(sx, max(z0 - _u(rng, 0, 4), 4.0))
        if rng.random() < 0.3:
            objs.append(SceneObject("excavation", xc, z0 + taper + _u(rng, 2, 10), "roadwork", size=_u(rng, 2.5, 5)))
    elif pattern == "shoulder":
        xe = road.width / 2 - 0.3
        z = z0
        for _ in range(n_of(4, 9)):
            device(xe, z, "cone" if dev_kind == "panel" else dev_kind)
            z += _u(rng, 3, 6)
        if rng.random() < 0.6:
            for _ in range(n_of(1, 3)):
                worker(xe + _u(rng, 0.5, 1.5) + road.shoulder * 0.5, z0 + _u(rng, 2, 14))
        if rng.random() < 0.45:
            truck(road.width / 2 + road.shoulder * 0.5, z0 + _u(rng, 5, 15))
        if rng.random() < 0.6:
            sign(road.edge_right + 0.8, max(z0 - _u(rng, 0, 5), 4.0))
        if rng.random() < 0.4:
            objs.append(SceneObject("barrier", road.edge_right + 0.3, z0 + _u(rng, 3, 10), "roadwork", color=stripe_col, size=_u(rng, 2, 3.5), variant=1))
    elif pattern == "road_closed":
        zb = z0 + _u(rng, 3, 9)
        x = road.lane_left(road.n_oncoming) + 0.3
        while x < road.width / 2 - 0.5:
            w = min(_u(rng, 1.6, 2.8), road.width / 2 - x)
            objs.append(SceneObject("barrier", x + w / 2, zb + _u(rng, -0.4, 0.4), "roadwork", color=stripe_col, size=w * 0.92,
                                    variant=int(_pick(rng, (0, 0, 2)))))
            x += w + _u(rng, 0.1, 0.6)
        for _ in range(n_of(2, 5)):
            lane = int(_pick(rng, same_dir))
            device(road.lane_center(lane) + _u(rng, -1.2, 1.2), z0 + _u(rng, -1.5, 2.5), "cone" if dev_kind == "panel" else dev_kind)
        sign(road.lane_center(ego) + _u(rng, -0.5, 0.5), zb - 0.8, variant=1)
        if rng.random() < 0.5:
            for _ in range(n_of(1, 2)):
                worker(road.lane_center(int(_pick(rng, same_dir))) + _u(rng, -1, 1), zb + _u(rng, 1, 6))
        if rng.random() < 0.35:
            truck(road.lane_center(int(_pick(rng, same_dir))), zb + _u(rng, 4, 12))
    else:  # work_area: a fenced pit in a lane next to the ego lane (or ahead of it)
        lane = int(_pick(rng, neighbours)) if neighbours else ego
        xc = road.lane_center(lane) + (0.0 if lane != ego else _u(rng, -0.3, 0.3))
        za = z0 + _u(rng, 1.5, 5)
        la = _u(rng, 5, 12)
        wa = road.lane_width * 0.8
        objs.append(SceneObject("excavation", xc, za + 0.5, "roadwork", size=min(la - 1, _u(rng, 3, 6))))
        objs.append(SceneObject("barrier", xc, za, "roadwork", color=stripe_col, size=wa, variant=int(_pick(rng, (0, 2)))))
        for sx in (-1, 1):
            objs.append(SceneObject("barrier", xc + sx * wa / 2, za, "roadwork", color=stripe_col, size=la, variant=1))
        for _ in range(n_of(1, 3)):
            worker(xc + _u(rng, -wa / 3, wa / 3), za + _u(rng, 1, la))
        for _ in range(n_of(2, 4)):
            device(xc + _u(rng, -wa / 2, wa / 2), za - _u(rng, 1.5, 5), "cone" if dev_kind == "panel" else dev_kind)
        if rng.random() < 0.5:
            sign(road.edge_right + 0.7, max(z0 - _u(rng, 0, 3), 4.0))
        if rng.random() < 0.3:
            truck(xc, za + la + _u(rng, 2, 6))
    return objs


def _distractor_kinds(layout: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    if layout == "urban":
        return (("orange_car", "orange_van", "orange_awning", "orange_shop_sign", "amber_traffic_light", "orange_jacket_person", "orange_bin", "orange_ball", "autumn_tree"),
                (0.16, 0.1, 0.14, 0.1, 0.08, 0.14, 0.1, 0.05, 0.13))
    if layout == "suburban":
        return (("orange_car", "orange_van", "amber_traffic_light", "orange_jacket_person", "orange_bin", "orange_ball", "autumn_tree"),
                (0.2, 0.12, 0.06, 0.16, 0.14, 0.07, 0.25))
    return (("orange_car", "orange_van", "autumn_tree"), (0.45, 0.3, 0.25))


def _distractors(rng: _Rand, layout: str, road: RoadSpec, buildings: list[Building], kind: str, z_lo: float, z_hi: float) -> list[SceneObject]:
    W2 = road.width / 2
    walk = W2 + road.shoulder + max(road.sidewalk, 1.0) * 0.55
    out: list[SceneObject] = []
    n = int(_int(rng, 1, 3))
    for _ in range(n):
        z = _u(rng, z_lo, z_hi)
        side = int(_pick(rng, (-1, 1)))
        if kind in ("orange_car", "orange_van"):
            lanes = [l for l in range(road.n_lanes) if l != road.ego_lane] or [road.ego_lane]
            lane = int(_pick(rng, lanes))
            parked = road.shoulder > 1.8 and rng.random() < 0.4
            x = side * (W2 + road.shoulder - 1.0) if parked else road.lane_center(lane)
            onc = (not parked) and lane < road.n_oncoming
            out.append(SceneObject("van" if kind == "orange_van" else "car", x, z, "distractor", kind, color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8),
                                   facing=-1 if onc else int(_pick(rng, (1, -1))) if parked else 1, variant=int(_int(rng, 0, 3)),
                                   speed=(-1.2 if onc else 0.0)))
        elif kind in ("orange_awning", "orange_shop_sign"):
            cands = [b for b in buildings if b.kind == "block" and b.z0 < z < b.z1 - 3]
            if not cands:
                cands = [b for b in buildings if b.kind == "block" and b.z1 > z_lo and b.z0 < z_hi + 10]
            if not cands:
                continue
            b = _pick(rng, cands)
            zz = min(max(z, b.z0 + 0.5), b.z1 - 3)
            length = min(_u(rng, 3, 8), b.z1 - zz - 0.3)
            if length < 2:
                continue
            out.append(SceneObject("awning" if kind == "orange_awning" else "shop_sign", b.side * b.x, zz, "distractor", kind,
                                   color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8), size=length, variant=int(_int(rng, 0, 2))))
        elif kind == "amber_traffic_light":
            out.append(SceneObject("traffic_light", side * (W2 + road.shoulder + 0.3), z, "distractor", kind, color=_pick(rng, ((35, 35, 38), (230, 170, 20))), variant=1))
        elif kind == "orange_jacket_person":
            out.append(SceneObject("person", side * walk, z, "distractor", kind, color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8), color2=_pick(rng, _SKIN),
                                   variant=int(_int(rng, 0, 2)), size=_u(rng, 0.95, 1.08)))
        elif kind == "orange_bin":
            for j in range(int(_int(rng, 1, 4))):
                out.append(SceneObject("bin", side * (walk + 0.3), z + 0.8 * j, "distractor", kind, color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8), size=_u(rng, 0.9, 1.2)))
        elif kind == "orange_ball":
            out.append(SceneObject("ball", side * walk, z * 0.6, "distractor", kind, color=_jit(rng, (240, 120, 30), 10), size=_u(rng, 1.0, 2.5)))
        elif kind == "autumn_tree":
            out.append(SceneObject("tree", side * (W2 + road.shoulder + max(road.sidewalk * 0.65, 1.5)), z, "distractor", kind,
                                   color=_pick(rng, _AUTUMN), size=_u(rng, 0.9, 1.3), variant=int(_int(rng, 0, 3))))
    return out


def _screen_box(spec: SceneSpec, o: SceneObject, z: float) -> tuple[float, float, float, float] | None:
    """Bounding box of an object in image fractions (u0, v0, u1, v1), or None behind the camera."""
    if z < _Z_NEAR:
        return None
    cam = spec.camera
    kc = 0.5 * spec.road.curvature
    x0 = spec.camera_x
    k = o.kind

    def pt(x: float, zz: float, h: float) -> tuple[float, float]:
        return 0.5 + cam.focal * (x + kc * zz * zz - x0) / zz, cam.horizon + cam.focal * (cam.height_m - h) / zz

    if k in ("awning", "shop_sign") or (k == "barrier" and o.variant == 1) or k in ("excavation", "patch"):
        length = o.size
        h0, h1 = {"awning": (2.5, 3.3), "shop_sign": (3.4, 4.3), "barrier": (0.0, 1.05), "excavation": (0.0, 0.6), "patch": (0.0, 0.0)}[k]
        pts = [pt(o.x, z, h0), pt(o.x, z, h1), pt(o.x, z + length, h0), pt(o.x, z + length, h1)]
        if k == "excavation":
            pts += [pt(o.x - 1.5, z, 0), pt(o.x + 1.5, z, 0)]
        us = [p[0] for p in pts]
        vs = [p[1] for p in pts]
        return min(us), min(vs), max(us), max(vs)
    w, h = _DIMS.get(k, (1.0, 1.0))
    if k == "barrier":
        w = o.size
    else:
        w, h = w * o.size, h * o.size
    u, v = pt(o.x, z, 0.0)
    s = cam.focal / z
    return u - 0.5 * w * s, v - h * s, u + 0.5 * w * s, v


_DIMS = {
    "cone": (0.42, 0.72), "drum": (0.6, 0.95), "barrier": (2.0, 1.05), "work_sign": (0.9, 1.75), "work_vehicle": (2.4, 3.6),
    "worker": (0.6, 1.8), "car": (1.8, 1.45), "van": (2.0, 2.2), "truck": (2.5, 3.3), "bus": (2.55, 3.1), "person": (0.55, 1.72),
    "tree": (3.5, 6.5), "streetlight": (0.3, 8.0), "traffic_light": (0.45, 3.9), "sign_pole": (0.7, 2.7), "bin": (0.6, 1.05),
    "ball": (0.25, 0.25),
}


def _visible(spec: SceneSpec, role: str | None = None) -> list[tuple[SceneObject, float, float, float]]:
    """``(object, visible height, visible area, depth)`` of the objects in view (image fractions)."""
    out = []
    bottom = 1.0 - spec.camera.hood
    for o in spec.objects:
        if role is not None and o.role != role:
            continue
        z = spec.object_z(o)
        if z > 150.0:
            continue
        box = _screen_box(spec, o, z)
        if box is None:
            continue
        u0, v0, u1, v1 = box
        cu0, cv0, cu1, cv1 = max(u0, 0.0), max(v0, 0.0), min(u1, 1.0), min(v1, bottom)
        if cu1 <= cu0 or cv1 - cv0 < 0.015:
            continue
        area = (cu1 - cu0) * (cv1 - cv0)
        if o.kind in _FLAT or area >= 0.5 * max(u1 - u0, 1e-6) * max(v1 - v0, 1e-6):
            out.append((o, cv1 - cv0, area, z))
    return out


def visible_objects(spec: SceneSpec, role: str | None = None) -> list[tuple[SceneObject, float]]:
    """Objects of a frame that are in view: ``(object, visible height as a fraction of the image)``.

    An object counts when at least half of its bounding box lies inside the image (above a
    dashcam's bonnet) and its visible height is at least 1.5 % of the image. ``role``
    restricts the answer to "roadwork", "distractor" or "scenery" objects.
    """
    return [(o, h) for o, h, _a, _z in _visible(spec, role)]


def _max_height(visible: list[tuple[SceneObject, float]]) -> float:
    return max((h for o, h in visible if o.kind not in _FLAT), default=0.0)


# share of an object's bounding box that is orange, for distractors
_ORANGE_SHARE = {"car": 0.55, "van": 0.65, "person": 0.2, "bin": 0.75, "ball": 0.8, "tree": 0.45, "traffic_light": 0.01, "awning": 0.45, "shop_sign": 0.6}


def _fog_clear(spec: SceneSpec, z: float) -> float:
    """Fraction of an object's contrast that survives the fog at depth z."""
    return 1.0 if spec.fog_visibility <= 0 else math.exp(-z / spec.fog_visibility)


def _roadwork_ok(spec: SceneSpec) -> bool:
    """A clearly visible roadwork object: tall enough and not lost in fog."""
    return any(h >= _MIN_ROADWORK_HEIGHT and _fog_clear(spec, z) >= 0.45 for o, h, _a, z in _visible(spec, "roadwork") if o.kind not in _FLAT)


def _distractor_ok(spec: SceneSpec) -> bool:
    """Enough orange, non-roadwork area in view (after fog)."""
    return any(a * _ORANGE_SHARE.get(o.kind, 0.3) * _fog_clear(spec, z) >= _MIN_ORANGE_AREA for o, _h, a, z in _visible(spec, "distractor"))


def _hour(rng: _Rand, night_rate: float) -> int:
    if rng.random() < night_rate:
        return int(_pick(rng, _NIGHT_HOURS))
    return int(_pick(rng, _OTHER_HOURS))


def _weather(rng: _Rand, probs: dict[str, float]) -> str:
    names = [w for w in WEATHERS if probs.get(w, 0.0) > 0]
    return str(_pick(rng, names, [probs[w] for w in names]))


def _check_style(source: str, style: SyntheticStyle) -> None:
    unknown = set(style.weather_probs) - set(WEATHERS)
    if unknown:
        raise ValueError(f"synthetic style of source {source!r}: unknown weathers {sorted(unknown)} in weather_probs; use {WEATHERS}")
    if sum(max(v, 0.0) for v in style.weather_probs.values()) <= 0:
        raise ValueError(f"synthetic style of source {source!r}: weather_probs must have a positive entry, got {style.weather_probs}")
    lo, hi = style.frames_per_sequence
    if not 1 <= lo <= hi:
        raise ValueError(f"synthetic style of source {source!r}: frames_per_sequence must be [lo, hi] with 1 <= lo <= hi, got {style.frames_per_sequence}")
    qlo, qhi = style.jpeg_quality
    if not 1 <= qlo <= qhi <= 100:
        raise ValueError(f"synthetic style of source {source!r}: jpeg_quality must be [lo, hi] within 1..100, got {style.jpeg_quality}")


def make_sequence(source: str, style: SyntheticStyle, seed: int, index: int) -> list[SceneSpec]:
    """All frames of sequence ``index`` of a source (depends only on the arguments)."""
    _check_style(source, style)
    fl = _flavour(source)
    rng = _Rand(_rng(seed, source, _TAG_SEQUENCE, index))
    lo, hi = style.frames_per_sequence
    n_frames = int(_int(rng, lo, hi + 1))
    camera = _camera(source, style, seed, int(_int(rng, 0, style.n_cameras)))
    roadwork = bool(rng.random() < style.positive_rate)
    hard = (not roadwork) and bool(rng.random() < style.hard_negative_rate)
    hour = _hour(rng, style.night_rate)
    weather = _weather(rng, style.weather_probs)
    layout = str(_pick(rng, ("urban", "suburban", "highway"), fl.layouts))
    tod = time_of_day(hour)
    palette = _palette(rng, fl, tod, weather, layout)
    road = _road(rng, layout, fl)
    buildings = _buildings(rng, layout, road, fl)
    skyline = _skyline(rng, layout)
    step = _u(rng, 0.3, 1.1) if n_frames > 1 else 0.0
    total = step * (n_frames - 1)
    objects = _scenery(rng, layout, road)

    if roadwork:
        z0 = _u(rng, 4.0, 10.0)
        zone = _zone(rng, layout, road, fl.zone_density, z0, total + _u(rng, 18, 40))
        # keep traffic out of the way of the zone
        zx = [o.x for o in zone]
        objects = [o for o in objects if not (o.kind in ("car", "van", "truck", "bus") and o.z < z0 + 45 and min(abs(o.x - x) for x in zx) < 2.0)]
        objects += zone
    dkinds, dprobs = _distractor_kinds(layout)
    if hard:
        for _ in range(int(_pick(rng, (1, 2, 3), (0.5, 0.35, 0.15)))):
            objects += _distractors(rng, layout, road, buildings, str(_pick(rng, dkinds, dprobs)), 5.0 + total, 24.0 + total)
    elif roadwork and rng.random() < 0.25:
        objects += _distractors(rng, layout, road, buildings, str(_pick(rng, dkinds, dprobs)), 6.0 + total, 30.0 + total)

    climate = dict(
        rain=_u(rng, 0.4, 1.0) if weather == "rain" else 0.0,
        snow=_u(rng, 0.45, 1.0) if weather == "snow" else 0.0,
        fog_visibility=_u(rng, 14, 55) if weather == "fog" else 0.0,
    )
    base = SceneSpec(
        roadwork=roadwork, hard_negative=hard, hour=hour, weather=weather, layout=layout, camera=camera, road=road,
        palette=palette, buildings=tuple(buildings), objects=tuple(objects), skyline=tuple(skyline), sequence_len=n_frames, **climate,
    )
    frames: list[SceneSpec] = []
    extra: list[SceneObject] = []
    q_lo, q_hi = style.jpeg_quality
    for k in range(n_frames):
        spec = replace(
            base, frame=k, advance=step * k + (_u(rng, -0.15, 0.15) if k else 0.0), lateral=_u(rng, -0.2, 0.2),
            exposure=_u(rng, 0.9, 1.1), blur=_u(rng, 0.0, style.blur_max), noise=_u(rng, 0.0, style.noise_std),
            jpeg_quality=int(min(q_hi, max(q_lo, camera.jpeg_quality + int(_int(rng, -4, 5))))),
        )
        frames.append(spec)
    # guarantees: every positive frame shows a clearly visible roadwork object, every hard negative an orange distractor
    for spec in frames:
        spec = replace(spec, objects=base.objects + tuple(extra))
        for _ in range(4):
            if not (roadwork and not _roadwork_ok(spec)):
                break
            extra.append(_anchor(rng, spec, "roadwork"))
            spec = replace(spec, objects=base.objects + tuple(extra))
        for _ in range(4):
            if not (hard and not _distractor_ok(spec)):
                break
            extra.append(_anchor(rng, spec, "distractor"))
            spec = replace(spec, objects=base.objects + tuple(extra))
    if extra:
        objs = base.objects + tuple(extra)
        frames = [replace(f, objects=objs) for f in frames]
    return frames


def _anchor(rng: _Rand, spec: SceneSpec, role: str) -> SceneObject:
    """An object placed so that it is clearly visible in ``spec``'s frame."""
    cam, road = spec.camera, spec.road
    if role == "roadwork":
        kind = str(_pick(rng, ("work_sign", "cone", "drum", "barrier", "worker"), (0.3, 0.25, 0.15, 0.15, 0.15)))
        h = _DIMS[kind][1] * (1.15 if kind in ("cone", "drum") else 1.0)
        target = _u(rng, 0.1, 0.2)
    else:
        kind = str(_pick(rng, ("car", "van", "bin", "tree")))
        h = _DIMS[kind][1] * (1.2 if kind == "bin" else 1.0)
        target = _u(rng, 0.14, 0.25)
    zf = max(cam.focal * h / target, 3.0)
    if spec.fog_visibility > 0:
        zf = max(min(zf, 0.5 * spec.fog_visibility), 2.5)
    z = zf + spec.advance  # frame-0 depth
    u = _u(rng, 0.3, 0.7)
    x = spec.camera_x - 0.5 * road.curvature * zf * zf + (u - 0.5) * zf / cam.focal
    x = float(min(max(x, road.edge_left - 1.0), road.edge_right + 1.0))
    if role == "roadwork":
        if kind == "cone":
            return SceneObject("cone", x, z, "roadwork", color=_pick(rng, _CONE_ORANGE), size=1.15, variant=1)
        if kind == "drum":
            return SceneObject("drum", x, z, "roadwork", color=(245, 100, 20), size=1.1)
        if kind == "barrier":
            return SceneObject("barrier", x, z, "roadwork", color=_pick(rng, (_BARRIER_RED, (250, 110, 20))), size=_u(rng, 1.5, 2.5), variant=0)
        if kind == "worker":
            return SceneObject("worker", x, z, "roadwork", color=_pick(rng, _HIVIS), color2=_pick(rng, _SKIN), variant=int(_int(rng, 0, 3)))
        return SceneObject("work_sign", x, z, "roadwork", color=(255, 135, 0), size=1.2, variant=int(_int(rng, 0, 2)))
    col = _pick(rng, _ORANGE_THINGS)
    if kind in ("car", "van"):
        lanes = [l for l in range(road.n_lanes) if l != road.ego_lane] or [road.ego_lane]
        xl = road.lane_center(int(_pick(rng, lanes)))
        if abs(cam.focal * (xl + 0.5 * road.curvature * zf * zf - spec.camera_x) / zf) > 0.3:
            xl = x  # that lane is out of view at this depth: stay where the camera looks
        onc = xl < road.lane_left(road.n_oncoming)
        return SceneObject(kind, xl, z, "distractor", f"orange_{kind}", color=col, variant=int(_int(rng, 0, 3)), facing=-1 if onc else 1)
    side = 1 if x >= spec.camera_x else -1
    xs = side * (road.width / 2 + road.shoulder + max(road.sidewalk, 1.0) * 0.5)
    if kind == "person":
        return SceneObject("person", xs, z, "distractor", "orange_jacket_person", color=col, color2=_pick(rng, _SKIN))
    if kind == "bin":
        return SceneObject("bin", xs, z, "distractor", "orange_bin", color=col, size=1.3)
    return SceneObject("tree", xs + side * 1.0, z, "distractor", "autumn_tree", color=_pick(rng, _AUTUMN), size=1.1)


# --------------------------------------------------------------------------- rendering


class _Painter:
    """World → screen projection plus the PIL canvases (RGB, and optional emit / fog masks)."""

    def __init__(self, spec: SceneSpec, S: int, im: Image.Image, emit: Image.Image | None, fog: Image.Image | None):
        cam = spec.camera
        self.spec = spec
        self.S = S
        self.f = cam.focal * S
        self.cx = S / 2.0
        self.yh = cam.horizon * S
        self.H = cam.height_m
        self.x0 = spec.camera_x
        self.kc = 0.5 * spec.road.curvature
        self.d = ImageDraw.Draw(im)
        self.e = ImageDraw.Draw(emit) if emit is not None else None
        self.fg = ImageDraw.Draw(fog) if fog is not None else None
        self.vis = spec.fog_visibility
        self.lights: list[tuple[float, float, float, Color, float]] = []
        tod = spec.time_of_day
        self.dark = tod != "day"
        self.shadow = tod == "day" and spec.weather == "clear"
        self.snow = spec.snow

    def P(self, x: float, z: float, h: float = 0.0) -> tuple[float, float]:
        if z < 0.4:
            z = 0.4
        return self.cx + self.f * (x + self.kc * z * z - self.x0) / z, self.yh + self.f * (self.H - h) / z

    def fog_at(self, z: float) -> int:
        return int(255 * min(0.9, 1.0 - math.exp(-max(z, 0.0) / self.vis)))

    def fog_box(self, box, z: float) -> None:
        if self.fg is not None:
            self.fg.rectangle(box, fill=self.fog_at(z))

    def fog_poly(self, pts, z: float) -> None:
        if self.fg is not None:
            self.fg.polygon(pts, fill=self.fog_at(z))

    def glow(self, u: float, v: float, r: float, col: Color, strength: float = 1.0, emit: bool = True) -> None:
        """A light source: drawn bright, kept bright at night (emit mask) and haloed."""
        r = max(r, 0.6)
        self.d.ellipse([u - r, v - r, u + r, v + r], fill=col)
        if self.e is not None and emit:
            self.e.ellipse([u - r, v - r, u + r, v + r], fill=255)
        if self.dark:
            self.lights.append((u, v, r, col, strength))

    def emit_poly(self, pts, value: int) -> None:
        if self.e is not None:
            self.e.polygon(pts, fill=value)

    def emit_rect(self, box, value: int) -> None:
        if self.e is not None:
            self.e.rectangle(box, fill=value)

    def ground_shadow(self, u: float, v: float, half_w: float, s: float) -> None:
        if self.shadow and half_w > 1.0:
            self.d.ellipse([u - half_w, v - 0.05 * s - 0.5, u + half_w * 1.25, v + 0.08 * s + 0.5], fill=self.shadow_col)

    shadow_col: Color = (40, 40, 42)


def _zs(spec: SceneSpec, z_far: float = 160.0) -> list[float]:
    if spec.road.curvature == 0.0:
        return [0.6, z_far]
    n = 10
    return [0.6 * (z_far / 0.6) ** (i / (n - 1)) for i in range(n)]


def _strip(p: _Painter, zs: list[float], xa: float, xb: float, col: Color, h: float = 0.0) -> None:
    pts = [p.P(xa, z, h) for z in zs] + [p.P(xb, z, h) for z in reversed(zs)]
    p.d.polygon(pts, fill=col)


def _ribbon(p: _Painter, zs: list[float], x: float, h0: float, h1: float, col: Color) -> None:
    pts = [p.P(x, z, h1) for z in zs] + [p.P(x, z, h0) for z in reversed(zs)]
    p.d.polygon(pts, fill=col)


def _draw_sky_and_background(p: _Painter, spec: SceneSpec, rng: np.random.Generator) -> None:
    S, d, pal = p.S, p.d, spec.palette
    yh = p.yh
    if pal.clouds and spec.weather == "clear" and spec.time_of_day != "night":
        for _ in range(int(rng.integers(1, 5))):
            cx, cy = rng.random() * S, rng.random() * yh * 0.7
            w, h = (0.1 + 0.2 * rng.random()) * S, (0.02 + 0.04 * rng.random()) * S
            c = _mix(pal.sky_top, (245, 245, 248), 0.55 + 0.3 * rng.random())
            d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=c)
            d.ellipse([cx - w * 0.5, cy - h * 1.7, cx + w * 0.6, cy + h * 0.6], fill=c)
    col = pal.skyline
    if spec.layout == "urban":
        for (uc, w, h) in spec.skyline:
            x0, x1 = (uc - w / 2) * S, (uc + w / 2) * S
            d.rectangle([x0, yh - h * S, x1, yh + 1], fill=col)
    else:
        cx = p.P(0.0, 400.0)[0] - p.cx
        for (uc, w, h) in spec.skyline:
            x0, x1 = (uc - w / 2) * S + cx, (uc + w / 2) * S + cx
            d.chord([x0, yh - h * S, x1, yh + h * S], 180, 360, fill=_mix(col, pal.ground, 0.35))


def _draw_ground(p: _Painter, spec: SceneSpec) -> None:
    road, pal = spec.road, spec.palette
    zs = _zs(spec)
    W2 = road.width / 2
    snowy = spec.snow > 0
    road_col = _mix(pal.road, (200, 202, 206), 0.55 * spec.snow) if snowy else pal.road
    walk_col = _mix(pal.sidewalk, (238, 240, 244), 0.9 * spec.snow) if snowy else pal.sidewalk
    verge_col = _mix(pal.ground, (236, 238, 242), 0.95 * spec.snow) if snowy else pal.ground
    outer = W2 + road.shoulder + road.sidewalk + road.verge
    # verge / ground beyond everything
    far = outer + 60
    _strip(p, zs, -far, far, verge_col)
    if road.sidewalk > 0:
        for side in (-1, 1):
            a = side * (W2 + road.shoulder)
            _strip(p, zs, a, a + side * road.sidewalk, walk_col)
            _strip(p, zs, a, a + side * 0.18, pal.curb if not snowy else (230, 232, 236))
    _strip(p, zs, road.edge_left, road.edge_right, road_col)
    # lane markings
    mark = pal.marking if not snowy else _mix(road_col, pal.marking, 0.35)
    d = p.d
    if road.edge_lines:
        for x in (-W2 + 0.15, W2 - 0.15):
            _strip(p, zs, x - 0.08, x + 0.08, mark)
    if road.n_oncoming and road.centre_style != "none":
        xc = road.lane_left(road.n_oncoming)
        if road.centre_style == "double_yellow":
            yel = (225, 185, 40) if not snowy else _mix(road_col, (225, 185, 40), 0.4)
            _strip(p, zs, xc - 0.2, xc - 0.08, yel)
            _strip(p, zs, xc + 0.08, xc + 0.2, yel)
        elif road.centre_style == "solid_white":
            _strip(p, zs, xc - 0.07, xc + 0.07, mark)
    dash_x = [road.lane_left(i) for i in range(1, road.n_lanes) if i != road.n_oncoming or road.centre_style == "white_dashed"]
    if dash_x:
        period, dash = road.dash_period, 3.0
        k0 = math.floor((1.0 + spec.advance - road.dash_phase) / period)
        for k in range(k0, k0 + 40):
            z0 = road.dash_phase + k * period - spec.advance
            if z0 > 90:
                break
            z1 = z0 + dash
            if z1 < 1.0:
                continue
            z0 = max(z0, 0.8)
            for x in dash_x:
                pts = [p.P(x - 0.07, z0), p.P(x + 0.07, z0), p.P(x + 0.07, z1), p.P(x - 0.07, z1)]
                if pts[2][0] - pts[3][0] < 0.3 and pts[0][1] - pts[3][1] < 0.3:
                    continue
                d.polygon(pts, fill=mark)
    if road.crosswalk_z > 0:
        z0 = road.crosswalk_z - spec.advance
        if z0 > 1.0:
            x = -W2 + 0.3
            while x < W2 - 0.3:
                d.polygon([p.P(x, z0), p.P(x + 0.5, z0), p.P(x + 0.5, z0 + 3.0), p.P(x, z0 + 3.0)], fill=mark)
                x += 1.0
    if snowy:  # tyre tracks
        track = _mix(pal.road, road_col, 0.3)
        for lane in range(road.n_lanes):
            c = road.lane_center(lane)
            for off in (-0.8, 0.8):
                _strip(p, zs, c + off - 0.22, c + off + 0.22, track)
    if road.guardrail:
        for side in (-1, 1):
            x = side * (W2 + road.shoulder + 0.6)
            _ribbon(p, zs, x, 0.5, 0.8, (170, 172, 175) if not snowy else (200, 202, 205))
            _ribbon(p, zs, x, 0.0, 0.5, _shade(verge_col, 0.85))
    if p.fg is not None:
        pass  # ground fog is by row (set up before drawing)


def _draw_buildings(p: _Painter, spec: SceneSpec) -> None:
    d = p.d
    adv = spec.advance
    night = spec.time_of_day == "night"
    snowy = spec.snow > 0
    # far to near, so nearer facades cover farther ones
    for b in sorted(spec.buildings, key=lambda b: -b.z0):
        z0, z1 = b.z0 - adv, b.z1 - adv
        if z1 < 1.0:
            continue
        z0 = max(z0, 0.7)
        x = b.side * b.x
        facade = [p.P(x, z0, 0), p.P(x, z0, b.height), p.P(x, z1, b.height), p.P(x, z1, 0)]
        if max(q[0] for q in facade) < 0 or min(q[0] for q in facade) > p.S:
            continue
        d.polygon(facade, fill=b.color)
        if p.fg is not None:
            zz = z0
            while zz < z1:
                zn = min(z1, zz + 6.0)
                p.fog_poly([p.P(x, zz, 0), p.P(x, zz, b.height + (2.5 if b.kind == "house" else 0)), p.P(x, zn, b.height + (2.5 if b.kind == "house" else 0)), p.P(x, zn, 0)], 0.5 * (zz + zn))
                zz = zn
        if b.kind == "house":
            roof = b.roof if not snowy else (235, 236, 240)
            d.polygon([p.P(x, z0, b.height), p.P(x, z1, b.height), p.P(x + b.side * 3.0, z1, b.height + 2.5), p.P(x + b.side * 3.0, z0, b.height + 2.5)], fill=roof)
        # windows: columns through all floors, then floor slabs cut them into panes
        zm = 0.5 * (z0 + z1)
        px_per_m = p.f / max(zm, 1.0)
        if px_per_m * 1.2 < 2.0 or zm > 90:
            continue
        wcol = b.window
        ground_floor = 3.2 if b.kind == "block" else 0.8
        top = b.height - 0.8
        zw = b.z0 - adv + b.win_spacing * 0.5
        cols = []
        while zw + 1.2 < b.z1 - adv:
            if zw > 0.8:
                cols.append(zw)
            zw += b.win_spacing
        for zc in cols:
            d.polygon([p.P(x, zc, ground_floor), p.P(x, zc, top), p.P(x, zc + 1.2, top), p.P(x, zc + 1.2, ground_floor)], fill=wcol)
        if cols and b.height > ground_floor + 1 and px_per_m * 0.9 >= 1.0:
            h = ground_floor + b.floor_h - 0.9
            while h < top:
                pts = [p.P(x, z0, h), p.P(x, z0, h + 0.9), p.P(x, z1, h + 0.9), p.P(x, z1, h)]
                d.polygon(pts, fill=b.color)
                h += b.floor_h
        if b.kind == "block" and cols and px_per_m > 2:  # shop windows / doors on the ground floor
            for zc in cols[::2]:
                d.polygon([p.P(x, zc, 0.3), p.P(x, zc, 2.6), p.P(x, zc + 1.8, 2.6), p.P(x, zc + 1.8, 0.3)], fill=_shade(wcol, 0.8))
        if night and p.e is not None and cols:
            # a deterministic subset of panes is lit
            hsh = zlib.crc32(f"{b.z0:.3f}{b.height:.3f}".encode())
            lit_col = (255, 215, 140)
            i = 0
            for zc in cols:
                h = ground_floor + 0.2
                while h + 1.0 < top:
                    i += 1
                    if ((hsh >> (i % 29)) ^ i * 2654435761) % 100 < b.lit * 100:
                        pts = [p.P(x, zc, h), p.P(x, zc, h + 1.1), p.P(x, zc + 1.2, h + 1.1), p.P(x, zc + 1.2, h)]
                        d.polygon(pts, fill=lit_col)
                        p.e.polygon(pts, fill=230)
                    h += b.floor_h


# ----- objects


def _draw_cone(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    h = 0.72 * s
    col = o.color
    if h < 2.5:
        d.rectangle([u - 0.15 * s, v - h, u + 0.15 * s, v], fill=col)
        return
    p.ground_shadow(u, v, 0.3 * s, s)
    hb, ht = 0.2 * s, 0.035 * s
    base = 0.06 * s
    d.rectangle([u - 0.25 * s, v - base, u + 0.25 * s, v], fill=(30, 30, 30) if o.variant else _shade(col, 0.7))
    vb, vt = v - base, v - h
    body = [(u - hb, vb), (u + hb, vb), (u + ht, vt), (u - ht, vt)]
    d.polygon(body, fill=col)
    p.emit_poly(body, 110)
    d.polygon([(u + 0.3 * hb, vb), (u + hb, vb), (u + ht, vt), (u + 0.3 * ht, vt)], fill=_shade(col, 0.8))
    bands = ((0.3, 0.45), (0.58, 0.7)) if o.variant else ((0.42, 0.6),)
    for t0, t1 in bands:
        y0, y1 = vb - t0 * (vb - vt), vb - t1 * (vb - vt)
        w0, w1 = hb + (ht - hb) * t0, hb + (ht - hb) * t1
        pts = [(u - w0, y0), (u + w0, y0), (u + w1, y1), (u - w1, y1)]
        d.polygon(pts, fill=_WHITE)
        p.emit_poly(pts, 225)
    p.fog_box([u - 0.25 * s, vt, u + 0.25 * s, v], z)


def _draw_drum(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    h, hw = 0.95 * s, 0.29 * s
    col = o.color
    if h < 2.5:
        d.rectangle([u - hw, v - h, u + hw, v], fill=col)
        return
    p.ground_shadow(u, v, 0.4 * s, s)
    d.rectangle([u - hw * 1.15, v - 0.07 * s, u + hw * 1.15, v], fill=(25, 25, 25))
    d.rectangle([u - hw, v - h, u + hw, v - 0.07 * s], fill=col)
    p.emit_rect([u - hw, v - h, u + hw, v - 0.07 * s], 110)
    d.rectangle([u + 0.45 * hw, v - h, u + hw, v - 0.07 * s], fill=_shade(col, 0.8))
    bands = ((0.2, 0.32), (0.45, 0.57), (0.7, 0.82)) if o.variant else ((0.25, 0.4), (0.6, 0.75))
    for t0, t1 in bands:
        box = [u - hw, v - t1 * h, u + hw, v - t0 * h]
        d.rectangle(box, fill=_WHITE)
        p.emit_rect(box, 225)
    d.ellipse([u - hw, v - h - 0.05 * s, u + hw, v - h + 0.05 * s], fill=_shade(col, 0.65))
    p.fog_box([u - hw, v - h, u + hw, v], z)


def _stripes(p: _Painter, x0: float, x1: float, y0: float, y1: float, sw: float, col: Color, base: Color, emit: int = 190) -> None:
    """A horizontal board from x0..x1, y0 (top)..y1 (bottom) with diagonal stripes of width sw."""
    d = p.d
    d.rectangle([x0, y0, x1, y1], fill=base)
    p.emit_rect([x0, y0, x1, y1], emit)
    sw = max(sw, 1.0)
    skew = y1 - y0
    x = x0 - skew
    i = 0
    while x < x1:
        if i % 2 == 0:
            xa, xb = x, x + sw
            pts = [(min(max(xa, x0), x1), y1), (min(max(xb, x0), x1), y1), (min(max(xb + skew, x0), x1), y0), (min(max(xa + skew, x0), x1), y0)]
            d.polygon(pts, fill=col)
        x += sw
        i += 1


def _draw_barrier(p: _Painter, o: SceneObject, z: float) -> None:
    d = p.d
    col = o.color
    if o.variant == 1:  # a striped board along the road (from z to z + size)
        za, zb = z, z + o.size
        if za < 0.8:
            za = 0.8
            if zb <= za:
                return
        n = max(2, int(round((zb - za) / 0.45)))
        legs = (za, zb)
        for zl in legs:
            a, b = p.P(o.x, zl, 0.0), p.P(o.x, zl, 1.05)
            s = p.f / zl
            d.rectangle([a[0] - 0.03 * s, b[1], a[0] + 0.03 * s, a[1]], fill=(60, 60, 60))
        for (h0, h1) in ((0.6, 1.0),):
            for i in range(n):
                zz0 = za + (zb - za) * i / n
                zz1 = za + (zb - za) * (i + 1) / n
                pts = [p.P(o.x, zz0, h0), p.P(o.x, zz0, h1), p.P(o.x, zz1, h1), p.P(o.x, zz1, h0)]
                d.polygon(pts, fill=col if i % 2 == 0 else _WHITE)
                if i % 2:
                    p.emit_poly(pts, 150)
        p.fog_poly([p.P(o.x, za, 0), p.P(o.x, za, 1.05), p.P(o.x, zb, 1.05), p.P(o.x, zb, 0)], 0.5 * (za + zb))
        return
    s = p.f / z
    u, v = p.P(o.x, z)
    hw = 0.5 * o.size * s
    if 1.05 * s < 2.0:
        d.rectangle([u - hw, v - 1.05 * s, u + hw, v - 0.5 * s], fill=col)
        return
    p.ground_shadow(u, v, hw, s)
    if o.variant == 2:  # row of water-filled blocks, alternating colour
        n = max(1, int(round(o.size / 1.0)))
        bw = 2 * hw / n
        for i in range(n):
            x0 = u - hw + i * bw
            c = col if i % 2 == 0 else _WHITE
            d.polygon([(x0, v), (x0 + bw - 0.5, v), (x0 + bw - 0.12 * bw, v - 0.8 * s), (x0 + 0.12 * bw, v - 0.8 * s)], fill=c)
            if i % 2:
                p.emit_rect([x0, v - 0.8 * s, x0 + bw, v], 120)
        p.fog_box([u - hw, v - 0.8 * s, u + hw, v], z)
        return
    for lx in (u - 0.85 * hw, u + 0.85 * hw):
        d.rectangle([lx - 0.03 * s, v - 1.0 * s, lx + 0.03 * s, v], fill=(70, 70, 72))
        d.rectangle([lx - 0.18 * s, v - 0.05 * s, lx + 0.18 * s, v], fill=(40, 40, 40))
    _stripes(p, u - hw, u + hw, v - 1.05 * s, v - 0.8 * s, 0.2 * s, col, _WHITE)
    _stripes(p, u - hw, u + hw, v - 0.65 * s, v - 0.45 * s, 0.2 * s, col, _WHITE)
    if o.size > 1.5 and (int(o.z * 10) % 3 == 0):
        p.glow(u - hw + 0.1 * s, v - 1.15 * s, 0.07 * s, (255, 190, 40), 0.8)
    p.fog_box([u - hw, v - 1.05 * s, u + hw, v], z)


def _draw_work_sign(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    col = o.color
    if 1.7 * s < 3:
        d.rectangle([u - 0.3 * s, v - 1.6 * s, u + 0.3 * s, v - 0.8 * s], fill=col)
        return
    p.ground_shadow(u, v, 0.35 * s, s)
    # stand: two legs
    d.line([(u - 0.3 * s, v), (u, v - 0.9 * s), (u + 0.3 * s, v)], fill=(60, 60, 60), width=max(1, int(0.04 * s)))
    if o.variant == 0:  # orange diamond with a black border and a worker pictogram
        cy, r = v - 1.25 * s, 0.45 * s
        pts = [(u, cy - r), (u + r, cy), (u, cy + r), (u - r, cy)]
        d.polygon(pts, fill=(20, 20, 20))
        ri = r * 0.86
        inner = [(u, cy - ri), (u + ri, cy), (u, cy + ri), (u - ri, cy)]
        d.polygon(inner, fill=col)
        p.emit_poly(inner, 190)
        lw = max(1, int(0.05 * s))
        d.ellipse([u - 0.05 * s, cy - 0.24 * s, u + 0.05 * s, cy - 0.14 * s], fill=(20, 20, 20))
        d.line([(u, cy - 0.14 * s), (u - 0.03 * s, cy + 0.05 * s), (u - 0.12 * s, cy + 0.22 * s)], fill=(20, 20, 20), width=lw)
        d.line([(u - 0.03 * s, cy + 0.05 * s), (u + 0.1 * s, cy + 0.22 * s)], fill=(20, 20, 20), width=lw)
        d.line([(u - 0.02 * s, cy - 0.08 * s), (u + 0.16 * s, cy + 0.02 * s)], fill=(20, 20, 20), width=lw)
        d.polygon([(u + 0.1 * s, cy + 0.24 * s), (u + 0.25 * s, cy + 0.24 * s), (u + 0.18 * s, cy + 0.12 * s)], fill=(20, 20, 20))
        top = cy - r
    else:  # rectangular board: orange/white stripes over an orange panel with "text"
        x0, x1 = u - 0.6 * s, u + 0.6 * s
        _stripes(p, x0, x1, v - 0.95 * s, v - 0.7 * s, 0.18 * s, col, _WHITE)
        box = [x0, v - 1.65 * s, x1, v - 1.0 * s]
        d.rectangle(box, fill=col, outline=(20, 20, 20))
        p.emit_rect(box, 190)
        for t in (0.3, 0.62):
            yy = box[1] + t * (box[3] - box[1])
            d.rectangle([x0 + 0.12 * s, yy, x1 - 0.12 * s, yy + 0.1 * s], fill=(20, 20, 20))
        for lx in (x0 + 0.1 * s, x1 - 0.1 * s):
            d.rectangle([lx - 0.025 * s, v - 1.0 * s, lx + 0.025 * s, v], fill=(70, 70, 70))
        top = box[1]
        if int(o.z * 7) % 2 == 0:
            p.glow(x0 + 0.05 * s, top - 0.06 * s, 0.06 * s, (255, 190, 40), 0.8)
    p.fog_box([u - 0.6 * s, top, u + 0.6 * s, v], z)


def _draw_vehicle(p: _Painter, o: SceneObject, z: float) -> None:
    """Cars, vans, trucks, buses and work vehicles, seen from behind (facing=+1) or the front."""
    s = p.f / z
    u, v = p.P(o.x, z)
    d = p.d
    k = o.kind
    w, h = {"car": (1.8, 1.45), "van": (2.0, 2.2), "truck": (2.5, 3.3), "bus": (2.55, 3.1), "work_vehicle": (2.4, 2.6)}[k]
    hw = 0.5 * w * s
    col = o.color
    if h * s < 6:
        d.rectangle([u - hw, v - h * s, u + hw, v], fill=col)
        if h * s >= 3:
            d.rectangle([u - hw * 0.7, v - h * s * 0.9, u + hw * 0.7, v - h * s * 0.65], fill=(45, 55, 68))
            d.rectangle([u - hw, v - 0.3 * s, u + hw, v], fill=(25, 25, 28))
        if p.dark:
            for lx in (u - hw * 0.8, u + hw * 0.8):
                p.glow(lx, v - 0.6 * s, max(0.1 * s, 0.6), (255, 250, 225) if o.facing < 0 else (210, 20, 25), 1.0 if o.facing < 0 else 0.6)
        return
    front = o.facing < 0
    p.ground_shadow(u, v, hw * 1.05, s)
    wheel = (18, 18, 20)
    d.rectangle([u - hw + 0.05 * s, v - 0.45 * s, u - hw + 0.35 * s, v], fill=wheel)
    d.rectangle([u + hw - 0.35 * s, v - 0.45 * s, u + hw - 0.05 * s, v], fill=wheel)
    glass = (45, 55, 68)
    if k == "car":
        body_top = v - 0.85 * s
        d.rectangle([u - hw, body_top, u + hw, v - 0.18 * s], fill=col)
        cab = [(u - hw * 0.9, body_top), (u + hw * 0.9, body_top), (u + hw * (0.72 - 0.05 * o.variant), v - h * s), (u - hw * (0.72 - 0.05 * o.variant), v - h * s)]
        d.polygon(cab, fill=col)
        g = [(u - hw * 0.8, body_top - 0.03 * s), (u + hw * 0.8, body_top - 0.03 * s), (u + hw * 0.66, v - (h - 0.06) * s), (u - hw * 0.66, v - (h - 0.06) * s)]
        d.polygon(g, fill=glass if not front else (60, 72, 88))
        top = v - h * s
    else:
        top = v - h * s
        d.rectangle([u - hw, top, u + hw, v - 0.2 * s], fill=col)
        if k in ("van", "bus") or front:
            d.rectangle([u - hw * 0.85, top + 0.15 * s, u + hw * 0.85, top + (0.75 if k != "bus" else 0.9) * s], fill=glass)
        if k == "bus":
            d.rectangle([u - hw * 0.7, top + 0.04 * s, u + hw * 0.7, top + 0.12 * s], fill=(20, 20, 20))
    d.rectangle([u - hw, v - 0.3 * s, u + hw, v - 0.18 * s], fill=(35, 35, 38))  # bumper
    d.rectangle([u - 0.25 * s, v - 0.5 * s, u + 0.25 * s, v - 0.38 * s], fill=(230, 230, 225))  # plate
    ly = v - 0.62 * s
    lr = max(0.09 * s, 0.6)
    if front:
        for lx in (u - hw + 0.2 * s, u + hw - 0.2 * s):
            p.glow(lx, ly, lr, (255, 250, 225), 1.6 if p.dark else 0.0)
    else:
        for lx in (u - hw + 0.12 * s, u + hw - 0.12 * s):
            p.glow(lx, ly, lr, (210, 20, 25), 0.7)
    if k == "work_vehicle":
        # rear chevrons and an arrow board on the roof, amber beacons
        if not front:
            _stripes(p, u - hw, u + hw, v - 1.3 * s, v - 0.7 * s, 0.25 * s, o.color2, (250, 220, 30) if o.color2 != _BARRIER_RED else _WHITE)
        if col == (232, 232, 226):
            d.rectangle([u - hw, top + 0.6 * s, u + hw, top + 0.8 * s], fill=(245, 110, 20))
        ab = [u - 0.85 * s, top - 1.0 * s, u + 0.85 * s, top - 0.05 * s]
        d.rectangle([u - 0.05 * s, top - 0.1 * s, u + 0.05 * s, top], fill=(40, 40, 40))
        d.rectangle(ab, fill=(22, 22, 22))
        dr = max(0.055 * s, 0.5)
        cy = (ab[1] + ab[3]) / 2
        direction = 1 if o.variant == 0 else -1
        pts = [(-0.6 + 0.2 * i, 0.0) for i in range(7)] + [(0.4 - 0.15 * j * 1, 0.15 * j) for j in (1, 2)] + [(0.4 - 0.15 * j, -0.15 * j) for j in (1, 2)]
        for (dx, dy) in pts:
            p.glow(u + direction * dx * s, cy + dy * 2.2 * s, dr, (255, 190, 40), 0.35)
        for bx in (u - hw + 0.15 * s, u + hw - 0.15 * s):
            p.glow(bx, top - 0.1 * s, max(0.1 * s, 0.7), (255, 160, 0), 1.0)
        top = ab[1]
    p.fog_box([u - hw, top, u + hw, v], z)


def _draw_figure(p: _Painter, o: SceneObject, z: float) -> None:
    """Workers (hi-vis vest with reflective stripes, hard hat) and pedestrians (plain clothes)."""
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    h = 1.75 * s
    worker = o.kind == "worker"
    if h < 7:
        d.rectangle([u - 0.18 * s, v - 1.45 * s, u + 0.18 * s, v - 0.8 * s], fill=o.color)
        d.rectangle([u - 0.12 * s, v - 0.8 * s, u + 0.12 * s, v], fill=(40, 45, 70))
        d.rectangle([u - 0.1 * s, v - 1.7 * s, u + 0.1 * s, v - 1.45 * s], fill=o.color2)
        if worker:
            d.rectangle([u - 0.18 * s, v - 1.15 * s, u + 0.18 * s, v - 1.05 * s], fill=(225, 228, 232))
        return
    p.ground_shadow(u, v, 0.3 * s, s)
    legs = (40, 45, 70) if not worker else _pick_static((40, 45, 70), (60, 60, 64), int(o.z * 10))
    lw = 0.11 * s
    spread = 0.08 * s if o.variant == 0 else 0.16 * s
    d.polygon([(u - 0.15 * s, v - 0.85 * s), (u - 0.02 * s, v - 0.85 * s), (u - spread + lw, v), (u - spread - lw * 0.6, v)], fill=legs)
    d.polygon([(u + 0.02 * s, v - 0.85 * s), (u + 0.15 * s, v - 0.85 * s), (u + spread + lw * 0.6, v), (u + spread - lw, v)], fill=legs)
    torso = [u - 0.2 * s, v - 1.45 * s, u + 0.2 * s, v - 0.8 * s]
    d.rectangle(torso, fill=o.color)
    arm_col = o.color if not worker else (70, 80, 110)
    aw = max(1, int(0.09 * s))
    d.line([(u - 0.2 * s, v - 1.4 * s), (u - 0.3 * s, v - 0.95 * s)], fill=arm_col, width=aw)
    if worker and o.variant == 2:  # holding a stop/slow paddle
        d.line([(u + 0.2 * s, v - 1.4 * s), (u + 0.38 * s, v - 1.2 * s)], fill=arm_col, width=aw)
        d.line([(u + 0.38 * s, v - 1.05 * s), (u + 0.38 * s, v - 1.9 * s)], fill=(60, 60, 60), width=max(1, int(0.03 * s)))
        d.regular_polygon((u + 0.38 * s, v - 1.95 * s, max(0.17 * s, 1.0)), 8, fill=(200, 25, 30))
    elif worker and o.variant == 1:  # shovel
        d.line([(u + 0.2 * s, v - 1.4 * s), (u + 0.35 * s, v - 1.0 * s)], fill=arm_col, width=aw)
        d.line([(u + 0.35 * s, v - 1.2 * s), (u + 0.45 * s, v - 0.05 * s)], fill=(110, 80, 50), width=max(1, int(0.04 * s)))
        d.polygon([(u + 0.38 * s, v - 0.2 * s), (u + 0.55 * s, v - 0.2 * s), (u + 0.5 * s, v), (u + 0.4 * s, v)], fill=(90, 90, 95))
    else:
        d.line([(u + 0.2 * s, v - 1.4 * s), (u + 0.3 * s, v - 0.95 * s)], fill=arm_col, width=aw)
    if worker:  # reflective stripes on the vest
        for t in (1.05, 1.25):
            box = [u - 0.2 * s, v - t * s - 0.045 * s, u + 0.2 * s, v - t * s + 0.045 * s]
            d.rectangle(box, fill=(225, 228, 232))
            p.emit_rect(box, 200)
        p.emit_rect(torso, 110)
    hr = 0.12 * s
    hy = v - 1.58 * s
    d.ellipse([u - hr, hy - hr, u + hr, hy + hr], fill=o.color2)
    if worker:
        hat = _pick_static((245, 245, 240), (250, 210, 30), int(o.x * 13 + o.z * 7))
        d.chord([u - hr * 1.25, hy - hr * 1.35, u + hr * 1.25, hy + hr * 0.6], 180, 360, fill=hat)
    elif o.variant == 1:
        d.chord([u - hr, hy - hr * 1.1, u + hr, hy + hr * 0.5], 180, 360, fill=(40, 30, 25))  # hair
    p.fog_box([u - 0.3 * s, v - h, u + 0.3 * s, v], z)


def _pick_static(a: Color, b: Color, n: int) -> Color:
    return a if n % 2 == 0 else b


def _draw_tree(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    if 6 * s < 3:
        return
    trunk = (85, 60, 40)
    d.rectangle([u - 0.14 * s, v - 3.0 * s, u + 0.14 * s, v], fill=trunk)
    c = o.color
    if p.snow and o.role != "distractor":
        c = _mix(c, (235, 238, 242), 0.55 * p.snow)
    r = (1.5 + 0.25 * o.variant) * s
    cy = v - 3.8 * s
    if r < 4:  # far away: one blob
        d.ellipse([u - r, cy - r * 1.2, u + r, cy + r * 0.9], fill=c)
        p.fog_box([u - r, cy - r * 1.2, u + r, v], z)
        return
    d.ellipse([u - r, cy - r * 1.1, u + r, cy + r * 0.9], fill=_shade(c, 0.8))
    d.ellipse([u - r * 0.85, cy - r * 1.4, u + r * 0.55, cy + r * 0.2], fill=c)
    d.ellipse([u - r * 0.2, cy - r * 0.9, u + r * 0.9, cy + r * 0.6], fill=_shade(c, 1.1))
    p.fog_box([u - r, cy - r * 1.4, u + r, v], z)


def _draw_streetlight(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    if 8 * s < 3:
        return
    side = -1 if o.x > p.x0 else 1  # arm reaches over the road
    top = v - 8.0 * s
    d.rectangle([u - 0.07 * s, top, u + 0.07 * s, v], fill=o.color)
    if 8 * s < 14 and not p.dark:
        return
    ax = u + side * 1.6 * s
    d.line([(u, top), (ax, top - 0.2 * s)], fill=o.color, width=max(1, int(0.08 * s)))
    d.rectangle([ax - 0.3 * s, top - 0.25 * s, ax + 0.3 * s, top - 0.05 * s], fill=(50, 50, 55))
    if p.dark:
        p.glow(ax, top, 0.22 * s, (255, 220, 160), 2.2)
        p.lights.append((ax, v + 0.3 * s, 3.0 * s, (255, 200, 130), -1.0))  # pool of light on the ground
    p.fog_box([u - 0.1 * s, top, u + 0.1 * s, v], z)


def _draw_traffic_light(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z
    u, v = p.P(o.x, z)
    d = p.d
    if 3.9 * s < 3:
        return
    d.rectangle([u - 0.06 * s, v - 3.0 * s, u + 0.06 * s, v], fill=(70, 70, 72))
    box = [u - 0.2 * s, v - 3.9 * s, u + 0.2 * s, v - 2.85 * s]
    d.rectangle(box, fill=o.color)
    cols = [(255, 40, 30), (255, 165, 0), (40, 230, 90)]
    for i in range(3):
        cy = box[1] + (0.18 + 0.33 * i) * 1.05 * s
        lit = i == o.variant
        c = cols[i] if lit else _shade(cols[i], 0.25)
        if lit:
            p.glow(u, cy, 0.13 * s, c, 1.2)
        else:
            d.ellipse([u - 0.12 * s, cy - 0.12 * s, u + 0.12 * s, cy + 0.12 * s], fill=c)
    p.fog_box(box, z)


def _draw_sign_pole(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z
    u, v = p.P(o.x, z)
    d = p.d
    if 2.7 * s < 3:
        return
    d.rectangle([u - 0.04 * s, v - 2.2 * s, u + 0.04 * s, v], fill=(150, 150, 155))
    cy, r = v - 2.3 * s, 0.32 * s
    kind = o.variant
    if kind == 0:
        d.ellipse([u - r, cy - r, u + r, cy + r], fill=(30, 80, 180))
        d.line([(u - r * 0.5, cy), (u + r * 0.5, cy)], fill=(240, 240, 240), width=max(1, int(0.08 * s)))
    elif kind == 1:  # no entry
        d.ellipse([u - r, cy - r, u + r, cy + r], fill=(200, 25, 30))
        d.rectangle([u - r * 0.65, cy - r * 0.18, u + r * 0.65, cy + r * 0.18], fill=(240, 240, 240))
    elif kind == 2:
        d.rectangle([u - r, cy - r, u + r, cy + r], fill=(30, 80, 180))
        d.rectangle([u - r * 0.3, cy - r * 0.6, u + r * 0.3, cy + r * 0.6], fill=(240, 240, 240))
    elif kind == 3:
        d.rectangle([u - r * 1.8, cy - r, u + r * 1.8, cy + r], fill=(20, 110, 60))
        d.rectangle([u - r * 1.4, cy - r * 0.2, u + r * 1.2, cy + r * 0.15], fill=(235, 235, 235))
    else:  # warning triangle, red border
        d.polygon([(u, cy - r * 1.1), (u + r * 1.1, cy + r * 0.8), (u - r * 1.1, cy + r * 0.8)], fill=(200, 25, 30))
        d.polygon([(u, cy - r * 0.6), (u + r * 0.65, cy + r * 0.55), (u - r * 0.65, cy + r * 0.55)], fill=(245, 245, 245))
    p.emit_rect([u - r, cy - r, u + r, cy + r], 120)
    p.fog_box([u - r, cy - r, u + r, v], z)


def _draw_bin(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    if s * 1.05 < 2:
        return
    p.ground_shadow(u, v, 0.35 * s, s)
    d.polygon([(u - 0.3 * s, v - 0.95 * s), (u + 0.3 * s, v - 0.95 * s), (u + 0.26 * s, v), (u - 0.26 * s, v)], fill=o.color)
    d.rectangle([u - 0.33 * s, v - 1.05 * s, u + 0.33 * s, v - 0.95 * s], fill=_shade(o.color, 0.7))
    d.ellipse([u - 0.3 * s, v - 0.12 * s, u - 0.14 * s, v + 0.02 * s], fill=(20, 20, 20))
    p.fog_box([u - 0.33 * s, v - 1.05 * s, u + 0.33 * s, v], z)


def _draw_ball(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    r = 0.12 * s
    if r < 0.6:
        return
    p.d.ellipse([u - r, v - 2 * r, u + r, v], fill=o.color)
    p.d.line([(u - r, v - r), (u + r, v - r)], fill=(40, 30, 20), width=max(1, int(0.15 * r)))


def _draw_facade_item(p: _Painter, o: SceneObject, z: float) -> None:
    """Awnings and shop signs fixed on a facade at lateral ``x`` from z to z + size."""
    d = p.d
    za, zb = max(z, 0.8), z + o.size
    if zb <= za:
        return
    x = o.x
    inward = -1 if x > 0 else 1
    if o.kind == "awning":
        n = max(1, int(round((zb - za) / 0.6))) if o.variant else 1
        for i in range(n):
            z0 = za + (zb - za) * i / n
            z1 = za + (zb - za) * (i + 1) / n
            pts = [p.P(x, z0, 3.3), p.P(x, z1, 3.3), p.P(x + inward * 1.3, z1, 2.5), p.P(x + inward * 1.3, z0, 2.5)]
            d.polygon(pts, fill=o.color if (i % 2 == 0) else _WHITE)
        p.fog_poly([p.P(x, za, 3.3), p.P(x, zb, 3.3), p.P(x + inward * 1.3, zb, 2.5), p.P(x + inward * 1.3, za, 2.5)], 0.5 * (za + zb))
    else:
        pts = [p.P(x, za, 3.4), p.P(x, za, 4.3), p.P(x, zb, 4.3), p.P(x, zb, 3.4)]
        d.polygon(pts, fill=o.color)
        p.emit_poly(pts, 180)
        txt = (250, 250, 245) if o.variant else (30, 30, 30)
        n = max(1, int((zb - za) / 1.2))
        for i in range(n):
            z0 = za + (zb - za) * (i + 0.2) / n
            z1 = za + (zb - za) * (i + 0.75) / n
            d.polygon([p.P(x, z0, 3.65), p.P(x, z0, 4.05), p.P(x, z1, 4.05), p.P(x, z1, 3.65)], fill=txt)
        p.fog_poly(pts, 0.5 * (za + zb))


def _draw_flat(p: _Painter, o: SceneObject, z: float) -> None:
    """Things flat on the road: asphalt patches (scenery) and excavations (roadwork)."""
    d = p.d
    za, zb = max(z, 0.8), z + o.size
    if zb <= za:
        return
    if o.kind == "patch":
        hw = 0.7
        d.polygon([p.P(o.x - hw, za), p.P(o.x + hw, za), p.P(o.x + hw, zb), p.P(o.x - hw, zb)], fill=o.color)
        return
    hw = 1.4
    d.polygon([p.P(o.x - hw, za), p.P(o.x + hw, za), p.P(o.x + hw, zb), p.P(o.x - hw, zb)], fill=(95, 70, 45))
    d.polygon([p.P(o.x - hw * 0.7, za + 0.4), p.P(o.x + hw * 0.7, za + 0.4), p.P(o.x + hw * 0.7, zb - 0.4), p.P(o.x - hw * 0.7, zb - 0.4)], fill=(55, 40, 28))
    # dirt mound at the far end
    a, b = p.P(o.x - hw, zb), p.P(o.x + hw, zb)
    top = p.P(o.x, zb, 0.7)
    d.polygon([a, b, top], fill=(125, 95, 60))


_DRAW = {
    "cone": _draw_cone, "drum": _draw_drum, "barrier": _draw_barrier, "work_sign": _draw_work_sign,
    "work_vehicle": _draw_vehicle, "car": _draw_vehicle, "van": _draw_vehicle, "truck": _draw_vehicle, "bus": _draw_vehicle,
    "worker": _draw_figure, "person": _draw_figure, "tree": _draw_tree, "streetlight": _draw_streetlight,
    "traffic_light": _draw_traffic_light, "sign_pole": _draw_sign_pole, "bin": _draw_bin, "ball": _draw_ball,
    "awning": _draw_facade_item, "shop_sign": _draw_facade_item, "excavation": _draw_flat, "patch": _draw_flat,
}
_FLAT = ("patch", "excavation")


# ----- post-processing


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
    for x, y, l in rng.random((int(T * 2.4), 3)):
        x0, y0 = x * T, y * T
        ll = L * (0.5 + l)
        d.line([(x0, y0), (x0 + 0.25 * ll, y0 + ll)], fill=int(90 + 100 * l), width=lw)
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
    for (u, v, r, col, strength) in lights:
        if strength == 0:
            continue
        if strength < 0:  # pool of light on the ground: broad, weak, flattened
            rx, ry, amp = r * k, r * k * 0.3, 0.3
        else:
            rx = ry = (r * 1.6 + 0.8) * k
            amp = min(strength, 2.5) * 0.5
        c = (min(255, int(col[0] * amp * scale)), min(255, int(col[1] * amp * scale)), min(255, int(col[2] * amp * scale)))
        d.ellipse([u * k - rx, v * k - ry, u * k + rx, v * k + ry], fill=c)
    layer = layer.filter(ImageFilter.BoxBlur(max(1.0, S / 70)))
    if h != S:
        layer = layer.resize((S, S), Image.Resampling.BILINEAR)
    return layer


_FOG_COLOR = {"day": (198, 200, 204), "dawn": (165, 155, 150), "dusk": (150, 140, 138), "night": (45, 47, 55)}


def _post(im: Image.Image, emit: Image.Image | None, fog: Image.Image | None, p: _Painter, spec: SceneSpec, S: int, rng: np.random.Generator) -> Image.Image:
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
        if z + (o.size if o.kind in _FLAT or o.kind in ("awning", "shop_sign") or (o.kind == "barrier" and o.variant == 1) else 0) < 0.8:
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
        p.d.arc([-0.3 * S, hy, 1.3 * S, hy + 2.2 * cam.hood * S], 200, 340, fill=_shade(cam.hood_color, 1.8), width=max(1, S // 120))
        if fog is not None:
            ImageDraw.Draw(fog).chord([-0.3 * S, hy, 1.3 * S, hy + 2.2 * cam.hood * S], 180, 360, fill=0)
    return _post(im, emit, fog, p, spec, S, rng)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2)
    return buf.getvalue()


# --------------------------------------------------------------------------- records


def _tags(spec: SceneSpec, flipped: bool, image_size: int) -> str:
    counts: dict[str, dict[str, int]] = {"roadwork": {}, "distractor": {}, "scenery": {}}
    visible = visible_objects(spec)
    for o, _h in visible:
        bucket = counts[o.role]
        bucket[o.name] = bucket.get(o.name, 0) + 1
    tags = {
        "roadwork": spec.roadwork,
        "hard_negative": spec.hard_negative and bool(counts["distractor"]),
        "roadwork_objects": counts["roadwork"],
        "distractors": counts["distractor"],
        "scenery": counts["scenery"],
        "roadwork_max_height": round(_max_height([(o, h) for o, h in visible if o.role == "roadwork"]), 4),
        "layout": spec.layout,
        "time_of_day": spec.time_of_day,
        "frame": spec.frame,
        "frames_in_sequence": spec.sequence_len,
        "jpeg_quality": spec.jpeg_quality,
        "label_flipped": flipped,
        "image_size": image_size,
    }
    return json.dumps(tags, sort_keys=True, separators=(",", ":"))


def generate_source(source: str, style: SyntheticStyle, image_size: int, seed: int, n_images: int | None = None) -> Iterator[ImageRecord]:
    """Yield ``n_images`` (default ``style.n_images``) synthetic records in ``source``'s style.

    Records come sequence by sequence; the last sequence is cut short to hit ``n_images``
    exactly. Same arguments → byte-identical JPEG bytes, and any prefix of a longer run.
    """
    _check_style(source, style)
    n = style.n_images if n_images is None else int(n_images)
    if n < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    index = 0
    seq = 0
    while index < n:
        frames = make_sequence(source, style, seed, seq)
        sequence_id = f"{source}-seq{seq:05d}"
        for spec in frames:
            if index >= n:
                break
            frng = _rng(seed, source, _TAG_FRAME, seq, spec.frame)
            flipped = bool(frng.random() < style.label_noise)
            image = render_scene(spec, image_size, frng)
            true_label = int(spec.roadwork)
            yield ImageRecord(
                record_id=f"{source}-{index:06d}",
                source=source,
                label=true_label ^ int(flipped),
                image_bytes=encode_jpeg(image, spec.jpeg_quality),
                hour=spec.hour,
                weather=spec.weather,
                camera_id=spec.camera.camera_id,
                sequence_id=sequence_id,
                group_id=f"{source}:{sequence_id}",
                true_label=true_label,
                origin=f"synthetic:{source}:{seed}:{index}",
                tags=_tags(spec, flipped, image_size),
            )
            index += 1
        seq += 1
