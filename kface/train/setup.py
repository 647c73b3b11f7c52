"""The trainer skeleton shared by train_oracle.py and train_ddpm.py: logging, the Accelerator (trackers that are
missing are dropped, not fatal), image datasets as uint8 tensors with torchvision v2 augmentation, the
steps-per-epoch arithmetic and the batches left in an epoch after a resume."""

import itertools
import logging
from pathlib import Path

import numpy as np
import torch

from ..data.augment import image_transform
from ..data.preprocess.decode import to_rgb8
from ..utils.errors import InputError
from ..utils.outputs import require_one_process_group

logger = logging.getLogger(__name__)


def setup_logging(*names: str) -> None:
    """The scripts' logging: kface's (and ``names``', e.g. ``"__main__"``) INFO lines; the libraries' (accelerate's
    per-file saves, diffusers) from WARNING up."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for name in ("kface", *names):
        logging.getLogger(name).setLevel(logging.INFO)


def steps_per_epoch(num_batches: int, num_processes: int = 1, accumulation: int = 1) -> int:
    """Optimiser steps per epoch of a loader of ``num_batches``: once prepared, each of ``num_processes`` gets
    ceil(batches / processes) of them (accelerate pads the last round), and an optimiser step takes
    ``accumulation`` of those. Pass ``num_processes=1`` for a loader that is already prepared (sharded)."""
    return -(-(-(-num_batches // num_processes)) // accumulation)


def resolve_report_to(report_to: str) -> list[str] | None:
    """``--report_to tensorboard|wandb|all|none`` -> the trackers that are installed (others warned about)."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    available = {"tensorboard": bool(is_tensorboard_available()), "wandb": bool(is_wandb_available())}
    wanted = list(available) if report_to == "all" else [] if report_to in ("none", "", None) else [report_to]
    for name in wanted:
        if name not in available:
            raise InputError(f"report_to {report_to!r}: unknown tracker; use tensorboard, wandb, all or none")
        if not available[name]:
            logger.warning("report_to %s: %s is not installed; not logging to it", report_to, name)
    kept = [n for n in wanted if available[n]]
    return kept or None


def build_accelerator(output_dir, seed: int, mixed_precision: str | None = None,
                      gradient_accumulation_steps: int = 1, report_to: str = "tensorboard"):
    """An ``Accelerator`` logging under ``<output_dir>/logs``, with epoch-seeded (resumable) shuffling."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import ProjectConfiguration, set_seed

    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=resolve_report_to(report_to),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(Path(output_dir) / "logs")),
        # the permutation of epoch e depends only on (seed, e): a mid-epoch resume skips the right batches
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
    )
    require_one_process_group(accelerator.num_processes)  # before anything is written
    set_seed(seed)
    return accelerator


def with_image_transform(dataset, transform):
    """``dataset`` yielding ``{"pixel_values": uint8 CHW, "labels": int}``, transformed on the fly."""

    def apply(batch):
        return {"pixel_values": [transform(to_rgb8(img)) for img in batch["image"]],
                "labels": list(batch["label"])}

    return dataset.with_transform(apply)


def image_loader(dataset, batch_size: int, shuffle: bool, num_workers: int = 0):
    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long)}

    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                                       collate_fn=collate, drop_last=False)


def image_loaders(splits: dict, resolution: int, train_batch_size: int, eval_batch_size: int, num_workers: int = 0,
                  **augment) -> dict:
    """One loader per split (``None`` splits skipped); only the one named ``train`` shuffles and augments."""
    loaders = {}
    for name, ds in splits.items():
        if ds is not None:
            train = name == "train"
            transform = image_transform(resolution, train=train, **augment)
            loaders[name] = image_loader(with_image_transform(ds, transform),
                                         train_batch_size if train else eval_batch_size, shuffle=train,
                                         num_workers=num_workers)
    return loaders


def resume_batches(accelerator, loader, epoch: int, steps_done_in_epoch: int, accumulation: int,
                   seed: int | None = None):
    """The batches of ``epoch`` still to run after ``steps_done_in_epoch`` optimiser steps of it.

    The shuffling order of an epoch depends only on (seed, epoch) (see ``build_accelerator``), so a
    resumed run sees the same remaining batches as an uninterrupted one. With ``seed``, the random
    augmentations do too: the global RNGs they draw from are seeded from (seed, epoch, process) here, at
    the epoch's start, and the batches already used are loaded and dropped rather than skipped unread
    (``accelerator.skip_first_batches``), so that the draws before the resume point are made again. That
    costs decoding the skipped part of one epoch, once per resume. Restoring the checkpoint's RNG state is
    not enough: the loader prefetches one batch, so at a save the RNG is already past the next batch's draws.
    """
    loader.set_epoch(epoch)
    skip = steps_done_in_epoch * accumulation
    if seed is None:
        return accelerator.skip_first_batches(loader, skip) if skip else loader
    from accelerate.utils import set_seed

    set_seed(int(np.random.SeedSequence([seed, epoch, accelerator.process_index]).generate_state(1)[0]))
    return itertools.islice(loader, skip, None)
