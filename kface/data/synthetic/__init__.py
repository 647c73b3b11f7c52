"""Synthetic look-alike identities: the embedded default dataset, a stand-in for KoIn10.

Faces are drawn procedurally (PIL ImageDraw on a supersampled canvas, numpy shading) into raw "photos":
scenes of 128-256 px with the face off-centre, background clutter, lighting and colour casts, noise,
occluders (masks, hats, hands), some scenes with a second face of another identity and a few with no face.
Identities come in look-alike pairs that share skin tone, hair and face shape and differ only in small
things (eye shape, brows, a mole, glasses, mouth width), so that an oracle at 32x32 is good but not perfect.

Everything is deterministic: an identity's attributes depend only on (seed, identity), and each image only
on (seed, identity, index), so output is byte-identical across runs and worker counts.

    python -m kface.synthetic --output_dir raw --num_identities 10 --images_per_identity 300 --seed 0

Output (KoIn-like): ``train/<id>/<index>.jpg``, ``test/<id>/<index>.jpg``, ``annotations.jsonl`` (one line per
image, ground-truth face boxes and keypoints), ``identities.json`` (what each identity looks like).
"""

import argparse
import io
import json
import logging
import math
import multiprocessing
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .utils.errors import KfaceError, run_cli
from .utils.io import (atomic_write_bytes, atomic_write_json, atomic_write_text, check_writable_dir, publish_dir,
                 staging_dir)

logger = logging.getLogger(__name__)

CANVAS = 256  # side of the supersampled face canvas; faces are drawn here, then scaled into the scene
FACE_H = 104.0  # face oval height on the canvas (chin to hairline)
CENTRE = (128.0, 124.0)  # face oval centre on the canvas
JPEG_QUALITY = 92
# How far look-alike mates differ; measured with benchmarks/synthetic_difficulty.py (docs/synthetic.md)
DEFAULT_DISTINCTNESS = 0.6
KEYPOINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# Attribute tables. Pair-mates share the "shared" ones; "individual" ones are the small differences.
SKIN_TONES = [(236, 200, 176), (226, 184, 152), (214, 170, 140), (242, 210, 190), (200, 150, 118),
              (230, 192, 160), (220, 178, 150), (246, 214, 194)]
HAIR_COLOURS = {"black": (28, 24, 26), "dark_brown": (58, 40, 30), "brown": (104, 70, 46),
                "ash_blonde": (168, 146, 112), "auburn": (118, 52, 36), "blue_black": (24, 28, 44)}
HAIR_STYLES = ("short", "bob", "long", "bangs", "parted")
EYE_SHAPES = {"narrow": 0.36, "almond": 0.44, "round": 0.52}  # typical eye height / eye width
MOLE_SPOTS = {"left_cheek": (-0.22, 0.12), "right_cheek": (0.24, 0.08), "upper_lip": (0.12, 0.25),
              "chin": (-0.08, 0.40), "under_eye": (0.20, -0.02)}


# --------------------------------------------------------------------------------------------- identities
def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def identity_attributes(seed: int, identity: int, num_identities: int,
                        distinctness: float = DEFAULT_DISTINCTNESS) -> dict:
    """Attributes of one identity, from (seed, identity) only.

    Identities ``2p`` and ``2p+1`` form pair ``p``: they share skin, hair and face shape (drawn from the pair's
    stream) and differ in a few small features (drawn from the identity's stream, and scaled by
    ``distinctness``: 0 makes the mates identical, larger makes them easier to tell apart).
    """
    pair = identity // 2
    mate = identity ^ 1 if (identity ^ 1) < num_identities else None
    prng = _rng(seed, 1, pair)
    # pairs take skin, hair colour and hair style from seed-wide shuffles, so that different pairs differ
    order = _rng(seed, 0)
    skins, colours, styles = (order.permutation(len(t)) for t in (SKIN_TONES, HAIR_COLOURS, HAIR_STYLES))
    shared = {
        "skin": [int(c) for c in np.clip(np.array(SKIN_TONES[skins[pair % len(skins)]])
                                         + prng.normal(0, 4, 3), 0, 255)],
        "hair_colour": list(HAIR_COLOURS)[colours[pair % len(colours)]],
        "hair_style": HAIR_STYLES[styles[(pair + pair // len(styles)) % len(styles)]],
        "face_width": round(float(prng.uniform(0.70, 0.84)), 3),  # oval width / height
        "jaw_taper": round(float(prng.uniform(0.10, 0.32)), 3),
        "lip_colour": [int(c) for c in prng.uniform([170, 80, 80], [215, 120, 120])],
        "iris_colour": [int(c) for c in prng.uniform([40, 24, 16], [90, 60, 40])],
    }
    # The pair's baseline for the small features; each mate sits on one side of it (sign = +-1) so that the
    # two always differ by ``distinctness`` times a fixed step, plus a little individual noise.
    base = {"eye_size": prng.uniform(0.17, 0.2), "brow_thickness": prng.uniform(0.035, 0.05),
            "brow_arch": prng.uniform(0.02, 0.05), "mouth_width": prng.uniform(0.30, 0.36)}
    sign = 1.0 if identity % 2 == 0 else -1.0
    irng = _rng(seed, 2, identity)
    pair_aspect = list(EYE_SHAPES.values())[prng.integers(len(EYE_SHAPES))]
    aspect = pair_aspect * (1 + 0.1 * sign * distinctness)
    # one mate of every pair gets a distinctive marker (a mole or a liking for glasses), the other does not
    marker_holder = int(prng.integers(2))
    marker = ("mole", "glasses")[prng.integers(2)]
    holds = (identity % 2) == marker_holder
    base_tilt = prng.uniform(-0.06, 0.10)
    # below 1, distinctness also fades the marker and pulls the tilts together: at 0 the mates are twins
    strength = min(1.0, max(0.0, distinctness))
    individual = {
        "eye_shape": min(EYE_SHAPES, key=lambda k: abs(EYE_SHAPES[k] - aspect)),
        "eye_aspect": round(float(aspect), 4),
        "eye_size": round(float(base["eye_size"] * (1 + 0.05 * sign * distinctness)), 4),
        "eye_tilt": round(float(base_tilt + (irng.uniform(-0.06, 0.10) - base_tilt) * strength), 3),
        "brow_thickness": round(float(base["brow_thickness"] * (1 + 0.15 * sign * distinctness)), 4),
        "brow_arch": round(float(base["brow_arch"] * (1 - 0.3 * sign * distinctness)), 4),
        "mouth_width": round(float(base["mouth_width"] * (1 + 0.06 * sign * distinctness)), 4),
        "mole": list(MOLE_SPOTS)[irng.integers(len(MOLE_SPOTS))] if holds and marker == "mole" else None,
        "glasses_rate": round(float(irng.uniform(0.4, 0.6) * strength), 2) if holds and marker == "glasses" else 0.0,
        "glasses_style": ("round", "square")[irng.integers(2)],
    }
    individual["mole_contrast"] = strength if individual["mole"] else None
    if not individual["glasses_rate"]:
        individual["glasses_style"] = None
    return {"identity": f"{identity:04d}", "pair": pair, "mate": None if mate is None else f"{mate:04d}",
            "shared": shared, "individual": individual}


def all_identities(seed: int, num_identities: int, distinctness: float = DEFAULT_DISTINCTNESS) -> list[dict]:
    """Every identity's attributes, each with ``differs_from_mate``: the small features that tell the pair apart."""
    ids = [identity_attributes(seed, i, num_identities, distinctness) for i in range(num_identities)]
    for attrs in ids:
        mate = ids[int(attrs["mate"])]["individual"] if attrs["mate"] else attrs["individual"]
        attrs["differs_from_mate"] = [k for k, v in attrs["individual"].items() if mate[k] != v]
    return ids


# --------------------------------------------------------------------------------------------- face pose
def sample_appearance(attrs: dict, rng: np.random.Generator, occluder_rate: float = 0.12) -> dict:
    """Per-photo variation of one identity: pose, expression, blinking, lighting, glasses, occluders."""
    ind = attrs["individual"]
    occluder = None
    if rng.random() < occluder_rate:
        # masks hide half the face from MTCNN too, so they are the rarest occluder
        occluder = ("hat", "hat", "hand", "hand", "mask")[rng.integers(5)]
    return {
        "yaw": float(rng.uniform(-0.45, 0.45)),
        "roll": float(rng.normal(0, 8.0)),
        "expression": ("neutral", "smile", "smile", "open", "pout")[rng.integers(5)],
        "blink": bool(rng.random() < 0.08),
        # squinting, wide eyes and raised brows blur the small cues that tell look-alike mates apart
        "eye_open": float(rng.uniform(0.85, 1.15)),
        "brow_raise": float(rng.normal(0, 0.012)),
        "gaze": float(rng.uniform(-0.25, 0.25)),
        "light": [float(v) for v in (rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.2), rng.uniform(0.6, 1.0))],
        "glasses": bool(rng.random() < ind["glasses_rate"]),
        "occluder": occluder,
        "occluder_colour": [int(c) for c in rng.integers(30, 240, 3)],
        "clothes": [int(c) for c in rng.integers(20, 230, 3)],
        "hair_jitter": float(rng.uniform(-0.04, 0.04)),
    }


# --------------------------------------------------------------------------------------------- face drawing
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


# --------------------------------------------------------------------------------------------- scenes
def _background(rng: np.random.Generator, full_width: int, full_height: int) -> Image.Image:
    """A cluttered backdrop: a two-colour gradient, random shapes, a little depth-of-field blur.

    Drawn at half resolution and upscaled: it is out of focus anyway, and this is 4x cheaper.
    """
    width, height = full_width // 2, full_height // 2
    # muted colours: a saturated backdrop makes every face look alike to the oracle's colour statistics
    top, bottom = _muted(rng), _muted(rng)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    arr = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1), np.float32)
    img = Image.fromarray(arr.astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        colour = tuple(int(c) for c in _muted(rng))
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width)
        y0, y1 = sorted(rng.uniform(-0.2, 1.2, 2) * height)
        kind = rng.integers(4)
        if kind == 0:
            d.rectangle([x0, y0, x1, y1], fill=colour)
        elif kind == 1:
            d.ellipse([x0, y0, x1, y1], fill=colour)
        elif kind == 2:
            d.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(2, 10)))
        else:
            d.polygon([tuple(p) for p in rng.uniform(0, 1, (3, 2)) * (width, height)], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.5))))
    return img.resize((full_width, full_height), Image.BILINEAR)


def _muted(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(30, 230)
    return np.clip(grey + rng.normal(0, 35, 3), 0, 255)


def _photometric(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Camera effects over the whole photo: exposure, colour cast, occasional blur, sensor noise."""
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.1))))
    arr = np.asarray(img).astype(np.float32)
    gain = rng.uniform(0.75, 1.2) * (1 + rng.normal(0, 0.07, 3))
    arr = arr * gain.astype(np.float32) + rng.standard_normal(arr.shape, np.float32) * rng.uniform(0.0, 7.0)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _place_face(scene, rgba, box, kps, rng, side: int, cut: float):
    """Paste ``rgba`` so that its face box lands on the ``side`` third (-1 left, 1 right, 0 anywhere).

    ``cut`` is the fraction of the box width allowed to fall outside the photo (0 for the target face).
    Returns the box and keypoints in scene pixels, the box clipped to the photo.
    """
    width, height = scene.size
    x, y, w, h = box
    lo_x, hi_x = -cut * w, width - w + cut * w
    u = {-1: rng.uniform(0.0, 0.35), 1: rng.uniform(0.65, 1.0), 0: rng.uniform(0, 1)}[side]
    bx = lo_x + u * max(hi_x - lo_x, 0)
    by = rng.uniform(0.1, 0.9) * max(height - h, 0)
    ox, oy = int(round(bx - x)), int(round(by - y))
    scene.paste(rgba, (ox, oy), rgba)
    x0, y0 = max(0.0, x + ox), max(0.0, y + oy)
    x1, y1 = min(float(width), x + ox + w), min(float(height), y + oy + h)
    scene_box = [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]
    return scene_box, {k: [round(p[0] + ox, 1), round(p[1] + oy, 1)] for k, p in kps.items()}


def render_scene(identities: list[dict], identity: int, rng: np.random.Generator, image_size=(128, 256),
                 second_face_rate: float = 0.10, no_face_rate: float = 0.03, occluder_rate: float = 0.12):
    """One raw photo of ``identity``: returns ``(PIL RGB image, faces)``, faces as in annotations.jsonl."""
    width, height = (int(v) for v in rng.integers(image_size[0], image_size[1] + 1, 2))
    scene = _background(rng, width, height)
    roll = rng.random()
    faces = []
    if roll >= no_face_rate:
        # face box height 30-50% of the short side, and at least 44 px: MTCNN's sweet spot starts near 40
        box_h = max(44.0, rng.uniform(0.30, 0.50) * min(width, height))
        size = int(round(box_h / (0.9 * FACE_H) * CANVAS))
        side = (-1, 1)[rng.integers(2)]
        if roll < no_face_rate + second_face_rate and len(identities) > 1:
            faces.append(_distractor(scene, identities, identity, rng, size, -side, occluder_rate))
        look = sample_appearance(identities[identity], rng, occluder_rate)
        rgba, box, kps = render_face(identities[identity], rng, size, look)
        scene_box, scene_kps = _place_face(scene, rgba, box, kps, rng, side, cut=0.0)
        faces.append({"box": scene_box, "identity": identities[identity]["identity"], "target": True,
                      "keypoints": scene_kps, "occluder": look["occluder"], "glasses": look["glasses"]})
        faces.sort(key=lambda f: not f["target"])
    return _photometric(scene, rng), faces


def _distractor(scene, identities, identity, rng, target_size, side, occluder_rate):
    """A second person of another identity, smaller or cut by the frame: the identity-mismatch case."""
    other = int(rng.integers(len(identities) - 1))
    other += other >= identity
    size = int(target_size * rng.uniform(0.6, 1.0))
    look = sample_appearance(identities[other], rng, occluder_rate)
    rgba, box, kps = render_face(identities[other], rng, size, look)
    scene_box, scene_kps = _place_face(scene, rgba, box, kps, rng, side, cut=0.3)
    return {"box": scene_box, "identity": identities[other]["identity"], "target": False,
            "keypoints": scene_kps, "occluder": look["occluder"], "glasses": look["glasses"]}


# --------------------------------------------------------------------------------------------- dataset
def split_of(seed: int, identity: int, images_per_identity: int, test_fraction: float) -> list[str]:
    """``"train"``/``"test"`` for each image index of one identity: a fixed fraction, randomly placed."""
    num_test = int(round(images_per_identity * test_fraction))
    if images_per_identity >= 2:
        num_test = min(max(num_test, 1), images_per_identity - 1)
    test = set(_rng(seed, 4, identity).permutation(images_per_identity)[:num_test].tolist())
    return ["test" if i in test else "train" for i in range(images_per_identity)]


_WORKER: dict = {}


def _init_worker(config: dict) -> None:
    _WORKER.clear()
    _WORKER.update(config)


def _render_job(job) -> dict:
    """Render, encode and write one photo; return its annotation line. Depends only on (seed, identity, index)."""
    identity, index, split = job
    cfg = _WORKER
    rng = _rng(cfg["seed"], 3, identity, index)
    img, faces = render_scene(cfg["identities"], identity, rng, cfg["image_size"], cfg["second_face_rate"],
                              cfg["no_face_rate"], cfg["occluder_rate"])
    name = cfg["identities"][identity]["identity"]
    rel = f"{split}/{name}/{index:06d}.jpg"
    path = Path(cfg["staging"]) / rel
    if not path.exists():  # a resumed run: files already written are the same bytes, keep them
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        atomic_write_bytes(path, buf.getvalue())
    return {"path": rel, "split": split, "identity": name, "width": img.width, "height": img.height, "faces": faces}


def _check_options(num_identities, images_per_identity, test_fraction, image_size, num_workers, rates) -> None:
    if num_identities < 2:
        raise KfaceError(f"--num_identities {num_identities}: need at least 2 (identities come in look-alike pairs)")
    if images_per_identity < 2:
        raise KfaceError(f"--images_per_identity {images_per_identity}: need at least 2 (one train, one test)")
    if not 0.0 < test_fraction < 1.0:
        raise KfaceError(f"--test_fraction {test_fraction}: must be between 0 and 1, e.g. 0.2")
    lo, hi = image_size
    if not 96 <= lo <= hi <= 1024:
        raise KfaceError(f"--min_size/--max_size {lo}/{hi}: need 96 <= min_size <= max_size <= 1024")
    if num_workers < 1:
        raise KfaceError(f"--num_workers {num_workers}: must be >= 1")
    for flag, value in rates.items():
        if not 0.0 <= value < 1.0:
            raise KfaceError(f"--{flag} {value}: must be in [0, 1)")
    if rates["second_face_rate"] + rates["no_face_rate"] >= 1.0:
        raise KfaceError("--second_face_rate plus --no_face_rate must stay below 1")


def _prepare_staging(output_dir: Path, config: dict, overwrite: bool) -> Path:
    """Refuse a finished output unless ``overwrite``; resume an interrupted run only if its settings match."""
    if output_dir.exists() and not output_dir.is_dir():
        raise KfaceError(f"--output_dir {output_dir} is a file; give a folder path")
    check_writable_dir(output_dir.parent, "--output_dir")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise KfaceError(f"--output_dir {output_dir} already exists and is not empty; "
                         "pass --overwrite to replace it or choose another folder")
    staging = staging_dir(output_dir)
    config_path = staging / "synthetic_config.json"
    if staging.exists():
        previous = json.loads(config_path.read_text()) if config_path.exists() else None
        if previous != json.loads(json.dumps(config)):
            raise KfaceError(f"{staging} holds an interrupted run with other settings ({previous}); "
                             "delete it or rerun with the same settings")
        logger.info("Resuming the interrupted run in %s (images already written are kept)", staging)
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, config)
    return staging


def generate(output_dir, num_identities: int = 10, images_per_identity: int = 300, test_fraction: float = 0.2,
             seed: int = 0, image_size: tuple[int, int] = (128, 256), num_workers: int = 2,
             second_face_rate: float = 0.10, no_face_rate: float = 0.03, occluder_rate: float = 0.12,
             distinctness: float = DEFAULT_DISTINCTNESS, overwrite: bool = False) -> dict:
    """Write the synthetic dataset to ``output_dir`` (built in a staging folder, published when complete).

    Returns a summary: image counts per split, scenes without a face, with a second face, with an
    occluder, and the seconds it took.
    """
    rates = {"second_face_rate": second_face_rate, "no_face_rate": no_face_rate, "occluder_rate": occluder_rate}
    _check_options(num_identities, images_per_identity, test_fraction, image_size, num_workers, rates)
    start = time.perf_counter()
    output_dir = Path(output_dir)
    identities = all_identities(seed, num_identities, distinctness)
    config = {"num_identities": num_identities, "images_per_identity": images_per_identity,
              "test_fraction": test_fraction, "seed": seed, "image_size": list(image_size),
              "distinctness": distinctness, **rates}
    staging = _prepare_staging(output_dir, config, overwrite)
    jobs = [(i, k, split) for i in range(num_identities)
            for k, split in enumerate(split_of(seed, i, images_per_identity, test_fraction))]
    worker_cfg = {"identities": identities, "staging": str(staging), "seed": seed,
                  "image_size": tuple(image_size), **rates}
    records = _run_jobs(jobs, worker_cfg, num_workers)
    atomic_write_text(staging / "annotations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(staging / "identities.json", identities)
    publish_dir(staging, output_dir)
    summary = _summarise(records, output_dir, time.perf_counter() - start)
    logger.info("Wrote %(images)d photos of %(identities)d identities to %(output_dir)s in %(seconds).1f s "
                "(train %(train)d, test %(test)d; no face %(no_face)d, second face %(second_face)d, "
                "occluded %(occluded)d)", summary)
    return summary


def _run_jobs(jobs, worker_cfg: dict, num_workers: int) -> list[dict]:
    if num_workers == 1:
        _init_worker(worker_cfg)
        return [_render_job(job) for job in jobs]
    # spawn, not fork: the caller may hold TensorFlow or torch thread pools, which do not survive a fork
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers, initializer=_init_worker, initargs=(worker_cfg,)) as pool:
        return list(pool.imap(_render_job, jobs, chunksize=16))


def _summarise(records: list[dict], output_dir: Path, seconds: float) -> dict:
    return {
        "output_dir": str(output_dir),
        "identities": len({r["identity"] for r in records}),
        "images": len(records),
        "train": sum(r["split"] == "train" for r in records),
        "test": sum(r["split"] == "test" for r in records),
        "no_face": sum(not r["faces"] for r in records),
        "second_face": sum(len(r["faces"]) > 1 for r in records),
        "occluded": sum(any(f["target"] and f["occluder"] for f in r["faces"]) for r in records),
        "seconds": round(seconds, 2),
    }


def load_annotations(data_dir) -> dict[str, dict]:
    """``annotations.jsonl`` of a generated folder as {relative path: record}."""
    path = Path(data_dir) / "annotations.jsonl"
    if not path.exists():
        raise KfaceError(f"{path} not found: the folder was not written by kface.synthetic")
    with path.open() as f:
        return {r["path"]: r for r in map(json.loads, f)}


# --------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    from .utils.args import fraction, non_negative_int, positive_int

    p = argparse.ArgumentParser(description="Generate the synthetic look-alike face dataset (raw photos).")
    p.add_argument("--output_dir", required=True, help="Folder to create: train/<id>/*.jpg, test/<id>/*.jpg.")
    p.add_argument("--num_identities", type=positive_int, default=10, help="Identities, in look-alike pairs.")
    p.add_argument("--images_per_identity", type=positive_int, default=300)
    p.add_argument("--test_fraction", type=fraction, default=0.2, help="Fraction of each identity's photos in test/.")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--num_workers", type=positive_int, default=2, help="Processes; output does not depend on it.")
    p.add_argument("--min_size", type=positive_int, default=128, help="Smallest photo side in pixels.")
    p.add_argument("--max_size", type=positive_int, default=256, help="Largest photo side in pixels.")
    p.add_argument("--second_face_rate", type=float, default=0.10, help="Photos with a second, other person.")
    p.add_argument("--no_face_rate", type=float, default=0.03, help="Photos with no face at all.")
    p.add_argument("--occluder_rate", type=float, default=0.12, help="Faces with a mask, hat or hand.")
    p.add_argument("--distinctness", type=float, default=DEFAULT_DISTINCTNESS,
                   help="How far look-alike mates differ: 0 makes them identical twins, larger is easier "
                        "(see docs/synthetic.md for the oracle accuracy it gives).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --output_dir.")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return generate(args.output_dir, num_identities=args.num_identities,
                    images_per_identity=args.images_per_identity, test_fraction=args.test_fraction,
                    seed=args.seed, image_size=(args.min_size, args.max_size), num_workers=args.num_workers,
                    second_face_rate=args.second_face_rate, no_face_rate=args.no_face_rate,
                    occluder_rate=args.occluder_rate, distinctness=args.distinctness, overwrite=args.overwrite)


if __name__ == "__main__":
    run_cli(main, parse_args())
