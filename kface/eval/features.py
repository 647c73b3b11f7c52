"""Feature statistics and the Fréchet distance, layered as in clean-fid.

``frechet_distance(mu1, s1, mu2, s2)`` <- ``feature_stats(features)`` <- ``extract(extractor, images)``.
Every feature extractor has one protocol: a callable taking a uint8 NCHW torch tensor and returning a
float ``(N, C)`` tensor (the oracle's penultimate layer, clean-fid's Inception pool features, ...).
"""

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import linalg

logger = logging.getLogger(__name__)

Extractor = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract(extractor: Extractor, images: np.ndarray, batch_size: int = 256, device="cpu",
            progress: bool = False) -> np.ndarray:
    """Run ``extractor`` over uint8 NCHW ``images`` in batches; float64 ``(N, C)`` numpy features."""
    from tqdm.auto import tqdm

    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="features", disable=not progress, leave=False):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        out.append(extractor(batch).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, ``ddof=1``) covariance of ``(N, C)`` features, as clean-fid computes them."""
    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2:
        raise ValueError(f"feature statistics need at least 2 samples, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """SciPy's matrix square root, called the same way on every SciPy version.

    clean-fid (and kface until now) call ``sqrtm(..., disp=False)``; ``disp`` is deprecated since SciPy 1.16
    and removed in 1.18, so that call fails there (clean-fid's own ``frechet_distance`` included, which is why
    it is not called here). Without ``disp`` every version returns the matrix alone.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled by the caller
        out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    The steps are clean-fid's (``cleanfid.fid.frechet_distance``): with few samples per class (covariances
    of rank < C) the product can be singular, and ``eps`` is then added to both diagonals; an imaginary
    part of the square root beyond numerical noise (diagonal ``|imag| > 1e-3``) is an error, not dropped.
    A distance is >= 0: the small negatives rounding gives (identical sets) are clamped to 0.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.info("singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(len(sigma1)) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the covariance product's square root has an imaginary part of up to "
                             f"{np.abs(covmean.imag).max():.3g}: the covariances are not valid (NaN or not PSD)")
        covmean = covmean.real
    diff = mu1 - mu2
    traces = np.trace(sigma1) + np.trace(sigma2)
    fd = float(diff @ diff + traces - 2 * np.trace(covmean))
    # identical distributions come out as -1e-12 or so (rounding), or as -2 eps C when eps was added
    if fd < -(1e-6 * max(1.0, traces) + 2 * eps * len(sigma1)):
        logger.warning("Fréchet distance %.3g is clearly negative (covariances not PSD?); reported as 0", fd)
    return max(fd, 0.0)


MIN_FD_SAMPLES = 2  # a covariance (ddof=1) needs 2 samples


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


def per_class_frechet(real: np.ndarray, real_labels: np.ndarray, gen: np.ndarray, gen_labels: np.ndarray,
                      class_names: list[str]) -> dict:
    """Global and per-class Fréchet distance between real and generated features.

    A class with fewer than 2 images on either side has no covariance: its entry is ``None``, and
    ``unavailable`` says why (so does the global one, ``None``, when a whole set has fewer than 2 images).
    """
    per_class, unavailable = {}, {}
    for i, name in enumerate(class_names):
        r, g = real[real_labels == i], gen[gen_labels == i]
        per_class[name] = frechet_distance_features(r, g) if min(len(r), len(g)) >= MIN_FD_SAMPLES else None
        if per_class[name] is None:
            unavailable[name] = _too_few(len(r), len(g))
    out = {"global": None, "per_class": per_class, "unavailable": unavailable,
           "feature_dim": int(real.shape[1]) if real.ndim == 2 else 0, "num_real": int(len(real)),
           "num_gen": int(len(gen))}
    if min(len(real), len(gen)) >= MIN_FD_SAMPLES:
        out["global"] = frechet_distance_features(real, gen)
    else:
        out["global_unavailable"] = _too_few(len(real), len(gen))
        logger.warning("oracle Fréchet distance unavailable: %s", out["global_unavailable"])
    if unavailable:
        logger.warning("per-class oracle Fréchet distance unavailable for %d class(es) (e.g. %s: %s)",
                       len(unavailable), *next(iter(unavailable.items())))
    return out


def _too_few(num_real: int, num_gen: int) -> str:
    return (f"{num_real} real and {num_gen} generated image(s); a covariance needs at least {MIN_FD_SAMPLES} "
            "on each side")


@torch.no_grad()
def oracle_outputs(oracle, images: np.ndarray, batch_size: int = 256, device="cpu", mixed_precision: str = "no",
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, penultimate features) of a kface Oracle in one pass over uint8 NCHW ``images``.

    The head is applied to the features the pass already computed, so RCA and the oracle Fréchet
    distance cost one forward, not two.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    head = oracle.model.get_classifier()
    logits, feats = [], []
    for start in tqdm(range(0, len(images), batch_size), desc="oracle", disable=not progress, leave=False):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            f = oracle.features(batch)
            out = head(f)
        logits.append(out.float().cpu().numpy())
        feats.append(f.float().cpu().numpy())
    if not logits:
        return np.zeros((0, len(oracle.class_names))), np.zeros((0, 0))
    return np.concatenate(logits), np.concatenate(feats).astype(np.float64)
