"""Low-level statistics of an image set: colour, centre, border and high-frequency energy.

A generator can keep identity and still miss low-level statistics (a grey background, a colour tint, pixel
grain). This module measures them; :mod:`kface.eval.matching` degrades or maps images toward them, and
:mod:`kface.eval.nuisance` asks how much of RCA they explain.

Conventions: images are uint8 NCHW numpy arrays at the API; statistics are in [0, 1] pixel units.

- **Colour**: per-channel mean and std over all pixels of the set.
- **Centre**: the same over the pixels that the background step leaves untouched (``border_mask == 0``: the
  face of a centred crop). The colour degradation is fitted on these, so that a generated set whose background
  alone is off does not get its whole shift applied to the real faces (which would recolour hair and skin).
- **Border**: per-channel mean and std of the outer ``BORDER``-px ring of every image (the background of a
  centred face crop).
- **High-frequency energy** ``hf``: the residual ``r = x - box3x3(x)`` on the interior pixels (no padding),
  its variance per image over channels and pixels, then ``sqrt(mean over images)``: an RMS, so that
  independent noise adds in squares. For i.i.d. Gaussian noise of std ``s`` on a flat image,
  ``r = n (8/9) - (sum of 8 neighbours)/9`` has variance ``s^2 (64 + 8) / 81 = s^2 8/9``, so ``hf = s sqrt(8/9)``.
"""

import numpy as np

from ..utils.masks import BORDER, border_mask


def to_float(images: np.ndarray) -> np.ndarray:
    # float32: a 64 px test split of a few thousand images is then ~150 MB per degraded copy, not ~300
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def ring_mask(size: int, ring: int = BORDER) -> np.ndarray:
    """The outer ``ring`` px, where the border statistics are taken."""
    return border_mask(size, ring, ramp=1e-9) >= 1.0


def centre_mask(size: int, ring: int = BORDER) -> np.ndarray:
    """The pixels :func:`kface.eval.matching.match_border` leaves untouched (``border_mask == 0``), the centre
    of the crop."""
    return border_mask(size, ring) == 0.0


def hf_residual_var(x: np.ndarray) -> np.ndarray:
    """Per-image variance of ``x - box3x3(x)`` over channels and interior pixels; ``x`` float NCHW."""
    h, w = x.shape[-2:]
    box = sum(x[..., i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3)) / 9.0
    r = x[..., 1:h - 1, 1:w - 1] - box
    return r.reshape(len(x), -1).var(axis=1)


def hf_energy(x: np.ndarray) -> float:
    """RMS over images of the high-frequency residual std (float NCHW in [0, 1])."""
    return float(np.sqrt(hf_residual_var(x).astype(np.float64).mean())) if len(x) else 0.0


def shift_stats(images: np.ndarray) -> dict:
    """Colour, border and high-frequency statistics of a uint8 NCHW set (see the module docstring)."""
    x = to_float(images)
    ring = ring_mask(x.shape[-1])
    border = x[:, :, ring]  # (N, C, ring pixels)
    centre = x[:, :, centre_mask(x.shape[-1])]
    f64 = np.float64
    return {"channel_mean": x.mean(axis=(0, 2, 3), dtype=f64).tolist(),
            "channel_std": x.std(axis=(0, 2, 3), dtype=f64).tolist(),
            "centre_mean": centre.mean(axis=(0, 2), dtype=f64).tolist(),
            "centre_std": centre.std(axis=(0, 2), dtype=f64).tolist(),
            "border_mean": border.mean(axis=(0, 2), dtype=f64).tolist(),
            "border_std": border.std(axis=(0, 2), dtype=f64).tolist(),
            "hf_energy": hf_energy(x)}


def shift_summary(gen_images: np.ndarray, real_images: np.ndarray) -> dict:
    """Statistics of both sets and ``generated - real`` for each."""
    gen, real = shift_stats(gen_images), shift_stats(real_images)
    diff = {k: (np.asarray(gen[k]) - np.asarray(real[k])).tolist() for k in gen}
    return {"generated": gen, "real": real, "difference": diff, "border_px": BORDER,
            "definition": "[0,1] pixel units; border = outer ring; centre = pixels the background step leaves "
                          "untouched; hf_energy = RMS over images of the std of "
                          "x - box3x3(x) on interior pixels"}
