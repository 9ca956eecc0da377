"""The K nearest of every item, fed block by block from an all-pairs pass, never N x N.

Each item's list holds int64 keys ``distance bits << 32 | index`` (distances clamped at 0, so
their float32 bits order like the values), so a sorted list orders by (distance, index) as a
stable sort does. A block's candidates are the entries at or within their row's (column's)
current K-th distance, found in cache-sized chunks; they are merged a block at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SELECT_ELEMENTS = 1 << 16  # entries of one selection chunk (256 KiB: stays in a core's cache)
NO_NEIGHBOUR = (0x7F800000 << 32) | 0xFFFFFFFF  # the key of distance +inf: sorts last


def key_distances(keys: np.ndarray) -> np.ndarray:
    return (keys >> 32).astype(np.int32).view(np.float32)


def _keys(neg_half: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sort keys ``distance bits << 32 | index`` from ``-d/2`` values (d clamped at 0)."""
    dist = np.maximum(np.float32(-2.0) * neg_half, np.float32(0.0)) + np.float32(0.0)
    return (dist.view(np.int32).astype(np.int64) << 32) | index


@dataclass
class Selection:
    """One block's candidates (grouped by item; local item indices and keys) and minima."""

    row_items: np.ndarray
    row_keys: np.ndarray
    row_min: np.ndarray
    col_items: np.ndarray | None = None
    col_keys: np.ndarray | None = None
    col_min: np.ndarray | None = None


class Nearest:
    """The k nearest of every item (sorted keys ``distance bits << 32 | index``) and its largest
    distance, fed block by block.

    Blocks hold ``e = x_i . x_j - |x_i|^2/2 - |x_j|^2/2 = -d/2``, so the nearest have the largest
    e. Distances are clamped at 0 and -0.0 turned into 0.0, so their float32 bits order like the
    values and a key orders like (distance, index). ``bound`` is each item's k-th distance (+inf
    while it has fewer than k): only entries at or within it can enter its list.

    ``select`` (any thread) finds a block's candidates against the bounds as they are when it
    reads them; ``absorb`` (one thread) merges them. Bounds only shrink, so bounds read before
    another block's merge are looser, never wrong: they only let more candidates through.
    """

    def __init__(self, n: int, k: int) -> None:
        self.k = k
        self.keys = np.full((n, k), NO_NEIGHBOUR, dtype=np.int64)
        self.bound = np.full(n, np.inf, dtype=np.float32)
        self.min_e = np.full(n, np.inf, dtype=np.float32)

    def _thresholds(self, e: np.ndarray, bound: np.ndarray, axis: int) -> np.ndarray:
        """Per item (rows: axis 1, columns: axis 0), the least e that can enter its list: one
        float step below ``-bound/2`` (never too strict)."""
        threshold = np.nextafter(np.float32(-0.5) * bound, np.float32(-np.inf))
        fresh = np.isinf(bound)
        size = e.shape[axis]
        if fresh.any() and size > self.k:
            # Items without k neighbours yet: this block's k-th largest e bounds what can enter;
            # every entry tied with it at distance 0 (e >= 0) must enter too.
            part = e if fresh.all() else (e[fresh] if axis == 1 else e[:, fresh])
            kth = np.partition(part, size - self.k, axis=axis).take(size - self.k, axis=axis)
            threshold[fresh] = np.nextafter(np.minimum(kth, np.float32(0.0)), np.float32(-np.inf))
        return threshold

    def select(
        self,
        e: np.ndarray,
        half_rows: np.ndarray,
        half_cols: np.ndarray,
        first_row: int,
        first_col: int,
        columns: bool,
    ) -> Selection:
        """Turn a block of feature products into ``-d/2`` (in place) and find its candidates:
        for its rows and, if ``columns``, for its columns (not for a diagonal block: its rows
        cover both).

        The block is walked in row chunks of about ``_SELECT_ELEMENTS`` that stay in the
        core's cache through the subtraction, both minima and both comparisons.
        """
        height, width = e.shape
        row_bound = self.bound[first_row : first_row + height].copy()
        col_bound = self.bound[first_col : first_col + width].copy() if columns else None
        step = max(1, _SELECT_ELEMENTS // width)
        chunks = [(s, min(s + step, height)) for s in range(0, height, step)]
        # Items without k neighbours yet take their threshold from the whole block (rare: the
        # first blocks), so the block is made ``-d/2`` before the chunks are compared.
        fresh = np.isinf(row_bound).any() or (columns and np.isinf(col_bound).any())
        if fresh:
            e -= half_rows[:, None]
            e -= half_cols[None, :]
        row_threshold = self._thresholds(e, row_bound, axis=1)
        col_threshold = self._thresholds(e, col_bound, axis=0) if columns else None
        row_min = np.empty(height, dtype=np.float32)
        col_min = np.full(width, np.inf, dtype=np.float32) if columns else None
        row_parts, col_parts = [], []
        for start, stop in chunks:
            chunk = e[start:stop]
            if not fresh:
                chunk -= half_rows[start:stop, None]
                chunk -= half_cols[None, :]
            chunk.min(axis=1, out=row_min[start:stop])
            flat = np.flatnonzero(chunk >= row_threshold[start:stop, None])
            row_parts.append((flat + start * width, chunk.reshape(-1)[flat]))
            if columns:
                np.minimum(col_min, chunk.min(axis=0), out=col_min)
                flat = np.flatnonzero(chunk >= col_threshold[None, :])
                col_parts.append((flat + start * width, chunk.reshape(-1)[flat]))
        flat, values = (np.concatenate(part) for part in zip(*row_parts))
        row, col = np.divmod(flat, width)
        selection = Selection(row, _keys(values, col + first_col), row_min)
        if columns:
            flat, values = (np.concatenate(part) for part in zip(*col_parts))
            row, col = np.divmod(flat, width)
            order = np.argsort(col, kind="stable")  # group by column item
            selection.col_items = col[order]
            selection.col_keys = _keys(values[order], row[order] + first_row)
            selection.col_min = col_min
        return selection

    def absorb(self, selection: Selection, first_row: int, first_col: int) -> None:
        """Merge a block's selection into the lists and minima."""
        rows = slice(first_row, first_row + len(selection.row_min))
        np.minimum(self.min_e[rows], selection.row_min, out=self.min_e[rows])
        self._merge(rows, selection.row_items, selection.row_keys)
        if selection.col_min is not None:
            cols = slice(first_col, first_col + len(selection.col_min))
            np.minimum(self.min_e[cols], selection.col_min, out=self.min_e[cols])
            self._merge(cols, selection.col_items, selection.col_keys)

    def _merge(self, items: slice, item: np.ndarray, keys: np.ndarray) -> None:
        """Fold new keys (grouped by item, local indices) into the items' sorted lists."""
        if not len(item):
            return
        sizes = np.bincount(item, minlength=items.stop - items.start)
        touched = np.flatnonzero(sizes)
        sizes = sizes[touched]
        table = np.full((len(touched), self.k + int(sizes.max())), NO_NEIGHBOUR, dtype=np.int64)
        lists = self.keys[items]
        table[:, : self.k] = lists[touched]
        row = np.repeat(np.arange(len(touched)), sizes)
        slot = self.k + np.arange(len(item)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        table[row, slot] = keys
        table.sort(axis=1)
        lists[touched] = table[:, : self.k]
        self.bound[items][touched] = key_distances(table[:, self.k - 1])

    def row_max(self) -> np.ndarray:
        """Each item's largest distance (0 when all are 0)."""
        return np.maximum(np.float32(-2.0) * self.min_e, np.float32(0.0))
