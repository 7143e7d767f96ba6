"""The painter: world → screen projection on PIL canvases, plus sky, ground and buildings."""

from __future__ import annotations

import math
import zlib

import numpy as np
from PIL import Image, ImageDraw

from roadwork_ml.data.synthetic.randomness import _mix, _shade
from roadwork_ml.data.synthetic.spec import Color, SceneSpec


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
            self.d.ellipse(
                [u - half_w, v - 0.05 * s - 0.5, u + half_w * 1.25, v + 0.08 * s + 0.5], fill=self.shadow_col
            )

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
        for uc, w, h in spec.skyline:
            x0, x1 = (uc - w / 2) * S, (uc + w / 2) * S
            d.rectangle([x0, yh - h * S, x1, yh + 1], fill=col)
    else:
        cx = p.P(0.0, 400.0)[0] - p.cx
        for uc, w, h in spec.skyline:
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
    dash_x = [
        road.lane_left(i) for i in range(1, road.n_lanes) if i != road.n_oncoming or road.centre_style == "white_dashed"
    ]
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
                p.fog_poly(
                    [
                        p.P(x, zz, 0),
                        p.P(x, zz, b.height + (2.5 if b.kind == "house" else 0)),
                        p.P(x, zn, b.height + (2.5 if b.kind == "house" else 0)),
                        p.P(x, zn, 0),
                    ],
                    0.5 * (zz + zn),
                )
                zz = zn
        if b.kind == "house":
            roof = b.roof if not snowy else (235, 236, 240)
            d.polygon(
                [
                    p.P(x, z0, b.height),
                    p.P(x, z1, b.height),
                    p.P(x + b.side * 3.0, z1, b.height + 2.5),
                    p.P(x + b.side * 3.0, z0, b.height + 2.5),
                ],
                fill=roof,
            )
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
            d.polygon(
                [p.P(x, zc, ground_floor), p.P(x, zc, top), p.P(x, zc + 1.2, top), p.P(x, zc + 1.2, ground_floor)],
                fill=wcol,
            )
        if cols and b.height > ground_floor + 1 and px_per_m * 0.9 >= 1.0:
            h = ground_floor + b.floor_h - 0.9
            while h < top:
                pts = [p.P(x, z0, h), p.P(x, z0, h + 0.9), p.P(x, z1, h + 0.9), p.P(x, z1, h)]
                d.polygon(pts, fill=b.color)
                h += b.floor_h
        if b.kind == "block" and cols and px_per_m > 2:  # shop windows / doors on the ground floor
            for zc in cols[::2]:
                d.polygon(
                    [p.P(x, zc, 0.3), p.P(x, zc, 2.6), p.P(x, zc + 1.8, 2.6), p.P(x, zc + 1.8, 0.3)],
                    fill=_shade(wcol, 0.8),
                )
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
