"""A real labelled image set that ships with scikit-learn, as raw photos for preprocess.py: a check of a recipe
outside the synthetic faces.

scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1,797 scans of 10 digits by 43 writers,
8x8 grey levels 0-16, from the UCI optical recognition set) are written one PNG per image into
``<output_dir>/<digit>/``, the raw-photo layout preprocess.py reads. They are enlarged to 32x32 here (nearest
neighbour) so that preprocess.py's ``--detector none`` path (centre square, Lanczos to ``--resolutions``) takes
them as it takes face crops. Then the README's commands run unchanged, with the demo's flags:

    python benchmarks/digits_photos.py --output_dir digits/raw
    python preprocess.py --input_dir digits/raw --output_dir digits/data --resolutions 32 --detector none
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kface.utils.io import publish_dir, staging_dir  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True, help="New folder for <digit>/<index>.png.")
    p.add_argument("--size", type=int, default=32, help="Side of the written PNGs (nearest-neighbour enlargement).")
    return p.parse_args(argv)


def digit_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size) grey images, 0-16 scaled to 0-255 (ink white on black, as scanned), and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # (N, 8, 8)
    big = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.NEAREST)) for g in grey])
    return big, digits.target


def main(args) -> None:
    out = Path(args.output_dir)
    if out.exists():
        raise SystemExit(f"error: --output_dir {out} exists; choose a new folder")
    images, labels = digit_images(args.size)
    tmp = staging_dir(out)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = tmp / f"{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert("RGB").save(folder / f"{i:04d}.png")
    publish_dir(tmp, out)
    print(f"{len(images)} digits of {len(set(labels.tolist()))} classes in {out}")


if __name__ == "__main__":
    main(parse_args())
