"""Train/test: the input's own split or a stratified one, every class in both; and train/test leakage (the same
photo, or a near-identical crop, on both sides)."""

import logging
import math
from collections import Counter, defaultdict

import numpy as np

from ...utils.errors import InputError

logger = logging.getLogger(__name__)


def stratified_split(labels, test_size: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, test) of a stratified split: sklearn's ``train_test_split(stratify=labels)``, sorted."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=list(labels))
    return sorted(train.tolist()), sorted(test.tolist())


def min_images_per_class(test_size: float) -> int:
    """Fewest photos a class needs so that the stratified split gives it >= 1 test and >= 1 train photo."""
    return max(2, math.ceil(1.0 / min(test_size, 1.0 - test_size) - 1e-9))


def usable_classes(kept: list[dict], class_files: dict) -> tuple[list[str], dict]:
    """Sorted class names that kept a photo, and the dropped ones with why; < 2 classes is an error."""
    counts = Counter(r["label"] for r in kept)
    dropped = {c: ("empty folder" if n == 0 else f"none of its {n} file(s) usable")
               for c, n in class_files.items() if counts[c] == 0}
    for c, why in dropped.items():
        logger.warning("class %r is left out: %s", c, why)
    names = sorted(counts)
    if len(names) < 2:
        raise InputError(f"only {len(names)} class(es) {names} have usable photos (dropped: {dropped}); "
                         "a classifier needs at least 2: add photos, or check detector and min_confidence")
    return names, dropped


def assign_splits(kept: list[dict], *, presplit: bool, test_size: float, seed: int) -> dict:
    """``{"train": rows, "test": rows}``; an existing split is kept, otherwise a stratified one is made."""
    rows = sorted(kept, key=lambda r: r["source"])  # the split depends on the photos, not on the scan order
    if presplit:
        out = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}
        check_split(out, hint="the existing train/test folders")
        return out
    need = min_images_per_class(test_size)
    for label, n in sorted(Counter(r["label"] for r in rows).items()):
        if n < need:
            raise InputError(f"class {label!r} has only {n} usable photo(s); test_size={test_size} needs at least "
                             f"{need} per class for one test and one train photo; add photos or change test_size")
    train, test = stratified_split([r["label"] for r in rows], test_size=test_size, seed=seed)
    out = {"train": [{**rows[i], "split": "train"} for i in train],
           "test": [{**rows[i], "split": "test"} for i in test]}
    check_split(out, hint="test_size")
    return out


def check_split(splits: dict, hint: str) -> None:
    """Every class has train and test photos; ``hint`` says what to check when one does not."""
    train, test = (Counter(r["label"] for r in splits[s]) for s in ("train", "test"))
    for label in sorted(set(train) | set(test)):
        if not train[label] or not test[label]:
            raise InputError(f"class {label!r} has {train[label]} train and {test[label]} test photos after "
                             f"filtering; every class needs both (check {hint}, or add photos)")


# ---------------------------------------------------------------- leakage


def find_duplicates(train: list[dict], test: list[dict], threshold: int) -> dict:
    """Train/test pairs that are the same file (sha1) or near-identical crops (phash Hamming <= threshold)."""
    exact, near = [], []
    by_sha = defaultdict(list)
    for r in train:
        by_sha[r["sha1"]].append(r["source"])
    for r in test:
        exact += [{"train": s, "test": r["source"]} for s in by_sha.get(r["sha1"], [])]
    if train and test:
        a = np.array([int(r["phash"], 16) for r in train], dtype=np.uint64)
        for j, r in enumerate(test):
            dist = np.bitwise_count(a ^ np.uint64(int(r["phash"], 16)))
            for i in np.flatnonzero(dist <= threshold):
                if train[i]["sha1"] != r["sha1"]:
                    near.append({"train": train[i]["source"], "test": r["source"], "distance": int(dist[i])})
    return {"threshold": threshold, "num_exact": len(exact), "num_near": len(near), "exact_pairs": exact,
            "near_pairs": near}


def drop_test_duplicates(splits: dict, duplicates: dict) -> list[dict]:
    """Remove test photos that appear in a duplicate pair; returns them with reason ``duplicate_of_train``."""
    leaked = {p["test"] for p in duplicates["exact_pairs"] + duplicates["near_pairs"]}
    removed = [{**r, "reason": "duplicate_of_train"} for r in splits["test"] if r["source"] in leaked]
    splits["test"] = [r for r in splits["test"] if r["source"] not in leaked]
    return removed
