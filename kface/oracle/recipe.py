"""The oracle's training recipe (the paper's protocol, train_oracle.py): a frozen-backbone warm-up in which only
the head and the new small-input stem learn, then full fine-tuning on a phase-aware cosine schedule, with the
best epoch picked on a class-stratified validation split held out of train."""

import math

from torch import nn

from ..utils.errors import InputError


def stem_and_head_names(model: nn.Module, small_stem: bool) -> set[str]:
    """Parameter names that train during the frozen-backbone warm-up: the head, and the new stem."""
    head = model.pretrained_cfg.get("classifier", "fc")
    prefixes = [head + "."] + (["conv1.", "bn1."] if small_stem else [])
    return {n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes))}


def warmup_param_groups(model: nn.Module, small_stem: bool, frozen_warmup: bool) -> list[dict]:
    """Optimiser groups: [head + new stem, backbone] for a frozen-backbone warm-up, else one group.

    The freeze itself is the backbone group's zero learning rate (``phase_cosine_schedule``).
    """
    if not frozen_warmup:
        return [{"params": list(model.parameters())}]
    warm = stem_and_head_names(model, small_stem)
    named = list(model.named_parameters())
    return [{"params": [p for n, p in named if n in warm]}, {"params": [p for n, p in named if n not in warm]}]


def split_validation(train, fraction: float, seed: int):
    """Hold out a class-stratified ``fraction`` of ``train`` for model selection; (train, val or None)."""
    if fraction <= 0:
        return train, None
    num_classes = train.features["label"].num_classes
    if round(len(train) * fraction) < num_classes:
        raise InputError(f"fraction {fraction}: {len(train)} training images give fewer validation images "
                         f"than the {num_classes} classes; raise it or pass 0 to keep the last epoch")
    parts = train.train_test_split(test_size=fraction, stratify_by_column="label", seed=seed)
    return parts["train"], parts["test"]


def _cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def phase_cosine_schedule(optimizer, total_steps: int, warmup_steps: int, frozen_steps: int = 0):
    """Linear warm-up then cosine to 0, per parameter group.

    Group 0 (head, new stem) follows it from step 0. Group 1 (the backbone), if present, has learning
    rate 0 for the first ``frozen_steps`` (the frozen-backbone warm-up) and then its own warm-up + cosine
    over the remaining steps. A rate of exactly 0 makes AdamW leave the parameters untouched (weight
    decay is scaled by the rate too), and, unlike toggling ``requires_grad``, it is safe under DDP and
    stored in the scheduler's checkpoint.
    """
    from torch.optim.lr_scheduler import LambdaLR

    def head(step):
        return _cosine(step, warmup_steps, total_steps)

    def backbone(step):
        return 0.0 if step < frozen_steps else _cosine(step - frozen_steps, warmup_steps, total_steps - frozen_steps)

    return LambdaLR(optimizer, [head, backbone][: len(optimizer.param_groups)])
