"""The generated folder: which photo goes to train/ or test/, rendering them in worker processes, the staging
folder that makes a run resumable and atomic, and reading ``annotations.jsonl`` back."""

import io
import json
import logging
import time
from pathlib import Path

from ...utils.errors import InputError
from ...utils.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_writable_dir,
    publish_dir,
    staging_dir,
)
from ..pool import map_in_workers
from .identity import DEFAULT_DISTINCTNESS, all_identities, rng_for
from .scenes import render_scene

logger = logging.getLogger(__name__)

JPEG_QUALITY = 92


def split_of(seed: int, identity: int, images_per_identity: int, test_fraction: float) -> list[str]:
    """``"train"``/``"test"`` for each image index of one identity: a fixed fraction, randomly placed."""
    num_test = int(round(images_per_identity * test_fraction))
    if images_per_identity >= 2:
        num_test = min(max(num_test, 1), images_per_identity - 1)
    test = set(rng_for(seed, 4, identity).permutation(images_per_identity)[:num_test].tolist())
    return ["test" if i in test else "train" for i in range(images_per_identity)]


_WORKER: dict = {}


def _init_worker(config: dict) -> None:
    _WORKER.clear()
    _WORKER.update(config)


def _render_job(job) -> dict:
    """Render, encode and write one photo; return its annotation line. Depends only on (seed, identity, index)."""
    identity, index, split = job
    cfg = _WORKER
    rng = rng_for(cfg["seed"], 3, identity, index)
    img, faces = render_scene(cfg["identities"], identity, rng, image_size=cfg["image_size"],
                              second_face_rate=cfg["second_face_rate"], no_face_rate=cfg["no_face_rate"],
                              occluder_rate=cfg["occluder_rate"])
    name = cfg["identities"][identity]["identity"]
    rel = f"{split}/{name}/{index:06d}.jpg"
    path = Path(cfg["staging"]) / rel
    if not path.exists():  # a resumed run: files already written are the same bytes, keep them
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        atomic_write_bytes(path, buf.getvalue())
    return {"path": rel, "split": split, "identity": name, "width": img.width, "height": img.height, "faces": faces}


def _rate(value: float) -> bool:
    return 0.0 <= value < 1.0


# What generate() accepts, one rule per parameter (or pair): (parameters, usable?, what is wrong and the fix).
# generate() names the parameters; the CLI renders the same rules with its flags (cli.check_flags).
OPTION_RULES = (
    (("num_identities",), lambda n: n >= 2, "need at least 2 (identities come in look-alike pairs)"),
    (("images_per_identity",), lambda n: n >= 2, "need at least 2 (one train, one test)"),
    (("test_fraction",), lambda f: 0.0 < f < 1.0, "must be between 0 and 1, e.g. 0.2"),
    (("image_size",), lambda s: 96 <= s[0] <= s[1] <= 1024, "need 96 <= min_size <= max_size <= 1024"),
    (("num_workers",), lambda n: n >= 0, "must be >= 0 (0: in this process)"),
    (("second_face_rate",), _rate, "must be in [0, 1)"),
    (("no_face_rate",), _rate, "must be in [0, 1)"),
    (("occluder_rate",), _rate, "must be in [0, 1)"),
    (("second_face_rate", "no_face_rate"), lambda a, b: a + b < 1.0, "must add up to less than 1"),
)


def broken_rule(options: dict) -> tuple[tuple[str, ...], str] | None:
    """The first of ``OPTION_RULES`` that ``options`` break, as (parameters, why), or None."""
    for names, usable, why in OPTION_RULES:
        if not usable(*(options[n] for n in names)):
            return names, why
    return None


def _prepare_staging(output_dir: Path, config: dict, overwrite: bool) -> Path:
    """Refuse a finished output unless ``overwrite``; resume an interrupted run only if its settings match."""
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir} is a file; give a folder path")
    check_writable_dir(output_dir.parent, "output_dir")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise InputError(f"{output_dir} already exists and is not empty; pass overwrite=True to replace it or "
                         "choose another folder")
    staging = staging_dir(output_dir)
    config_path = staging / "synthetic_config.json"
    if staging.exists():
        previous = json.loads(config_path.read_text()) if config_path.exists() else None
        if previous != json.loads(json.dumps(config)):
            raise InputError(f"{staging} holds an interrupted run with other settings ({previous}); "
                             "delete it or rerun with the same settings")
        logger.info("Resuming the interrupted run in %s (images already written are kept)", staging)
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, config)
    return staging


def generate(output_dir, *, num_identities: int = 10, images_per_identity: int = 300, test_fraction: float = 0.2,
             seed: int = 0, image_size: tuple[int, int] = (128, 256), num_workers: int = 2,
             second_face_rate: float = 0.10, no_face_rate: float = 0.03, occluder_rate: float = 0.12,
             distinctness: float = DEFAULT_DISTINCTNESS, overwrite: bool = False) -> dict:
    """Write the synthetic dataset to ``output_dir`` (built in a staging folder, published when complete).

    ``num_workers`` as in :func:`kface.data.pool.map_in_workers` (0: in this process); the output does not depend
    on it. Returns a summary: image counts per split, scenes without a face, with a second face, with an
    occluder, and the seconds it took.
    """
    rates = {"second_face_rate": second_face_rate, "no_face_rate": no_face_rate, "occluder_rate": occluder_rate}
    options = {"num_identities": num_identities, "images_per_identity": images_per_identity,
               "test_fraction": test_fraction, "image_size": tuple(image_size), "num_workers": num_workers, **rates}
    if broken := broken_rule(options):
        names, why = broken
        raise InputError(f"{' and '.join(f'{n}={options[n]!r}' for n in names)}: {why}")
    start = time.perf_counter()
    output_dir = Path(output_dir)
    identities = all_identities(seed, num_identities, distinctness)
    config = {"num_identities": num_identities, "images_per_identity": images_per_identity,
              "test_fraction": test_fraction, "seed": seed, "image_size": list(image_size),
              "distinctness": distinctness, **rates}
    staging = _prepare_staging(output_dir, config, overwrite)
    jobs = [(i, k, split) for i in range(num_identities)
            for k, split in enumerate(split_of(seed, i, images_per_identity, test_fraction))]
    worker_cfg = {"identities": identities, "staging": str(staging), "seed": seed,
                  "image_size": tuple(image_size), **rates}
    # results in job order: annotations.jsonl is the same for any number of workers
    records = list(map_in_workers(_render_job, jobs, num_workers=num_workers, initializer=_init_worker,
                                  initargs=(worker_cfg,), chunksize=16))
    atomic_write_text(staging / "annotations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_json(staging / "identities.json", identities)
    publish_dir(staging, output_dir)
    summary = _summarise(records, output_dir, time.perf_counter() - start)
    logger.info("Wrote %(images)d photos of %(identities)d identities to %(output_dir)s in %(seconds).1f s "
                "(train %(train)d, test %(test)d; no face %(no_face)d, second face %(second_face)d, "
                "occluded %(occluded)d)", summary)
    return summary


def _summarise(records: list[dict], output_dir: Path, seconds: float) -> dict:
    return {
        "output_dir": str(output_dir),
        "identities": len({r["identity"] for r in records}),
        "images": len(records),
        "train": sum(r["split"] == "train" for r in records),
        "test": sum(r["split"] == "test" for r in records),
        "no_face": sum(not r["faces"] for r in records),
        "second_face": sum(len(r["faces"]) > 1 for r in records),
        "occluded": sum(any(f["target"] and f["occluder"] for f in r["faces"]) for r in records),
        "seconds": round(seconds, 2),
    }


def load_annotations(data_dir) -> dict[str, dict]:
    """``annotations.jsonl`` of a generated folder as {relative path: record}."""
    path = Path(data_dir) / "annotations.jsonl"
    if not path.exists():
        raise InputError(f"{path} not found: the folder was not written by kface.data.synthetic")
    with path.open() as f:
        return {r["path"]: r for r in map(json.loads, f)}
