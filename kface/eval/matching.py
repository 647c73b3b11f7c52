"""Degradations and the nuisance match: bring real and generated images to one low-level state.

This module degrades the *real* test images toward the generated set's statistics
(:func:`kface.eval.shift.shift_stats`) one shift at a time (:func:`degradations`: which shift costs the oracle
what), and brings both sets to one low-level state for nuisance-matched RCA (:func:`match_nuisance`:
invertible per-region colour maps on the generated images, the generated grain or blur on the real ones).
Images are uint8 NCHW at the API and float NCHW in [0, 1] inside; hf is :func:`kface.eval.shift.hf_energy`.
"""

import numpy as np
import torch

from ..utils.masks import BORDER, border_mask
from .shift import centre_mask, hf_energy, ring_mask, shift_summary, to_float, to_uint8

HF_NOISE_GAIN = np.sqrt(8 / 9)  # hf of unit i.i.d. noise (see kface.eval.shift's docstring)
# hf differences below 2% are left alone: PNG rounding alone moves hf by about that much
HF_REL_TOLERANCE = 0.02


def colour_map(x: np.ndarray, target_mean, target_std, region: np.ndarray | None = None) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
    """Per-channel ``(gain, offset)`` with ``gain * x + offset`` having the target set mean and std, over the
    pixels of ``region`` (an ``(H, W)`` bool mask; default all)."""
    pixels = x.reshape(*x.shape[:2], -1) if region is None else x[:, :, region]
    mean, std = pixels.mean(axis=(0, 2), dtype=np.float64), pixels.std(axis=(0, 2), dtype=np.float64)
    gain = np.asarray(target_std, dtype=np.float64) / np.maximum(std, 1e-8)
    return gain, np.asarray(target_mean, dtype=np.float64) - gain * mean


def match_colour(x: np.ndarray, target_mean, target_std, region: np.ndarray | None = None) -> np.ndarray:
    """Per-channel affine map of all of float NCHW ``x`` so that each channel's set mean/std over ``region``
    (default: all pixels) equal the targets (no clip)."""
    gain, offset = colour_map(x, target_mean, target_std, region)
    return (x * gain[None, :, None, None] + offset[None, :, None, None]).astype(x.dtype)


def match_border(x: np.ndarray, target_mean, target_std, ring: int = BORDER) -> np.ndarray:
    """Blend a per-channel affine map of the border in with :func:`border_mask`: on the ring the statistics
    equal the targets (before clipping); the centre is untouched."""
    on_ring = x[:, :, ring_mask(x.shape[-1], ring)]
    mean, std = on_ring.mean(axis=(0, 2)), on_ring.std(axis=(0, 2))
    gain = np.asarray(target_std) / np.maximum(std, 1e-8)
    mapped = (x - mean[None, :, None, None]) * gain[None, :, None, None] + np.asarray(target_mean)[None, :, None, None]
    w = border_mask(x.shape[-1], ring)[None, None]
    return ((1 - w) * x + w * mapped).astype(x.dtype)


def _trim(x: np.ndarray, trim: int) -> np.ndarray:
    return x[..., trim:x.shape[-2] - trim, trim:x.shape[-1] - trim] if trim else x


def add_noise_to_match(x: np.ndarray, target_hf: float, seed: int = 0, refine: int = 3,
                       trim: int = 0) -> tuple[np.ndarray, float]:
    """Add Gaussian noise so ``hf_energy`` (after clipping to [0, 1]) reaches ``target_hf``, measured on ``x``
    without its outer ``trim`` px.

    Independent noise adds in squares: ``sigma = sqrt((target^2 - hf^2)) / sqrt(8/9)``. Clipping removes some
    of it, so ``refine`` fixed-point steps rescale sigma by the measured shortfall (same noise draw)."""
    def measure(a):
        return hf_energy(_trim(a, trim))

    base = measure(x)
    if target_hf <= base:
        return x, 0.0
    sigma = np.sqrt(target_hf ** 2 - base ** 2) / HF_NOISE_GAIN
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=np.float32)
    out = np.clip(x + sigma * noise, 0, 1)
    for _ in range(refine):
        got = measure(out)
        if got <= base or abs(got - target_hf) < 1e-4:
            break
        sigma *= np.sqrt((target_hf ** 2 - base ** 2) / (got ** 2 - base ** 2))
        out = np.clip(x + sigma * noise, 0, 1)
    return out, float(sigma)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from torchvision.transforms.v2 import functional as F

    size = 2 * int(np.ceil(3 * sigma)) + 1
    return F.gaussian_blur(torch.from_numpy(x), [size, size], [sigma, sigma]).numpy()


def blur_to_match(x: np.ndarray, target_hf: float, steps: int = 14, trim: int = 0) -> tuple[np.ndarray, float]:
    """Gaussian blur with sigma found by bisection in [0.05, 5] px so ``hf_energy`` (without the outer ``trim``
    px) meets ``target_hf`` (hf falls monotonically with sigma)."""
    def measure(a):
        return hf_energy(_trim(a, trim))

    if target_hf >= measure(x):
        return x, 0.0
    lo, hi = 0.05, 5.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if measure(gaussian_blur(x, mid)) > target_hf else (lo, mid)
    sigma = (lo + hi) / 2
    return gaussian_blur(x, sigma), float(sigma)


def match_high_frequency(x: np.ndarray, target_hf: float, seed: int = 0, trim: int = 0) -> tuple[np.ndarray, dict]:
    """Noise if the target is grainier than ``x``, blur if it is smoother (the sign of the hf difference);
    nothing within ``HF_REL_TOLERANCE``. hf is measured without the outer ``trim`` px."""
    base = hf_energy(_trim(x, trim))
    if abs(target_hf - base) <= HF_REL_TOLERANCE * base:
        return x, {"kind": "none", "sigma": 0.0}
    if target_hf > base:
        out, sigma = add_noise_to_match(x, target_hf, seed, trim=trim)
        return out, {"kind": "noise", "sigma": sigma}
    out, sigma = blur_to_match(x, target_hf, trim=trim)
    return out, {"kind": "blur" if sigma > 0 else "none", "sigma": sigma}


def degradations(real_images: np.ndarray, target: dict, seed: int = 0) -> dict:
    """uint8 real images degraded toward ``target`` (a :func:`shift_stats` dict): each shift alone, then all.

    Returns ``{name: (uint8 images, parameters)}`` for colour, high_frequency, background and all. "all"
    applies colour, then background, then the high-frequency match measured on that result. The colour map is
    fitted on the centre pixels (see kface.eval.shift's docstring) and applied to the whole image."""
    x = to_float(real_images)
    out = {}
    centre = centre_mask(x.shape[-1])
    gain, offset = colour_map(x, target["centre_mean"], target["centre_std"], centre)
    colour = match_colour(x, target["centre_mean"], target["centre_std"], centre)
    out["colour"] = (to_uint8(colour), {"gain": gain.tolist(), "offset": offset.tolist(), "fitted_on": "centre"})
    hf, hf_params = match_high_frequency(x, target["hf_energy"], seed)
    out["high_frequency"] = (to_uint8(hf), hf_params)
    out["background"] = (to_uint8(match_border(x, target["border_mean"], target["border_std"])), {"ring_px": BORDER})
    both = np.clip(match_border(np.clip(colour, 0, 1), target["border_mean"], target["border_std"]), 0, 1)
    both, all_params = match_high_frequency(both, target["hf_energy"], seed)
    out["all"] = (to_uint8(both), {"high_frequency": all_params})
    return out


# The nuisance match is refused (no number) when it cannot be done without destroying identity cues:
MAX_CLIP_FRACTION = 0.05  # more generated centre (face) pixels than this clipped by the colour map


def low_pass(x: np.ndarray) -> np.ndarray:
    """3x3 box filter of float NCHW (edges replicated): i.i.d. grain keeps 1/9 of its variance, so moments fitted
    on it are those of the image content, not of the grain (a 0.05 grain would inflate a 0.2 std fit by 3%)."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(x, size=(1, 1, 3, 3), mode="nearest")


def distance_bands(size: int, ring: int = BORDER) -> np.ndarray:
    """``(size, size)`` band index: the distance in px from the nearest edge, up to the first distance where
    :func:`border_mask` is 0; every pixel from there inward (the centre, the face) is that last band."""
    idx = np.arange(size)
    d1 = np.minimum(idx, size - 1 - idx)
    dist = np.minimum(d1[:, None], d1[None, :])
    inner = int(np.argmax(border_mask(size, ring)[:, size // 2] == 0.0))
    return np.minimum(dist, inner)


MAX_BAND_GAIN = 5.0  # a generated band with almost no spread (one flat background colour) is not stretched further


def region_colour_map(gen: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band (:func:`distance_bands`) and channel, the affine map ``gain * x + offset`` that gives the
    generated band the real band's mean and std, fitted on pixels low-passed by a 3x3 mean over the band's own
    pixels (grain keeps ~1/3 of its variance along a ring, 1/9 in the centre: see :func:`low_pass`).

    One map per distance from the edge, because a generator's shift varies across the crop: a washed-out
    background fades into the face over a few pixels. One set-level map for the whole image (the old colour
    step) moved dark hair with the light background; one map for the ring blended inward over-corrected the
    pixels in between. Returns ``(bands, channels)`` gains and offsets."""
    from scipy.ndimage import uniform_filter

    bands = distance_bands(gen.shape[-1])
    gains, offsets = [], []
    for b in range(bands.max() + 1):
        region = bands == b
        # the 3x3 mean over the band's own pixels: a window across two bands would mix two different shifts
        weight = uniform_filter(region.astype(np.float32), size=3, mode="constant")[region]
        g, r = ((uniform_filter(x * region, size=(1, 1, 3, 3), mode="constant")[:, :, region] / weight)
                for x in (gen, real))
        g_mean, g_std = g.mean(axis=(0, 2), dtype=np.float64), g.std(axis=(0, 2), dtype=np.float64)
        r_mean, r_std = r.mean(axis=(0, 2), dtype=np.float64), r.std(axis=(0, 2), dtype=np.float64)
        gain = np.minimum(r_std / np.maximum(g_std, 1e-8), MAX_BAND_GAIN)
        gains.append(gain)
        offsets.append(r_mean - gain * g_mean)
    return np.array(gains), np.array(offsets)


def band_hf(x: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """Per band, the RMS over images of the std of ``x - box3x3(x)`` (edges replicated) over the band's pixels:
    :func:`hf_energy` region by region."""
    from scipy.ndimage import uniform_filter

    r = x - uniform_filter(x, size=(1, 1, 3, 3), mode="nearest")
    return np.array([np.sqrt(r[:, :, bands == b].reshape(len(x), -1).var(axis=1, dtype=np.float64).mean())
                     for b in range(bands.max() + 1)])


def match_band_grain(real: np.ndarray, target: np.ndarray, bands: np.ndarray, seed: int = 0,
                     refine: int = 3) -> tuple[np.ndarray, list[float]]:
    """Add noise to the background bands of ``real`` (all but the last, the centre) where ``target`` is
    grainier, band by band, so that their :func:`band_hf` agree; ``refine`` fixed-point steps for clipping,
    as in :func:`add_noise_to_match`. Returns the images and the noise std per band."""
    base, goal = band_hf(real, bands), band_hf(target, bands)
    sigma = np.where(goal > base * (1 + HF_REL_TOLERANCE), np.sqrt(np.maximum(goal ** 2 - base ** 2, 0)), 0.0)
    sigma[-1] = 0.0
    sigma /= HF_NOISE_GAIN
    if not sigma.any():
        return real, sigma.tolist()
    noise = np.random.default_rng(seed).standard_normal(real.shape, dtype=np.float32)
    out = real
    for _ in range(refine + 1):
        out = np.clip(real + sigma[bands].astype(np.float32) * noise, 0, 1)
        got = band_hf(out, bands)
        grow = (sigma > 0) & (got > base)
        sigma[grow] *= np.sqrt((goal[grow] ** 2 - base[grow] ** 2) / (got[grow] ** 2 - base[grow] ** 2))
    return np.clip(real + sigma[bands].astype(np.float32) * noise, 0, 1), sigma.tolist()


def match_nuisance(gen_images: np.ndarray, real_images: np.ndarray, seed: int = 0) -> dict:
    """Bring both sets to one low-level state without taking from either what the other still has.

    - The generated images get the invertible maps: :func:`region_colour_map`, a per-channel affine map for
      each distance from the edge (the centre, the face, is one region), to the real set's mean/std there.
      An affine map loses nothing (up to clipping), so identity cues survive.
    - The real images get the lossy ones: grain (noise) or blur up to the generated set's high-frequency
      energy, measured after the maps. Grain cannot be taken out of a generated image, nor detail put back;
      giving the real images the same loss asks whether the oracle still knows them at that quality.

    Returns ``{"generated", "real"}`` uint8 images, the parameters, the residual shift between the two matched
    sets, and ``unmatched``: ``None``, or why the match would destroy identity cues (then no ratio is given;
    the accuracy check is :func:`kface.eval.nuisance.nuisance_matched_rca`'s, as it needs the oracle).
    """
    g, r = to_float(gen_images), to_float(real_images)
    bands = distance_bands(g.shape[-1])
    centre = bands == bands.max()
    gains, offsets = region_colour_map(g, r)
    mapped = (g * gains[bands].transpose(2, 0, 1)[None] + offsets[bands].transpose(2, 0, 1)[None]).astype(np.float32)
    # judged on the low-passed centre: grain that crosses 0 or 1 is not content the map erases, and the
    # background holds no identity cues
    smooth = low_pass(mapped)[:, :, centre]
    clipped = float(((smooth < -0.5 / 255) | (smooth > 1 + 0.5 / 255)).mean())
    mapped = np.clip(mapped, 0, 1)
    # grain measured on the face (the centre and a 1-px halo for the 3x3 residual) first: noise or blur for
    # the whole image; then more noise where a background band of the mapped generated images is still
    # grainier (a compressed background's grain, stretched back by its band map)
    trim = int(bands.max()) - 1
    real_matched, hf_params = match_high_frequency(r, hf_energy(_trim(mapped, trim)), seed, trim=trim)
    real_matched, band_sigma = match_band_grain(real_matched, mapped, bands, seed + 1)
    hf_params = dict(hf_params, background_band_sigma=band_sigma)
    gen_u8, real_u8 = to_uint8(mapped), to_uint8(real_matched)
    residual = shift_summary(gen_u8, real_u8)["difference"]
    unmatched = None
    if clipped > MAX_CLIP_FRACTION:
        unmatched = (f"the colour map clips {clipped:.1%} of the generated face (centre) pixels (gain "
                     f"{', '.join(f'{v:.2f}' for v in gains[-1])}): matching would erase what they show")
    return {"generated": gen_u8, "real": real_u8, "unmatched": unmatched,
            "params": {"colour_gain": gains[-1].tolist(), "colour_offset": offsets[-1].tolist(),
                       "band_gains": gains.tolist(), "band_offsets": offsets.tolist(),
                       "bands": "distance from the edge in px, 0 .. N-1; the last band is the centre",
                       "fitted_on": "3x3 low-passed pixels", "clipped_fraction": clipped,
                       "real_high_frequency": hf_params},
            "residual_shift": {k: residual[k] for k in ("centre_mean", "centre_std", "border_mean", "border_std",
                                                        "hf_energy")}}
