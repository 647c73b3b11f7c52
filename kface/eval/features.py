"""Feature statistics and the Fréchet distance, layered as in clean-fid.

``frechet_distance(mu1, s1, mu2, s2)`` <- ``feature_stats(features)`` <- ``extract(extractor, images)``.
Every feature extractor has one protocol: a callable taking a uint8 NCHW torch tensor and returning a
float ``(N, C)`` tensor (the oracle's penultimate layer, clean-fid's Inception pool features, ...).
"""

import contextlib
import io
import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
from scipy import linalg

from ..utils.errors import InputError

logger = logging.getLogger(__name__)

Extractor = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def extract(extractor: Extractor, images: np.ndarray, *, batch_size: int = 256, device="cpu",
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
        raise InputError(f"features: statistics need at least 2 samples, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):

    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, computed by clean-fid's
    ``cleanfid.fid.frechet_distance``: with few samples per class (covariances of rank < C) the product can be
    singular, and ``eps`` is then added to both diagonals; an imaginary part of the square root beyond
    numerical noise (diagonal ``|imag| > 1e-3``) is an :class:`InputError`, not dropped. Around it, kface checks the
    shapes (an :class:`InputError`, where clean-fid asserts), logs clean-fid's ``print`` and clamps the small
    negatives rounding gives (identical sets) to 0: a distance is >= 0.
    """
    from cleanfid.fid import frechet_distance as cleanfid_frechet_distance

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise InputError(f"mu1, sigma1, mu2, sigma2: feature dimensions differ ({mu1.shape}, {sigma1.shape}, "
                         f"{mu2.shape}, {sigma2.shape})")
    # clean-fid 0.1.35 calls sqrtm(..., disp=False): deprecated in SciPy 1.16, removed in 1.18 (requirements.txt
    # keeps scipy<1.18); it prints (to stdout) when it adds eps, which goes to the log here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as printed:
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # a singular product is what eps is added for
        try:
            fd = float(cleanfid_frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps))
        except ValueError as err:
            if "Imaginary component" not in str(err):  # clean-fid's message for a square root it refuses
                raise
            raise InputError(f"sigma1, sigma2: the covariance product's square root has an imaginary part ({err}): "
                             "the covariances are not valid (NaN or not PSD)") from None
    if printed.getvalue().strip():
        logger.info("clean-fid: %s", printed.getvalue().strip())
    traces = np.trace(sigma1) + np.trace(sigma2)
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
           "feature_dim": int(real.shape[1]) if real.ndim == 2 else 0, "num_real": len(real),
           "num_gen": len(gen)}
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


AUTOCAST_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(mixed_precision: str) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of a ``mixed_precision`` setting (accelerate's names); ``None``: fp32."""
    if mixed_precision not in AUTOCAST_DTYPES:
        raise InputError(f"mixed_precision {mixed_precision!r}: one of {sorted(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[mixed_precision]


@torch.no_grad()
def oracle_outputs(oracle, images: np.ndarray, *, batch_size: int = 256, device="cpu", mixed_precision: str = "no",
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, penultimate features) of a kface Oracle in one pass over uint8 NCHW ``images``.

    The head is applied to the features the pass already computed, so RCA and the oracle Fréchet
    distance cost one forward, not two.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    dtype = autocast_dtype(mixed_precision)
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
