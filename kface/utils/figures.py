"""PNG figures with matplotlib's Agg backend (no display needed), and the one image-grid writer every room uses
(training validation grids, benchmarks' sampler grids)."""

from pathlib import Path

import numpy as np

from .errors import InputError
from .io import atomic_path


def figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # a bare Figure (not pyplot) is not registered globally, so nothing leaks between calls
    return Figure(figsize=(width, height), dpi=100)


def save_figure(fig, path) -> Path:
    """Write ``fig`` as a PNG, every text in it drawn literally: a class name with ``$`` is a name, not mathtext
    (which would fail to parse it, or typeset it as maths)."""
    import matplotlib
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    path = Path(path)
    with atomic_path(path) as tmp, matplotlib.rc_context({"text.parse_math": False}):  # texts made while drawing
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


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
    fig = figure(ncols * cell, nrows * cell * 1.15)
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
    return save_figure(fig, path)
