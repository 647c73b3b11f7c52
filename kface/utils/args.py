"""Argument groups shared by the scripts, so that every script spells a flag the same way, and the one place
that decides which of the arguments a run may record (configs, summaries, model cards, trackers)."""

import argparse
import math
import re
from pathlib import Path

from .errors import KfaceError


def add_hub_args(parser: argparse.ArgumentParser, kind: str = "model") -> None:
    g = parser.add_argument_group("Hugging Face Hub")
    g.add_argument("--push_to_hub", action="store_true", help=f"Push the {kind} to the Hub when done.")
    g.add_argument(f"--hub_{kind}_id", default=None, help=f"Hub repo id for the {kind} (user/name).")
    g.add_argument("--hub_token", default=None,
                   help="Deprecated: prefer the HF_TOKEN variable or `huggingface-cli login` (used when this is not "
                        "given); a token on the command line shows in the process list. Never written anywhere.")
    g.add_argument("--hub_private", action="store_true", help="Create the repo as private.")


# The Hub's licence ids are lower-case words joined by - and . (apache-2.0, cc-by-nc-4.0, openrail++, other)
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def license_id(text: str) -> str:
    if not LICENSE_ID.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a Hub licence id such as cc-by-nc-4.0, apache-2.0 or other")
    return text


def add_license_arg(parser) -> None:
    """``--license``: the model card's licence. Weights trained on a dataset carry that dataset's terms, which only
    the person training knows, so the default says so (``other``, with a line in the card) instead of guessing."""
    parser.add_argument("--license", type=license_id, default="other",
                        help="Licence id for the model card (Hub ids: cc-by-nc-4.0, apache-2.0, ...). The weights "
                             "follow from your data's terms; 'other' (default) says the licence is not stated.")


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``, the one way besides resuming to run into a folder that holds a result (kface.utils.outputs)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the result an existing --output_dir holds (by default it is kept and the run "
                             "refuses to start, unless it resumes that result).")


# Argument names and values that must never be recorded: a Hub token (user access tokens start with hf_)
# passed as --hub_token, inside another value (a URL, a path) or under any flag whose name says it is secret.
SECRET_NAME = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{6,}")
REDACTED = "<redacted>"


def redact(value):
    """``value`` with every token-like substring replaced, recursively through lists, tuples and dicts."""
    if isinstance(value, str):
        return SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, Path):
        return redact(str(value))
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not SECRET_NAME.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def recordable_args(args, scalars_only: bool = False) -> dict:
    """What of the parsed ``args`` a run may write down (training_config.json, train_summary.json, model cards,
    metrics.json's config) or hand to a tracker: secret-named arguments dropped, token-like values redacted,
    paths as strings. ``scalars_only``: only int/float/str/bool values (TensorBoard hparams take nothing else)."""
    recorded = redact(dict(vars(args)))
    if scalars_only:
        return {k: v for k, v in recorded.items() if isinstance(v, (int, float, str, bool))}
    return recorded


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# Image sizes kface accepts (--resolution, --resolutions): faces for identity oracles and DDPMs at the paper's
# 32 and 64 px, with room above. 20000 px would need 1.2 GB per decoded crop, and fail in an allocation later.
MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024


def resolution(text: str) -> int:
    value = int(text)
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise argparse.ArgumentTypeError(f"{text} px is outside the range kface accepts, {MIN_RESOLUTION} to "
                                         f"{MAX_RESOLUTION} (the paper: 32 and 64)")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (inclusive), got {text}")
    return value


def below_one(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def require_flags(args, **needed: str) -> None:
    """A one-line error for the first of ``needed`` (flag name -> what to give) that ``args`` lacks; argparse's
    ``required=True`` would print the whole usage before its error line."""
    for name, what in needed.items():
        if not getattr(args, name):
            raise KfaceError(f"--{name} is required: {what}")


# Beyond this a guided sample is saturated noise (the usual range is 1-10), and near float32's limit
# w * (eps_cond - eps_null) overflows to inf: black images.
MAX_GUIDANCE = 100.0


def check_guidance(values: list[float], flag: str) -> None:
    """Classifier-free guidance weights: inf or nan would turn every sample into nan, a huge one into inf."""
    for w in values:
        if not 0.0 <= w <= MAX_GUIDANCE:
            raise KfaceError(f"{flag} {w}: must be between 0 and {MAX_GUIDANCE:g} (0: unconditional, "
                             "1: conditional, >1: guided; 1-10 is the usual range)")


def checkpointing_every(text: str) -> str:
    if text == "epoch":
        return text
    positive_int(text)
    return text


DATASET_HINT = "a preprocess.py output folder, a saved DatasetDict or a Hub id"


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Where the images come from and how they are read (train_oracle.py, train_ddpm.py)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", required=False, default=None,
                   help="preprocess.py output folder, a saved DatasetDict folder, or a Hub dataset id.")
    g.add_argument("--resolution", type=resolution, default=None,
                   help="Image size; picks the <res>px sub-folder/config. Default: the dataset's image size.")
    g.add_argument("--random_flip", action=argparse.BooleanOptionalAction, default=True,
                   help="Random horizontal flips of training images.")
    g.add_argument("--dataloader_num_workers", type=non_negative_int, default=0,
                   help="Data-loading worker processes (0: in the main process).")
    g.add_argument("--in_memory", action="store_true",
                   help="Decode each split once into a uint8 tensor (3 KB per 32 px image: 10,000 crops are 30 MB; "
                        "on the training device with --dataloader_num_workers 0) and augment whole batches there "
                        "(kface.data.memory). Off: decode and augment image by image on every step.")


def add_training_args(parser: argparse.ArgumentParser, epochs: int = 30, batch_size: int = 64,
                      learning_rate: float = 1e-3, weight_decay: float = 0.05) -> None:
    """Optimisation, precision, logging and checkpointing flags, spelled the same in every training script."""
    g = parser.add_argument_group("training")
    g.add_argument("--output_dir", required=False, default=None, help="Where the run writes everything.")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="Seed for weights init, data order and augmentation.")
    g.add_argument("--epochs", type=positive_int, default=epochs, help="Training epochs.")
    g.add_argument("--max_train_steps", type=positive_int, default=None,
                   help="Stop after this many optimiser steps (the schedule is still planned over --epochs); "
                        "resume later with --resume_from_checkpoint latest.")
    g.add_argument("--train_batch_size", type=positive_int, default=batch_size, help="Batch size per device.")
    g.add_argument("--eval_batch_size", type=positive_int, default=256, help="Batch size per device for evaluation.")
    g.add_argument("--gradient_accumulation_steps", type=positive_int, default=1)
    g.add_argument("--learning_rate", type=positive_float, default=learning_rate, help="Peak AdamW learning rate.")
    g.add_argument("--lr_warmup_steps", type=non_negative_int, default=0, help="Linear learning-rate warm-up steps.")
    g.add_argument("--adam_weight_decay", type=non_negative_float, default=weight_decay,
                   help="AdamW decoupled weight decay.")
    g.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                   help="Default: what `accelerate launch`/`accelerate config` says.")
    g.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "wandb", "all", "none"],
                   help="Experiment tracker(s); one that is not installed is skipped with a warning.")
    g.add_argument("--logging_steps", type=positive_int, default=10,
                   help="Log the mean training loss every N optimiser steps (each log is one device sync).")
    g.add_argument("--checkpointing_steps", type=checkpointing_every, default="epoch",
                   help="Save a resumable checkpoint every N optimiser steps, or every 'epoch'.")
    g.add_argument("--checkpoints_total_limit", type=positive_int, default=None,
                   help="Keep only the newest N checkpoints (default: %(default)s).")
    g.add_argument("--resume_from_checkpoint", default=None,
                   help="'latest' or a checkpoint-<step> folder in --output_dir.")
    add_overwrite_arg(g)
