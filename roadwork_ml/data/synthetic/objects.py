"""Painters of the individual objects (cones, barriers, vehicles, people, trees, signs, ...)."""

from __future__ import annotations

from roadwork_ml.data.synthetic.painter import _Painter
from roadwork_ml.data.synthetic.randomness import _BARRIER_RED, _WHITE, _mix, _shade
from roadwork_ml.data.synthetic.spec import Color, SceneObject


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


def _stripes(
    p: _Painter, x0: float, x1: float, y0: float, y1: float, sw: float, col: Color, base: Color, emit: int = 190
) -> None:
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
            pts = [
                (min(max(xa, x0), x1), y1),
                (min(max(xb, x0), x1), y1),
                (min(max(xb + skew, x0), x1), y0),
                (min(max(xa + skew, x0), x1), y0),
            ]
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
        for h0, h1 in ((0.6, 1.0),):
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
            d.polygon(
                [(x0, v), (x0 + bw - 0.5, v), (x0 + bw - 0.12 * bw, v - 0.8 * s), (x0 + 0.12 * bw, v - 0.8 * s)], fill=c
            )
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
        d.line(
            [(u, cy - 0.14 * s), (u - 0.03 * s, cy + 0.05 * s), (u - 0.12 * s, cy + 0.22 * s)],
            fill=(20, 20, 20),
            width=lw,
        )
        d.line([(u - 0.03 * s, cy + 0.05 * s), (u + 0.1 * s, cy + 0.22 * s)], fill=(20, 20, 20), width=lw)
        d.line([(u - 0.02 * s, cy - 0.08 * s), (u + 0.16 * s, cy + 0.02 * s)], fill=(20, 20, 20), width=lw)
        d.polygon(
            [(u + 0.1 * s, cy + 0.24 * s), (u + 0.25 * s, cy + 0.24 * s), (u + 0.18 * s, cy + 0.12 * s)],
            fill=(20, 20, 20),
        )
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
    w, h = {"car": (1.8, 1.45), "van": (2.0, 2.2), "truck": (2.5, 3.3), "bus": (2.55, 3.1), "work_vehicle": (2.4, 2.6)}[
        k
    ]
    hw = 0.5 * w * s
    col = o.color
    if h * s < 6:
        d.rectangle([u - hw, v - h * s, u + hw, v], fill=col)
        if h * s >= 3:
            d.rectangle([u - hw * 0.7, v - h * s * 0.9, u + hw * 0.7, v - h * s * 0.65], fill=(45, 55, 68))
            d.rectangle([u - hw, v - 0.3 * s, u + hw, v], fill=(25, 25, 28))
        if p.dark:
            for lx in (u - hw * 0.8, u + hw * 0.8):
                p.glow(
                    lx,
                    v - 0.6 * s,
                    max(0.1 * s, 0.6),
                    (255, 250, 225) if o.facing < 0 else (210, 20, 25),
                    1.0 if o.facing < 0 else 0.6,
                )
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
        cab = [
            (u - hw * 0.9, body_top),
            (u + hw * 0.9, body_top),
            (u + hw * (0.72 - 0.05 * o.variant), v - h * s),
            (u - hw * (0.72 - 0.05 * o.variant), v - h * s),
        ]
        d.polygon(cab, fill=col)
        g = [
            (u - hw * 0.8, body_top - 0.03 * s),
            (u + hw * 0.8, body_top - 0.03 * s),
            (u + hw * 0.66, v - (h - 0.06) * s),
            (u - hw * 0.66, v - (h - 0.06) * s),
        ]
        d.polygon(g, fill=glass if not front else (60, 72, 88))
        top = v - h * s
    else:
        top = v - h * s
        d.rectangle([u - hw, top, u + hw, v - 0.2 * s], fill=col)
        if k in ("van", "bus") or front:
            d.rectangle(
                [u - hw * 0.85, top + 0.15 * s, u + hw * 0.85, top + (0.75 if k != "bus" else 0.9) * s], fill=glass
            )
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
            _stripes(
                p,
                u - hw,
                u + hw,
                v - 1.3 * s,
                v - 0.7 * s,
                0.25 * s,
                o.color2,
                (250, 220, 30) if o.color2 != _BARRIER_RED else _WHITE,
            )
        if col == (232, 232, 226):
            d.rectangle([u - hw, top + 0.6 * s, u + hw, top + 0.8 * s], fill=(245, 110, 20))
        ab = [u - 0.85 * s, top - 1.0 * s, u + 0.85 * s, top - 0.05 * s]
        d.rectangle([u - 0.05 * s, top - 0.1 * s, u + 0.05 * s, top], fill=(40, 40, 40))
        d.rectangle(ab, fill=(22, 22, 22))
        dr = max(0.055 * s, 0.5)
        cy = (ab[1] + ab[3]) / 2
        direction = 1 if o.variant == 0 else -1
        pts = (
            [(-0.6 + 0.2 * i, 0.0) for i in range(7)]
            + [(0.4 - 0.15 * j * 1, 0.15 * j) for j in (1, 2)]
            + [(0.4 - 0.15 * j, -0.15 * j) for j in (1, 2)]
        )
        for dx, dy in pts:
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
    d.polygon(
        [(u - 0.15 * s, v - 0.85 * s), (u - 0.02 * s, v - 0.85 * s), (u - spread + lw, v), (u - spread - lw * 0.6, v)],
        fill=legs,
    )
    d.polygon(
        [(u + 0.02 * s, v - 0.85 * s), (u + 0.15 * s, v - 0.85 * s), (u + spread + lw * 0.6, v), (u + spread - lw, v)],
        fill=legs,
    )
    torso = [u - 0.2 * s, v - 1.45 * s, u + 0.2 * s, v - 0.8 * s]
    d.rectangle(torso, fill=o.color)
    arm_col = o.color if not worker else (70, 80, 110)
    aw = max(1, int(0.09 * s))
    d.line([(u - 0.2 * s, v - 1.4 * s), (u - 0.3 * s, v - 0.95 * s)], fill=arm_col, width=aw)
    if worker and o.variant == 2:  # holding a stop/slow paddle
        d.line([(u + 0.2 * s, v - 1.4 * s), (u + 0.38 * s, v - 1.2 * s)], fill=arm_col, width=aw)
        d.line(
            [(u + 0.38 * s, v - 1.05 * s), (u + 0.38 * s, v - 1.9 * s)], fill=(60, 60, 60), width=max(1, int(0.03 * s))
        )
        d.regular_polygon((u + 0.38 * s, v - 1.95 * s, max(0.17 * s, 1.0)), 8, fill=(200, 25, 30))
    elif worker and o.variant == 1:  # shovel
        d.line([(u + 0.2 * s, v - 1.4 * s), (u + 0.35 * s, v - 1.0 * s)], fill=arm_col, width=aw)
        d.line(
            [(u + 0.35 * s, v - 1.2 * s), (u + 0.45 * s, v - 0.05 * s)], fill=(110, 80, 50), width=max(1, int(0.04 * s))
        )
        d.polygon(
            [(u + 0.38 * s, v - 0.2 * s), (u + 0.55 * s, v - 0.2 * s), (u + 0.5 * s, v), (u + 0.4 * s, v)],
            fill=(90, 90, 95),
        )
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
        d.polygon(
            [(u, cy - r * 0.6), (u + r * 0.65, cy + r * 0.55), (u - r * 0.65, cy + r * 0.55)], fill=(245, 245, 245)
        )
    p.emit_rect([u - r, cy - r, u + r, cy + r], 120)
    p.fog_box([u - r, cy - r, u + r, v], z)


def _draw_bin(p: _Painter, o: SceneObject, z: float) -> None:
    s = p.f / z * o.size
    u, v = p.P(o.x, z)
    d = p.d
    if s * 1.05 < 2:
        return
    p.ground_shadow(u, v, 0.35 * s, s)
    d.polygon(
        [(u - 0.3 * s, v - 0.95 * s), (u + 0.3 * s, v - 0.95 * s), (u + 0.26 * s, v), (u - 0.26 * s, v)], fill=o.color
    )
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
        p.fog_poly(
            [p.P(x, za, 3.3), p.P(x, zb, 3.3), p.P(x + inward * 1.3, zb, 2.5), p.P(x + inward * 1.3, za, 2.5)],
            0.5 * (za + zb),
        )
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
    d.polygon(
        [
            p.P(o.x - hw * 0.7, za + 0.4),
            p.P(o.x + hw * 0.7, za + 0.4),
            p.P(o.x + hw * 0.7, zb - 0.4),
            p.P(o.x - hw * 0.7, zb - 0.4),
        ],
        fill=(55, 40, 28),
    )
    # dirt mound at the far end
    a, b = p.P(o.x - hw, zb), p.P(o.x + hw, zb)
    top = p.P(o.x, zb, 0.7)
    d.polygon([a, b, top], fill=(125, 95, 60))


_DRAW = {
    "cone": _draw_cone,
    "drum": _draw_drum,
    "barrier": _draw_barrier,
    "work_sign": _draw_work_sign,
    "work_vehicle": _draw_vehicle,
    "car": _draw_vehicle,
    "van": _draw_vehicle,
    "truck": _draw_vehicle,
    "bus": _draw_vehicle,
    "worker": _draw_figure,
    "person": _draw_figure,
    "tree": _draw_tree,
    "streetlight": _draw_streetlight,
    "traffic_light": _draw_traffic_light,
    "sign_pole": _draw_sign_pole,
    "bin": _draw_bin,
    "ball": _draw_ball,
    "awning": _draw_facade_item,
    "shop_sign": _draw_facade_item,
    "excavation": _draw_flat,
    "patch": _draw_flat,
}
_FLAT = ("patch", "excavation")
