"""What evaluate.py checks before it compares a generated set with real images: the class names of every source
agree (ids index them), the sampled classes are the oracle's, and the images have the real images' resolution."""

import logging

import numpy as np

from ..data.datasets import ImageSet
from ..utils.errors import InputError

logger = logging.getLogger(__name__)


def check_class_names(named: dict[str, list[str]]) -> list[str]:
    """All sources (e.g. ``{"--oracle": [...], "--samples": [...], "--dataset": [...]}``, keyed by the label that
    names each in messages) must list the same
    classes in the same order (class ids index them); otherwise one line naming the differing classes."""
    items = list(named.items())
    ref_label, ref = items[0]
    for label, names in items[1:]:
        if names == ref:
            continue
        only_ref = [n for n in ref if n not in names]
        only_other = [n for n in names if n not in ref]
        if only_ref or only_other:
            detail = f"only in {ref_label}: {only_ref}; only in {label}: {only_other}"
        else:
            moved = [f"{n} (id {ref.index(n)} vs {i})" for i, n in enumerate(names) if ref.index(n) != i]
            detail = f"same classes, different ids: {moved}"
        raise InputError(f"class names differ between {ref_label} ({len(ref)} classes) and {label} ({len(names)}): "
                         f"{detail}; evaluate with the oracle and dataset the generator was trained for")
    return list(ref)


def check_sampled_classes(names: list[str], gen: ImageSet, *, ref_label: str = "the oracle",
                          label: str = "the samples") -> list[int]:
    """Each sampled class (id, name) must be class ``id`` of the oracle/dataset; a subset (sample.py
    ``--classes``) is allowed. Returns the sampled ids. The labels name the two sources in messages (evaluate.py
    passes its flags)."""
    if gen.class_ids == list(range(len(names))):
        check_class_names({ref_label: names, label: gen.class_names})
        return gen.class_ids
    differ = [f"id {i} is {names[i]!r} in {ref_label} but {n!r} in {label}" if i < len(names)
              else f"id {i} ({n!r}) is beyond {ref_label}'s {len(names)} classes"
              for i, n in zip(gen.class_ids, gen.class_names) if i >= len(names) or names[i] != n]
    if differ:
        raise InputError(f"class names differ between {ref_label} and {label}: {'; '.join(differ)}; "
                         "evaluate with the oracle and dataset the generator was trained for")
    logger.warning("%s covers %d of the %d classes: Accuracy_real is measured on the same classes",
                   label, len(gen.class_ids), len(names))
    return gen.class_ids


def match_resolution(images: np.ndarray, size: int, what: str) -> np.ndarray:
    """Resize uint8 NCHW images to ``size`` (antialiased bilinear), with a warning; a no-op if they match."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch

    logger.warning("%s are %dx%d px but the real images are %d px: resizing them (antialiased bilinear)",
                   what, images.shape[-2], images.shape[-1], size)
    x = torch.from_numpy(images).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()
