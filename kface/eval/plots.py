"""evaluate.py's figures (confusion matrices, per-class bars), written as PNG files with matplotlib's Agg
backend (kface.utils.figures: no display needed)."""

from pathlib import Path

import numpy as np

from ..utils.figures import figure as _figure
from ..utils.figures import save_figure as _save


def _confusion_axes(ax, counts: np.ndarray, class_names: list[str], title: str, normalise: bool, fontsize: int,
                    ylabel: str = "True class"):
    """One confusion heatmap on ``ax``; returns the image (for a colour bar)."""
    counts = np.asarray(counts)
    n = len(class_names)
    support = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    values = rates if normalise else counts
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(int(counts.max()), 1))
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n <= 30:  # beyond that the numbers are unreadable anyway
        threshold = values.max() / 2 if values.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{rates[i, j]:.2f}\n({counts[i, j]})" if normalise else f"{counts[i, j]}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if values[i, j] > threshold else "black")
    return image


def _size(num_classes: int) -> float:
    return max(4.0, 0.6 * num_classes + 2.0)


def save_confusion_heatmap(counts: np.ndarray, class_names: list[str], path, *, title: str = "Confusion matrix",
                           normalise: bool = True) -> Path:
    """Heatmap of a confusion matrix (rows: true class, columns: predicted), annotated per cell.

    With ``normalise`` the colour is the row-normalised rate and each cell reads ``rate\\n(count)``.
    """
    size = _size(len(class_names))
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = _confusion_axes(ax, counts, class_names, title, normalise, fontsize=7)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def save_confusion_pair(real_counts: np.ndarray, gen_counts: np.ndarray, class_names: list[str], path, *,
                        titles: tuple[str, str] = ("Real (test split)", "Generated")) -> Path:
    """Two row-normalised confusion heatmaps side by side (real left, generated right), cells ``rate (count)``."""
    size = _size(len(class_names))
    fig = _figure(2 * size + 1.5, size)
    for k, (counts, title) in enumerate(zip((real_counts, gen_counts), titles)):
        image = _confusion_axes(fig.add_subplot(1, 2, k + 1), counts, class_names, title, normalise=True, fontsize=6,
                                ylabel="Target class")
    fig.colorbar(image, ax=fig.axes, fraction=0.02, pad=0.02)
    return _save(fig, path)


def save_class_bars(class_names: list[str], values: list, path, *, title: str, ylabel: str,
                    intervals: list | None = None, reference: float | None = None) -> Path:
    """Bar chart of one value per class (``None`` drawn as a gap), optional [lo, hi] error bars and a
    horizontal reference line (e.g. the global value)."""
    vals = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    fig = _figure(max(4.0, 0.5 * len(class_names) + 2.0), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    yerr = None
    if intervals is not None:
        lo = np.array([np.nan if iv is None or iv[0] is None else iv[0] for iv in intervals], dtype=np.float64)
        hi = np.array([np.nan if iv is None or iv[1] is None else iv[1] for iv in intervals], dtype=np.float64)
        yerr = np.nan_to_num(np.stack([vals - lo, hi - vals]).clip(min=0))
    ax.bar(range(len(class_names)), np.nan_to_num(vals), yerr=yerr, capsize=3, color="tab:blue")
    if reference is not None:
        ax.axhline(reference, color="tab:red", linestyle="--", linewidth=1, label=f"global {reference:.3f}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(class_names)), labels=class_names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def save_closest_pairs(gen_images: np.ndarray, train_images: np.ndarray, pairs: list[dict], path, *,
                       per_row: int = 4) -> Path:
    """The generated images nearest a training image (``pairs`` from kface.eval.fidelity.memorisation), each
    followed by that training image: ``generated | nearest train`` pairs, ``per_row`` pairs a row."""
    from ..utils.figures import save_image_grid

    images, titles = [], []
    for p in pairs:
        images += [gen_images[p["generated"]], train_images[p["train"]]]
        titles += [f"gen {p['class']}" + (" COPY" if p["copy"] else ""), f"train d={p['pixels']:.3f}"]
    return save_image_grid(np.stack(images), path, ncols=2 * per_row, titles=titles)

