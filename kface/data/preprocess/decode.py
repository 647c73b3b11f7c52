"""Photo bytes -> an upright 8-bit RGB image, or the reason it cannot be one (never an exception)."""

import io
import logging
import warnings

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: 16-bit and float scaled (not clipped), transparency composited on white."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
            arr = arr / 257.0  # 16-bit full range -> 8-bit full range (65535 / 257 = 255)
        elif img.mode == "F" and lo >= 0 and hi <= 1:
            arr = arr * 255.0
        else:  # unknown range: stretch what is there
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(data: bytes, max_pixels: int) -> tuple[Image.Image | None, str | None]:
    """Decode photo bytes to an upright 8-bit RGB image, or ``(None, reason)``; never raises for bad data."""
    if not data:
        return None, "empty_file"
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x the limit; make the warning an error so that both are refused
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(data))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                return None, "too_large"
            except Exception:  # UnidentifiedImageError, and odd parser errors on garbage
                return None, "not_an_image"
            try:
                img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                return None, "too_large"
            except Exception:
                return None, "corrupt"
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block: the pixels are fine, keep them as stored
        logger.warning("unreadable EXIF orientation; using the photo as stored")
    try:
        return to_rgb8(img), None
    except Exception:
        return None, "unsupported_mode"
