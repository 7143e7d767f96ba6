"""Roadwork zones (cones, barriers, drums, signs, vehicles, workers, excavations) and hard-negative distractors."""

from __future__ import annotations

from roadwork_ml.data.synthetic.randomness import (
    _AUTUMN,
    _BARRIER_RED,
    _CONE_ORANGE,
    _HIVIS,
    _ORANGE_THINGS,
    _SKIN,
    _int,
    _jit,
    _pick,
    _Rand,
    _u,
)
from roadwork_ml.data.synthetic.spec import Building, RoadSpec, SceneObject


def _zone(rng: _Rand, layout: str, road: RoadSpec, density: float, z0: float, length: float) -> list[SceneObject]:
    """A roadwork zone starting at depth ``z0`` (frame 0) and ``length`` metres long."""
    objs: list[SceneObject] = []
    ego = road.ego_lane
    same_dir = list(range(road.n_oncoming, road.n_lanes))
    neighbours = [lane for lane in (ego - 1, ego + 1) if lane in same_dir]
    pattern = _pick(rng, ("lane_closure", "shoulder", "road_closed", "work_area"), (0.42, 0.22, 0.14, 0.22))
    if pattern == "lane_closure" and not neighbours:
        pattern = "shoulder"
    stripe_col = _pick(rng, (_BARRIER_RED, (250, 110, 20)))
    cone_col = _pick(rng, _CONE_ORANGE)

    def n_of(lo: int, hi: int) -> int:
        return max(1, int(round(_int(rng, lo, hi + 1) * density)))

    def device(x: float, z: float, kind: str) -> None:
        if kind == "cone":
            objs.append(
                SceneObject(
                    "cone",
                    x,
                    z,
                    "roadwork",
                    color=_jit(rng, cone_col, 8),
                    size=_u(rng, 0.95, 1.3),
                    variant=int(_int(rng, 0, 2)),
                )
            )
        elif kind == "drum":
            objs.append(
                SceneObject(
                    "drum",
                    x,
                    z,
                    "roadwork",
                    color=_jit(rng, (245, 100, 20), 10),
                    size=_u(rng, 0.95, 1.15),
                    variant=int(_int(rng, 0, 2)),
                )
            )
        else:  # barrier board parallel to the road
            objs.append(SceneObject("barrier", x, z, "roadwork", color=stripe_col, size=_u(rng, 1.8, 3.0), variant=1))

    def worker(x: float, z: float) -> None:
        objs.append(
            SceneObject(
                "worker",
                x,
                z,
                "roadwork",
                color=_pick(rng, _HIVIS),
                color2=_pick(rng, _SKIN),
                size=_u(rng, 0.95, 1.08),
                variant=int(_int(rng, 0, 3)),
                speed=_u(rng, -0.15, 0.15),
            )
        )

    def truck(x: float, z: float) -> None:
        objs.append(
            SceneObject(
                "work_vehicle",
                x,
                z,
                "roadwork",
                color=_pick(rng, ((240, 190, 20), (240, 110, 20), (232, 232, 226))),
                color2=stripe_col,
                variant=int(_int(rng, 0, 2)),
                facing=1,
            )
        )

    def sign(x: float, z: float, variant: int | None = None) -> None:
        objs.append(
            SceneObject(
                "work_sign",
                x,
                z,
                "roadwork",
                color=_jit(rng, (255, 135, 0), 8),
                size=_u(rng, 1.0, 1.35),
                variant=int(_int(rng, 0, 2)) if variant is None else variant,
            )
        )

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
            device(
                x_far + (x_line + side * 0.3 - x_far) * t, z0 + taper * t, "cone" if dev_kind == "panel" else dev_kind
            )
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
            objs.append(
                SceneObject(
                    "barrier",
                    xc,
                    z0 + taper + _u(rng, 0.5, 3),
                    "roadwork",
                    color=stripe_col,
                    size=road.lane_width * 0.75,
                    variant=int(_pick(rng, (0, 2))),
                )
            )
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
            objs.append(
                SceneObject(
                    "barrier",
                    road.edge_right + 0.3,
                    z0 + _u(rng, 3, 10),
                    "roadwork",
                    color=stripe_col,
                    size=_u(rng, 2, 3.5),
                    variant=1,
                )
            )
    elif pattern == "road_closed":
        zb = z0 + _u(rng, 3, 9)
        x = road.lane_left(road.n_oncoming) + 0.3
        while x < road.width / 2 - 0.5:
            w = min(_u(rng, 1.6, 2.8), road.width / 2 - x)
            objs.append(
                SceneObject(
                    "barrier",
                    x + w / 2,
                    zb + _u(rng, -0.4, 0.4),
                    "roadwork",
                    color=stripe_col,
                    size=w * 0.92,
                    variant=int(_pick(rng, (0, 0, 2))),
                )
            )
            x += w + _u(rng, 0.1, 0.6)
        for _ in range(n_of(2, 5)):
            lane = int(_pick(rng, same_dir))
            device(
                road.lane_center(lane) + _u(rng, -1.2, 1.2),
                z0 + _u(rng, -1.5, 2.5),
                "cone" if dev_kind == "panel" else dev_kind,
            )
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
        objs.append(
            SceneObject("barrier", xc, za, "roadwork", color=stripe_col, size=wa, variant=int(_pick(rng, (0, 2))))
        )
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
        return (
            (
                "orange_car",
                "orange_van",
                "orange_awning",
                "orange_shop_sign",
                "amber_traffic_light",
                "orange_jacket_person",
                "orange_bin",
                "orange_ball",
                "autumn_tree",
            ),
            (0.16, 0.1, 0.14, 0.1, 0.08, 0.14, 0.1, 0.05, 0.13),
        )
    if layout == "suburban":
        return (
            (
                "orange_car",
                "orange_van",
                "amber_traffic_light",
                "orange_jacket_person",
                "orange_bin",
                "orange_ball",
                "autumn_tree",
            ),
            (0.2, 0.12, 0.06, 0.16, 0.14, 0.07, 0.25),
        )
    return (("orange_car", "orange_van", "autumn_tree"), (0.45, 0.3, 0.25))


def _distractors(
    rng: _Rand, layout: str, road: RoadSpec, buildings: list[Building], kind: str, z_lo: float, z_hi: float
) -> list[SceneObject]:
    W2 = road.width / 2
    walk = W2 + road.shoulder + max(road.sidewalk, 1.0) * 0.55
    out: list[SceneObject] = []
    n = int(_int(rng, 1, 3))
    for _ in range(n):
        z = _u(rng, z_lo, z_hi)
        side = int(_pick(rng, (-1, 1)))
        if kind in ("orange_car", "orange_van"):
            lanes = [lane for lane in range(road.n_lanes) if lane != road.ego_lane] or [road.ego_lane]
            lane = int(_pick(rng, lanes))
            parked = road.shoulder > 1.8 and rng.random() < 0.4
            x = side * (W2 + road.shoulder - 1.0) if parked else road.lane_center(lane)
            onc = (not parked) and lane < road.n_oncoming
            out.append(
                SceneObject(
                    "van" if kind == "orange_van" else "car",
                    x,
                    z,
                    "distractor",
                    kind,
                    color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8),
                    facing=-1 if onc else int(_pick(rng, (1, -1))) if parked else 1,
                    variant=int(_int(rng, 0, 3)),
                    speed=(-1.2 if onc else 0.0),
                )
            )
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
            out.append(
                SceneObject(
                    "awning" if kind == "orange_awning" else "shop_sign",
                    b.side * b.x,
                    zz,
                    "distractor",
                    kind,
                    color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8),
                    size=length,
                    variant=int(_int(rng, 0, 2)),
                )
            )
        elif kind == "amber_traffic_light":
            out.append(
                SceneObject(
                    "traffic_light",
                    side * (W2 + road.shoulder + 0.3),
                    z,
                    "distractor",
                    kind,
                    color=_pick(rng, ((35, 35, 38), (230, 170, 20))),
                    variant=1,
                )
            )
        elif kind == "orange_jacket_person":
            out.append(
                SceneObject(
                    "person",
                    side * walk,
                    z,
                    "distractor",
                    kind,
                    color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8),
                    color2=_pick(rng, _SKIN),
                    variant=int(_int(rng, 0, 2)),
                    size=_u(rng, 0.95, 1.08),
                )
            )
        elif kind == "orange_bin":
            for j in range(int(_int(rng, 1, 4))):
                out.append(
                    SceneObject(
                        "bin",
                        side * (walk + 0.3),
                        z + 0.8 * j,
                        "distractor",
                        kind,
                        color=_jit(rng, _pick(rng, _ORANGE_THINGS), 8),
                        size=_u(rng, 0.9, 1.2),
                    )
                )
        elif kind == "orange_ball":
            out.append(
                SceneObject(
                    "ball",
                    side * walk,
                    z * 0.6,
                    "distractor",
                    kind,
                    color=_jit(rng, (240, 120, 30), 10),
                    size=_u(rng, 1.0, 2.5),
                )
            )
        elif kind == "autumn_tree":
            out.append(
                SceneObject(
                    "tree",
                    side * (W2 + road.shoulder + max(road.sidewalk * 0.65, 1.5)),
                    z,
                    "distractor",
                    kind,
                    color=_pick(rng, _AUTUMN),
                    size=_u(rng, 0.9, 1.3),
                    variant=int(_int(rng, 0, 3)),
                )
            )
    return out
