"""Figures written as PNG files with matplotlib's Agg backend (no display needed)."""

from pathlib import Path

import numpy as np

from ..utils.errors import InputError
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


GRID_PADDING, GRID_PAD_VALUE = 2, 255  # as sample.py's grids/ (kface.samples.write_grids)


def save_image_grid(images: np.ndarray, path, *, ncols: int = 8, titles: list[str] | None = None) -> Path:
    """Grid of uint8 images (NHWC or NCHW, 1 or 3 channels), ``ncols`` a row, tiled by torchvision's ``make_grid``.

    Without ``titles`` the PNG is the tiling itself, pixel for pixel (torchvision's ``save_image``). With
    ``titles`` (one per image, ``""`` for none) each row of the tiling is drawn in its own matplotlib axes, so
    that the titles sit above their images without covering the row above.
    """
    import torch
    from torchvision.utils import make_grid, save_image

    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"images: a 4-D batch is needed, got shape {images.shape}")
    # ambiguous shapes (C == H == 3) read as NHWC, as before torchvision did the tiling
    nchw = images if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3) else images.transpose(0, 3, 1, 2)
    batch = torch.from_numpy(np.ascontiguousarray(nchw))
    n, ncols = len(batch), max(1, min(ncols, len(batch)))
    if not titles:
        grid = make_grid(batch, nrow=ncols, padding=GRID_PADDING, pad_value=GRID_PAD_VALUE)
        path = Path(path)
        with atomic_path(path) as tmp:
            save_image(grid.float() / 255, tmp, format="png")  # save_image maps [0, 1] back to 0..255 exactly
        return path
    nrows = -(-n // ncols)
    blank = torch.full((nrows * ncols - n, *batch.shape[1:]), GRID_PAD_VALUE, dtype=batch.dtype)
    rows = torch.cat([batch, blank]).split(ncols)  # a short last row stays left-aligned
    cell = 1.2
    fig = _figure(ncols * cell, nrows * cell * 1.15)
    height, width = batch.shape[-2:]
    for r, row in enumerate(rows):
        ax = fig.add_subplot(nrows, 1, r + 1)
        ax.axis("off")
        ax.imshow(make_grid(row, nrow=ncols, padding=GRID_PADDING, pad_value=GRID_PAD_VALUE).permute(1, 2, 0).numpy(),
                  interpolation="nearest")
        for c, title in enumerate(titles[r * ncols:(r + 1) * ncols]):
            if title:
                ax.text(GRID_PADDING + c * (width + GRID_PADDING) + width / 2, 0, str(title), fontsize=7,
                        ha="center", va="bottom", clip_on=False)
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
