"""README's KoIn-like layout with train/ alone (no test/): preprocess.py splits train/ itself, stratified by
class with --test_size, and says so in its report."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

import preprocess as script
from kface.utils.errors import KfaceError


def photos(root, counts):
    rng = np.random.default_rng(0)
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / label / f"{i:03d}.png")


def run(*argv):
    script.main(script.parse_args([str(a) for a in argv] + ["--detector", "none", "--resolutions", "16",
                                                              "--num_workers", "0", "--min_face_size", "8"]))


def test_train_folder_alone_is_split_here_stratified(tmp_path):
    import json

    from sklearn.model_selection import train_test_split

    from kface.data import load_image_dataset

    counts = {"0001": 10, "0002": 5, "0003": 15}
    photos(tmp_path / "raw" / "train", counts)
    run("--input_dir", tmp_path / "raw", "--output_dir", tmp_path / "out", "--test_size", 0.2, "--seed", 3)
    report = json.loads((tmp_path / "out" / "preprocess_report.json").read_text())
    assert report["layout"] == "train_only" and report["presplit"] is False
    assert "the input has train/ but no test/; train/ was split here, stratified by class, test_size 0.2 (seed 3)" \
        in (tmp_path / "out" / "preprocess_report.md").read_text()
    ds = load_image_dataset(str(tmp_path / "out"), resolution=16)
    names = ds["train"].features["label"].names
    got = {s: Counter(names[i] for i in ds[s]["label"]) for s in ("train", "test")}
    # sklearn's stratified split of the same labels, in the same (sorted source) order
    labels = [c for c in sorted(counts) for _ in range(counts[c])]
    _, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=3, stratify=labels)
    assert got["test"] == Counter(labels[i] for i in test) == {"0001": 2, "0002": 1, "0003": 3}
    assert got["train"] == {c: n - got["test"][c] for c, n in counts.items()}
    assert all(src.startswith("train/") for s in ("train", "test") for src in ds[s]["source"])


def test_test_folder_alone_is_still_refused(tmp_path):
    photos(tmp_path / "raw" / "test", {"0001": 5, "0002": 5})
    with pytest.raises(KfaceError, match="--input_dir: .* has test/ but not train/"):
        run("--input_dir", tmp_path / "raw", "--output_dir", tmp_path / "out")
