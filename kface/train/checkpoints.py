"""Training checkpoints shared by train_oracle.py and train_ddpm.py, behind one :class:`Checkpointer`.

A checkpoint is ``<output_dir>/checkpoint-<step>/``: ``accelerator.save_state`` (model, optimiser,
scheduler, RNG states, and every object given to ``accelerator.register_for_checkpointing``, e.g. EMA)
plus ``kface_state.json`` with the loop counters. It is written under ``checkpoint-<step>.incomplete``
and renamed when complete, so a run killed mid-save leaves the previous checkpoint as the latest.

The :class:`Checkpointer` owns the policy, as timm's ``CheckpointSaver`` does: the cadence (``every``), the
rotation (``total_limit``), the best weights so far (``BestWeights``, saved inside every checkpoint), the check
that no non-finite value reached the weights before a save, and resuming.
"""

import os
import re
import shutil
from pathlib import Path

import torch

from ..utils.errors import InputError, KfaceError
from ..utils.io import atomic_write_json
from ..utils.outputs import keep_or_replace
from ..utils.schema import Field, read_json

_CKPT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "kface_state.json"


def list_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if (m := _CKPT.match(p.name)) and (p / STATE_FILE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator, output_dir, step: int, state: dict | None = None,
                    total_limit: int | None = None) -> Path | None:
    """Save a resumable checkpoint for ``step``; prune the oldest beyond ``total_limit``.

    Call on every process (``save_state`` gathers sharded state); only the main process writes the
    kface files and renames. Returns the checkpoint path on the main process.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}.incomplete"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None
    atomic_write_json(tmp / STATE_FILE, {"step": int(step), **(state or {})})
    if final.exists():  # re-saving the same step after a resume
        shutil.rmtree(final)
    os.replace(tmp, final)
    if total_limit is not None and total_limit > 0:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_resume(output_dir, resume_from: str | None) -> Path | None:
    """Turn ``resume_from`` (None, 'latest', a path, or a folder name in ``output_dir``) into a checkpoint or None."""
    if not resume_from:
        return None
    if resume_from == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / resume_from
    if not (path / STATE_FILE).exists():
        raise InputError(
            f"{resume_from}: no complete checkpoint there (missing {STATE_FILE}); "
            f"use 'latest' or one of {[p.name for p in list_checkpoints(output_dir)]}"
        )
    return path


def load_checkpoint(accelerator, checkpoint: Path) -> dict:
    """Restore everything ``save_checkpoint`` saved; return its kface state (at least ``step``)."""
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # a truncated or foreign folder: say which one, not a 40-line traceback
        raise InputError(
            f"checkpoint {checkpoint} could not be loaded ({type(err).__name__}: {err}); "
            "delete it to resume from the one before, or start a new output folder"
        ) from None
    return read_state(checkpoint)


STATE_FIELDS = {"step": Field(int, minimum=0), "skipped_steps": Field(int, required=False, minimum=0),
                "class_names": Field(list, required=False)}


def read_state(checkpoint: Path) -> dict:
    """A checkpoint's ``kface_state.json``, checked (one line naming the wrong field)."""
    return read_json(Path(checkpoint) / STATE_FILE, STATE_FIELDS,
                     hint="delete the checkpoint to resume from the one before, or start a new output folder")


def checkpoint_class_names(checkpoint: Path) -> list[str] | None:
    """The classes a checkpoint was trained on: its own record, else the run's ``training_config.json`` (older
    train_ddpm.py checkpoints); None when neither says."""
    names = read_state(checkpoint).get("class_names")
    config = Path(checkpoint).parent / "training_config.json"
    if names is None and config.is_file():
        names = read_training_config(config).get("class_names")
    return names


TRAINING_CONFIG_FIELDS = {"args": Field(dict, required=False), "class_names": Field(list, required=False),
                          "resolution": Field(int, required=False, minimum=1), "unet": Field(dict, required=False)}


def read_training_config(path) -> dict:
    """A run's ``training_config.json`` (what a resume compares against), checked field by field."""
    return read_json(path, TRAINING_CONFIG_FIELDS, hint="restore it from the run, or start a new output folder")


def _shown(names) -> str:
    return str(list(names)) if len(names) <= 8 else f"{list(names)[:8]} ... ({len(names)} in all)"


def check_checkpoint_classes(checkpoint: Path, class_names: list[str] | None) -> None:
    """Resuming on another dataset would go on training the checkpoint's classes under the new names."""
    saved = checkpoint_class_names(checkpoint)
    if class_names is None or saved is None or list(saved) == list(class_names):
        return
    raise InputError(f"{checkpoint.name} was trained on {len(saved)} classes {_shown(saved)} but the dataset has "
                     f"{len(class_names)} classes {_shown(class_names)}; resume with the dataset it was trained on, "
                     "or start a new output folder")


def checkpoint_due(step: int, steps_per_epoch: int, every: str, epoch_end: bool) -> bool:
    """``--checkpointing_steps epoch|N``. At an epoch end the checkpoint waits for validation, so that
    the best-model record it holds is up to date; mid-epoch it is taken right away."""
    if every == "epoch":
        return epoch_end
    if step % int(every) != 0:
        return False
    return epoch_end or step % steps_per_epoch != 0


class BestWeights:
    """The best weights so far and their validation score; registered for checkpointing, so a resumed
    run knows its best model. Scores compare as tuples (e.g. ``(accuracy, -loss)``)."""

    def __init__(self):
        self.score: tuple | None = None
        self.epoch: int | None = None
        self.weights: dict | None = None

    def update(self, model: torch.nn.Module, score: tuple, epoch: int) -> bool:
        if self.score is not None and tuple(score) <= tuple(self.score):
            return False
        self.score, self.epoch = tuple(score), int(epoch)
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict:
        return {"score": list(self.score) if self.score else None, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.score = tuple(state["score"]) if state.get("score") else None
        self.epoch, self.weights = state.get("epoch"), state.get("weights")


class Checkpointer:
    """When to save, what to keep, and how to resume: one object per training run.

    ``every``: ``"epoch"`` or a number of optimiser steps (``--checkpointing_steps``); ``total_limit``: how many
    checkpoints to keep (the oldest go first); ``best``: a :class:`BestWeights` to carry in every checkpoint;
    ``monitor``: a ``kface.train.monitor.TrainingMonitor`` whose ``check`` runs before each save (so that no
    checkpoint holds weights updated from a non-finite value) and whose skip count travels in the checkpoint.
    Every method is called on every process alike: saving is a collective.
    """

    def __init__(self, accelerator, output_dir, *, every: str, total_limit: int | None, steps_per_epoch: int,
                 monitor=None, best: BestWeights | None = None, class_names: list[str] | None = None):
        self.accelerator, self.output_dir = accelerator, Path(output_dir)
        self.class_names = list(class_names) if class_names is not None else None
        self.every, self.total_limit, self.steps_per_epoch = every, total_limit, steps_per_epoch
        self.monitor, self.best = monitor, best
        self.last_saved: int | None = None

    def register(self, *objects) -> None:
        """Have ``accelerator.save_state`` carry ``objects`` (an LR scheduler, an EMA), then the best weights.
        accelerate names them ``custom_checkpoint_<i>`` by registration order: checkpoints written before this
        class existed registered (scheduler, best) and (scheduler, EMA), the same order as here."""
        self.accelerator.register_for_checkpointing(*objects, *([self.best] if self.best is not None else []))

    def resume(self, checkpoint: Path | None) -> dict:
        """Restore ``checkpoint`` (None: a fresh start); its kface state, at least ``step``."""
        if not checkpoint:
            return {"step": 0}
        check_checkpoint_classes(checkpoint, self.class_names)  # before anything is loaded into the model
        state = load_checkpoint(self.accelerator, checkpoint)
        self.last_saved = int(state["step"])
        if self.monitor is not None:  # the fp16 skip count goes on across the resume
            self.monitor.skipped_steps = int(state.get("skipped_steps", 0))
        return state

    def due(self, step: int, epoch_end: bool) -> bool:
        return checkpoint_due(step, self.steps_per_epoch, self.every, epoch_end)

    def save(self, step: int) -> Path | None:
        if self.monitor is not None:
            self.monitor.check()
        state = {"skipped_steps": self.monitor.skipped_steps} if self.monitor is not None else {}
        if self.class_names is not None:  # what a resume checks its dataset against
            state["class_names"] = self.class_names
        self.last_saved = step
        return save_checkpoint(self.accelerator, self.output_dir, step, state=state, total_limit=self.total_limit)

    def save_if_due(self, step: int, *, epoch_end: bool) -> Path | None:
        """Save when the cadence says so (see ``checkpoint_due``)."""
        return self.save(step) if self.due(step, epoch_end) else None

    def save_final(self, step: int) -> Path | None:
        """The run's last checkpoint, so that a longer run can resume here, unless ``step`` is already saved (or
        was resumed from). Decided from the step counter, the same on every process: looking for the folder raced
        with the main process's rename, and a process that saw none waited alone in ``save_state`` (a hang)."""
        return self.save(step) if self.last_saved != step else None

    def update_best(self, model: torch.nn.Module, score: tuple, epoch: int) -> bool:
        return self.best is not None and self.best.update(model, score, epoch)


# complete checkpoints only (a checkpoint-<step>.incomplete/ killed mid-save is no result)
CHECKPOINTS = "checkpoint-*[0-9]/kface_state.json"


def keep_or_resume_training(output_dir, results, resume, overwrite: bool) -> list[Path]:
    """The policy for train_oracle.py and train_ddpm.py: ``results`` (and complete checkpoints) are kept unless
    ``resume`` (the resolved ``--resume_from_checkpoint``) continues them or ``overwrite`` starts over; starting
    over deletes the old checkpoints too, which a later ``--resume_from_checkpoint latest`` would otherwise pick."""
    if resume is not None and overwrite:
        raise KfaceError(f"--overwrite and --resume_from_checkpoint {resume.name}: pass one; --overwrite starts over, "
                         "--resume_from_checkpoint continues the run in --output_dir")
    hint = "pass --resume_from_checkpoint latest to continue it" if latest_checkpoint(output_dir) else None
    return keep_or_replace(output_dir, [CHECKPOINTS, *results], overwrite, resumes=resume is not None,
                           resume_hint=hint)
