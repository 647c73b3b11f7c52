"""Training-speed options that change how a step runs, never what it computes: NHWC activations
(``channels_last``), ``torch.compile`` with a fall-back to eager, and the AdamW implementation.

benchmarks/ddpm_throughput.py measures each of them on the demo's tiny preset.
"""

import argparse
import logging

import torch

logger = logging.getLogger(__name__)

ADAMW_IMPLS = ("default", "for-loop", "foreach", "fused")


def add_speed_args(group: argparse._ArgumentGroup) -> None:
    """--channels_last, --compile and --adamw_impl, spelled the same wherever a script trains."""
    group.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=False,
                       help="Run the network's activations in NHWC memory order (weights and checkpoints unchanged).")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile the training forward and backward; where no compiler works the run "
                            "logs a warning and trains eagerly.")
    group.add_argument("--adamw_impl", choices=ADAMW_IMPLS, default="default",
                       help="AdamW implementation: torch's choice for the device (default), one tensor at a time "
                            "(for-loop), multi-tensor (foreach) or one fused kernel (fused).")


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
