"""Face detection and the crop arithmetic around it.

A detection is a dict ``{"box": [x, y, w, h], "confidence": float}`` in pixel coordinates of the (EXIF-upright)
photo, as ``mtcnn.MTCNN().detect_faces`` returns it. From the chosen box we cut a square:

* the square is centred on the box centre and its side is ``(1 + 2 * margin) * max(w, h)``, i.e. ``margin`` of the
  box's longer side is added on every side (the paper's "25% additional margin", read as 25% per side, which keeps
  the hair and headwear the paper wants to keep);
* where the square leaves the photo, the photo is padded (``reflect`` by default: mirrored background looks like
  background, while constant bars would be learnt by the generator as part of the face), and the crop is marked
  ``padded``.
"""

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

SELECT_POLICIES = ("largest", "most_confident", "center")
PADDING_MODES = ("reflect", "edge", "constant")
DETECTORS = ("mtcnn", "none")


@dataclass(frozen=True)
class SquareCrop:
    """A square window ``[left, left + side) x [top, top + side)`` in photo pixels; it may leave the photo."""

    left: int
    top: int
    side: int

    def padding(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixels missing on the (left, top, right, bottom) of the photo to cover the window."""
        return (max(0, -self.left), max(0, -self.top),
                max(0, self.left + self.side - width), max(0, self.top + self.side - height))

    def is_padded(self, width: int, height: int) -> bool:
        return any(self.padding(width, height))


def _round_half_up(value: float) -> int:
    # Python's round() rounds half to even, which would shift crops by a pixel depending on parity
    return math.floor(value + 0.5)


def square_crop(box, margin: float) -> SquareCrop:
    """The square window around ``box = (x, y, w, h)`` with ``margin`` of its longer side added on each side."""
    x, y, w, h = (float(v) for v in box)
    side = max(1, _round_half_up(max(w, h) * (1.0 + 2.0 * margin)))
    cx, cy = x + w / 2.0, y + h / 2.0
    return SquareCrop(left=_round_half_up(cx - side / 2.0), top=_round_half_up(cy - side / 2.0), side=side)


def centre_square(width: int, height: int) -> SquareCrop:
    """The largest centred square inside a ``width`` x ``height`` photo (for photos that are already faces)."""
    side = min(width, height)
    return SquareCrop(left=(width - side) // 2, top=(height - side) // 2, side=side)


def cut(image: Image.Image, crop: SquareCrop, padding: str = "reflect") -> Image.Image:
    """Cut ``crop`` out of an RGB ``image``, padding with ``padding`` (numpy.pad mode) where it leaves the photo."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    width, height = image.size
    pl, pt, pr, pb = crop.padding(width, height)
    if not (pl or pt or pr or pb):
        return image.crop((crop.left, crop.top, crop.left + crop.side, crop.top + crop.side))
    inside = np.asarray(image.crop((max(crop.left, 0), max(crop.top, 0),
                                    min(crop.left + crop.side, width), min(crop.top + crop.side, height))))
    # numpy reflects repeatedly when the pad is wider than the photo, so any box size works
    padded = np.pad(inside, ((pt, pb), (pl, pr), (0, 0)), mode=padding)
    return Image.fromarray(padded)


def resize(image: Image.Image, size: int) -> Image.Image:
    """Antialiased downscale (Lanczos, whose kernel widens with the scale factor) to ``size`` x ``size``."""
    return image.resize((size, size), Image.Resampling.LANCZOS)


def candidates(detections: list[dict], min_confidence: float, min_face_size: int) -> tuple[list[dict], str | None]:
    """The detections good enough to keep, or ``([], reason)`` saying why there are none."""
    if not detections:
        return [], "no_face"
    confident = [d for d in detections if float(d["confidence"]) >= min_confidence]
    if not confident:
        return [], "low_confidence"
    big = [d for d in confident if max(float(d["box"][2]), float(d["box"][3])) >= min_face_size]
    if not big:
        return [], "too_small"
    return big, None


def select_face(detections: list[dict], policy: str, width: int, height: int) -> int:
    """Index of the face to keep: the ``largest`` box area, the ``most_confident``, or the one nearest the centre."""
    if not detections:
        raise ValueError("select_face needs at least one detection")
    if policy == "largest":
        scores = [-float(d["box"][2]) * float(d["box"][3]) for d in detections]
    elif policy == "most_confident":
        scores = [-float(d["confidence"]) for d in detections]
    elif policy == "center":
        scores = [math.hypot(d["box"][0] + d["box"][2] / 2.0 - width / 2.0,
                             d["box"][1] + d["box"][3] / 2.0 - height / 2.0) for d in detections]
    else:
        raise ValueError(f"policy must be one of {SELECT_POLICIES}, got {policy!r}")
    return int(np.argmin(scores))


class MtcnnDetector:
    """``mtcnn.MTCNN`` (TensorFlow; ~4 s to import and build, ~0.2 s per photo on one CPU core)."""

    name = "mtcnn"

    def __init__(self):
        from mtcnn import MTCNN

        self._model = MTCNN()

    def detect(self, rgb: np.ndarray) -> list[dict]:
        found = self._model.detect_faces(rgb)
        return [{"box": [float(v) for v in d["box"]], "confidence": float(d["confidence"])} for d in found]


class CentreDetector:
    """For photos that are already face crops: the centred square is "the face", with confidence 1."""

    name = "none"

    def detect(self, rgb: np.ndarray) -> list[dict]:
        crop = centre_square(rgb.shape[1], rgb.shape[0])
        return [{"box": [float(crop.left), float(crop.top), float(crop.side), float(crop.side)], "confidence": 1.0}]


def make_detector(name: str):
    if name == "mtcnn":
        return MtcnnDetector()
    if name == "none":
        return CentreDetector()
    raise ValueError(f"detector must be one of {DETECTORS}, got {name!r}")
