"""Scene layout: camera, palette, road, buildings and scenery, in world units (zones and distractors: :mod:`.zones`)."""

from __future__ import annotations

from roadwork_ml.config import SyntheticStyle
from roadwork_ml.data.synthetic.randomness import (
    _CAR_COLORS,
    _CLOTHES,
    _OVERCAST,
    _SKIN,
    _SKY,
    _Flavour,
    _flavour,
    _hsv,
    _int,
    _jit,
    _mix,
    _non_orange,
    _pick,
    _Rand,
    _rng,
    _shade,
    _u,
)
from roadwork_ml.data.synthetic.spec import _TAG_CAMERA, Building, CameraSpec, Color, Palette, RoadSpec, SceneObject


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
        top = (
            _hsv(_u(rng, 0.55, 0.68), _u(rng, 0.2, 0.7), _u(rng, 0.4, 0.9))
            if tod == "day" and weather == "clear"
            else top
        )
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
    return Palette(
        top, hor, road, sidewalk, _shade(sidewalk, 1.1), _non_orange(rng, ground), marking, skyline, rng.random() < 0.5
    )


def _building_color(rng: _Rand, fl: _Flavour) -> Color:
    if rng.random() < fl.diversity:
        c = _hsv(rng.random(), _u(rng, 0.08, 0.45), _u(rng, 0.35, 0.9))
    else:
        c = _pick(
            rng,
            (
                (190, 180, 160),
                (160, 90, 75),
                (140, 140, 145),
                (215, 210, 200),
                (120, 100, 85),
                (175, 160, 130),
                (95, 95, 105),
            ),
        )
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
        n_lanes=n,
        lane_width=lw,
        ego_lane=ego,
        n_oncoming=oncoming,
        curvature=curv,
        shoulder=shoulder,
        sidewalk=sidewalk,
        verge=verge,
        dash_period=_u(rng, 8, 13),
        dash_phase=_u(rng, 0, 10),
        centre_style=centre,
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
        base_x = road.width / 2 + road.shoulder + road.sidewalk + road.verge
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
                    side=side,
                    x=x,
                    z0=z,
                    z1=z + w,
                    height=h,
                    color=col,
                    window=_pick(rng, ((55, 65, 80), (80, 95, 115), (40, 45, 55), (110, 125, 140))),
                    kind=kind,
                    roof=_pick(rng, ((120, 50, 40), (70, 70, 75), (95, 75, 60), (50, 55, 65))),
                    floor_h=_u(rng, 2.9, 3.6),
                    win_spacing=_u(rng, 2.2, 4.0),
                    lit=_u(rng, 0.1, 0.6),
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
            SceneObject(
                kind,
                road.lane_center(lane) + _u(rng, -0.3, 0.3),
                z,
                color=_jit(rng, col, 10),
                speed=_u(rng, -2.5, -1.0) if oncoming else _u(rng, -0.3, 0.4),
                facing=-1 if oncoming else 1,
                variant=int(_int(rng, 0, 3)),
            )
        )
    # parked cars
    if layout != "highway" and road.shoulder > 1.8 and rng.random() < 0.7:
        for side in (-1, 1):
            if rng.random() < 0.4:
                continue
            z = _u(rng, 4, 15)
            while z < 70:
                objs.append(
                    SceneObject(
                        "car",
                        side * (W2 + road.shoulder - 1.0),
                        z,
                        color=_jit(rng, _pick(rng, _CAR_COLORS), 12),
                        facing=int(_pick(rng, (1, -1))),
                        variant=int(_int(rng, 0, 3)),
                    )
                )
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
                objs.append(
                    SceneObject(
                        "streetlight",
                        side * side_x,
                        z,
                        color=_pick(rng, ((110, 110, 115), (60, 70, 60), (150, 150, 150))),
                        size=_u(rng, 0.85, 1.15),
                    )
                )
                z += period
        tree_p = {"urban": 0.45, "suburban": 0.85, "highway": 0.7}[layout]
        if rng.random() < tree_p:
            tx = side * (
                W2
                + road.shoulder
                + (road.sidewalk * 0.65 if road.sidewalk else 0)
                + road.verge * _u(rng, 0.3, 1.0)
                + (_u(rng, 2, 8) if layout == "highway" else 0.5)
            )
            z = _u(rng, 2, 14)
            while z < 120:
                green = _hsv(_u(rng, 0.22, 0.36), _u(rng, 0.45, 0.8), _u(rng, 0.3, 0.6))
                objs.append(
                    SceneObject(
                        "tree",
                        tx + _u(rng, -0.5, 0.5),
                        z,
                        color=green,
                        size=_u(rng, 0.7, 1.3),
                        variant=int(_int(rng, 0, 3)),
                    )
                )
                z += _u(rng, 7, 18)
    for _ in range(int(_int(rng, 0, 4))):
        side = int(_pick(rng, (-1, 1)))
        objs.append(
            SceneObject("sign_pole", side * (W2 + road.shoulder + 0.4), _u(rng, 6, 60), variant=int(_int(rng, 0, 5)))
        )
    if road.crosswalk_z > 0:
        for side in (-1, 1):
            objs.append(
                SceneObject(
                    "traffic_light",
                    side * (W2 + road.shoulder + 0.3),
                    road.crosswalk_z - 1.0,
                    variant=int(_pick(rng, (0, 2))),
                    color=(35, 35, 38),
                )
            )
    if layout != "highway" and road.sidewalk > 0:
        for _ in range(int(_int(rng, 0, 6 if layout == "urban" else 3))):
            side = int(_pick(rng, (-1, 1)))
            x = side * (W2 + road.shoulder + _u(rng, 0.5, road.sidewalk - 0.3))
            objs.append(
                SceneObject(
                    "person",
                    x,
                    _u(rng, 4, 50),
                    color=_pick(rng, _CLOTHES),
                    color2=_pick(rng, _SKIN),
                    variant=int(_int(rng, 0, 2)),
                    speed=_u(rng, -0.2, 0.2),
                )
            )
        for _ in range(int(_int(rng, 0, 3))):
            side = int(_pick(rng, (-1, 1)))
            objs.append(
                SceneObject(
                    "bin",
                    side * (W2 + road.shoulder + road.sidewalk * 0.8),
                    _u(rng, 5, 40),
                    color=_pick(rng, ((40, 90, 50), (60, 60, 65), (30, 60, 120), (25, 25, 28))),
                )
            )
    # flat stuff: patches and manholes
    for _ in range(int(_int(rng, 0, 3))):
        lane = int(_int(rng, 0, road.n_lanes))
        objs.append(
            SceneObject(
                "patch",
                road.lane_center(lane) + _u(rng, -1, 1),
                _u(rng, 5, 50),
                size=_u(rng, 1.0, 3.0),
                color=(int(_u(rng, 45, 75)),) * 3,
            )
        )  # type: ignore[arg-type]
    return objs
