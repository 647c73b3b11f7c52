"""Detection and crops: each photo, in a worker process, becomes crops at every resolution or a dropped file with
one of ``REASONS``; results are cached per photo in ``detections.jsonl`` so that an interrupted run resumes."""

import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ...utils.io import atomic_write_bytes
from .. import faces
from ..pool import map_in_workers
from .decode import load_rgb
from .scan import RawImage

logger = logging.getLogger(__name__)

REASONS = {
    "empty_file": "zero-byte file",
    "not_an_image": "not an image file PIL can identify",
    "corrupt": "image data is truncated or damaged",
    "too_large": "more pixels than --max_pixels (decompression bomb guard)",
    "unsupported_mode": "pixel format that cannot be converted to RGB",
    "no_face": "the detector found no face",
    "low_confidence": "faces found, all below --min_confidence",
    "too_small": "face (or photo, with --detector none) smaller than --min_face_size",
    "detector_error": "the face detector raised an error on this photo",
    "duplicate_of_train": "test photo duplicates a train photo (--drop_test_duplicates)",
}
CACHE_NAME = "detections.jsonl"


@dataclass(frozen=True)
class CropSettings:
    """Everything that decides a crop; a cached result is reused only when all of it matches."""

    detector: str = "mtcnn"
    min_confidence: float = 0.9
    select: str = "largest"
    margin: float = 0.25
    padding: str = "reflect"
    resolutions: tuple = (32, 64)
    min_face_size: int = 20
    max_pixels: int = 100_000_000
    detect_max_side: int = 1024

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


_WORKER = {}


def _init_worker(settings: CropSettings, staging: str) -> None:
    """Each worker builds its detector once (MTCNN takes seconds to load)."""
    _WORKER.update(settings=settings, staging=Path(staging), detector=faces.make_detector(settings.detector))


def cache_key(image: RawImage, settings: CropSettings) -> str:
    text = f"{settings.fingerprint()}|{image.source}|{image.size}|{image.mtime_ns}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def _detect(detector, rgb: Image.Image, max_side: int | None) -> list[dict]:
    # MTCNN's cost grows with pixels; faces worth keeping survive a downscale to ~1000 px
    scale = min(1.0, max_side / max(rgb.size)) if max_side else 1.0
    small = rgb if scale == 1.0 else rgb.resize((round(rgb.width * scale), round(rgb.height * scale)),
                                                Image.Resampling.BILINEAR)
    found = detector.detect(np.asarray(small))
    for d in found:
        d["box"] = [v / scale for v in d["box"]]
    return found


def process_image(image: RawImage) -> dict:
    """Decode, detect, choose a face, crop and resize one photo (in a worker); writes the crops to staging."""
    settings, staging = _WORKER["settings"], _WORKER["staging"]
    key = cache_key(image, settings)
    result = {"key": key, "source": image.source, "label": image.label, "split": image.split, "reason": None}
    try:
        data = Path(image.path).read_bytes()
    except OSError:
        return {**result, "reason": "corrupt"}
    result["sha1"] = hashlib.sha1(data).hexdigest()
    rgb, reason = load_rgb(data, settings.max_pixels)
    if rgb is None:
        return {**result, "reason": reason}
    width, height = rgb.size
    if min(width, height) < settings.min_face_size:
        return {**result, "reason": "too_small"}
    try:
        found = _detect(_WORKER["detector"], rgb, settings.detect_max_side if settings.detector != "none" else None)
    except Exception as err:  # a detector bug on one odd photo must not end a run of thousands
        logger.warning("detector failed on %s: %s: %s", image.source, type(err).__name__, err)
        return {**result, "reason": "detector_error"}
    found, reason = faces.candidates(found, settings.min_confidence, settings.min_face_size)
    if reason:
        return {**result, "reason": reason}
    chosen = found[faces.select_face(found, settings.select, width, height)]
    crop = (faces.centre_square(width, height) if settings.detector == "none"
            else faces.square_crop(chosen["box"], settings.margin))
    square = faces.cut(rgb, crop, padding=settings.padding)
    crops = {}
    for res in settings.resolutions:
        buf = io.BytesIO()
        small = faces.resize(square, res)
        small.save(buf, format="PNG")
        crops[str(res)] = f"crops/{res}px/{key}.png"
        atomic_write_bytes(staging / crops[str(res)], buf.getvalue())
    import imagehash  # here, not at module level: workers are the only users

    return {**result, "box": [round(float(v), 2) for v in chosen["box"]], "confidence": float(chosen["confidence"]),
            "num_faces": len(found), "padded": crop.is_padded(width, height), "crops": crops,
            "phash": str(imagehash.phash(small))}


# ---------------------------------------------------------------- the cache and the pool (main side)


def load_cache(path) -> dict:
    """Results of an interrupted run, by key; a line cut short by the interruption is ignored."""
    results = {}
    path = Path(path)
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if all((path.parent / c).exists() for c in row.get("crops", {}).values()):
                results[row["key"]] = row
    return results


def detect_and_crop(images: list[RawImage], settings: CropSettings, staging, *, num_workers: int = 2,
                    progress: bool = True) -> tuple[list[dict], dict]:
    """Process every photo, reusing ``staging/detections.jsonl``; returns results (in ``images`` order) and timing.

    ``num_workers`` as in :func:`kface.data.pool.map_in_workers`: 0 runs in this process (tests, debugging), N
    starts N worker processes.
    """
    from tqdm.auto import tqdm

    staging = Path(staging)
    cache_path = staging / CACHE_NAME
    cached = load_cache(cache_path)
    keys = [cache_key(im, settings) for im in images]
    todo = [im for im, k in zip(images, keys) if k not in cached]
    if cached:
        logger.info("resuming: %d of %d photos already processed in %s", len(images) - len(todo), len(images),
                    cache_path)
    start = first = time.perf_counter()
    with open(cache_path, "a", encoding="utf-8") as cache, tqdm(total=len(todo), desc="faces",
                                                                 disable=not progress) as bar:
        rows = map_in_workers(process_image, todo, num_workers=num_workers, initializer=_init_worker,
                              initargs=(settings, str(staging)), ordered=False)
        for n, row in enumerate(rows):
            first = time.perf_counter() if n == 0 else first
            cache.write(json.dumps(row) + "\n")
            cache.flush()  # one line per photo: an interruption loses at most the photos in flight
            cached[row["key"]] = row
            bar.update(1)
    seconds, startup = time.perf_counter() - start, first - start
    timing = {"processed": len(todo), "from_cache": len(images) - len(todo), "detection_s": round(seconds, 3),
              "images_per_s": round(len(todo) / seconds, 2) if todo and seconds > 0 else None,
              # workers' start (TensorFlow import, MTCNN build) and the first photo; the rest is steady state
              "first_result_s": round(startup, 3),
              "steady_images_per_s": round((len(todo) - 1) / (seconds - startup), 2)
              if len(todo) > 1 and seconds > startup else None}
    return [cached[k] for k in keys], timing
