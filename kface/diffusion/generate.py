"""Filling a samples folder (kface.samples) from a pipeline: loading it, sharding the work, per-image seeds.

Image i of class c has the seed ``seed + i``; its noise comes from a generator seeded from (seed + i, c) only, so
the files do not depend on the batch size, on how the work is split between processes, or on where an
interrupted run resumed.
"""

import hashlib
from contextlib import nullcontext
from pathlib import Path

from ..samples import BoundedWriter, image_path
from ..utils.errors import InputError
from ..utils.hub import is_hub_id
from .pipeline import ClassConditionalDDPMPipeline, image_generators
from .unet import check_group_norms

PIPELINE_PARTS = {"model_index.json", "unet", "scheduler"}


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


def load_pipeline(source: str, revision: str | None = None):
    """(pipeline, revision, sha256) from a local folder or a Hub model id (``source``).

    The revision is the Hub commit (None for a folder); the sha256 is ``pipeline_sha256`` of the files loaded.
    """
    path = Path(source)
    if not path.exists() and not is_hub_id(source):
        raise InputError(f"{source} does not exist; give the output folder of train_ddpm.py or a Hub id")
    commit = None
    if not path.exists():
        from huggingface_hub import snapshot_download

        try:  # the snapshot folder is named after the commit: the exact revision the samples came from
            path = Path(snapshot_download(source, revision=revision))
        except Exception as err:
            raise InputError(f"{source}: could not get it from the Hub ({type(err).__name__}); check the "
                             "id, your network and HF_HUB_OFFLINE, or give a local folder") from None
        commit = path.name
    if not (path / "model_index.json").is_file():
        raise InputError(f"{source}: no model_index.json; give the output folder of a finished train_ddpm.py")
    try:
        pipe = ClassConditionalDDPMPipeline.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise InputError(f"{source}: not a kface pipeline ({str(err).splitlines()[0]})") from None
    pipe.set_progress_bar_config(disable=True)
    # a warning, not a refusal: models trained before the presets changed must still load as they were
    check_group_norms(pipe.unet, what=str(source), strict=False)
    return pipe, commit, pipeline_sha256(path)


def shard(jobs: list, rank: int, world_size: int) -> list:
    """Process ``rank``'s share: round-robin, so every process gets a mix of classes and the same load."""
    return jobs[rank::world_size]


def generate(pipe, jobs: list[tuple[int, int]], out: Path, folders: list[str], *, seed: int, guidance_scale: float,
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
