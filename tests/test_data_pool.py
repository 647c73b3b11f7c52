"""kface.data.pool.map_in_workers: one meaning of num_workers (0: this process; N: N spawned workers)."""

import os

import pytest

from kface.data.pool import map_in_workers
from kface.utils.errors import InputError

_STATE = {}


def _remember(offset: int) -> None:
    _STATE["offset"] = offset


def _work(x: int) -> tuple[int, int]:
    return x * x + _STATE["offset"], os.getpid()


def test_in_process_and_in_workers_give_the_same_results():
    items = list(range(12))
    expected = [x * x + 5 for x in items]  # by hand: the initializer's offset reaches every call
    here = list(map_in_workers(_work, items, num_workers=0, initializer=_remember, initargs=(5,)))
    assert [r for r, _ in here] == expected and {pid for _, pid in here} == {os.getpid()}
    _STATE.clear()  # the workers must get the offset from their own initializer, not from this process
    pooled = list(map_in_workers(_work, items, num_workers=2, initializer=_remember, initargs=(5,), chunksize=3))
    assert [r for r, _ in pooled] == expected  # ordered=True keeps the input order
    pids = {pid for _, pid in pooled}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    unordered = list(map_in_workers(_work, items, num_workers=2, initializer=_remember, initargs=(5,), ordered=False))
    assert sorted(r for r, _ in unordered) == expected


def test_no_items_starts_nothing_and_negative_workers_are_refused():
    assert list(map_in_workers(_work, [], num_workers=4)) == []
    with pytest.raises(InputError, match="num_workers=-1: must be >= 0"):
        list(map_in_workers(_work, [1], num_workers=-1))
