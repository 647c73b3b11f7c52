"""Reading generated samples (a sample.py folder, or a saved Dataset) and real images as uint8 arrays,
and checking that oracle, samples and dataset agree on the classes.

Samples folder contract (sample.py writes it): ``samples.json`` plus ``<folder>/<seed:06d>.png`` per class,
where ``classes[i] = {"id", "name", "folder", "seeds": [first, last], "count"}`` and ``complete`` is true.
"""

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .utils.errors import KfaceError

logger = logging.getLogger(__name__)

SAMPLES_JSON = "samples.json"
# The samples folder's own sub-folders (kface.sampling.GRIDS, DATASET): a class so named has "@<id>" appended
RESERVED_FOLDERS = frozenset({"grids", "dataset"})


@dataclass
class ImageSet:
    """uint8 NCHW images with their (conditioning or true) class ids."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: dict = field(default_factory=dict)
    fingerprint: str = ""
    class_ids: list[int] | None = None  # the ids that class_names name (sample.py --classes: a subset)

    def __post_init__(self):
        if self.class_ids is None:
            self.class_ids = list(range(len(self.class_names)))


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:  # a stray file, or a PNG cut short by a crash
        raise KfaceError(f"--samples {path}: not a readable image ({err}); delete it and rerun the same "
                         "sample.py command to regenerate it") from None


def _stack(arrays: list[np.ndarray], flag: str, where: str) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise KfaceError(f"{flag} {where}: images of different sizes {sorted(shapes)}; all must share one size")
    return np.stack(arrays) if arrays else np.zeros((0, 3, 1, 1), dtype=np.uint8)


def _folder_files(root: Path, meta: dict, flag: str) -> tuple[list[Path], list[int], list[dict]]:
    classes = sorted(meta.get("classes", []), key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in classes]
    if not classes or len(set(ids)) != len(ids) or min(ids) < 0:
        raise KfaceError(f"{flag} {root}: samples.json 'classes' must list each class id (>= 0) once")
    check_manifest_folders(root, classes, flag)
    files, labels = [], []
    for c in classes:
        first, last = (int(s) for s in c["seeds"])
        expected = [root / c["folder"] / f"{seed:06d}.png" for seed in range(first, last + 1)]
        missing = [p.name for p in expected if not p.is_file()]
        if missing or len(expected) != int(c["count"]):
            raise KfaceError(f"{flag} {root}: class '{c['name']}' lacks {len(missing)} of {len(expected)} images "
                             f"(e.g. {c['folder']}/{missing[0] if missing else '?'}); rerun sample.py to finish it")
        files += expected
        labels += [int(c["id"])] * len(expected)
    return files, labels, classes


def check_manifest_folders(root: Path, classes: list[dict], flag: str) -> None:
    """Each class's ``folder`` must be the one sample.py derives from its name (``kface.utils.names``): a folder
    that disagrees would silently relabel images, and one like ``../x`` would read outside the samples."""
    from .utils.names import UnsafeName, check_distinct, class_folder

    try:
        for c in classes:
            expected = class_folder(str(c["name"]), int(c["id"]), reserved=RESERVED_FOLDERS)
            if c.get("folder") != expected:
                raise KfaceError(f"{flag} {root / SAMPLES_JSON}: class {c['id']} {c['name']!r} has folder "
                                 f"{c.get('folder')!r}, but sample.py puts it in {expected!r}; fix the folder entry "
                                 "(or the name) in samples.json, or rerun sample.py into a new folder")
        check_distinct([c["folder"] for c in classes], [str(c["name"]) for c in classes])
    except UnsafeName as err:
        raise KfaceError(f"{flag} {root / SAMPLES_JSON}: {err}; fix the classes in samples.json, or rerun "
                         "sample.py into a new folder") from None


def fingerprint_files(meta_bytes: bytes, files: list[Path], root: Path) -> str:
    """sha256 of samples.json and the sorted list of (relative path, size): cheap, and changes with the set."""
    h = hashlib.sha256(meta_bytes)
    for path in sorted(files):
        h.update(f"{path.relative_to(root).as_posix()}:{path.stat().st_size}\n".encode())
    return h.hexdigest()


def read_samples(path, flag: str = "--samples", num_workers: int = 8) -> ImageSet:
    """A sample.py folder (``samples.json`` + PNGs) or a saved Dataset with ``image`` and ClassLabel ``label``."""
    root = Path(path)
    if not root.exists():
        raise KfaceError(f"{flag} {root} does not exist; give a sample.py output folder or a saved Dataset")
    if (root / SAMPLES_JSON).is_file():
        return _read_folder(root, flag, num_workers)
    if (root / "dataset_info.json").is_file() or (root / "state.json").is_file():
        return read_dataset_split(root, split=None, flag=flag)
    found = sorted(p.parent.name for p in root.glob(f"*/{SAMPLES_JSON}"))
    hint = f"; it holds samples folders {found}: pass one of them" if found else ""
    raise KfaceError(f"{flag} {root}: no {SAMPLES_JSON} and not a saved Dataset{hint}")


def _read_folder(root: Path, flag: str, num_workers: int) -> ImageSet:
    meta_bytes = (root / SAMPLES_JSON).read_bytes()
    try:
        meta = json.loads(meta_bytes)
    except json.JSONDecodeError as err:
        raise KfaceError(f"{flag} {root}/{SAMPLES_JSON} is not valid JSON ({err})") from None
    if not meta.get("complete", False):
        raise KfaceError(f"{flag} {root}: samples.json says complete=false (an interrupted sample.py run); "
                         "rerun the same sample.py command to finish it")
    files, labels, classes = _folder_files(root, meta, flag)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:  # PNG decoding releases the GIL
        images = list(pool.map(_read_png, files))
    logger.info("read %d generated images of %d classes from %s", len(files), len(classes), root)
    return ImageSet(_stack(images, flag, str(root)), np.asarray(labels, dtype=np.int64),
                    [str(c["name"]) for c in classes], meta, fingerprint_files(meta_bytes, files, root),
                    class_ids=[int(c["id"]) for c in classes])


def read_dataset_split(ds_or_path, split: str | None, flag: str) -> ImageSet:
    """Images and labels of one split of a DatasetDict (or of a saved Dataset when ``split`` is None)."""
    if not hasattr(ds_or_path, "features"):
        from datasets import load_from_disk

        loaded = load_from_disk(str(ds_or_path))
        ds = loaded if split is None else loaded[split]
    else:
        ds = ds_or_path
    from datasets import ClassLabel

    if "image" not in ds.column_names or not isinstance(ds.features.get("label"), ClassLabel):
        raise KfaceError(f"{flag}: needs an 'image' column and a ClassLabel 'label' column (has {ds.column_names})")
    images = [np.asarray(img.convert("RGB")).transpose(2, 0, 1) for img in ds["image"]]
    where = f"split {split}" if split else "dataset"
    return ImageSet(_stack(images, flag, where), np.asarray(ds["label"], dtype=np.int64),
                    list(ds.features["label"].names), fingerprint=str(getattr(ds, "_fingerprint", "")))


def check_class_names(named: dict[str, list[str]]) -> list[str]:
    """All sources (e.g. ``{"--oracle": [...], "--samples": [...], "--dataset": [...]}``) must list the same
    classes in the same order (class ids index them); otherwise one line naming the differing classes."""
    items = list(named.items())
    ref_flag, ref = items[0]
    for flag, names in items[1:]:
        if names == ref:
            continue
        only_ref = [n for n in ref if n not in names]
        only_other = [n for n in names if n not in ref]
        if only_ref or only_other:
            detail = f"only in {ref_flag}: {only_ref}; only in {flag}: {only_other}"
        else:
            moved = [f"{n} (id {ref.index(n)} vs {i})" for i, n in enumerate(names) if ref.index(n) != i]
            detail = f"same classes, different ids: {moved}"
        raise KfaceError(f"class names differ between {ref_flag} ({len(ref)} classes) and {flag} ({len(names)}): "
                         f"{detail}; evaluate with the oracle and dataset the generator was trained for")
    return list(ref)


def check_sampled_classes(names: list[str], gen: ImageSet, ref_flag: str = "--oracle",
                          flag: str = "--samples") -> list[int]:
    """Each sampled class (id, name) must be class ``id`` of the oracle/dataset; a subset (sample.py
    ``--classes``) is allowed. Returns the sampled ids."""
    if gen.class_ids == list(range(len(names))):
        check_class_names({ref_flag: names, flag: gen.class_names})
        return gen.class_ids
    differ = [f"id {i} is {names[i]!r} in {ref_flag} but {n!r} in {flag}" if i < len(names)
              else f"id {i} ({n!r}) is beyond {ref_flag}'s {len(names)} classes"
              for i, n in zip(gen.class_ids, gen.class_names) if i >= len(names) or names[i] != n]
    if differ:
        raise KfaceError(f"class names differ between {ref_flag} and {flag}: {'; '.join(differ)}; "
                         "evaluate with the oracle and dataset the generator was trained for")
    logger.warning("%s covers %d of the %d classes: Accuracy_real is measured on the same classes",
                   flag, len(gen.class_ids), len(names))
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


def pipeline_hub_id(samples_meta: dict) -> str | None:
    """The generator repo: samples.json's ``pipeline`` when it is a Hub id rather than a local folder."""
    pipe = samples_meta.get("pipeline")
    if pipe and "/" in pipe and not pipe.startswith((".", "/")) and not Path(pipe).exists():
        return pipe
    return None
