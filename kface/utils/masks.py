"""Regions of a centred face crop, shared by the data room's augmentations (kface.data.augment.BorderShift)
and the eval room's shift statistics (kface.eval.shift): both must mean the same background ring."""

import numpy as np

BORDER = 2  # px: the ring whose statistics stand for the background


def border_mask(size: int, ring: int = BORDER, ramp: float | None = None) -> np.ndarray:
    """``(size, size)`` weights: 1 on the outer ``ring`` px, falling linearly to 0 over ``ramp`` px inward
    (default ``size / 8``), so a background shift has no visible seam."""
    ramp = size / 8 if ramp is None else ramp
    idx = np.arange(size)
    d1 = np.minimum(idx, size - 1 - idx)
    dist = np.minimum(d1[:, None], d1[None, :]).astype(np.float64)  # px from the nearest edge
    return np.clip(1.0 - (dist - (ring - 1)) / max(ramp, 1e-9), 0.0, 1.0)
