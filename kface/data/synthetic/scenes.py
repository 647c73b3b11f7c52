"""Scenes: a cluttered background, the target face off-centre, sometimes a second person or none, and camera
effects over the whole photo."""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .drawing import CANVAS, FACE_H, render_face
from .identity import sample_appearance


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


def _place_face(scene, rgba, box, kps, rng, *, side: int, cut: float):
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


def render_scene(identities: list[dict], identity: int, rng: np.random.Generator, *, image_size=(128, 256),
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
            faces.append(_distractor(scene, identities, identity, rng, target_size=size, side=-side,
                                     occluder_rate=occluder_rate))
        look = sample_appearance(identities[identity], rng, occluder_rate)
        rgba, box, kps = render_face(identities[identity], rng, size, look)
        scene_box, scene_kps = _place_face(scene, rgba, box, kps, rng, side=side, cut=0.0)
        faces.append({"box": scene_box, "identity": identities[identity]["identity"], "target": True,
                      "keypoints": scene_kps, "occluder": look["occluder"], "glasses": look["glasses"]})
        faces.sort(key=lambda f: not f["target"])
    return _photometric(scene, rng), faces


def _distractor(scene, identities, identity, rng, *, target_size, side, occluder_rate):
    """A second person of another identity, smaller or cut by the frame: the identity-mismatch case."""
    other = int(rng.integers(len(identities) - 1))
    other += other >= identity
    size = int(target_size * rng.uniform(0.6, 1.0))
    look = sample_appearance(identities[other], rng, occluder_rate)
    rgba, box, kps = render_face(identities[other], rng, size, look)
    scene_box, scene_kps = _place_face(scene, rgba, box, kps, rng, side=side, cut=0.3)
    return {"box": scene_box, "identity": identities[other]["identity"], "target": False,
            "keypoints": scene_kps, "occluder": look["occluder"], "glasses": look["glasses"]}
