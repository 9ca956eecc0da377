"""Vectorised array work of the evaluation: ragged index ranges, and NumPy work split into
chunks that run on every core (NumPy releases the GIL in its array loops)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from reidpipe.devices import usable_cpus

T = TypeVar("T")
WORK_ELEMENTS = 1 << 24  # entries of the temporaries of one chunk of vectorised work


def in_chunks(
    fn: Callable[[int, int], T], size: int, item_elements: int, budget: int | None = None
) -> list[T]:
    """``fn(start, stop)`` over [0, size) in chunks whose temporaries hold about ``budget``
    entries (default ``WORK_ELEMENTS``; ``item_elements`` per item), on one thread per core;
    the results in chunk order."""
    step = max(1, (WORK_ELEMENTS if budget is None else budget) // item_elements)
    bounds = [(start, min(size, start + step)) for start in range(0, size, step)]
    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
        return list(pool.map(lambda chunk: fn(*chunk), bounds))


def ragged_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), without a Python loop."""
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets
