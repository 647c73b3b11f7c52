"""Training checkpoints shared by train_oracle.py and train_ddpm.py.

A checkpoint is ``<output_dir>/checkpoint-<step>/``: ``accelerator.save_state`` (model, optimiser,
scheduler, RNG states, and every object given to ``accelerator.register_for_checkpointing``, e.g. EMA)
plus ``kface_state.json`` with the loop counters. It is written under ``checkpoint-<step>.incomplete``
and renamed when complete, so a run killed mid-save leaves the previous checkpoint as the latest.
"""

import json
import os
import re
import shutil
from pathlib import Path

from .utils.errors import KfaceError
from .utils.io import atomic_write_json

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
    """Turn ``--resume_from_checkpoint`` (None, 'latest' or a path) into a checkpoint folder or None."""
    if not resume_from:
        return None
    if resume_from == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume_from)
    if not path.is_absolute() and not path.exists():
        path = Path(output_dir) / resume_from
    if not (path / STATE_FILE).exists():
        raise KfaceError(
            f"--resume_from_checkpoint {resume_from}: no complete checkpoint there (missing {STATE_FILE}); "
            f"use 'latest' or one of {[p.name for p in list_checkpoints(output_dir)]}"
        )
    return path


def load_checkpoint(accelerator, checkpoint: Path) -> dict:
    """Restore everything ``save_checkpoint`` saved; return its kface state (at least ``step``)."""
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # a truncated or foreign folder: say which one, not a 40-line traceback
        raise KfaceError(
            f"checkpoint {checkpoint} could not be loaded ({type(err).__name__}: {err}); "
            "delete it to resume from the one before, or start a new --output_dir"
        ) from None
    return json.loads((checkpoint / STATE_FILE).read_text())
