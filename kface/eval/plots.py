"""Figures written as PNG files with matplotlib's Agg backend (no display needed)."""

from pathlib import Path

import numpy as np

from ..utils.io import atomic_path


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # a bare Figure (not pyplot) is not registered globally, so nothing leaks between calls
    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def save_confusion_heatmap(counts: np.ndarray, class_names: list[str], path, title: str = "Confusion matrix",
                           normalise: bool = True) -> Path:
    """Heatmap of a confusion matrix (rows: true class, columns: predicted), annotated per cell.

    With ``normalise`` the colour is the row-normalised rate and each cell reads ``rate\\n(count)``.
    """
    counts = np.asarray(counts)
    n = len(class_names)
    support = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    values = rates if normalise else counts
    size = max(4.0, 0.6 * n + 2.0)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(int(counts.max()), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    if n <= 30:  # beyond that the numbers are unreadable anyway
        threshold = values.max() / 2 if values.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{rates[i, j]:.2f}\n({counts[i, j]})" if normalise else f"{counts[i, j]}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if values[i, j] > threshold else "black")
    return _save(fig, path)


def save_image_grid(images: np.ndarray, path, ncols: int = 8, titles: list[str] | None = None,
                    scale: float = 1.0) -> Path:
    """Grid of uint8 images (NHWC or NCHW, 1 or 3 channels), optionally titled one by one."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"save_image_grid expects a 4-D batch of images, got shape {images.shape}")
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    cell = 1.2 * scale
    fig = _figure(ncols * cell, nrows * cell * (1.15 if titles else 1.0))
    for k in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.axis("off")
        if k < n:
            img = images[k]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")
            if titles:
                ax.set_title(str(titles[k]), fontsize=7)
    return _save(fig, path)


def save_confusion_pair(real_counts: np.ndarray, gen_counts: np.ndarray, class_names: list[str], path,
                        titles: tuple[str, str] = ("Real (test split)", "Generated")) -> Path:
    """Two row-normalised confusion heatmaps side by side (real left, generated right), cells ``rate (count)``."""
    n = len(class_names)
    size = max(4.0, 0.6 * n + 2.0)
    fig = _figure(2 * size + 1.5, size)
    for k, (counts, title) in enumerate(zip((real_counts, gen_counts), titles)):
        counts = np.asarray(counts)
        support = counts.sum(axis=1, keepdims=True)
        rates = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
        ax = fig.add_subplot(1, 2, k + 1)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), labels=class_names)
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("Target class")
        ax.set_title(title)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{rates[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=6,
                            color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=fig.axes, fraction=0.02, pad=0.02)
    return _save(fig, path)


def save_class_bars(class_names: list[str], values: list, path, title: str, ylabel: str,
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
