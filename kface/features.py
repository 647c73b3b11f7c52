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


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    With few samples per class (covariances of rank < C) the product can be singular; as in clean-fid,
    ``eps`` is then added to both diagonals.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are handled just below
        covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():
        logger.info("singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # numerical noise gives a tiny imaginary part
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_features(features1: np.ndarray, features2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


def per_class_frechet(real: np.ndarray, real_labels: np.ndarray, gen: np.ndarray, gen_labels: np.ndarray,
                      class_names: list[str]) -> dict:
    """Global and per-class Fréchet distance between real and generated features.

    A class with fewer than 2 images on either side has no covariance: its entry is ``None``.
    """
    per_class = {}
    for i, name in enumerate(class_names):
        r, g = real[real_labels == i], gen[gen_labels == i]
        per_class[name] = frechet_distance_features(r, g) if min(len(r), len(g)) >= 2 else None
    return {"global": frechet_distance_features(real, gen), "per_class": per_class,
            "feature_dim": int(real.shape[1]), "num_real": int(len(real)), "num_gen": int(len(gen))}


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
