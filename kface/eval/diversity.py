"""Diversity in the oracle's feature space: mean pairwise feature distance per class, generated against real.

LPIPS diversity needs AlexNet/VGG weights that may not be available offline; the oracle's own penultimate
features are always there (evaluate.py extracts them for the oracle Fréchet distance). A class whose
generated images sit closer together than its real test images (ratio < 1) has lost variety in what the
oracle sees; guidance typically buys identity (RCA) with it.
"""

import numpy as np
from scipy.spatial.distance import pdist


def mean_pairwise_distance(features: np.ndarray) -> float | None:
    """Mean Euclidean distance over all unordered pairs of rows; ``None`` with fewer than 2 rows."""
    features = np.asarray(features, dtype=np.float64)
    return float(pdist(features).mean()) if len(features) >= 2 else None


def feature_diversity(real: np.ndarray, real_labels: np.ndarray, gen: np.ndarray, gen_labels: np.ndarray,
                      class_names: list[str]) -> dict:
    """Per class: mean pairwise distance of the generated and of the real features, and generated / real.

    ``mean`` averages each side over the classes that have a value on both sides, so that it compares the
    same classes (``ratio`` = mean generated / mean real). ``None`` where a side has fewer than 2 images.
    """
    real_labels, gen_labels = np.asarray(real_labels), np.asarray(gen_labels)
    per_class, both = {}, []
    for c, name in enumerate(class_names):
        g = mean_pairwise_distance(gen[gen_labels == c])
        r = mean_pairwise_distance(real[real_labels == c])
        ratio = g / r if g is not None and r else None
        per_class[name] = {"gen": g, "real": r, "ratio": ratio}
        if g is not None and r is not None:
            both.append((g, r))
    mean_gen = float(np.mean([g for g, _ in both])) if both else None
    mean_real = float(np.mean([r for _, r in both])) if both else None
    return {"per_class": per_class, "mean_gen": mean_gen, "mean_real": mean_real,
            "ratio": mean_gen / mean_real if both and mean_real else None,
            "definition": "mean Euclidean distance between the oracle's penultimate features of all pairs of "
                          "images of one class; mean over classes with 2+ images on both sides"}
