"""Training-speed options that change how a step runs, never what it computes: NHWC activations
(``channels_last``), ``torch.compile`` with a fall-back to eager, the AdamW implementation, and CPU threads that
follow a file (``ThreadFollower``).

benchmarks/ddpm_throughput.py measures each of them on the demo's tiny preset.
"""

import argparse
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

ADAMW_IMPLS = ("default", "for-loop", "foreach", "fused")


def add_speed_args(group: argparse._ArgumentGroup) -> None:
    """--channels_last, --compile, --adamw_impl and --cpu_threads_file, spelled the same wherever a script trains."""
    group.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False,
                       help="Run the network's activations in NHWC memory order (weights and checkpoints unchanged).")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile the training forward and backward; where no compiler works the run "
                            "logs a warning and trains eagerly.")
    group.add_argument("--adamw_impl", choices=ADAMW_IMPLS, default="default",
                       help="AdamW implementation: torch's choice for the device (default), one tensor at a time "
                            "(for-loop), multi-tensor (foreach) or one fused kernel (fused).")
    group.add_argument("--cpu_threads_file", default=None, metavar="PATH",
                       help="A file holding a CPU thread count, read between steps whenever it changes; torch's "
                            "intra-op threads follow it (a scheduler hands the run cores another job freed; make "
                            "demo does). Default: the count the run started with.")


def make_adamw(params, *, lr: float, weight_decay: float, impl: str = "default") -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the implementation ``impl`` (one of ADAMW_IMPLS). The three give the same
    updates up to rounding; fused is refused by torch on devices or dtypes it has no kernel for, and then
    this falls back to torch's default with a warning."""
    if impl not in ADAMW_IMPLS:
        raise ValueError(f"impl {impl!r}: use one of {ADAMW_IMPLS}")
    params = list(params)
    options = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **options[impl])
    except (RuntimeError, ValueError) as err:
        logger.warning("AdamW impl %r is not supported here (%s); using torch's default", impl,
                       str(err).splitlines()[0])
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def compile_or_eager(model: torch.nn.Module, probe, **compile_kwargs):
    """``torch.compile(model)`` if it works here, else ``model`` itself, with a warning.

    torch.compile is lazy: a missing C++ compiler, an unsupported backend or an operator the compiler cannot
    trace fails at the first call. ``probe(module)`` makes that call (one forward and backward of a training
    batch) so that the failure happens now, in a known place, and the run goes on eagerly. The compiled
    module shares ``model``'s parameters, so the optimiser, EMA and checkpoints see one set of weights, and
    ``model`` stays eager for sampling and saving. Costs the compilation (tens of seconds on a CPU) before the
    first step; a batch of another size (the last of an epoch) compiles once more.
    """
    try:
        compiled = torch.compile(model, **compile_kwargs)
        probe(compiled)
    except Exception as err:  # noqa: BLE001 - any compiler failure means "train eagerly", and says why
        lines = str(err).strip().splitlines() or [type(err).__name__]
        logger.warning("torch.compile does not work here (%s: %s); training eagerly", type(err).__name__, lines[0])
        return model
    return compiled


class ThreadFollower:
    """torch's intra-op CPU threads follow a number in a file, read between steps (``--cpu_threads_file``).

    A scheduler that runs jobs side by side can hand a still-training job the cores another job has freed:
    ``make demo`` trains the oracle and the DDPM in two lanes of one thread each, and once the oracle is done it
    writes the core count here, so that the DDPM's remaining steps run on both cores instead of leaving one
    idle (docs/demo.md, "The stages"). Changing the count changes only the speed, not what a step computes
    (beyond float rounding). The file is read only when its modification time changes; a missing, empty or
    half-written file changes nothing; a file that does not hold a positive integer gets one warning.
    """

    def __init__(self, path, step: int = 0):
        self.path = None if path is None else str(path)
        self.changes = [[step, torch.get_num_threads()]]  # [step, threads]: the start, then each change
        self._seen = None
        self._warned = False

    def poll(self, step: int) -> int:
        """Read the file if it changed since the last call; set torch's thread count to it. Returns the count."""
        if self.path is None:
            return torch.get_num_threads()
        try:
            stamp = os.stat(self.path).st_mtime_ns
            if stamp == self._seen:
                return torch.get_num_threads()
            text = Path(self.path).read_text().strip()
        except OSError:  # not written yet, or being replaced
            return torch.get_num_threads()
        if not text:  # caught between the shell's truncate and its write: read it again next step
            return torch.get_num_threads()
        self._seen = stamp
        try:
            threads = int(text)
            if threads < 1:
                raise ValueError
        except ValueError:
            if not self._warned:
                logger.warning("--cpu_threads_file %s holds %r, not a positive thread count: ignored", self.path,
                               text[:40])
                self._warned = True
            return torch.get_num_threads()
        if threads != torch.get_num_threads():
            logger.info("step %d: %d CPU threads (was %d), as %s says", step, threads, torch.get_num_threads(),
                        self.path)
            torch.set_num_threads(threads)
            self.changes.append([step, threads])
        return threads
