"""Raw identity photos -> square face crops at several resolutions, as Hugging Face datasets.

The steps, each a function that other scripts can call with explicit keyword arguments:

``scan_image_folder`` (or ``load_hub_dataset`` + ``export_image_folder``)
-> ``detect_and_crop`` (parallel, cached per image so that an interrupted run resumes)
-> ``usable_classes`` + ``assign_splits`` (the existing split, or a stratified one)
-> ``find_duplicates`` (train/test leakage) -> ``write_resolutions``
-> ``build_report`` + ``contact_sheet`` / ``rejects_sheet`` -> ``write_report``.

Nothing in a bad photo stops the run: every photo ends as a kept crop or a dropped file with one of ``REASONS``.
"""

import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import signal
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from . import faces
from .utils.errors import KfaceError
from .utils.io import atomic_write_bytes
from .utils.names import UnsafeName, check_distinct, class_folder

logger = logging.getLogger(__name__)

REASONS = {
    "empty_file": "zero-byte file",
    "not_an_image": "not an image file PIL can identify",
    "corrupt": "image data is truncated or damaged",
    "too_large": "more pixels than --max_pixels (decompression bomb guard)",
    "unsupported_mode": "pixel format that cannot be converted to RGB",
    "no_face": "the detector found no face",
    "low_confidence": "faces found, all below --min_confidence",
    "too_small": "face (or photo, with --detector none) smaller than --min_face_size",
    "detector_error": "the face detector raised an error on this photo",
    "duplicate_of_train": "test photo duplicates a train photo (--drop_test_duplicates)",
}
CACHE_NAME = "detections.jsonl"


@dataclass(frozen=True)
class CropSettings:
    """Everything that decides a crop; a cached result is reused only when all of it matches."""

    detector: str = "mtcnn"
    min_confidence: float = 0.9
    select: str = "largest"
    margin: float = 0.25
    padding: str = "reflect"
    resolutions: tuple = (32, 64)
    min_face_size: int = 20
    max_pixels: int = 100_000_000
    detect_max_side: int = 1024

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


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
        raise KfaceError(f"--input_dir {root} is not a folder; give one folder per identity (or train/ and test/)")
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_test and not has_train:
        raise KfaceError(f"--input_dir {root} has test/ but not train/; give both, train/ alone (split here with "
                         "--test_size), or one folder per identity")
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
        raise KfaceError(f"--input_dir {root}: {err}; merge or rename those folders") from None
    if not scan.images:
        raise KfaceError(f"--input_dir {root} holds no images: expected one sub-folder of photos per identity "
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
        raise KfaceError(f"--input_dir {root}: class folder {label!r} is not valid UTF-8 and cannot be a class "
                         "name; rename it")
    try:
        return class_folder(label)
    except UnsafeName as err:
        raise KfaceError(f"--input_dir {root}: class folder {cls_dir}: {err}; rename it") from None


def load_hub_dataset(dataset_name: str):
    """``load_dataset(dataset_name)`` as a DatasetDict, or a one-line error (offline, unknown id, no access)."""
    from datasets import DatasetDict, load_dataset

    try:
        ds = load_dataset(dataset_name)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise KfaceError(f"--dataset_name {dataset_name}: could not load it from the Hugging Face Hub "
                         f"({type(err).__name__}: {first}); check the id and your network, and unset "
                         "HF_HUB_OFFLINE / HF_DATASETS_OFFLINE if set") from None
    ds = ds if isinstance(ds, DatasetDict) else DatasetDict(train=ds)
    for split, d in ds.items():
        missing = [c for c in ("image", "label") if c not in d.column_names]
        if missing:
            raise KfaceError(f"--dataset_name {dataset_name}: split {split!r} lacks column(s) {missing} "
                             f"(has {d.column_names})")
    return ds


def export_image_folder(ds, folder) -> Path:
    """Write a DatasetDict's ``image``/``label`` rows (original bytes) in the layout ``scan_image_folder`` reads.

    With both ``train`` and ``test`` splits the split is kept (other splits are ignored); otherwise all rows go
    into one folder per class and are split later. A ``.complete`` marker makes a resumed run reuse the files
    (same names and mtimes, so the detection cache still matches).
    """
    from datasets import ClassLabel, Image as ImageFeature

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
            raise KfaceError(f"--dataset_name: split {split!r}: {err}; rename the class in the dataset (e.g. "
                             "cast_column('label', ClassLabel(names=[...]))) before preprocessing it") from None


# ---------------------------------------------------------------- decoding


def to_rgb8(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: 16-bit and float scaled (not clipped), transparency composited on white."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if img.mode.startswith("I;16") or (img.mode == "I" and lo >= 0 and hi <= 65535):
            arr = arr / 257.0  # 16-bit full range -> 8-bit full range (65535 / 257 = 255)
        elif img.mode == "F" and lo >= 0 and hi <= 1:
            arr = arr * 255.0
        else:  # unknown range: stretch what is there
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(data: bytes, max_pixels: int) -> tuple[Image.Image | None, str | None]:
    """Decode photo bytes to an upright 8-bit RGB image, or ``(None, reason)``; never raises for bad data."""
    if not data:
        return None, "empty_file"
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x the limit; make the warning an error so that both are refused
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                img = Image.open(io.BytesIO(data))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                return None, "too_large"
            except Exception:  # UnidentifiedImageError, and odd parser errors on garbage
                return None, "not_an_image"
            try:
                img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                return None, "too_large"
            except Exception:
                return None, "corrupt"
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a damaged EXIF block: the pixels are fine, keep them as stored
        logger.warning("unreadable EXIF orientation; using the photo as stored")
    try:
        return to_rgb8(img), None
    except Exception:
        return None, "unsupported_mode"


# ---------------------------------------------------------------- detection + crops (worker side)

_WORKER = {}


def _init_worker(settings: CropSettings, staging: str, in_pool: bool = True) -> None:
    """Pool initializer: each worker builds its detector once (MTCNN takes seconds to load)."""
    if in_pool:  # Ctrl-C is handled once, by the main process, which terminates the pool
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(settings=settings, staging=Path(staging), detector=faces.make_detector(settings.detector))


def cache_key(image: RawImage, settings: CropSettings) -> str:
    text = f"{settings.fingerprint()}|{image.source}|{image.size}|{image.mtime_ns}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:20]


def _detect(detector, rgb: Image.Image, max_side: int | None) -> list[dict]:
    # MTCNN's cost grows with pixels; faces worth keeping survive a downscale to ~1000 px
    scale = min(1.0, max_side / max(rgb.size)) if max_side else 1.0
    small = rgb if scale == 1.0 else rgb.resize((round(rgb.width * scale), round(rgb.height * scale)),
                                                Image.Resampling.BILINEAR)
    found = detector.detect(np.asarray(small))
    for d in found:
        d["box"] = [v / scale for v in d["box"]]
    return found


def process_image(image: RawImage) -> dict:
    """Decode, detect, choose a face, crop and resize one photo (in a worker); writes the crops to staging."""
    settings, staging = _WORKER["settings"], _WORKER["staging"]
    key = cache_key(image, settings)
    result = {"key": key, "source": image.source, "label": image.label, "split": image.split, "reason": None}
    try:
        data = Path(image.path).read_bytes()
    except OSError:
        return {**result, "reason": "corrupt"}
    result["sha1"] = hashlib.sha1(data).hexdigest()
    rgb, reason = load_rgb(data, settings.max_pixels)
    if rgb is None:
        return {**result, "reason": reason}
    width, height = rgb.size
    if min(width, height) < settings.min_face_size:
        return {**result, "reason": "too_small"}
    try:
        found = _detect(_WORKER["detector"], rgb, settings.detect_max_side if settings.detector != "none" else None)
    except Exception as err:  # a detector bug on one odd photo must not end a run of thousands
        logger.warning("detector failed on %s: %s: %s", image.source, type(err).__name__, err)
        return {**result, "reason": "detector_error"}
    found, reason = faces.candidates(found, settings.min_confidence, settings.min_face_size)
    if reason:
        return {**result, "reason": reason}
    chosen = found[faces.select_face(found, settings.select, width, height)]
    crop = (faces.centre_square(width, height) if settings.detector == "none"
            else faces.square_crop(chosen["box"], settings.margin))
    square = faces.cut(rgb, crop, padding=settings.padding)
    crops = {}
    for res in settings.resolutions:
        buf = io.BytesIO()
        small = faces.resize(square, res)
        small.save(buf, format="PNG")
        crops[str(res)] = f"crops/{res}px/{key}.png"
        atomic_write_bytes(staging / crops[str(res)], buf.getvalue())
    import imagehash  # here, not at module level: workers are the only users

    return {**result, "box": [round(float(v), 2) for v in chosen["box"]], "confidence": float(chosen["confidence"]),
            "num_faces": len(found), "padded": crop.is_padded(width, height), "crops": crops,
            "phash": str(imagehash.phash(small))}


# ---------------------------------------------------------------- the cache and the pool (main side)


def load_cache(path) -> dict:
    """Results of an interrupted run, by key; a line cut short by the interruption is ignored."""
    results = {}
    path = Path(path)
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if all((path.parent / c).exists() for c in row.get("crops", {}).values()):
                results[row["key"]] = row
    return results


def detect_and_crop(images: list[RawImage], settings: CropSettings, staging, num_workers: int = 2,
                    progress: bool = True) -> tuple[list[dict], dict]:
    """Process every photo, reusing ``staging/detections.jsonl``; returns results (in ``images`` order) and timing.

    ``num_workers=0`` runs in this process (tests, debugging); otherwise a spawn pool, because TensorFlow is not
    fork-safe once imported.
    """
    from tqdm.auto import tqdm

    staging = Path(staging)
    cache_path = staging / CACHE_NAME
    cached = load_cache(cache_path)
    keys = [cache_key(im, settings) for im in images]
    todo = [im for im, k in zip(images, keys) if k not in cached]
    if cached:
        logger.info("resuming: %d of %d photos already processed in %s", len(images) - len(todo), len(images),
                    cache_path)
    start = first = time.perf_counter()
    with open(cache_path, "a", encoding="utf-8") as cache, tqdm(total=len(todo), desc="faces",
                                                                 disable=not progress) as bar:
        for n, row in enumerate(_map(todo, settings, staging, num_workers)):
            first = time.perf_counter() if n == 0 else first
            cache.write(json.dumps(row) + "\n")
            cache.flush()  # one line per photo: an interruption loses at most the photos in flight
            cached[row["key"]] = row
            bar.update(1)
    seconds, startup = time.perf_counter() - start, first - start
    timing = {"processed": len(todo), "from_cache": len(images) - len(todo), "detection_s": round(seconds, 3),
              "images_per_s": round(len(todo) / seconds, 2) if todo and seconds > 0 else None,
              # workers' start (TensorFlow import, MTCNN build) and the first photo; the rest is steady state
              "first_result_s": round(startup, 3),
              "steady_images_per_s": round((len(todo) - 1) / (seconds - startup), 2)
              if len(todo) > 1 and seconds > startup else None}
    return [cached[k] for k in keys], timing


def _map(todo, settings, staging, num_workers):
    if not todo:
        return
    if num_workers == 0:
        _init_worker(settings, str(staging), in_pool=False)
        yield from map(process_image, todo)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(num_workers, len(todo)), initializer=_init_worker, initargs=(settings, str(staging))) as pool:
        yield from pool.imap_unordered(process_image, todo, chunksize=1)


# ---------------------------------------------------------------- split


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
        raise KfaceError(f"only {len(names)} class(es) {names} have usable photos (dropped: {dropped}); "
                         "a classifier needs at least 2: add photos or check --detector/--min_confidence")
    return names, dropped


def assign_splits(kept: list[dict], presplit: bool, test_size: float, seed: int) -> dict:
    """``{"train": rows, "test": rows}``; an existing split is kept, otherwise a stratified one is made."""
    rows = sorted(kept, key=lambda r: r["source"])  # the split depends on the photos, not on the scan order
    if presplit:
        out = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}
        check_split(out, hint="the existing train/test folders")
        return out
    need = min_images_per_class(test_size)
    for label, n in sorted(Counter(r["label"] for r in rows).items()):
        if n < need:
            raise KfaceError(f"class {label!r} has only {n} usable photo(s); --test_size {test_size} needs at least "
                             f"{need} per class for one test and one train photo; add photos or change --test_size")
    train, test = stratified_split([r["label"] for r in rows], test_size=test_size, seed=seed)
    out = {"train": [{**rows[i], "split": "train"} for i in train],
           "test": [{**rows[i], "split": "test"} for i in test]}
    check_split(out, hint="--test_size")
    return out


def check_split(splits: dict, hint: str) -> None:
    train, test = (Counter(r["label"] for r in splits[s]) for s in ("train", "test"))
    for label in sorted(set(train) | set(test)):
        if not train[label] or not test[label]:
            raise KfaceError(f"class {label!r} has {train[label]} train and {test[label]} test photos after "
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


# ---------------------------------------------------------------- writing


def features(class_names: list[str]):
    from datasets import ClassLabel, Features, Image as ImageFeature, Sequence, Value

    return Features({"image": ImageFeature(), "label": ClassLabel(names=class_names), "source": Value("string"),
                     "box": Sequence(Value("float32"), length=4), "confidence": Value("float32"),
                     "num_faces": Value("int32"), "padded": Value("bool")})


def build_dataset_dict(splits: dict, class_names: list[str], resolution: int, staging):
    """The ``DatasetDict`` (train, test) of one resolution, from the crops in ``staging``; rows sorted by class."""
    from datasets import Dataset, DatasetDict

    index = {c: i for i, c in enumerate(class_names)}
    out = {}
    for split, rows in splits.items():
        rows = sorted(rows, key=lambda r: (index[r["label"]], r["source"]))
        out[split] = Dataset.from_dict({
            "image": [{"bytes": (Path(staging) / r["crops"][str(resolution)]).read_bytes(), "path": None}
                      for r in rows],
            "label": [index[r["label"]] for r in rows], "source": [r["source"] for r in rows],
            "box": [r["box"] for r in rows], "confidence": [r["confidence"] for r in rows],
            "num_faces": [r["num_faces"] for r in rows], "padded": [r["padded"] for r in rows],
        }, features=features(class_names))
    return DatasetDict(out)


def write_resolutions(splits: dict, class_names: list[str], resolutions, staging) -> dict:
    """``save_to_disk`` one DatasetDict per resolution as ``<staging>/<res>px``; returns them by resolution."""
    from .data import resolution_config

    written = {}
    for res in resolutions:
        ds = build_dataset_dict(splits, class_names, res, staging)
        ds.save_to_disk(str(Path(staging) / resolution_config(res)))
        written[res] = ds
    return written


def push_resolutions(datasets: dict, repo_id: str, token: str | None, private: bool, report_dir=None) -> None:
    """Push each resolution as config ``<res>px`` of one Hub dataset repo, then the report files beside them."""
    from .data import resolution_config
    from .utils.hub import push_folder

    for res, ds in datasets.items():
        try:
            ds.push_to_hub(repo_id, config_name=resolution_config(res), token=token, private=private)
        except Exception as err:
            raise KfaceError(f"--hub_dataset_id {repo_id}: pushing {resolution_config(res)} failed "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check "
                             "your login (--hub_token), the network and HF_HUB_OFFLINE") from None
    if report_dir is not None:  # the report and sheets, not the arrow folders (already pushed as configs)
        push_folder(report_dir, repo_id, token=token, private=private, repo_type="dataset",
                    commit_message="Add the preprocessing report",
                    ignore_patterns=["*px/*", CACHE_NAME, "*.incomplete", "*.tmp"])


# ---------------------------------------------------------------- report and sheets


def build_report(splits: dict, dropped: list[dict], class_names: list[str], dropped_classes: dict,
                 duplicates: dict, timing: dict, settings: CropSettings, extra: dict | None = None) -> dict:
    """Per class and split: photos kept and dropped (by reason); every dropped file; leakage; throughput."""
    counts = {}
    for label in sorted(set(class_names) | set(dropped_classes) | {r["label"] for r in dropped}):
        counts[label] = {}
    for split, rows in splits.items():
        for r in rows:
            c = counts[r["label"]].setdefault(split, {"kept": 0, "dropped": {}})
            c["kept"] += 1
    for r in dropped:
        c = counts[r["label"]].setdefault(r["split"] or "unsplit", {"kept": 0, "dropped": {}})
        c["dropped"][r["reason"]] = c["dropped"].get(r["reason"], 0) + 1
    return {
        **(extra or {}),
        "settings": asdict(settings),
        "classes": class_names,
        "dropped_classes": dropped_classes,
        "totals": {"kept": {s: len(rows) for s, rows in splits.items()},
                   "dropped": dict(Counter(r["reason"] for r in dropped)),
                   "padded": {s: sum(r["padded"] for r in rows) for s, rows in splits.items()},
                   "multiple_faces": {s: sum(r["num_faces"] > 1 for r in rows) for s, rows in splits.items()}},
        "counts": counts,
        "dropped_files": [{"source": r["source"], "class": r["label"], "split": r["split"] or "unsplit",
                           "reason": r["reason"]} for r in sorted(dropped, key=lambda r: r["source"])],
        "duplicates": duplicates,
        "timing": timing,
        "reasons": REASONS,
    }


def report_markdown(report: dict) -> str:
    t, d = report["totals"], report["duplicates"]
    lines = ["# Preprocessing report", "",
             f"Kept: {t['kept']}; dropped: {t['dropped'] or 'none'}; padded crops: {t['padded']}; "
             f"photos with several faces: {t['multiple_faces']}.", "",
             _timing_line(report["timing"]), "", _split_line(report), "", "## Per class", "",
             "| class | split | kept | dropped (reason: count) |", "|---|---|---:|---|"]
    for label, splits in report["counts"].items():
        for split, c in sorted(splits.items()):
            why = ", ".join(f"{k}: {v}" for k, v in sorted(c["dropped"].items())) or "-"
            lines.append(f"| {label} | {split} | {c['kept']} | {why} |")
    if report["dropped_classes"]:
        lines += ["", "## Classes left out", ""] + [f"- {c}: {w}" for c, w in report["dropped_classes"].items()]
    lines += ["", "## Train/test leakage", "",
              f"{d['num_exact']} exact (same file bytes) and {d['num_near']} near-duplicate pairs "
              f"(crop phash Hamming distance <= {d['threshold']}); action: {d.get('action', 'reported')}.", ""]
    lines += [f"- {p['train']} ~ {p['test']} ({p.get('distance', 'exact')})"
              for p in (d["exact_pairs"] + d["near_pairs"])[:50]]
    lines += ["", "## Dropped files", ""] + [f"- {r['source']}: {r['reason']}" for r in report["dropped_files"][:200]]
    if len(report["dropped_files"]) > 200:
        lines.append(f"- ... {len(report['dropped_files']) - 200} more in preprocess_report.json")
    return "\n".join(lines) + "\n"


def _split_line(report: dict) -> str:
    how = f"split here, stratified by class, test_size {report.get('test_size')} (seed {report.get('seed')})"
    return {"train_test": "Split: the input's own train/ and test/ folders, kept as given.",
            "train_only": f"Split: the input has train/ but no test/; train/ was {how}."}.get(
        report.get("layout"), f"Split: {how}.")


def _timing_line(t: dict) -> str:
    return (f"Timing: {t['processed']} photos processed ({t['from_cache']} from the cache of an earlier run) in "
            f"{t['detection_s']} s = {t['images_per_s']} photos/s; the first result came after {t['first_result_s']} s "
            f"(workers starting), {t['steady_images_per_s']} photos/s after that; wall time {t.get('wall_s')} s.")


def _label_tile(text: str, width: int, height: int, fill=(40, 40, 40)) -> Image.Image:
    from PIL import ImageDraw

    tile = Image.new("RGB", (width, height), fill)
    ImageDraw.Draw(tile).text((3, 1), text, fill=(255, 255, 255))
    return tile


def contact_sheet(rows_by_class: dict, staging, resolution: int, per_class: int = 12, label_width: int = 120):
    """One row per class: its first ``per_class`` crops, with the class name on the left."""
    sheet = Image.new("RGB", (label_width + per_class * resolution, max(1, len(rows_by_class)) * resolution), "white")
    for y, (label, rows) in enumerate(rows_by_class.items()):
        sheet.paste(_label_tile(f"{label} ({len(rows)})", label_width, resolution), (0, y * resolution))
        for x, r in enumerate(rows[:per_class]):
            with Image.open(Path(staging) / r["crops"][str(resolution)]) as crop:
                sheet.paste(crop.convert("RGB"), (label_width + x * resolution, y * resolution))
    return sheet


def rejects_sheet(dropped: list[dict], paths: dict, max_pixels: int, thumb: int = 96, columns: int = 8,
                  limit: int = 64):
    """Thumbnails of dropped raw photos, each captioned with its reason (grey tile when it cannot be shown)."""
    shown = sorted(dropped, key=lambda r: r["source"])[:limit]
    if not shown:
        return _label_tile("no rejected photos", 4 * thumb, thumb // 2)
    rows = math.ceil(len(shown) / columns)
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + 14)), "white")
    for i, r in enumerate(shown):
        img = None
        if r["reason"] not in ("too_large", "empty_file") and r["source"] in paths:
            try:
                img, _ = load_rgb(Path(paths[r["source"]]).read_bytes(), max_pixels)
            except OSError:
                img = None
        tile = ImageOps.pad(img, (thumb, thumb), color=(255, 255, 255)) if img else _label_tile("?", thumb, thumb)
        x, y = (i % columns) * thumb, (i // columns) * (thumb + 14)
        sheet.paste(tile, (x, y))
        sheet.paste(_label_tile(r["reason"], thumb, 14, fill=(160, 0, 0)), (x, y + thumb))
    return sheet


def write_report(folder, report: dict, contact: Image.Image, rejects: Image.Image) -> None:
    """``preprocess_report.json``/``.md``, ``contact_sheet.png`` and ``rejects.png`` in ``folder``."""
    from .utils.io import atomic_write_json, atomic_write_text

    folder = Path(folder)
    atomic_write_json(folder / "preprocess_report.json", report)
    atomic_write_text(folder / "preprocess_report.md", report_markdown(report))
    for name, img in (("contact_sheet.png", contact), ("rejects.png", rejects)):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(folder / name, buf.getvalue())
