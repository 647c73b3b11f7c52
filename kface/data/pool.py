"""The data room's one process pool: preprocess's detection and synthetic's rendering both map their per-item work
through :func:`map_in_workers`, so that "how many workers" means the same thing in both."""

import multiprocessing
import signal

from ..utils.errors import InputError


def map_in_workers(fn, items, *, num_workers: int, initializer=None, initargs=(), ordered: bool = True,
                   chunksize: int = 1):
    """Yield ``fn(item)`` for each of ``items``.

    ``num_workers=0`` runs everything in this process (``initializer(*initargs)`` first): no pickling, so tests can
    monkeypatch and debuggers can step in. ``num_workers=N >= 1`` starts N worker processes (never more than there
    are items), each running ``initializer(*initargs)`` once. ``ordered=False`` yields results as they finish.

    Spawn, not fork: the caller may hold TensorFlow (MTCNN) or torch thread pools, which do not survive a fork.
    Workers ignore Ctrl-C, so that the main process handles it once; leaving the pool terminates the workers.
    """
    if num_workers < 0:
        raise InputError(f"num_workers={num_workers}: must be >= 0 (0 runs in this process)")
    items = list(items)
    if not items:
        return
    if num_workers == 0:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(num_workers, len(items)), initializer=_start_worker, initargs=(initializer, initargs)) as pool:
        yield from (pool.imap if ordered else pool.imap_unordered)(fn, items, chunksize=chunksize)


def _start_worker(initializer, initargs) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
