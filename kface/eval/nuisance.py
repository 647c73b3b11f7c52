"""How much of RCA low-level distribution shift explains: the oracle on degraded real images, and
nuisance-matched RCA.

An oracle that has never seen a generator's low-level shifts (a grey background, a colour tint, pixel grain)
may fail on samples a person sorts correctly, and raw RCA mixes that fragility with identity loss. This
module scores the oracle on the real test images degraded toward the generated set one shift at a time
(:func:`nuisance_diagnostic`), and turns the accuracies on the two nuisance-matched sets
(:func:`kface.eval.matching.match_nuisance`) into nuisance-matched RCA (:func:`nuisance_matched_rca`).
"""

import numpy as np
import torch

from .features import autocast_dtype
from .matching import degradations
from .shift import shift_stats


@torch.no_grad()
def predicted_labels(predict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Top-1 labels of ``predict`` (uint8 NCHW tensor -> logits) on numpy images."""
    out = [predict(torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))).argmax(1).cpu().numpy()
           for start in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(predict, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``predict`` (uint8 NCHW tensor -> logits) on numpy images."""
    return float((predicted_labels(predict, images, batch_size) == labels).sum()) / max(len(images), 1)


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
MIN_MATCHED_ACCURACY_SHARE = 0.5  # real accuracy after the grain/blur match below this share of the clean one


def nuisance_matched_rca(accuracy_gen: float, accuracy_real: float, accuracy_gen_matched: float,
                         accuracy_real_matched: float, unmatched: str | None = None) -> dict:
    """RCA between the two nuisance-matched sets (:func:`kface.eval.matching.match_nuisance`), next to plain
    RCA, and the share of the real-to-generated accuracy gap that the matching closes. ``None`` with
    ``unmatched`` saying why when the match destroys identity cues: the given reason, or the real images losing
    over half their accuracy to the grain/blur match (the oracle then cannot tell identities at the generated
    set's quality at all)."""
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
