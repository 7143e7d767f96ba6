"""Visibility of objects on screen, and :func:`make_sequence`: the frames of one drive as :class:`SceneSpec` s."""

from __future__ import annotations

import math
from dataclasses import replace

from roadwork_ml.config import SyntheticStyle
from roadwork_ml.data.records import WEATHERS, time_of_day
from roadwork_ml.data.synthetic.layout import (
    _buildings,
    _camera,
    _palette,
    _road,
    _scenery,
    _skyline,
)
from roadwork_ml.data.synthetic.objects import _FLAT
from roadwork_ml.data.synthetic.randomness import (
    _AUTUMN,
    _BARRIER_RED,
    _CONE_ORANGE,
    _HIVIS,
    _ORANGE_THINGS,
    _SKIN,
    _flavour,
    _int,
    _pick,
    _Rand,
    _rng,
    _u,
)
from roadwork_ml.data.synthetic.spec import (
    _MIN_ORANGE_AREA,
    _MIN_ROADWORK_HEIGHT,
    _NIGHT_HOURS,
    _OTHER_HOURS,
    _TAG_SEQUENCE,
    _Z_NEAR,
    SceneObject,
    SceneSpec,
)
from roadwork_ml.data.synthetic.zones import _distractor_kinds, _distractors, _zone


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
        h0, h1 = {
            "awning": (2.5, 3.3),
            "shop_sign": (3.4, 4.3),
            "barrier": (0.0, 1.05),
            "excavation": (0.0, 0.6),
            "patch": (0.0, 0.0),
        }[k]
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
    "cone": (0.42, 0.72),
    "drum": (0.6, 0.95),
    "barrier": (2.0, 1.05),
    "work_sign": (0.9, 1.75),
    "work_vehicle": (2.4, 3.6),
    "worker": (0.6, 1.8),
    "car": (1.8, 1.45),
    "van": (2.0, 2.2),
    "truck": (2.5, 3.3),
    "bus": (2.55, 3.1),
    "person": (0.55, 1.72),
    "tree": (3.5, 6.5),
    "streetlight": (0.3, 8.0),
    "traffic_light": (0.45, 3.9),
    "sign_pole": (0.7, 2.7),
    "bin": (0.6, 1.05),
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


def roadwork_boxes(spec: SceneSpec) -> list[tuple[float, float, float, float]]:
    """Boxes ``(u0, v0, u1, v1)`` (image fractions, clipped to the frame above the bonnet) of the
    roadwork objects that count as visible (:func:`visible_objects`) and are not lost in fog."""
    bottom = 1.0 - spec.camera.hood
    out = []
    for o, _h, _a, z in _visible(spec, "roadwork"):
        if _fog_clear(spec, z) < 0.45:
            continue
        u0, v0, u1, v1 = _screen_box(spec, o, z)  # type: ignore[misc]  # _visible kept only boxes in view
        out.append((max(u0, 0.0), max(v0, 0.0), min(u1, 1.0), min(v1, bottom)))
    return out


def _max_height(visible: list[tuple[SceneObject, float]]) -> float:
    return max((h for o, h in visible if o.kind not in _FLAT), default=0.0)


# share of an object's bounding box that is orange, for distractors
_ORANGE_SHARE = {
    "car": 0.55,
    "van": 0.65,
    "person": 0.2,
    "bin": 0.75,
    "ball": 0.8,
    "tree": 0.45,
    "traffic_light": 0.01,
    "awning": 0.45,
    "shop_sign": 0.6,
}


def _fog_clear(spec: SceneSpec, z: float) -> float:
    """Fraction of an object's contrast that survives the fog at depth z."""
    return 1.0 if spec.fog_visibility <= 0 else math.exp(-z / spec.fog_visibility)


def _roadwork_ok(spec: SceneSpec) -> bool:
    """A clearly visible roadwork object: tall enough and not lost in fog."""
    return any(
        h >= _MIN_ROADWORK_HEIGHT and _fog_clear(spec, z) >= 0.45
        for o, h, _a, z in _visible(spec, "roadwork")
        if o.kind not in _FLAT
    )


def _distractor_ok(spec: SceneSpec) -> bool:
    """Enough orange, non-roadwork area in view (after fog)."""
    return any(
        a * _ORANGE_SHARE.get(o.kind, 0.3) * _fog_clear(spec, z) >= _MIN_ORANGE_AREA
        for o, _h, a, z in _visible(spec, "distractor")
    )


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
        raise ValueError(
            f"synthetic style of source {source!r}: unknown weathers {sorted(unknown)} in weather_probs; use {WEATHERS}"
        )
    if sum(max(v, 0.0) for v in style.weather_probs.values()) <= 0:
        raise ValueError(
            f"synthetic style of source {source!r}: weather_probs must have a positive entry, got {style.weather_probs}"
        )
    lo, hi = style.frames_per_sequence
    if not 1 <= lo <= hi:
        raise ValueError(
            f"synthetic style of source {source!r}: frames_per_sequence must be [lo, hi] with 1 <= lo <= hi, got {style.frames_per_sequence}"
        )
    qlo, qhi = style.jpeg_quality
    if not 1 <= qlo <= qhi <= 100:
        raise ValueError(
            f"synthetic style of source {source!r}: jpeg_quality must be [lo, hi] within 1..100, got {style.jpeg_quality}"
        )


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
        objects = [
            o
            for o in objects
            if not (o.kind in ("car", "van", "truck", "bus") and o.z < z0 + 45 and min(abs(o.x - x) for x in zx) < 2.0)
        ]
        objects += zone
    dkinds, dprobs = _distractor_kinds(layout)
    if hard:
        for _ in range(int(_pick(rng, (1, 2, 3), (0.5, 0.35, 0.15)))):
            objects += _distractors(
                rng, layout, road, buildings, str(_pick(rng, dkinds, dprobs)), 5.0 + total, 24.0 + total
            )
    elif roadwork and rng.random() < 0.25:
        objects += _distractors(
            rng, layout, road, buildings, str(_pick(rng, dkinds, dprobs)), 6.0 + total, 30.0 + total
        )

    climate = dict(
        rain=_u(rng, 0.4, 1.0) if weather == "rain" else 0.0,
        snow=_u(rng, 0.45, 1.0) if weather == "snow" else 0.0,
        fog_visibility=_u(rng, 14, 55) if weather == "fog" else 0.0,
    )
    base = SceneSpec(
        roadwork=roadwork,
        hard_negative=hard,
        hour=hour,
        weather=weather,
        layout=layout,
        camera=camera,
        road=road,
        palette=palette,
        buildings=tuple(buildings),
        objects=tuple(objects),
        skyline=tuple(skyline),
        sequence_len=n_frames,
        **climate,
    )
    frames: list[SceneSpec] = []
    extra: list[SceneObject] = []
    q_lo, q_hi = style.jpeg_quality
    for k in range(n_frames):
        spec = replace(
            base,
            frame=k,
            advance=step * k + (_u(rng, -0.15, 0.15) if k else 0.0),
            lateral=_u(rng, -0.2, 0.2),
            exposure=_u(rng, 0.9, 1.1),
            blur=_u(rng, 0.0, style.blur_max),
            noise=_u(rng, 0.0, style.noise_std),
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
            return SceneObject(
                "barrier",
                x,
                z,
                "roadwork",
                color=_pick(rng, (_BARRIER_RED, (250, 110, 20))),
                size=_u(rng, 1.5, 2.5),
                variant=0,
            )
        if kind == "worker":
            return SceneObject(
                "worker",
                x,
                z,
                "roadwork",
                color=_pick(rng, _HIVIS),
                color2=_pick(rng, _SKIN),
                variant=int(_int(rng, 0, 3)),
            )
        return SceneObject("work_sign", x, z, "roadwork", color=(255, 135, 0), size=1.2, variant=int(_int(rng, 0, 2)))
    col = _pick(rng, _ORANGE_THINGS)
    if kind in ("car", "van"):
        lanes = [lane for lane in range(road.n_lanes) if lane != road.ego_lane] or [road.ego_lane]
        xl = road.lane_center(int(_pick(rng, lanes)))
        if abs(cam.focal * (xl + 0.5 * road.curvature * zf * zf - spec.camera_x) / zf) > 0.3:
            xl = x  # that lane is out of view at this depth: stay where the camera looks
        onc = xl < road.lane_left(road.n_oncoming)
        return SceneObject(
            kind,
            xl,
            z,
            "distractor",
            f"orange_{kind}",
            color=col,
            variant=int(_int(rng, 0, 3)),
            facing=-1 if onc else 1,
        )
    side = 1 if x >= spec.camera_x else -1
    xs = side * (road.width / 2 + road.shoulder + max(road.sidewalk, 1.0) * 0.5)
    if kind == "person":
        return SceneObject("person", xs, z, "distractor", "orange_jacket_person", color=col, color2=_pick(rng, _SKIN))
    if kind == "bin":
        return SceneObject("bin", xs, z, "distractor", "orange_bin", color=col, size=1.3)
    return SceneObject("tree", xs + side * 1.0, z, "distractor", "autumn_tree", color=_pick(rng, _AUTUMN), size=1.1)
