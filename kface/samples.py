"""The samples folder that sample.py writes and evaluate.py reads: its names, manifest, writer and reader.

Layout: ``samples.json`` (the manifest) and one sub-folder per class, ``<folder>/<seed:06d>.png``, where
``<folder>`` is the class name (``kface.utils.names``) and image i of class c has the seed ``seed + i``; once
complete, ``grids/<folder>.png`` and, on request, ``dataset/`` (an HF Dataset). The manifest's
``classes[i] = {"id", "name", "folder", "seeds": [first, last], "count"}``; ``complete`` is true when every
image is there. How the pixels are made (a pipeline, per-image generators) is kface.diffusion.generate's.

Library functions raise :class:`~kface.utils.errors.InputError` naming the folder or the class; scripts add
their flag (``cli_flag``).
"""

import glob
import hashlib
import logging
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .data.datasets import ImageSet, stack_images
from .data.preprocess.decode import to_rgb8
from .utils import names as names_mod
from .utils.errors import InputError
from .utils.hub import is_hub_id
from .utils.io import atomic_path, atomic_write_json, publish_dir, staging_dir
from .utils.outputs import refusal
from .utils.schema import Field, check_fields, field_problem, read_json

logger = logging.getLogger(__name__)

MANIFEST = "samples.json"
GRIDS = "grids"
DATASET = "dataset"
# Folders a samples folder holds besides the class folders: a class may not take their names (it gets "@<id>").
RESERVED = frozenset({MANIFEST, GRIDS, DATASET, DATASET + ".incomplete"})  # staging_dir(DATASET)
# The settings that decide the pixels: a rerun into the same folder must repeat them exactly.
SETTINGS_KEYS = ("pipeline", "pipeline_revision", "pipeline_sha256", "model_class_names", "scheduler",
                 "num_inference_steps", "guidance_scale", "seed", "resolution", "mixed_precision")
GRID_SIZE = 64


def image_path(out: Path, folder: str, seed: int) -> Path:
    return Path(out) / folder / f"{seed:06d}.png"


# ---- class resolution ----------------------------------------------------------------------------------------

def class_ids(names: list[str], labels) -> list[int]:
    """The id of each of ``labels`` (class names, ids, or strings of ids that are no class name), in order.

    The one name -> id rule of kface: the pipeline's ``class_labels`` and sample.py's ``--classes`` both use it.
    """
    if isinstance(labels, (int, str, np.integer)):
        labels = [labels]
    ids = []
    for label in (labels.tolist() if torch.is_tensor(labels) or isinstance(labels, np.ndarray) else labels):
        if isinstance(label, str) and label in names:
            ids.append(names.index(label))
        elif isinstance(label, str) and label.isdigit() and int(label) < len(names):
            ids.append(int(label))
        elif isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(names):
            ids.append(int(label))
        elif isinstance(label, str) and not label.isdigit():
            shown = names if len(names) <= 30 else names[:30] + ["..."]
            raise InputError(f"unknown class name {label!r}; the model knows {len(names)}: {shown}")
        else:
            raise InputError(f"class id {label!r} is out of range: the model has classes 0..{len(names) - 1}")
    return ids


def class_folders(names: list[str]) -> list[str]:
    """The folder of each class (all classes of the model, so a folder never depends on which are sampled):
    ``kface.utils.names.class_folders``, i.e. the class name itself; a name that cannot be a folder is refused.
    A class named like the samples folder's own ``grids``/``dataset`` gets ``@<id>`` appended."""
    try:
        return names_mod.class_folders(names, reserved=RESERVED)
    except names_mod.UnsafeName as err:
        raise InputError(f"class_names: {err}; rename the class in the training data (preprocess.py refuses such "
                         "names) and retrain, or fix class_names in its model_index.json") from None


def samples_dirs(output_dir, guidance_scales: list[float]) -> list[tuple[float, Path]]:
    """One samples folder per guidance scale: ``output_dir`` itself, or ``output_dir/guidance_<w>/`` for a sweep."""
    if len(guidance_scales) == 1:
        return [(guidance_scales[0], Path(output_dir))]
    return [(w, Path(output_dir) / f"guidance_{float(w)!r}") for w in guidance_scales]


# ---- the manifest ---------------------------------------------------------------------------------------------

def build_manifest(settings: dict, names: list[str], folders: list[str], class_ids: list[int], seed: int,
                   num_per_class: int, complete: bool) -> dict:
    classes = [{"id": c, "name": names[c], "folder": folders[c], "seeds": [seed, seed + num_per_class - 1],
                "count": num_per_class} for c in class_ids]
    return {"kface_version": __version__, **settings, "num_per_class": num_per_class, "classes": classes,
            "complete": complete}


def _seed_pair(value) -> str | None:
    if len(value) != 2 or any(field_problem(s, Field(int, minimum=0)) for s in value) or value[1] < value[0]:
        return f"must be [first, last], two integers with 0 <= first <= last, not {value}"
    return None


def _str_list(value) -> str | None:
    return None if all(isinstance(v, str) for v in value) else "must list strings"


# The manifest's schema: the fields every reader relies on. Fields not listed here are informative.
MANIFEST_FIELDS = {
    "complete": Field(bool), "classes": Field(list), "seed": Field(int, required=False, minimum=0),
    "num_per_class": Field(int, required=False, minimum=1), "guidance_scale": Field(float, required=False),
    "num_inference_steps": Field(int, required=False, minimum=1), "resolution": Field(int, required=False, minimum=1),
    "model_class_names": Field(list, required=False, check=_str_list), "pipeline": Field(str, required=False),
    "scheduler": Field(str, required=False),
}
CLASS_FIELDS = {"id": Field(int, minimum=0), "name": Field(str), "folder": Field(str),
                "seeds": Field(list, check=_seed_pair), "count": Field(int, minimum=1)}
MANIFEST_HINT = "fix it, or rerun sample.py into a new folder"


def check_manifest_fields(meta, where) -> dict:
    """``meta`` if it follows the manifest's schema (``MANIFEST_FIELDS``, each class ``CLASS_FIELDS``, ``count``
    = the number of seeds); otherwise one :class:`InputError` naming ``where`` and the wrong field."""
    check_fields(meta, MANIFEST_FIELDS, where)
    if not meta["classes"]:
        raise InputError(f"{where}: field 'classes' is empty; it lists the classes sampled")
    for i, c in enumerate(meta["classes"]):
        check_fields(c, CLASS_FIELDS, f"{where}: classes[{i}]")
        first, last = c["seeds"]
        if c["count"] != last - first + 1:
            raise InputError(f"{where}: classes[{i}] field 'count' is {c['count']} but 'seeds' {c['seeds']} "
                             f"name {last - first + 1} images")
        if "num_per_class" in meta and c["count"] != meta["num_per_class"]:
            raise InputError(f"{where}: classes[{i}] field 'count' is {c['count']}, not num_per_class "
                             f"{meta['num_per_class']}")
    ids = [c["id"] for c in meta["classes"]]
    if len(set(ids)) != len(ids):
        raise InputError(f"{where}: field 'classes' lists a class id twice ({sorted(ids)})")
    return meta


def read_manifest(out: Path) -> dict:
    """``<out>/samples.json``, checked against the manifest's schema (one line naming the wrong field)."""
    path = Path(out) / MANIFEST
    meta = read_json(path, hint=MANIFEST_HINT)
    try:
        return check_manifest_fields(meta, path)
    except InputError as err:
        raise InputError(f"{err}; {MANIFEST_HINT}") from None


def dropped_by(old: dict, new: dict) -> list[str]:
    """What a new request (``new``, a manifest) would stop listing of the images ``old`` lists, flag by flag: fewer
    classes or fewer images per class. More of either extends the set, and every old image stays listed."""
    old_ids, new_ids = sorted(c["id"] for c in old["classes"]), sorted(c["id"] for c in new["classes"])
    diff = []
    if not set(old_ids) <= set(new_ids):
        diff.append(f"--classes {old_ids} -> {new_ids}")
    old_n = old.get("num_per_class", max(c["count"] for c in old["classes"]))
    if new["num_per_class"] < old_n:
        diff.append(f"--num_per_class {old_n} -> {new['num_per_class']}")
    return diff


def check_manifest(out: Path, settings: dict, manifest: dict | None = None) -> dict:
    """Refuse to add images made with other settings, or for other classes or counts (``manifest``: this run's),
    to an existing samples folder; its manifest, or {}. A folder is only ever resumed by the command that
    started it, so its manifest always lists every image there (what ``--overwrite`` removes)."""
    path = out / MANIFEST
    if not path.is_file():
        if any(out.glob("*/*.png")):
            raise InputError(f"{out} holds PNGs but no {MANIFEST}: not a sample.py folder; "
                             "choose an empty or new folder")
        return {}
    old = read_manifest(out)
    diff = [f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in SETTINGS_KEYS if old.get(k) != settings[k]]
    if diff:  # mixing them would corrupt the set
        raise refusal(out, f"samples made with other settings ({'; '.join(diff)})",
                      "rerun with those settings to resume it")
    if manifest is not None and (diff := dropped_by(old, manifest)):
        # rewriting the manifest would leave images it no longer lists: never removed, never read
        raise refusal(out, f"samples of another request ({'; '.join(diff)})",
                      "rerun with the same (or more) --classes and --num_per_class to resume or extend it")
    return old


def manifest_entries(out: Path) -> list[str]:
    """Glob patterns of what a samples folder's manifest says it made (grids, dataset, the class folders it
    lists, and the manifest itself, last: an interrupted ``--overwrite`` still leaves a manifest that lists what
    remains): what ``--overwrite`` replaces. Nothing unless the folder holds a valid kface manifest (a user's
    own ``grids/`` or ``dataset/`` beside no manifest is theirs). Only plain child names: a damaged or hostile
    manifest (``..``, ``a/b``) can never make it delete outside ``out``."""
    try:
        meta = read_manifest(out)
    except InputError:
        return []
    listed = [c["folder"] for c in meta["classes"]] + _sample_only_folders(out, meta.get("model_class_names"))
    safe = [f for f in listed if f not in ("", ".", "..") and Path(f).name == f and "\\" not in f]
    return [glob.escape(name) for name in [GRIDS, DATASET, *safe, MANIFEST]]


def _sample_only_folders(out: Path, model_class_names) -> list[str]:
    """Folders of the model's other classes that hold nothing but sample PNGs: left by an older sample.py that
    rewrote the manifest for other ``--classes``. ``--overwrite`` removes them too, so that it never leaves PNGs
    without a manifest (a folder every later run would refuse)."""
    try:
        folders = names_mod.class_folders(list(model_class_names or []), reserved=RESERVED)
    except (names_mod.UnsafeName, TypeError):
        return []
    return [f for f in folders if (out / f).is_dir() and all(
        p.is_file() and (p.name.endswith(".tmp") or (p.suffix == ".png" and p.stem.isdigit()))
        for p in (out / f).iterdir())]


def remove_partial_files(out: Path) -> int:
    """Temporary files of an interrupted run (atomic_path leaves ``.<name>.<random>.tmp`` when killed)."""
    stale = list(out.glob("*/.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def missing_jobs(out: Path, class_ids: list[int], folders: list[str], seed: int, num_per_class: int):
    """The (class id, index) pairs without a PNG yet, in a fixed order (class, then index)."""
    return [(c, i) for c in class_ids for i in range(num_per_class)
            if not image_path(out, folders[c], seed + i).is_file()]


def write_png(path: Path, image: np.ndarray) -> None:
    """uint8 HWC array -> PNG, atomically: a killed run leaves a hidden .tmp file, never a truncated PNG."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


class BoundedWriter:
    """PNG encoding and writing in threads, off the denoising loop, with at most ``max_pending`` images
    waiting (so memory stays flat however fast the sampler is). An error in a writer is raised here."""

    def __init__(self, workers: int = 2, max_pending: int = 512):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="png")
        self.pending: deque = deque()
        self.max_pending = max_pending

    def submit(self, path: Path, image: np.ndarray) -> None:
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(write_png, path, image))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def read_images(out: Path, folder: str, seeds) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(to_rgb8(Image.open(image_path(out, folder, s)))) for s in seeds])


def write_grids(out: Path, class_ids: list[int], folders: list[str], seed: int, num_per_class: int) -> None:
    """``grids/<folder>.png``: the first 64 images of each class, 8 a row (torchvision ``save_image``; uint8 / 255
    comes back as the same uint8 values)."""
    from torchvision.utils import save_image

    for c in class_ids:
        images = read_images(out, folders[c], range(seed, seed + min(GRID_SIZE, num_per_class)))
        with atomic_path(out / GRIDS / f"{folders[c]}.png") as tmp:
            save_image(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0, tmp, nrow=8, padding=2, pad_value=1.0,
                       format="PNG")


def write_dataset(out: Path, names: list[str], class_ids: list[int], folders: list[str], seed: int,
                  num_per_class: int) -> Path:
    """``<out>/dataset``: an HF Dataset (image, label ClassLabel with the model's class names, seed)."""
    from datasets import ClassLabel, Dataset, Features, Image, Value

    features = Features({"image": Image(), "label": ClassLabel(names=list(names)), "seed": Value("int64")})

    def rows():
        for c in class_ids:
            for s in range(seed, seed + num_per_class):
                path = image_path(out, folders[c], s)
                yield {"image": {"bytes": path.read_bytes(), "path": None}, "label": c, "seed": s}

    staging = staging_dir(out / DATASET)
    with tempfile.TemporaryDirectory() as cache:  # the Arrow cache is copied by save_to_disk, then dropped
        Dataset.from_generator(rows, features=features, cache_dir=cache).save_to_disk(str(staging))
    publish_dir(staging, out / DATASET)
    return out / DATASET

def push_samples(folders: dict, repo_id: str, *, token: str | None = None, private: bool = False) -> list[str]:
    """Push each complete samples folder's ``dataset/`` (``--output_format dataset``) to one Hub dataset repo,
    ``folders``: config name -> samples folder (``default`` for one folder, ``guidance_<w>`` for a sweep)."""
    from datasets import load_from_disk

    from .utils.errors import InputError

    pushed = []
    for config, out in folders.items():
        try:
            load_from_disk(str(Path(out) / DATASET)).push_to_hub(repo_id, config_name=config, token=token,
                                                                 private=private)
        except Exception as err:
            raise InputError(f"{repo_id}: pushing {out} as config {config} failed "
                             f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check "
                             "your login (HF_TOKEN or huggingface-cli login), the network and HF_HUB_OFFLINE"
                             ) from None
        pushed.append(config)
    return pushed


def complete_folder(out: Path, manifest: dict, folders: list[str], output_format: str) -> dict:
    """After every process is done: check completeness, write grids (and the dataset), mark the manifest."""
    seed, n = manifest["seed"], manifest["num_per_class"]
    names, class_ids = manifest["model_class_names"], [c["id"] for c in manifest["classes"]]
    missing = missing_jobs(out, class_ids, folders, seed, n)
    manifest = {**manifest, "complete": not missing}
    if not missing:
        write_grids(out, class_ids, folders, seed, n)
        if output_format == "dataset":
            write_dataset(out, names, class_ids, folders, seed, n)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


# ---- reading a samples folder back ------------------------------------------------------------------------

def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(to_rgb8(img)).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError) as err:  # a stray file, or a PNG cut short by a crash
        raise InputError(f"{path}: not a readable image ({err}); delete it and rerun the same "
                         "sample.py command to regenerate it") from None


def _folder_files(root: Path, meta: dict) -> tuple[list[Path], list[int], list[dict]]:
    classes = sorted(meta["classes"], key=lambda c: c["id"])  # read_manifest checked their fields
    check_manifest_folders(root, classes)
    files, labels = [], []
    for c in classes:
        first, last = c["seeds"]
        folder = root / c["folder"]
        # count the PNGs before listing the expected names: seeds [0, 10**12] must not build 10**12 paths
        present = sum(1 for _ in folder.glob("*.png")) if folder.is_dir() else 0
        expected = [image_path(root, c["folder"], seed) for seed in range(first, last + 1)] if present >= c["count"] \
            else []
        missing = [p.name for p in expected if not p.is_file()]
        if missing or not expected:
            lacking = len(missing) if expected else c["count"] - present
            raise InputError(f"{root}: class '{c['name']}' lacks {lacking} of {c['count']} images "
                             f"(e.g. {c['folder']}/{missing[0] if missing else f'{first:06d}.png'}); rerun sample.py "
                             "to finish it")
        files += expected
        labels += [c["id"]] * len(expected)
    return files, labels, classes


def check_manifest_folders(root: Path, classes: list[dict]) -> None:
    """Each class's ``folder`` must be the one sample.py derives from its name (``kface.utils.names``): a folder
    that disagrees would silently relabel images, and one like ``../x`` would read outside the samples."""
    try:
        for c in classes:
            expected = names_mod.class_folder(str(c["name"]), int(c["id"]), reserved=RESERVED)
            if c.get("folder") != expected:
                raise InputError(f"{root / MANIFEST}: class {c['id']} {c['name']!r} has folder "
                                 f"{c.get('folder')!r}, but sample.py puts it in {expected!r}; fix the folder entry "
                                 "(or the name) in samples.json, or rerun sample.py into a new folder")
        names_mod.check_distinct([c["folder"] for c in classes], [str(c["name"]) for c in classes])
    except names_mod.UnsafeName as err:
        raise InputError(f"{root / MANIFEST}: {err}; fix the classes in samples.json, or rerun "
                         "sample.py into a new folder") from None


def fingerprint_files(meta_bytes: bytes, files: list[Path], root: Path) -> str:
    """sha256 of samples.json and the sorted list of (relative path, size): cheap, and changes with the set."""
    h = hashlib.sha256(meta_bytes)
    for path in sorted(files):
        h.update(f"{path.relative_to(root).as_posix()}:{path.stat().st_size}\n".encode())
    return h.hexdigest()


def read_samples(path, num_workers: int = 8) -> ImageSet:
    """A sample.py folder (``samples.json`` + PNGs) or a saved Dataset with ``image`` and ClassLabel ``label``."""
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root} does not exist; give a sample.py output folder or a saved Dataset")
    if (root / MANIFEST).is_file():
        return _read_folder(root, num_workers)
    if (root / "dataset_info.json").is_file() or (root / "state.json").is_file():
        from .data import read_dataset_split  # real-data reading is the data room's; it reads a saved Dataset too

        return read_dataset_split(root, split=None)
    found = sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}"))
    hint = f"; it holds samples folders {found}: pass one of them" if found else ""
    raise InputError(f"{root}: no {MANIFEST} and not a saved Dataset{hint}")


def _read_folder(root: Path, num_workers: int) -> ImageSet:
    meta_bytes = (root / MANIFEST).read_bytes()
    meta = read_manifest(root)
    if meta["complete"] is not True:
        raise InputError(f"{root}: samples.json says complete=false (an interrupted sample.py run); "
                         "rerun the same sample.py command to finish it")
    files, labels, classes = _folder_files(root, meta)
    with ThreadPoolExecutor(max_workers=num_workers) as pool:  # PNG decoding releases the GIL
        images = list(pool.map(_read_png, files))
    logger.info("read %d generated images of %d classes from %s", len(files), len(classes), root)
    return ImageSet(stack_images(images, str(root)), np.asarray(labels, dtype=np.int64),
                    [c["name"] for c in classes], meta, fingerprint_files(meta_bytes, files, root),
                    class_ids=[c["id"] for c in classes])


def pipeline_hub_id(samples_meta: dict) -> str | None:
    """The generator repo: samples.json's ``pipeline`` when it is a Hub id rather than a local folder."""
    pipe = samples_meta.get("pipeline")
    return pipe if pipe and is_hub_id(pipe) else None
