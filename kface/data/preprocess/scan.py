"""Finding the photos: a folder of ``<class>/<file>`` (or ``train|test/<class>/<file>``), or a Hub dataset written
out in that layout first."""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.errors import InputError
from ...utils.names import UnsafeName, check_distinct, class_folder
from ..datasets import hub_dataset, require_columns

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawImage:
    path: str  # file system path (str with surrogate escapes for non-UTF-8 names)
    source: str  # printable path relative to the input folder
    label: str  # printable class folder name
    split: str | None  # "train"/"test" when the input is already split
    size: int = 0
    mtime_ns: int = 0


@dataclass
class ScanResult:
    images: list[RawImage]
    class_files: dict = field(default_factory=dict)  # class -> number of files found (0 for empty folders)
    presplit: bool = False
    layout: str = "class_folders"  # or "train_test" (kept as given), "train_only" (train/ split here)


def printable(name: str) -> str:
    """A UTF-8 string for any file name: undecodable bytes become ``\\xff`` escapes (Arrow needs valid UTF-8)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def scan_image_folder(input_dir) -> ScanResult:
    """Find ``<class>/<file>`` or ``train|test/<class>/<file>`` under ``input_dir`` (hidden files skipped)."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give one folder per identity (or train/ and test/)")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_test and not has_train:
        raise InputError(f"{root} has test/ but not train/; give both, train/ alone (then split here, stratified), "
                         "or one folder per identity")
    # train/ alone (as several public identity sets ship): its class folders are split here, stratified
    layout = "train_test" if has_test else "train_only" if has_train else "class_folders"
    scan = ScanResult(images=[], presplit=has_test, layout=layout)
    for split in ("train", "test") if has_test else (None,):
        base = root / (split or ("train" if has_train else ""))
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = checked_label(cls_dir, root)
            files = sorted(p for p in cls_dir.iterdir() if p.is_file() and not p.name.startswith("."))
            scan.class_files[label] = scan.class_files.get(label, 0) + len(files)
            for p in files:
                st = p.stat()
                scan.images.append(RawImage(path=str(p), source=printable(str(p.relative_to(root))), label=label,
                                            split=split, size=st.st_size, mtime_ns=st.st_mtime_ns))
    try:
        check_distinct(list(scan.class_files))
    except UnsafeName as err:
        raise InputError(f"{root}: {err}; merge or rename those folders") from None
    if not scan.images:
        raise InputError(f"{root} holds no images: expected one sub-folder of photos per identity "
                         f"({len(scan.class_files)} empty class folder(s) found)")
    for label, n in scan.class_files.items():
        if n == 0:
            logger.warning("class folder %r is empty; it is left out of the dataset", label)
    return scan


def checked_label(cls_dir: Path, root: Path) -> str:
    """A class folder's name as its class name, when ``kface.utils.names`` accepts it (it becomes a ClassLabel name,
    and later a samples folder); otherwise a one-line error naming the folder."""
    label = printable(cls_dir.name)
    if label != cls_dir.name:
        raise InputError(f"{root}: class folder {label!r} is not valid UTF-8 and cannot be a class "
                         "name; rename it")
    try:
        return class_folder(label)
    except UnsafeName as err:
        raise InputError(f"{root}: class folder {cls_dir}: {err}; rename it") from None


def load_hub_dataset(dataset_name: str):
    """The Hub dataset ``dataset_name`` as a DatasetDict (a single Dataset becomes its ``train`` split), with
    ``image`` and ``label`` columns (the label may be a ClassLabel or plain values, see export_image_folder)."""
    from datasets import DatasetDict

    ds = hub_dataset(dataset_name)
    ds = ds if isinstance(ds, DatasetDict) else DatasetDict(train=ds)
    require_columns(ds, dataset_name)
    return ds


def export_image_folder(ds, folder) -> Path:
    """Write a DatasetDict's ``image``/``label`` rows (original bytes) in the layout ``scan_image_folder`` reads.

    With both ``train`` and ``test`` splits the split is kept (other splits are ignored); otherwise all rows go
    into one folder per class and are split later. A ``.complete`` marker makes a resumed run reuse the files
    (same names and mtimes, so the detection cache still matches).
    """
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    folder = Path(folder)
    if (folder / ".complete").exists():
        return folder
    presplit = {"train", "test"} <= set(ds)
    check_export_labels({s: d for s, d in ds.items() if not presplit or s in ("train", "test")})
    for split, d in ds.items():
        if presplit and split not in ("train", "test"):
            continue
        names = d.features["label"].names if isinstance(d.features["label"], ClassLabel) else None
        d = d.cast_column("image", ImageFeature(decode=False))
        for i, row in enumerate(d):
            label = names[row["label"]] if names else str(row["label"])
            ext = Path(row["image"].get("path") or "x.png").suffix or ".png"
            target = folder / (split if presplit else "") / label / f"{i:07d}{ext}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(row["image"]["bytes"])
    (folder / ".complete").touch()
    return folder


def check_export_labels(splits: dict) -> None:
    """Every class name a Hub dataset would write as a folder (its ClassLabel names, or the distinct values of
    a plain label column) must pass ``kface.utils.names``; checked before any file is written."""
    from datasets import ClassLabel

    for split, d in splits.items():
        feature = d.features["label"]
        labels = list(feature.names) if isinstance(feature, ClassLabel) else sorted({str(v) for v in d["label"]})
        try:
            for label in labels:
                class_folder(label)
            check_distinct(labels)
        except UnsafeName as err:
            raise InputError(f"split {split!r}: {err}; rename the class in the dataset (e.g. "
                             "cast_column('label', ClassLabel(names=[...]))) before preprocessing it") from None
