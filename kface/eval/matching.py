"""Low-level distribution shift between generated and real images, and how much of RCA it explains.

A generator can keep identity and still miss low-level statistics (a grey background, a colour tint, pixel
grain). An oracle that has never seen such shifts may then fail on samples a person sorts correctly, and
raw RCA mixes that fragility with identity loss. This module measures the shift, degrades the *real* test
images toward it one shift at a time (:func:`degradations`: which shift costs the oracle what), and brings
both sets to one low-level state for nuisance-matched RCA (:func:`match_nuisance`: invertible per-region
colour maps on the generated images, the generated grain or blur on the real ones).

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

import logging

import numpy as np
import torch

from .features import autocast_dtype

logger = logging.getLogger(__name__)

BORDER = 2  # px: the ring whose statistics stand for the background
HF_NOISE_GAIN = np.sqrt(8 / 9)  # hf of unit i.i.d. noise (see the module docstring)
# hf differences below 2% are left alone: PNG rounding alone moves hf by about that much
HF_REL_TOLERANCE = 0.02


def to_float(images: np.ndarray) -> np.ndarray:
    # float32: a 64 px test split of a few thousand images is then ~150 MB per degraded copy, not ~300
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def border_mask(size: int, ring: int = BORDER, ramp: float | None = None) -> np.ndarray:
    """``(size, size)`` weights: 1 on the outer ``ring`` px, falling linearly to 0 over ``ramp`` px inward
    (default ``size / 8``), so a background shift has no visible seam."""
    ramp = size / 8 if ramp is None else ramp
    idx = np.arange(size)
    d1 = np.minimum(idx, size - 1 - idx)
    dist = np.minimum(d1[:, None], d1[None, :]).astype(np.float64)  # px from the nearest edge
    return np.clip(1.0 - (dist - (ring - 1)) / max(ramp, 1e-9), 0.0, 1.0)


def _ring(size: int, ring: int = BORDER) -> np.ndarray:
    return border_mask(size, ring, ramp=1e-9) >= 1.0


def centre_mask(size: int, ring: int = BORDER) -> np.ndarray:
    """The pixels :func:`match_border` leaves untouched (``border_mask == 0``), the centre of the crop."""
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
    ring = _ring(x.shape[-1])
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
    on_ring = x[:, :, _ring(x.shape[-1], ring)]
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
    fitted on the centre pixels (see the module docstring) and applied to the whole image."""
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


@torch.no_grad()
def accuracy(predict, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``predict`` (uint8 NCHW tensor -> logits) on numpy images."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = predict(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])))
        correct += int((logits.argmax(1).cpu().numpy() == labels[start:start + batch_size]).sum())
    return correct / max(len(images), 1)


def oracle_predict(oracle, device="cpu", mixed_precision: str = "no"):
    """``uint8 NCHW tensor -> float logits`` on ``device`` under the autocast evaluate.py uses."""
    device = torch.device(device)
    dtype = autocast_dtype(mixed_precision)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return oracle.predict(batch.to(device)).float()

    return predict


def degraded_accuracies(predict, degraded: dict, real_labels: np.ndarray, batch_size: int = 256) -> dict:
    """``{name: {"accuracy", parameters...}}`` over the output of :func:`degradations`."""
    return {name: {"accuracy": accuracy(predict, images, real_labels, batch_size), **params}
            for name, (images, params) in degraded.items()}


def nuisance_diagnostic(predict, real_images: np.ndarray, real_labels: np.ndarray, gen_images: np.ndarray,
                        seed: int = 0, batch_size: int = 256) -> dict:
    """The oracle's accuracy on the real test images degraded to match the generated set, shift by shift."""
    degraded = degradations(real_images, shift_stats(gen_images), seed)
    return {"clean": accuracy(predict, real_images, real_labels, batch_size),
            **degraded_accuracies(predict, degraded, real_labels, batch_size)}


# The nuisance match is refused (no number) when it cannot be done without destroying identity cues:
MAX_CLIP_FRACTION = 0.05  # more generated centre (face) pixels than this clipped by the colour map
MIN_MATCHED_ACCURACY_SHARE = 0.5  # real accuracy after the grain/blur match below this share of the clean one


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
    the accuracy check is :func:`nuisance_matched_rca`'s, as it needs the oracle).
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


def nuisance_matched_rca(accuracy_gen: float, accuracy_real: float, accuracy_gen_matched: float,
                         accuracy_real_matched: float, unmatched: str | None = None) -> dict:
    """RCA between the two nuisance-matched sets (:func:`match_nuisance`), next to plain RCA, and the share of
    the real-to-generated accuracy gap that the matching closes. ``None`` with ``unmatched`` saying why when
    the match destroys identity cues: the given reason, or the real images losing over half their accuracy
    to the grain/blur match (the oracle then cannot tell identities at the generated set's quality at all)."""
    rca = accuracy_gen / accuracy_real if accuracy_real > 0 else None
    if unmatched is None and accuracy_real_matched < MIN_MATCHED_ACCURACY_SHARE * accuracy_real:
        unmatched = (f"giving the real test images the generated set's grain/blur takes the oracle from "
                     f"{accuracy_real:.3f} to {accuracy_real_matched:.3f}: at that image quality it cannot tell "
                     "the identities apart, so a ratio would say nothing about the generator")
    matched = None if unmatched or accuracy_real_matched <= 0 else accuracy_gen_matched / accuracy_real_matched
    gap = accuracy_real - accuracy_gen
    share = 1 - (accuracy_real_matched - accuracy_gen_matched) / gap if gap > 0 and matched is not None else None
    text = (f"After matching low-level statistics (generated: colour and background mapped to the real ones; real: "
            f"given the generated set's grain/blur) the oracle scores {accuracy_gen_matched:.3f} on generated "
            f"(plain {accuracy_gen:.3f}) and {accuracy_real_matched:.3f} on real (plain {accuracy_real:.3f}); ")
    if unmatched:
        text += f"no nuisance-matched RCA: {unmatched}."
    elif share is None:
        text += (f"nuisance-matched RCA {_fmt(matched)} (RCA {_fmt(rca)}); the generated set is not below real, "
                 "so there is no gap to split.")
    else:
        text += (f"the matching closes {share:.0%} of the real-to-generated gap, which low-level nuisance "
                 f"explains; the rest is identity (RCA {_fmt(rca)}, nuisance-matched RCA {_fmt(matched)}).")
    return {"rca": rca, "nuisance_matched_rca": matched, "accuracy_gen_matched": accuracy_gen_matched,
            "accuracy_real_matched": accuracy_real_matched, "nuisance_share_of_gap": share, "unmatched": unmatched,
            "explanation": text}


def _fmt(x) -> str:
    return "undefined" if x is None else f"{x:.3f}"


class ChannelCast(torch.nn.Module):
    """Colour cast and gain: ``x * g_c + o_c`` per channel, with ``g_c ~ U(1 - gain, 1 + gain)`` and
    ``o_c ~ U(-offset, offset)`` (float CHW in [0, 1]); ColorJitter's brightness is one gain for all channels."""

    def __init__(self, gain: float = 0.4, offset: float = 0.2):
        super().__init__()
        self.gain, self.offset = gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-3]
        g = 1 + (torch.rand(c, 1, 1) * 2 - 1) * self.gain
        o = (torch.rand(c, 1, 1) * 2 - 1) * self.offset
        return (x * g + o).clamp(0, 1)


class BorderShift(torch.nn.Module):
    """A background shift: pull the border toward a random colour with :func:`border_mask`'s smooth weights
    (strength ``U(0, strength)``), the kind of grey or tinted background a generator may draw."""

    def __init__(self, strength: float = 0.8):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.from_numpy(border_mask(x.shape[-1])).to(x.dtype) * float(torch.rand(())) * self.strength
        colour = torch.rand(x.shape[-3], 1, 1)
        return (1 - w) * x + w * colour


def robust_augmentations(p: float = 0.3) -> list:
    """torchvision v2 steps (uint8 CHW in and out) that each apply with probability ``p``: Gaussian noise,
    colour cast and gain, colour jitter, blur, greyscale, border shift, JPEG."""
    from torchvision.transforms import v2

    def on_float(*steps):  # GaussianNoise and the custom steps want float images in [0, 1]
        return v2.Compose([v2.ToDtype(torch.float32, scale=True), *steps, v2.ToDtype(torch.uint8, scale=True)])

    noise = v2.RandomChoice([v2.GaussianNoise(sigma=s, clip=True) for s in (0.02, 0.05, 0.1)])
    return [v2.RandomApply([on_float(ChannelCast())], p=p),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05)], p=p),
            v2.RandomGrayscale(p=p),
            v2.RandomApply([on_float(BorderShift())], p=p),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.5))], p=p),
            v2.RandomApply([on_float(noise)], p=p),
            v2.RandomApply([v2.JPEG(quality=(30, 90))], p=p)]
