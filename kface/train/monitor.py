"""What a training loop watches between optimiser steps: the loss (averaged on the device, read every
``--logging_steps``), non-finite values, and the steps a loss scaler skips (shared by both trainers).

Under ``--mixed_precision fp16`` accelerate's ``GradScaler`` multiplies the loss by a scale before the
backward pass; when a gradient overflows fp16 it skips that optimiser step and halves the scale. Early in a
run this happens routinely and is no divergence: the run counts and logs such steps (``train/skipped_steps``,
``train/loss_scale``) and goes on. It stops, with one line, only on a real divergence:

* a non-finite loss (no scale makes it finite), or a non-finite gradient norm when no scaler runs;
* a loss scale that falls below ``MIN_LOSS_SCALE``: every skip halves it, and it grows again only after
  2000 clean steps, so a scale below 1 means the gradients overflowed fp16 even when not scaled up at all,
  i.e. they are inf or NaN themselves. From the default start of 2**16 that takes 17 skips in a row.
"""

import math

import torch

from ..utils.errors import KfaceError

MIN_LOSS_SCALE = 1.0


def diverged(what: str, value: float, step: int) -> KfaceError:
    return KfaceError(
        f"{what} became {value} at step {step}: training diverged; lower --learning_rate, train in "
        "fp32 (--mixed_precision no) or tighten --max_grad_norm, and resume from the last checkpoint "
        "(--resume_from_checkpoint latest), which holds no non-finite weights"
    )


class TrainingMonitor:
    """Per micro-batch bookkeeping that stays on the device; ``read()`` is the one sync point.

    ``add_loss`` / ``add_grad_norm`` queue a few tiny device ops and never call ``.item()``: a device sync
    per micro-batch would stall a GPU, which could otherwise queue the next step while this one runs.
    ``after_step`` reads the scaler's verdict, which its ``step`` has already synced to decide.
    """

    def __init__(self, accelerator, skipped_steps: int = 0, min_loss_scale: float = MIN_LOSS_SCALE):
        self.scaler = accelerator.scaler
        self.accelerator = accelerator
        self.min_loss_scale = min_loss_scale
        self.skipped_steps = int(skipped_steps)  # carried over a resume through the checkpoint's state
        self.consecutive = 0
        device = accelerator.device
        self._loss_sum = torch.zeros((), device=device)
        self._count = 0
        self._bad = torch.tensor([-1.0, 0.0, 0.0], device=device)  # (step, value, 0: loss / 1: grad norm)

    @property
    def precision(self) -> dict:
        """What the run recorded: the mixed precision in use and the loss scaler, if any."""
        return {"mixed_precision": self.accelerator.mixed_precision,
                "loss_scaler": type(self.scaler).__name__ if self.scaler is not None else None}

    def _record(self, value: torch.Tensor, step: int, kind: float) -> torch.Tensor:
        value = value.detach().float()
        finite = torch.isfinite(value)
        first = ~finite & (self._bad[0] < 0)
        self._bad = torch.where(first, torch.stack([torch.full_like(value, step), value,
                                                    torch.full_like(value, kind)]), self._bad)
        return torch.where(finite, value, torch.zeros_like(value))

    def add_loss(self, loss: torch.Tensor, step: int) -> None:
        self._loss_sum += self._record(loss, step, 0.0)
        self._count += 1

    def add_grad_norm(self, norm: torch.Tensor, step: int) -> None:
        """Under a loss scaler an infinite norm is an overflow the scaler skips, not a divergence."""
        if self.scaler is None:
            self._record(norm, step, 1.0)

    def after_step(self, step: int) -> bool:
        """Count a skipped step; raise when the scale shows no recovery. True if the step was skipped."""
        if self.scaler is None or not self.accelerator.optimizer_step_was_skipped:
            self.consecutive = 0
            return False
        self.skipped_steps += 1
        self.consecutive += 1
        scale = self.scaler.get_scale()
        if scale < self.min_loss_scale:
            raise KfaceError(
                f"the fp16 loss scale fell to {scale:g} at step {step} after {self.consecutive} skipped steps in a "
                "row: the gradients are not finite at any scale, so training diverged; lower --learning_rate or "
                "train in bf16/fp32 (--mixed_precision bf16|no), and resume from the last checkpoint "
                "(--resume_from_checkpoint latest)")
        return True

    def _gather(self) -> list[list[float]]:
        """(bad step, bad value, kind, loss sum, micro-batches) of every process: one collective, one sync.
        Every process calls it at the same steps, so all of them stop together (a rank that stopped alone
        would leave the others waiting in the next collective: a hang under NCCL)."""
        mine = torch.cat([self._bad, torch.stack([self._loss_sum, torch.full_like(self._loss_sum, self._count)])])
        return self.accelerator.gather(mine[None]).tolist()

    def check(self, rows: list | None = None) -> None:
        """Raise on a non-finite loss or gradient norm seen so far on any process (a device sync). Call
        before every checkpoint, so that none holds weights updated from a non-finite value."""
        bad = [r for r in (rows or self._gather()) if r[0] >= 0]
        if bad:
            step, value, kind = min(bad)[:3]
            raise diverged("the loss" if kind == 0 else "the gradient norm", value, int(step))

    def read(self) -> dict:
        """``check``, then the mean loss since the last read (over all processes), the skip count and the scale."""
        rows = self._gather()
        self.check(rows)
        count = sum(r[4] for r in rows)
        logs = {"train/loss": sum(r[3] for r in rows) / count if count else math.nan}
        self._loss_sum.zero_()
        self._count = 0
        if self.scaler is not None:
            logs.update({"train/skipped_steps": self.skipped_steps, "train/loss_scale": self.scaler.get_scale()})
        return logs
