"""Writing samples folders (sample.py): per-image seeds, resumable and shardable generation, the manifest.

A samples folder holds ``samples.json`` and one sub-folder per class, ``<folder>/<seed:06d>.png``, where
``<folder>`` is the class name (``class_folders``) and image i of class c has the seed
``seed + i``. Its noise comes from a generator seeded from (seed + i, c) only, so the files do not depend
on the batch size, on how the work is split between processes, or on where an interrupted run resumed.
"""

import glob
import hashlib
import json
import logging
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .utils import names as names_mod
from .utils.errors import KfaceError
from .utils.io import atomic_path, atomic_write_json, publish_dir, staging_dir
from .utils.outputs import refusal
from .pipeline import SCHEDULERS, ClassConditionalDDPMPipeline, image_generators
from .unet import check_group_norms

logger = logging.getLogger(__name__)

MANIFEST = "samples.json"
GRIDS = "grids"
DATASET = "dataset"
# Folders a samples folder holds besides the class folders: a class may not take their names.
RESERVED = {GRIDS, DATASET}
# The settings that decide the pixels: a rerun into the same folder must repeat them exactly.
SETTINGS_KEYS = ("pipeline", "pipeline_revision", "pipeline_sha256", "model_class_names", "scheduler",
                 "num_inference_steps", "guidance_scale", "seed", "resolution", "mixed_precision")
SAMPLER_ALIASES = {"dpmsolver++": "dpmsolver", "dpm-solver++": "dpmsolver"}
SAMPLER_NAMES = sorted(SCHEDULERS) + sorted(SAMPLER_ALIASES)
GRID_SIZE = 64
PIPELINE_PARTS = {"model_index.json", "unet", "scheduler"}


def sampler_name(name: str) -> str:
    """The canonical kface.pipeline.SCHEDULERS key of ``--scheduler name`` (``dpmsolver++`` -> ``dpmsolver``)."""
    name = SAMPLER_ALIASES.get(name.lower(), name.lower())
    if name not in SCHEDULERS:
        raise KfaceError(f"--scheduler {name}: unknown; use one of {SAMPLER_NAMES}")
    return name


def check_inference_steps(scheduler, num_inference_steps: int, flag: str = "--num_inference_steps") -> None:
    """Let the sampler judge ``num_inference_steps`` before anything is written: DDPM and DDIM refuse more
    steps than the training T, which diffusers would only say at the first denoising call."""
    try:
        scheduler.set_timesteps(num_inference_steps)
    except ValueError:
        raise KfaceError(f"{flag} {num_inference_steps}: the {type(scheduler).__name__} sampler takes at most the "
                         f"model's training T = {scheduler.config.num_train_timesteps} steps; pass "
                         f"{flag} {scheduler.config.num_train_timesteps} or fewer") from None


def pipeline_sha256(folder) -> str:
    """A digest of a saved pipeline's files (weights, configs): catches a folder retrained in place."""
    digest = hashlib.sha256()
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] in PIPELINE_PARTS]
    for path in sorted(files):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_pipeline(source: str, revision: str | None = None, flag: str = "--pipeline"):
    """(pipeline, revision, sha256) from a local folder or a Hub model id.

    The revision is the Hub commit (None for a folder); the sha256 is ``pipeline_sha256`` of the files loaded.
    """
    path = Path(source)
    if not path.exists() and (source.startswith((".", "/", "~")) or source.count("/") != 1):
        raise KfaceError(f"{flag} {source} does not exist; give the --output_dir of train_ddpm.py or a Hub id")
    commit = None
    if not path.exists():
        from huggingface_hub import snapshot_download

        try:  # the snapshot folder is named after the commit: the exact revision the samples came from
            path = Path(snapshot_download(source, revision=revision))
        except Exception as err:
            raise KfaceError(f"{flag} {source}: could not get it from the Hub ({type(err).__name__}); check the "
                             "id, your network and HF_HUB_OFFLINE, or give a local folder") from None
        commit = path.name
    if not (path / "model_index.json").is_file():
        raise KfaceError(f"{flag} {source}: no model_index.json; give the --output_dir of a finished train_ddpm.py")
    try:
        pipe = ClassConditionalDDPMPipeline.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise KfaceError(f"{flag} {source}: not a kface pipeline ({str(err).splitlines()[0]})") from None
    pipe.set_progress_bar_config(disable=True)
    # a warning, not a refusal: models trained before the presets changed must still load as they were
    check_group_norms(pipe.unet, what=f"{flag} {source}", strict=False)
    return pipe, commit, pipeline_sha256(path)


def resolve_classes(names: list[str], wanted: list[str] | None, flag: str = "--classes") -> list[int]:
    """Class ids for ``--classes`` (names, or ids for strings that are no class name); all when None."""
    if not wanted:
        return list(range(len(names)))
    ids = []
    for item in wanted:
        if item in names:
            ids.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            ids.append(int(item))
        else:
            shown = names if len(names) <= 30 else names[:30] + ["..."]
            raise KfaceError(f"{flag} {item!r}: no such class name or id (0..{len(names) - 1}); the model "
                             f"knows {len(names)}: {shown}")
    return sorted(set(ids))


def class_folders(names: list[str], flag: str = "--pipeline") -> list[str]:
    """The folder of each class (all classes of the model, so a folder never depends on ``--classes``):
    ``kface.utils.names.class_folders``, i.e. the class name itself; a name that cannot be a folder is refused.
    A class named like the samples folder's own ``grids``/``dataset`` gets ``@<id>`` appended."""
    try:
        return names_mod.class_folders(names, reserved=RESERVED)
    except names_mod.UnsafeName as err:
        raise KfaceError(f"{flag}: {err}; rename the class in the training data (preprocess.py refuses such "
                         "names) and retrain, or fix class_names in its model_index.json") from None


def samples_dirs(output_dir, guidance_scales: list[float]) -> list[tuple[float, Path]]:
    """One samples folder per guidance scale: ``output_dir`` itself, or ``output_dir/guidance_<w>/`` for a sweep."""
    if len(guidance_scales) == 1:
        return [(guidance_scales[0], Path(output_dir))]
    return [(w, Path(output_dir) / f"guidance_{float(w)!r}") for w in guidance_scales]


def image_path(out: Path, folder: str, seed: int) -> Path:
    return out / folder / f"{seed:06d}.png"


def build_manifest(settings: dict, names: list[str], folders: list[str], class_ids: list[int], seed: int,
                   num_per_class: int, complete: bool) -> dict:
    classes = [{"id": c, "name": names[c], "folder": folders[c], "seeds": [seed, seed + num_per_class - 1],
                "count": num_per_class} for c in class_ids]
    return {"kface_version": __version__, **settings, "num_per_class": num_per_class, "classes": classes,
            "complete": complete}


def check_manifest(out: Path, settings: dict) -> dict:
    """Refuse to add images made with other settings to an existing samples folder; its manifest, or {}."""
    path = out / MANIFEST
    if not path.is_file():
        if any(out.glob("*/*.png")):
            raise KfaceError(f"--output_dir {out} holds PNGs but no {MANIFEST}: not a sample.py folder; "
                             "choose an empty or new folder")
        return {}
    old = json.loads(path.read_text())
    diff = [f"{k} {old.get(k)!r} -> {settings[k]!r}" for k in SETTINGS_KEYS if old.get(k) != settings[k]]
    if diff:  # mixing them would corrupt the set
        raise refusal(out, f"samples made with other settings ({'; '.join(diff)})",
                      "rerun with those settings to resume it")
    return old


def manifest_entries(out: Path) -> list[str]:
    """Glob patterns of what a samples folder's manifest says it made (the manifest, grids, dataset and the
    class folders it lists): what ``--overwrite`` replaces. Only plain child names: a damaged or hostile
    manifest (``..``, ``a/b``) can never make it delete outside ``out``."""
    try:
        listed = [c.get("folder") for c in json.loads((out / MANIFEST).read_text()).get("classes", [])]
    except (OSError, ValueError, AttributeError):
        listed = []
    safe = [f for f in listed if isinstance(f, str) and f not in ("", ".", "..") and Path(f).name == f
            and "\\" not in f]
    return [glob.escape(name) for name in [MANIFEST, GRIDS, DATASET, *safe]]


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


def shard(jobs: list, rank: int, world_size: int) -> list:
    """Process ``rank``'s share: round-robin, so every process gets a mix of classes and the same load."""
    return jobs[rank::world_size]


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


def generate(pipe, jobs: list[tuple[int, int]], out: Path, folders: list[str], seed: int, guidance_scale: float,
             num_inference_steps: int, batch_size: int, autocast=None, progress=None) -> int:
    """Sample and write the images of ``jobs``; batches mix classes so that every batch but the last is full.

    ``autocast``: a function returning a fresh context manager (``accelerator.autocast``), or None.
    ``progress``: an object with ``update(n)`` (a tqdm bar), or None. Returns the number of images written.
    """
    with BoundedWriter(max_pending=max(64, 4 * batch_size)) as writer:
        for start in range(0, len(jobs), batch_size):
            part = jobs[start:start + batch_size]
            labels = [c for c, _ in part]
            # per-image seed seed + i, mixed with the class id: only (seed + i, c) decides the image
            gens = image_generators(0, labels, [seed + i for _, i in part])
            with autocast() if autocast is not None else nullcontext():
                images = pipe(labels, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                              generator=gens, output_type="uint8").images
            images = images.permute(0, 2, 3, 1).cpu().numpy()  # the one device-to-host copy per batch
            for (c, i), image in zip(part, images):
                writer.submit(image_path(out, folders[c], seed + i), image)
            if progress is not None:
                progress.update(len(part))
    return len(jobs)


def read_images(out: Path, folder: str, seeds) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(image_path(out, folder, s)).convert("RGB")) for s in seeds])


def write_grids(out: Path, class_ids: list[int], folders: list[str], seed: int, num_per_class: int) -> None:
    """``grids/<folder>.png``: the first 64 images of each class, 8 a row."""
    from PIL import Image
    from torchvision.utils import make_grid

    for c in class_ids:
        images = read_images(out, folders[c], range(seed, seed + min(GRID_SIZE, num_per_class)))
        grid = make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), nrow=8, padding=2, pad_value=255)
        with atomic_path(out / GRIDS / f"{folders[c]}.png") as tmp:
            Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


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


def finish(out: Path, manifest: dict, names: list[str], class_ids: list[int], folders: list[str],
           output_format: str) -> dict:
    """After every process is done: check completeness, write grids (and the dataset), mark the manifest."""
    seed, n = manifest["seed"], manifest["num_per_class"]
    missing = missing_jobs(out, class_ids, folders, seed, n)
    manifest = {**manifest, "complete": not missing}
    if not missing:
        write_grids(out, class_ids, folders, seed, n)
        if output_format == "dataset":
            write_dataset(out, names, class_ids, folders, seed, n)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
