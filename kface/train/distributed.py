"""What only a multi-process run can get wrong: processes that end a run with different weights.

DDP keeps the replicas equal by all-reducing gradients, but anything a process does on its own (an EMA
step skipped, a buffer updated from its own batch, a best-weights copy taken from its own model) drifts
silently, and only the main process's copy is saved. Each trainer ends by comparing a hash of every
process's weights, so such a drift fails the run instead of going unnoticed.
"""

import hashlib

import torch

from ..utils.errors import KfaceError


def tensors_sha256(named_tensors) -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor: equal iff the tensors are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bf16 included
    return digest.hexdigest()


def weights_by_process(accelerator, named_tensors) -> list[str]:
    """Every process's hash of ``named_tensors``, in rank order (a one-element list in one process).

    Call on every process: it is a collective (``gather_object``). The hashes are gathered rather than the
    tensors, so the cost is one pass over the weights per process and a few bytes on the wire.
    """
    from accelerate.utils import gather_object

    return list(gather_object([tensors_sha256(named_tensors)]))


def check_replicas(accelerator, model: torch.nn.Module, ema=None) -> dict:
    """``{"num_processes": N, "weights_sha256_by_process": [...]}`` for a run's summary, after checking that
    every process holds the same ``model`` state dict (parameters and buffers) and EMA weights (a diffusers
    ``EMAModel``). Raises on every process alike, since all of them hold the same gathered list."""
    named = list(model.state_dict().items())
    if ema is not None:
        named += [(f"ema.{i}", p) for i, p in enumerate(ema.shadow_params)]
    hashes = weights_by_process(accelerator, named)
    if len(set(hashes)) > 1:
        raise KfaceError(f"the {len(hashes)} processes ended with different weights (sha256 by process: "
                         f"{[h[:12] for h in hashes]}): a kface bug, please report it with the command line")
    return {"num_processes": accelerator.num_processes, "weights_sha256_by_process": hashes}
