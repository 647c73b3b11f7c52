"""Drawing one face: PIL ImageDraw on a supersampled canvas, numpy shading, then rotated and scaled.

The face is drawn at ``CANVAS`` px, where the geometry constants below live, and scaled into the scene by
``render_face(size=...)``; the box and keypoints it returns are in the scaled image's pixels."""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .identity import HAIR_COLOURS, MOLE_SPOTS, sample_appearance

CANVAS = 256  # side of the supersampled face canvas; faces are drawn here, then scaled into the scene
FACE_H = 104.0  # face oval height on the canvas (chin to hairline)
CENTRE = (128.0, 124.0)  # face oval centre on the canvas
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def _ellipse_pts(cx, cy, rx, ry, n=48, t0=0.0, t1=2 * math.pi, tilt=0.0):
    t = np.linspace(t0, t1, n)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(tilt), math.sin(tilt)
    return [(cx + c * a - s * b, cy + s * a + c * b) for a, b in zip(x, y)]


class _Geometry:
    """Where things go on the canvas for one face, with yaw folded in (features slide towards the turn)."""

    def __init__(self, attrs: dict, look: dict):
        sh = attrs["shared"]
        self.cx, self.cy = CENTRE
        self.h = FACE_H
        self.yaw = look["yaw"]
        self.w = FACE_H * sh["face_width"] * (1 - 0.12 * abs(self.yaw))
        self.jaw = sh["jaw_taper"]

    def x(self, u: float, depth: float = 1.0) -> float:
        """Canvas x of a point at normalised face coordinate ``u`` (-0.5..0.5 of the face width)."""
        squeeze = 1 - 0.35 * abs(self.yaw) * (1 if u * self.yaw < 0 else 0.3)
        return self.cx + u * self.w * squeeze + self.yaw * depth * 0.22 * self.w

    def y(self, v: float) -> float:
        return self.cy + v * self.h

    def outline(self, n: int = 72):
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        s = np.sin(t)
        taper = 1 - self.jaw * np.clip(s, 0, None) ** 2
        x = self.cx + 0.5 * self.w * np.cos(t) * taper + self.yaw * 0.06 * self.w
        y = self.cy + 0.5 * self.h * s * (1 + 0.04 * np.clip(s, 0, None) ** 6)
        return list(zip(x, y))


def _draw_hair_back(d, g, attrs, look, colour):
    style = attrs["shared"]["hair_style"]
    top = g.y(-0.64 + look["hair_jitter"])
    if style in ("long", "bob", "bangs"):
        bottom = g.y(0.95 if style == "long" else 0.42)
        d.rounded_rectangle([g.cx - 0.72 * g.w, g.y(-0.3), g.cx + 0.72 * g.w, bottom], radius=0.3 * g.w, fill=colour)
    d.ellipse([g.cx - 0.62 * g.w, top, g.cx + 0.62 * g.w, g.y(0.1)], fill=colour)


def _draw_body(d, g, skin, clothes):
    neck = tuple(int(c * 0.86) for c in skin)
    d.rectangle([g.cx - 0.22 * g.w, g.y(0.25), g.cx + 0.22 * g.w, g.y(0.75)], fill=neck)
    d.ellipse([g.cx - 1.25 * g.w, g.y(0.62), g.cx + 1.25 * g.w, g.y(1.8)], fill=tuple(clothes))


def _draw_face_base(d, g, skin):
    for side in (-1, 1):
        if side * g.yaw > 0.3:  # the far ear turns out of view
            continue
        ex = g.x(0.5 * side, depth=-0.6)
        d.ellipse([ex - 0.07 * g.w, g.y(-0.08), ex + 0.07 * g.w, g.y(0.1)], fill=tuple(int(c * 0.93) for c in skin))
    d.polygon(g.outline(), fill=tuple(skin))


def _eye(d, g, attrs, look, side: int):
    ind, sh = attrs["individual"], attrs["shared"]
    ew = ind["eye_size"] * g.w * (1 - 0.3 * max(0.0, side * g.yaw))
    eh = ew * ind["eye_aspect"] * (0.12 if look["blink"] else look["eye_open"])
    ex, ey = g.x(0.21 * side), g.y(-0.06)
    tilt = -side * ind["eye_tilt"]
    lash = (30, 22, 22)
    if look["blink"]:
        d.line(_ellipse_pts(ex, ey, ew / 2, eh + 1.5, 16, 0, math.pi, tilt), fill=lash, width=3)
        return ex, ey
    d.polygon(_ellipse_pts(ex, ey, ew / 2, eh / 2, 32, tilt=tilt), fill=(238, 236, 232))
    ir = 0.5 * min(ew * 0.5, eh * 1.15)
    ix = ex + look["gaze"] * ew * 0.3
    d.ellipse([ix - ir, ey - ir, ix + ir, ey + ir], fill=tuple(sh["iris_colour"]))
    d.ellipse([ix - ir * 0.45, ey - ir * 0.45, ix + ir * 0.45, ey + ir * 0.45], fill=(12, 10, 10))
    d.ellipse([ix - ir * 0.5, ey - ir * 0.6, ix - ir * 0.15, ey - ir * 0.25], fill=(250, 250, 250))
    # skin lids hide the iris outside the eye opening; a dark lash line defines the upper lid
    skin = tuple(sh["skin"])
    upper = _ellipse_pts(ex, ey, ew / 2, eh / 2, 20, math.pi, 2 * math.pi, tilt)
    d.polygon(upper + _ellipse_pts(ex, ey, ew / 2 + 1, eh * 1.2, 20, 2 * math.pi, math.pi, tilt), fill=skin)
    lower = _ellipse_pts(ex, ey, ew / 2, eh / 2, 20, 0, math.pi, tilt)
    d.polygon(lower + _ellipse_pts(ex, ey, ew / 2 + 1, eh * 1.1, 20, math.pi, 0, tilt), fill=skin)
    d.line(upper, fill=lash, width=max(2, int(ew * 0.09)))
    return ex, ey


def _brow(d, g, attrs, look, side: int, colour):
    ind = attrs["individual"]
    bx, by = g.x(0.22 * side), g.y(-0.16 - look["brow_raise"])
    half = 0.13 * g.w
    thick = ind["brow_thickness"] * g.h
    arch = ind["brow_arch"] * g.h
    xs = np.linspace(-1, 1, 12)
    top = [(bx + side * x * half, by - arch * (1 - x * x) - 0.01 * g.h * x - thick * (0.6 + 0.4 * (x < 0.5)))
           for x in xs]
    bottom = [(bx + side * x * half, by - arch * (1 - x * x) - 0.01 * g.h * x) for x in xs[::-1]]
    d.polygon(top + bottom, fill=colour)


def _nose(d, shade, g, look):
    nx, ny = g.x(0.0, depth=1.5), g.y(0.14)
    nw = 0.1 * g.w
    for side in (-1, 1):
        d.ellipse([nx + side * nw * 0.55 - nw * 0.22, ny - nw * 0.12, nx + side * nw * 0.55 + nw * 0.22,
                   ny + nw * 0.14], fill=(110, 66, 56))
    # the side of the nose away from the light is darker; drawn on the blurred shading layer
    side = -1 if look["light"][0] > 0 else 1
    shade.polygon([(g.x(0.03 * side, 1.0), g.y(-0.04)), (nx + side * nw * 0.7, ny - 0.02 * g.h),
                   (nx + side * nw * 0.9, ny + 0.02 * g.h), (g.x(0.0, 1.0), g.y(0.0))], fill=70)
    shade.ellipse([nx - nw * 0.8, ny + 0.015 * g.h, nx + nw * 0.8, ny + 0.05 * g.h], fill=90)
    return nx, ny


def _mouth(d, shade, g, attrs, look):
    ind, sh = attrs["individual"], attrs["shared"]
    mx, my = g.x(0.0, depth=1.2), g.y(0.3)
    hw = 0.5 * ind["mouth_width"] * g.w * (1 - 0.2 * abs(g.yaw))
    expr = look["expression"]
    hw *= {"smile": 1.12, "open": 1.0, "pout": 0.82, "neutral": 1.0}[expr]
    lift = {"smile": 0.035, "open": 0.01, "pout": -0.005, "neutral": 0.004}[expr] * g.h
    gap = {"open": 0.06, "smile": 0.012}.get(expr, 0.0) * g.h
    lip = tuple(sh["lip_colour"])
    xs = np.linspace(-1, 1, 16)
    corner = [my - lift * x * x for x in xs]
    upper = [(mx + x * hw, c - 0.028 * g.h * (1 - x * x) * (0.8 + 0.4 * abs(x))) for x, c in zip(xs, corner)]
    mid_top = [(mx + x * hw, c - gap * 0.2 * (1 - x * x)) for x, c in zip(xs, corner)]
    mid_bot = [(mx + x * hw, c + gap * (1 - x * x)) for x, c in zip(xs, corner)]
    lower = [(mx + x * hw, c + gap * (1 - x * x) + 0.035 * g.h * (1 - x * x)) for x, c in zip(xs, corner)]
    if gap > 0:
        d.polygon(mid_top + mid_bot[::-1], fill=(60, 20, 24))
        if expr == "smile" or expr == "open":
            d.polygon(mid_top + [(p[0], p[1] + gap * 0.35) for p in mid_top[::-1]], fill=(236, 232, 224))
    d.polygon(upper + mid_top[::-1], fill=lip)
    d.polygon(mid_bot + lower[::-1], fill=tuple(int(c * 0.92) for c in lip))
    d.line(mid_top, fill=tuple(int(c * 0.55) for c in lip), width=2)
    shade.ellipse([mx - hw * 0.6, my + 0.06 * g.h, mx + hw * 0.6, my + 0.1 * g.h], fill=110)
    return (mx - hw, corner[0]), (mx + hw, corner[-1])


def _hair_front(d, g, attrs, look, colour):
    style = attrs["shared"]["hair_style"]
    j = look["hair_jitter"] * g.h
    top = g.y(-0.56) + j
    line = g.y(-0.36 if style != "bangs" else -0.2) + j
    xs = np.linspace(-1, 1, 24)
    cap = [(g.cx + x * 0.58 * g.w, top - 0.08 * g.h * (1 - x * x) ** 0.5) for x in xs]
    if style == "parted":
        edge = [(g.cx + x * 0.52 * g.w, line + 0.08 * g.h * abs(x - 0.3) ** 1.5 - 0.04 * g.h) for x in xs[::-1]]
    elif style == "short":
        edge = [(g.cx + x * 0.52 * g.w, line - 0.02 * g.h + 0.1 * g.h * x ** 4) for x in xs[::-1]]
    else:
        edge = [(g.cx + x * 0.55 * g.w, line + 0.16 * g.h * x ** 6 + 0.01 * g.h * math.sin(9 * x)) for x in xs[::-1]]
    d.polygon(cap + edge, fill=colour)
    if style in ("long", "bob", "bangs"):
        for side in (-1, 1):
            d.polygon([(g.cx + side * 0.42 * g.w, g.y(-0.32)), (g.cx + side * 0.6 * g.w, g.y(-0.3)),
                       (g.cx + side * 0.6 * g.w, g.y(0.3 if style != "long" else 0.5)),
                       (g.cx + side * 0.5 * g.w, g.y(0.1))], fill=colour)


def _glasses(d, g, attrs, eyes):
    ind = attrs["individual"]
    r = 0.105 * g.w
    frame = (24, 24, 28)
    for ex, ey in eyes:
        box = [ex - r, ey - r * 0.8, ex + r, ey + r * 0.8]
        if ind["glasses_style"] == "round":
            d.ellipse(box, outline=frame, width=3)
        else:
            d.rounded_rectangle(box, radius=r * 0.3, outline=frame, width=3)
    (lx, ly), (rx, ry) = sorted(eyes)
    d.line([(lx + r, ly - r * 0.2), (rx - r, ry - r * 0.2)], fill=frame, width=3)


def _occluder(d, g, skin, look):
    kind, colour = look["occluder"], tuple(look["occluder_colour"])
    if kind == "mask":
        d.polygon([(g.x(-0.5), g.y(0.08)), (g.x(0.0, 1.3), g.y(0.02)), (g.x(0.5), g.y(0.08)),
                   (g.x(0.44), g.y(0.36)), (g.x(0.0, 1.0), g.y(0.52)), (g.x(-0.44), g.y(0.36))], fill=colour)
        for side in (-1, 1):
            d.line([(g.x(0.5 * side), g.y(0.1)), (g.x(0.55 * side, -0.6), g.y(0.0))], fill=(230, 230, 230), width=2)
    elif kind == "hat":
        d.chord([g.cx - 0.66 * g.w, g.y(-0.9), g.cx + 0.66 * g.w, g.y(-0.12)], 180, 360, fill=colour)
        d.rectangle([g.cx - 0.78 * g.w, g.y(-0.3), g.cx + 0.78 * g.w, g.y(-0.24)], fill=colour)
    elif kind == "hand":
        side = 1 if look["yaw"] < 0 else -1
        hx, hy = g.x(0.42 * side), g.y(0.42)
        hand = tuple(int(c * 0.97) for c in skin)
        d.ellipse([hx - 0.2 * g.w, hy - 0.1 * g.h, hx + 0.2 * g.w, hy + 0.16 * g.h], fill=hand)
        for k in range(4):
            fx = hx - 0.15 * g.w + k * 0.09 * g.w
            d.rounded_rectangle([fx - 0.04 * g.w, hy - 0.3 * g.h, fx + 0.04 * g.w, hy], radius=0.04 * g.w, fill=hand)


_GRID = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)


def _shading(g, light) -> np.ndarray:
    """Lambertian shading of an ellipsoidal head lit from ``light`` (x, y, z), as a canvas-sized map."""
    yy, xx = _GRID
    nx = (xx - g.cx) / (0.62 * g.w)
    ny = (yy - g.cy) / (0.62 * g.h)
    nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, None))
    lx, ly, lz = light
    norm = math.sqrt(lx * lx + ly * ly + lz * lz)
    lam = np.clip((nx * lx + ny * ly + nz * lz) / norm, 0, None)
    return 0.55 + 0.5 * lam


def render_face(attrs: dict, rng: np.random.Generator, size: int | None = None, look: dict | None = None):
    """Draw one face of ``attrs`` on a transparent canvas.

    Returns ``(rgba, box, keypoints)``: an RGBA ``PIL.Image`` of side ``size`` (default: the 256 px canvas),
    the face box ``[x, y, w, h]`` (brow-to-chin, cheek-to-cheek, MTCNN-like) and the five keypoints, both in
    that image's pixels. ``look`` (pose, expression, ...) is sampled from ``rng`` unless given.
    """
    look = look if look is not None else sample_appearance(attrs, rng)
    sh = attrs["shared"]
    g = _Geometry(attrs, look)
    skin, hair = tuple(sh["skin"]), HAIR_COLOURS[sh["hair_colour"]]
    img = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    shade = Image.new("L", (CANVAS, CANVAS), 255)
    d, ds = ImageDraw.Draw(img), ImageDraw.Draw(shade)
    _draw_hair_back(d, g, attrs, look, hair)
    _draw_body(d, g, skin, look["clothes"])
    _draw_face_base(d, g, skin)
    ds.ellipse([g.cx - 0.4 * g.w, g.y(0.5), g.cx + 0.4 * g.w, g.y(0.62)], fill=80)  # under-chin shadow
    for side in (-1, 1):  # eye sockets and cheek contours give the face its depth
        ds.ellipse([g.x(0.21 * side) - 0.14 * g.w, g.y(-0.13), g.x(0.21 * side) + 0.14 * g.w, g.y(0.0)], fill=175)
    eyes = [_eye(d, g, attrs, look, side) for side in (-1, 1)]
    brow_colour = tuple(int(c * 0.8) for c in hair) if sum(hair) < 200 else (70, 50, 40)
    for side in (-1, 1):
        _brow(d, g, attrs, look, side, brow_colour)
    nose = _nose(d, ds, g, look)
    mouth = _mouth(d, ds, g, attrs, look)
    if attrs["individual"]["mole"]:
        u, v = MOLE_SPOTS[attrs["individual"]["mole"]]
        mx, my, r = g.x(u), g.y(v), 0.017 * g.h
        c = attrs["individual"]["mole_contrast"]
        mole = tuple(int(k * (1 - c) + m * c) for k, m in zip(skin, (52, 32, 28)))
        d.ellipse([mx - r, my - r, mx + r, my + r], fill=mole)
    _hair_front(d, g, attrs, look, hair)
    if look["glasses"]:
        _glasses(d, g, attrs, eyes)
    if look["occluder"]:
        _occluder(d, g, skin, look)
    rgba = _apply_shading(img, shade, g, look["light"])
    # calibrated on MTCNN's boxes for these faces (mean IoU ~0.8): hairline to chin, 89% of the oval's width
    box = [g.cx - 0.443 * g.w + g.yaw * 0.06 * g.w, g.y(-0.40), 0.887 * g.w, g.y(0.5) - g.y(-0.40)]
    kps = {"left_eye": eyes[0], "right_eye": eyes[1], "nose": nose, "mouth_left": mouth[0], "mouth_right": mouth[1]}
    return _place(rgba, box, kps, look["roll"], size)


def _apply_shading(img, shade, g, light):
    # blurring at quarter resolution is 16x cheaper and the result is smooth anyway
    shade = shade.reduce(4).filter(ImageFilter.GaussianBlur(1.25)).resize((CANVAS, CANVAS), Image.BILINEAR)
    arr = np.asarray(img).astype(np.float32)
    mult = _shading(g, light) * (np.asarray(shade, dtype=np.float32) / 255.0)
    arr[..., :3] = np.clip(arr[..., :3] * mult[..., None], 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGBA")


def _place(rgba, box, kps, roll, size):
    """Rotate the canvas by ``roll`` degrees about the face centre and scale it to ``size`` px."""
    scale = 1.0 if size is None else size / CANVAS
    if scale != 1.0:
        rgba = rgba.resize((size, size), Image.LANCZOS, reducing_gap=2.0)
    # rotating after the resize touches fewer pixels; bilinear is enough on top of the supersampled canvas
    rgba = rgba.rotate(roll, resample=Image.BILINEAR, center=(CENTRE[0] * scale, CENTRE[1] * scale))
    theta = math.radians(-roll)  # PIL rotates counter-clockwise on screen, i.e. -roll in image coordinates
    c, s = math.cos(theta), math.sin(theta)

    def rot(p):
        dx, dy = p[0] - CENTRE[0], p[1] - CENTRE[1]
        return (CENTRE[0] + c * dx - s * dy, CENTRE[1] + s * dx + c * dy)

    x, y, w, h = box
    corners = [rot(p) for p in ((x, y), (x + w, y), (x, y + h), (x + w, y + h))]
    xs, ys = [p[0] for p in corners], [p[1] for p in corners]
    # the axis-aligned hull of a rotated box overshoots; shrink halfway back towards the unrotated size
    bw, bh = (max(xs) - min(xs) + w) / 2, (max(ys) - min(ys) + h) / 2
    bcx, bcy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    box = [bcx - bw / 2, bcy - bh / 2, bw, bh]
    kps = {k: rot(p) for k, p in kps.items()}
    return rgba, [v * scale for v in box], {k: (p[0] * scale, p[1] * scale) for k, p in kps.items()}
