"""k-reciprocal re-ranking (Zhong et al., CVPR 2017): the original definition, exact, never N x N.

Definition (N = query + gallery items, d = squared Euclidean distance, each row divided by its
maximum over all N items):

* ``N(i, k)``: the k nearest items of i (i itself first), ties broken by index;
  ``R(i, k) = {j in N(i, k): i in N(j, k)}``.
* ``R*(i)``: ``R(i, k1+1)`` plus, for every candidate ``c`` in it, ``R(c, round(k1/2)+1)`` when
  more than 2/3 of that set lies in ``R(i, k1+1)``. ``round`` is round-half-to-even, as NumPy's
  ``around`` in the original code.
* ``V[i, j] = exp(-d(i, j))`` on ``R*(i)``, rows normalised to sum 1; local query expansion replaces
  row i by the mean of the rows of its k2 nearest items (k2 = 1: none).
* ``jaccard(i, j) = 1 - sum(min(V_i, V_j)) / sum(max(V_i, V_j)) = 1 - m / (2 - m)``,
  ``final = (1 - lambda) jaccard + lambda d``, defined for query x gallery only.

How it scales, every step exact:

* One pass over the all-pairs distances computes each unordered pair once (the product is
  symmetric): row block I against the columns from I's first item on, in float32 GEMM blocks, each
  block feeding the neighbour lists of its rows and of its columns. Only the K nearest of every
  item (as int64 keys ``distance bits << 32 | index``, so ties go by index like a stable sort) and
  the row maxima survive. A block's candidates are the entries at or below their row's (column's)
  current K-th distance, found in cache-sized chunks; they are merged a block at a time. One
  worker per core multiplies and selects blocks (single-threaded BLAS each: a two-threaded GEMM
  beside the selection lost CPU time to its threads waiting for each other); the merges follow
  block order.
* The query x gallery strips of that pass go to a hook as they complete (the plain evaluation) and
  are kept for the final ``lambda d`` term: in memory, or above ``_KEEP_IN_MEMORY_BYTES`` in an
  unlinked temporary file written by a background thread while the pass computes and read ahead
  while the Jaccard term computes. The pass is the only all-pairs product.
* R, R* and the expansion are vectorised over the K-nearest array; V is a ``scipy.sparse`` CSR
  matrix (about k1 to 1.5 k1 non-zeros a row) whose distances come from the pass when the entry is
  among the K nearest, else from one dot product. V stays float32: the widely copied code stores
  it in float16, which flips some top-1s.
* The Jaccard term is computed for query rows only, a chunk at a time, through an inverted index
  (CSC of the gallery rows of V).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from reidpipe.devices import means_cpu, resolve_device, usable_cpus
from reidpipe.errors import ReidpipeError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
T = TypeVar("T")
QueryStripHook = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], None]
"""Receives (first query, end query, query x gallery feature products, the queries' and the
gallery's squared norms) as the pass makes them; it must neither keep nor modify the products."""

_BLOCK_ELEMENTS = 1 << 22        # entries of one distance block (16 MiB of float32)
_STRIP_ELEMENTS = 1 << 24        # entries of one query x gallery strip (64 MiB of float32)
_WORK_ELEMENTS = 1 << 24         # entries of the temporaries of the vectorised V construction
_SELECT_ELEMENTS = 1 << 16       # entries of one selection chunk (256 KiB: stays in a core's cache)
_KEEP_IN_MEMORY_BYTES = 1 << 30  # query x gallery distances above this go to a temporary file
_NO_NEIGHBOUR = (0x7F800000 << 32) | 0xFFFFFFFF  # the key of distance +inf: sorts last


def _key_distances(keys: np.ndarray) -> np.ndarray:
    return (keys >> 32).astype(np.int32).view(np.float32)


def _keys(neg_half: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sort keys ``distance bits << 32 | index`` from ``-d/2`` values (d clamped at 0)."""
    dist = np.maximum(np.float32(-2.0) * neg_half, np.float32(0.0)) + np.float32(0.0)
    return (dist.view(np.int32).astype(np.int64) << 32) | index


@dataclass
class _Selection:
    """One block's candidates (grouped by item; local item indices and keys) and minima."""

    row_items: np.ndarray
    row_keys: np.ndarray
    row_min: np.ndarray
    col_items: np.ndarray | None = None
    col_keys: np.ndarray | None = None
    col_min: np.ndarray | None = None


class _Nearest:
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
        self.keys = np.full((n, k), _NO_NEIGHBOUR, dtype=np.int64)
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
            threshold[fresh] = np.nextafter(np.minimum(kth, np.float32(0.0)),
                                            np.float32(-np.inf))
        return threshold

    def select(self, e: np.ndarray, half_rows: np.ndarray, half_cols: np.ndarray,
               first_row: int, first_col: int, columns: bool) -> _Selection:
        """Turn a block of feature products into ``-d/2`` (in place) and find its candidates:
        for its rows and, if ``columns``, for its columns (not for a diagonal block: its rows
        cover both).

        The block is walked in row chunks of about ``_SELECT_ELEMENTS`` that stay in the
        core's cache through the subtraction, both minima and both comparisons.
        """
        height, width = e.shape
        row_bound = self.bound[first_row:first_row + height].copy()
        col_bound = self.bound[first_col:first_col + width].copy() if columns else None
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
        selection = _Selection(row, _keys(values, col + first_col), row_min)
        if columns:
            flat, values = (np.concatenate(part) for part in zip(*col_parts))
            row, col = np.divmod(flat, width)
            order = np.argsort(col, kind="stable")  # group by column item
            selection.col_items = col[order]
            selection.col_keys = _keys(values[order], row[order] + first_row)
            selection.col_min = col_min
        return selection

    def absorb(self, selection: _Selection, first_row: int, first_col: int) -> None:
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
        table = np.full((len(touched), self.k + int(sizes.max())), _NO_NEIGHBOUR, dtype=np.int64)
        lists = self.keys[items]
        table[:, :self.k] = lists[touched]
        row = np.repeat(np.arange(len(touched)), sizes)
        slot = self.k + np.arange(len(item)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        table[row, slot] = keys
        table.sort(axis=1)
        lists[touched] = table[:, :self.k]
        self.bound[items][touched] = _key_distances(table[:, self.k - 1])

    def row_max(self) -> np.ndarray:
        """Each item's largest distance (0 when all are 0)."""
        return np.maximum(np.float32(-2.0) * self.min_e, np.float32(0.0))


class _QueryRows:
    """The query x gallery values of the pass (``-d/2``), kept for the final combination.

    In memory (the strips themselves) up to ``_KEEP_IN_MEMORY_BYTES``; above, in an unlinked
    temporary file (removed by the OS however the process ends) written by a background thread,
    so the pass does not wait on disk, and read ahead while the previous rows are combined.
    """

    def __init__(self, num_query: int, num_gallery: int) -> None:
        self.shape = (num_query, num_gallery)
        self.row_bytes = 4 * num_gallery
        self._strips: dict[int, np.ndarray] | None = None
        self._file = None
        self._io: ThreadPoolExecutor | None = None
        self._writes: list[Future] = []
        self._read_ahead: tuple[int, int, Future] | None = None
        if num_query * self.row_bytes <= _KEEP_IN_MEMORY_BYTES:
            self._strips = {}
        else:
            # Open for the ranker's lifetime; closing it (or the process ending) deletes it.
            self._file = tempfile.TemporaryFile(prefix="reidpipe-rerank-")  # noqa: SIM115
            log.info("re-ranking: the %d x %d query x gallery distances (%.1f GB) go to a "
                     "temporary file in %s", num_query, num_gallery,
                     num_query * self.row_bytes / 1e9, tempfile.gettempdir())
            self._io = ThreadPoolExecutor(max_workers=1)

    def put(self, start: int, array: np.ndarray) -> None:
        """Rows from ``start``; the array must not change afterwards (it may be written later)."""
        if self._strips is not None:
            self._strips[start] = array
            return
        while len(self._writes) >= 2:  # at most two strips wait for the disk
            self._writes.pop(0).result()
        self._writes.append(self._io.submit(self._write, start, array))

    def _write(self, start: int, array: np.ndarray) -> None:
        view, offset = memoryview(np.ascontiguousarray(array)).cast("B"), start * self.row_bytes
        try:
            while len(view):
                done = os.pwrite(self._file.fileno(), view, offset)
                view, offset = view[done:], offset + done
        except OSError as exc:
            total = self.shape[0] * self.row_bytes / 1e9
            raise ReidpipeError(
                f"re-ranking keeps the {self.shape[0]} x {self.shape[1]} query x gallery distances "
                f"({total:.1f} GB) in a temporary file in {tempfile.gettempdir()} and could not "
                f"write it: {exc}; free space there or point TMPDIR elsewhere") from None

    def finish_writes(self) -> None:
        for write in self._writes:
            write.result()
        self._writes = []

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.shape[1]), dtype=np.float32)
        view, offset = memoryview(out).cast("B"), start * self.row_bytes
        while len(view):
            done = os.preadv(self._file.fileno(), [view], offset)
            view, offset = view[done:], offset + done
        return out

    def get(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) (read-only); from the file, the next rows of the same size are read
        meanwhile."""
        if self._strips is not None:
            if start in self._strips and len(self._strips[start]) == stop - start:
                return self._strips[start]
            return np.concatenate([strip[max(0, start - first):stop - first]
                                   for first, strip in sorted(self._strips.items())
                                   if first < stop and first + len(strip) > start])
        ahead, self._read_ahead = self._read_ahead, None
        rows = (ahead[2].result() if ahead and ahead[:2] == (start, stop)
                else self._read(start, stop))
        following = (stop, min(self.shape[0], 2 * stop - start))
        if following[0] < following[1]:
            self._read_ahead = (*following, self._io.submit(self._read, *following))
        return rows


def _in_chunks(fn: Callable[[int, int], T], size: int, step: int) -> list[T]:
    """``fn(start, stop)`` over [0, size) in chunks of ``step``, on one thread per core (NumPy
    releases the GIL in its array loops); the results in chunk order."""
    bounds = [(start, min(size, start + step)) for start in range(0, size, step)]
    with ThreadPoolExecutor(max_workers=usable_cpus()) as pool:
        return list(pool.map(lambda chunk: fn(*chunk), bounds))


def _reciprocal_mask(rank: np.ndarray, k: int) -> np.ndarray:
    """``mask[i, a]``: ``rank[i, a]`` (among i's k nearest) has i among its k nearest too."""
    n = len(rank)
    mask = np.empty((n, k), dtype=bool)

    def fill(start: int, stop: int) -> None:
        back = rank[rank[start:stop, :k], :k]
        mask[start:stop] = (back == np.arange(start, stop)[:, None, None]).any(axis=2)

    _in_chunks(fill, n, max(1, _WORK_ELEMENTS // (k * k)))
    return mask


def _expanded_sets(rank: np.ndarray, k: int, k_half: int) -> sp.csr_matrix:
    """CSR pattern of R*(i): R(i, k) plus each candidate's R(c, k_half) lying more than 2/3 in
    R(i, k)."""
    n = len(rank)
    reciprocal = np.where(_reciprocal_mask(rank, k), rank[:, :k], -1)   # -1: not in R(i)
    half_mask = _reciprocal_mask(rank, k_half)
    half = np.where(half_mask, rank[:, :k_half], -2)                    # -2 matches nothing
    half_size = half_mask.sum(axis=1)

    def members_of(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [start, stop): each row's member count and the members, row after row."""
        cand = reciprocal[start:stop]
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        cand_half = half[safe]                                           # (rows, k, k_half)
        inside = (cand_half[..., None] == cand[:, None, None, :]).any(axis=3).sum(axis=2)
        accepted = valid & (3 * inside > 2 * half_size[safe])
        members = np.concatenate(
            [cand, np.where(accepted[..., None], cand_half, -1).reshape(len(cand), -1)], axis=1)
        members.sort(axis=1)
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        return keep.sum(axis=1), members[keep]

    counts, parts = zip(*_in_chunks(members_of, n, max(1, _WORK_ELEMENTS // (k * k_half * k))))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    indices = np.concatenate(parts).astype(np.int32)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                         shape=(n, n))


def gemm_operand(feats: np.ndarray, device: str) -> np.ndarray | torch.Tensor:
    """The features where ``products`` multiplies them: the array itself on the CPU (NumPy's
    BLAS; torch is not even imported), a torch tensor on a GPU."""
    if means_cpu(device):
        return feats
    import torch

    dev = resolve_device(str(device))
    return feats if dev.type == "cpu" else torch.from_numpy(feats).to(dev)


def products(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor,
             out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b.T`` as a float32 NumPy array: NumPy's BLAS for arrays (on this project's CPUs
    faster than torch's; into ``out`` when given), torch on the tensors' device otherwise."""
    if isinstance(a, np.ndarray):
        return np.matmul(a, b.T, out=out)
    return (a @ b.T).cpu().numpy()


def _pair_distances(feats: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Squared distances of single pairs, from the feature differences."""
    out = np.empty(len(rows), dtype=np.float32)

    def fill(start: int, stop: int) -> None:
        diff = feats[rows[start:stop]] - feats[cols[start:stop]]
        out[start:stop] = np.einsum("ij,ij->i", diff, diff)

    _in_chunks(fill, len(rows), max(1, (1 << 18) // max(1, feats.shape[1])))  # stays in cache
    return out


def _duplicates(feats: np.ndarray) -> np.ndarray | None:
    """Each item's first item with identical features, or None when all differ.

    Candidates share an exact (wrapping integer) hash of a few columns; whole rows decide.
    """
    n, dim = feats.shape
    columns = np.unique(np.linspace(0, dim - 1, min(dim, 16)).astype(np.int64))
    bits = (feats[:, columns] + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    weights = np.random.default_rng(0).integers(1, 1 << 62, len(columns), dtype=np.uint64) | 1
    _, inverse, counts = np.unique((bits * weights).sum(axis=1), return_inverse=True,
                                   return_counts=True)
    candidates = np.flatnonzero(counts[inverse.ravel()] > 1)
    if not len(candidates):
        return None
    rows = np.ascontiguousarray(feats[candidates] + np.float32(0.0))
    _, first, same = np.unique(rows.view(np.dtype((np.void, rows.itemsize * dim))).ravel(),
                               return_index=True, return_inverse=True)
    rep = np.arange(n)
    rep[candidates] = candidates[first[same.ravel()]]
    return rep if (rep != np.arange(n)).any() else None


def _tie_duplicates(keys: np.ndarray, rep: np.ndarray, feats: np.ndarray) -> None:
    """Make identical features tie exactly, as in the definition (in place).

    Block products of identical features can differ in the last bit, which would order copies
    by rounding instead of index. Every list holding a copy gets all copies, each at the one
    distance ``_pair_distances`` gives for (the row's first copy, the group's first copy);
    copies then take their first copy's list. Each such distance is computed once, so copies
    get bit-identical values.
    """
    n, k = keys.shape
    sizes = np.bincount(rep, minlength=n)
    members = np.argsort(rep, kind="stable")
    member_start = np.cumsum(sizes) - sizes
    items = keys & 0xFFFFFFFF
    grouped = (sizes[rep[items]] > 1) & (keys != _NO_NEIGHBOUR)
    firsts = np.flatnonzero(rep == np.arange(n))
    fix = firsts[grouped[firsts].any(axis=1)]
    plain = ~grouped[fix] & (keys[fix] != _NO_NEIGHBOUR)
    plain_row, plain_at = np.nonzero(plain)
    group_row, group_at = np.nonzero(grouped[fix])
    code = np.unique(group_row * n + rep[items[fix][group_row, group_at]])
    row, group = np.divmod(code, n)
    dist = _pair_distances(feats, fix[row], group)
    count = sizes[group]
    copy = members[ragged_positions(member_start[group], count)]
    copy_keys = (np.repeat(dist + np.float32(0.0), count).view(np.int32).astype(np.int64) << 32
                 | copy)
    every_row = np.concatenate([plain_row, np.repeat(row, count)])
    every_key = np.concatenate([keys[fix][plain_row, plain_at], copy_keys])
    order = np.argsort(every_row, kind="stable")
    every_row, every_key = every_row[order], every_key[order]
    per_row = np.bincount(every_row, minlength=len(fix))
    table = np.full((len(fix), max(k, int(per_row.max()))), _NO_NEIGHBOUR, dtype=np.int64)
    table[every_row, np.arange(len(every_row)) - np.repeat(np.cumsum(per_row) - per_row,
                                                           per_row)] = every_key
    table.sort(axis=1)
    keys[fix] = table[:, :k]
    copies = np.flatnonzero(rep != np.arange(n))
    keys[copies] = keys[rep[copies]]


class KReciprocalReRanker:
    """Runs the all-pairs pass and prepares V once, then gives re-ranked query x gallery
    distances a chunk of queries at a time.

    ``features`` holds the queries first, then the gallery (float32; used without a copy when
    already float32 and contiguous). ``on_query_strip`` receives each query x gallery block of
    feature products before it becomes distances. ``timings`` accumulates seconds per phase
    (summed over the threads that run a phase at once: the pass's workers, the final distances).
    """

    def __init__(self, features: np.ndarray, num_query: int, k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3, device: str = "auto",
                 on_query_strip: QueryStripHook | None = None) -> None:
        if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
            raise ReidpipeError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1; "
                                f"got k1={k1}, k2={k2}, lambda_value={lambda_value}")
        self.timings = {"product_s": 0.0, "neighbours_s": 0.0, "sparse_v_s": 0.0,
                        "jaccard_final_s": 0.0}
        self.lambda_value = float(lambda_value)
        self.num_query = num_query
        self.feats = np.ascontiguousarray(features, dtype=np.float32)
        self._gemm_feats = gemm_operand(self.feats, device)
        n = len(self.feats)
        self.num_gallery = n - num_query
        started = time.perf_counter()
        self._copy_of = _duplicates(self.feats)
        self.sq = np.einsum("ij,ij->i", self.feats, self.feats, dtype=np.float64).astype(
            np.float32)
        self._gallery_copies = None
        if self._copy_of is not None:
            self.sq = self.sq[self._copy_of]
            # In the query x gallery strips a copy's column is its first gallery copy's column.
            first_in_gallery = np.full(n, n)
            np.minimum.at(first_in_gallery, self._copy_of[num_query:], np.arange(num_query, n))
            source = first_in_gallery[self._copy_of[num_query:]] - num_query
            copies = np.flatnonzero(source != np.arange(self.num_gallery))
            self._gallery_copies = (copies, source[copies])
        self.timings["neighbours_s"] += time.perf_counter() - started
        k = min(k1 + 1, n)
        k_half = min(round(k1 / 2) + 1, n)
        k_qe = min(k2, n)
        self.query_rows = _QueryRows(num_query, self.num_gallery)
        nearest = self._all_pairs(max(k, k_qe), on_query_strip)
        started = time.perf_counter()
        if self._copy_of is not None:
            _tie_duplicates(nearest.keys, self._copy_of, self.feats)
            nearest.min_e = nearest.min_e[self._copy_of]
        rank = (nearest.keys & 0xFFFFFFFF).astype(np.int32)
        row_max = nearest.row_max()
        # All-identical features give a zero row; any positive divisor leaves that row all 0.
        self.row_max = np.where(row_max > 0, row_max, np.float32(1.0))
        pattern = _expanded_sets(rank, k, k_half)
        v = self._weights(pattern, rank, _key_distances(nearest.keys))
        if k_qe > 1:
            qe = sp.csr_matrix(
                (np.full(n * k_qe, 1.0 / k_qe, dtype=np.float32),
                 (np.repeat(np.arange(n), k_qe), rank[:, :k_qe].ravel())), shape=(n, n))
            v = (qe @ v).tocsr()
        v.sort_indices()
        self.v_query = v[:num_query]
        self.v_gallery_by_col = v[num_query:].tocsc()
        self.v_gallery_by_col.sort_indices()
        self.timings["sparse_v_s"] += time.perf_counter() - started

    def _blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """Column ranges of row block [start, stop): the diagonal block, the remaining queries,
        then the gallery (whole for a query block: it is one strip)."""
        n, nq = len(self.feats), self.num_query
        ranges = [(start, stop)]
        width = max(1, _BLOCK_ELEMENTS // (stop - start))
        if stop <= nq:
            ranges += [(c, min(c + width, nq)) for c in range(stop, nq, width)]
            if nq < n:
                ranges.append((nq, n))
        else:
            ranges += [(c, min(c + width, n)) for c in range(stop, n, width)]
        return ranges

    def _all_pairs(self, k: int, on_query_strip: QueryStripHook | None) -> _Nearest:
        """The one pass over all pairs (upper block triangle): neighbours, maxima, strips.

        One worker per core computes a block's product (single-threaded BLAS) and selects its
        candidates; this thread merges them in block order. Each worker multiplies into its
        own reused buffer, which spares the kernel a fresh mapping and its page faults per
        block. A query x gallery strip is only multiplied by a worker: this thread hands its
        products to the hook, then selects it and keeps it.
        """
        n, nq = len(self.feats), self.num_query
        nearest = _Nearest(n, k)
        half = self.sq / np.float32(2.0)
        query_height = max(1, _STRIP_ELEMENTS // max(1, n - nq))
        gallery_height = max(1, int(_BLOCK_ELEMENTS ** 0.5))
        row_blocks = ([(s, min(s + query_height, nq)) for s in range(0, nq, query_height)]
                      + [(s, min(s + gallery_height, n)) for s in range(nq, n, gallery_height)])
        blocks = [(start, stop, first, end) for start, stop in row_blocks
                  for first, end in self._blocks(start, stop)]

        def kept(block: tuple[int, int, int, int]) -> bool:  # a query x gallery strip
            return block[1] <= nq and block[2] == nq

        size = max([(b[1] - b[0]) * (b[3] - b[2]) for b in blocks if not kept(b)], default=0)
        local = threading.local()

        def work(index: int) -> tuple[np.ndarray | _Selection, float, float]:
            """The block's products (a strip) or its selection, and the seconds of each."""
            started = time.perf_counter()
            start, stop, first, end = block = blocks[index]
            rows, cols = self._gemm_feats[start:stop], self._gemm_feats[first:end]
            if kept(block):
                return products(rows, cols), time.perf_counter() - started, 0.0
            if not hasattr(local, "buffer"):
                local.buffer = np.empty(size, dtype=np.float32)
            out = local.buffer[:(stop - start) * (end - first)].reshape(stop - start, end - first)
            e = products(rows, cols, out)
            multiplied = time.perf_counter()
            selection = nearest.select(e, half[start:stop], half[first:end], start, first,
                                       columns=first >= stop)
            return selection, multiplied - started, time.perf_counter() - multiplied

        workers = usable_cpus()
        blas = (threadpool_limits(limits=1, user_api="blas")
                if isinstance(self._gemm_feats, np.ndarray) else nullcontext())
        with blas, ThreadPoolExecutor(max_workers=workers) as pool:
            # Blocks are merged in order, and a query x gallery strip takes a worker as long as
            # several blocks: twice the workers in flight (and one) keep the others busy
            # behind it.
            ahead = 2 * workers + 1
            pending = deque(pool.submit(work, i) for i in range(min(len(blocks), ahead)))
            for index, (start, stop, first, end) in enumerate(blocks):
                result, product_s, select_s = pending.popleft().result()
                if index + ahead < len(blocks):
                    pending.append(pool.submit(work, index + ahead))
                self.timings["product_s"] += product_s
                started = time.perf_counter()
                hook_s = 0.0
                if isinstance(result, _Selection):
                    selection = result
                else:
                    if self._gallery_copies is not None:
                        result[:, self._gallery_copies[0]] = result[:, self._gallery_copies[1]]
                    if on_query_strip is not None:  # the hook's time is its own
                        on_query_strip(start, stop, result, self.sq[start:stop],
                                       self.sq[first:end])
                        hook_s = time.perf_counter() - started
                    selection = nearest.select(result, half[start:stop], half[first:end],
                                               start, first, columns=True)
                    self.query_rows.put(start, result)
                nearest.absorb(selection, start, first)
                self.timings["neighbours_s"] += select_s + time.perf_counter() - started - hook_s
        started = time.perf_counter()
        self.query_rows.finish_writes()
        self.timings["neighbours_s"] += time.perf_counter() - started
        return nearest

    def _weights(self, pattern: sp.csr_matrix, rank: np.ndarray,
                 nearest_dist: np.ndarray) -> sp.csr_matrix:
        """V on the pattern of R*: exp(-d / row max), each row normalised to sum 1.

        An entry among the row's K nearest takes the pass's distance; the others (a few, from
        the expansion) are computed pair by pair.
        """
        n = pattern.shape[0]
        rows = np.repeat(np.arange(n), np.diff(pattern.indptr))
        cols = pattern.indices
        dist = np.empty(len(cols), dtype=np.float32)
        found = np.empty(len(cols), dtype=bool)

        def fill(start: int, stop: int) -> None:
            r, c = rows[start:stop], cols[start:stop]
            hit = rank[r] == c[:, None]
            found[start:stop] = hit.any(axis=1)
            dist[start:stop] = nearest_dist[r, hit.argmax(axis=1)]

        _in_chunks(fill, len(cols), max(1, _WORK_ELEMENTS // (4 * rank.shape[1])))
        missing = np.flatnonzero(~found)
        pairs = rows[missing], cols[missing].astype(np.int64)
        if self._copy_of is None:
            dist[missing] = _pair_distances(self.feats, *pairs)
        else:  # identical features: one computation per pair of first copies
            code, at = np.unique(self._copy_of[pairs[0]] * n + self._copy_of[pairs[1]],
                                 return_inverse=True)
            dist[missing] = _pair_distances(self.feats, *np.divmod(code, n))[at.ravel()]
        weights = np.exp(-(dist / self.row_max[rows]))
        sums = np.bincount(rows, weights=weights, minlength=n)
        weights /= sums[rows].astype(np.float32)
        return sp.csr_matrix((weights, cols, pattern.indptr), shape=pattern.shape)

    def chunk_size(self) -> int:
        return max(1, _STRIP_ELEMENTS // max(1, self.num_gallery))

    def distances(self, start: int, stop: int) -> np.ndarray:
        """Final re-ranked distances of queries [start, stop) to the whole gallery (float32).

        ``jaccard`` is 1 except where a query and a gallery item share support in V, so the
        final distance is ``(1 - lambda) + lambda d`` everywhere and is corrected on that sparse
        support, found through the inverted index (CSC of the gallery rows of V).
        """
        if (stop - start) * self.num_gallery >= 1 << 31:  # the pair codes below fit 31 bits
            middle = (start + stop) // 2
            return np.concatenate([self.distances(start, middle), self.distances(middle, stop)])
        started = time.perf_counter()
        lam = np.float32(self.lambda_value)
        factor = (np.float32(-2.0) * lam / self.row_max[start:stop])[:, None]
        e = self.query_rows.get(start, stop)
        final = np.multiply(e, factor)                    # lambda d / row max (d = -2 e)
        np.maximum(final, np.float32(0.0), out=final)
        final += np.float32(1.0) - lam
        rows_v = self.v_query[start:stop]
        col_index = self.v_gallery_by_col
        num_gallery = col_index.shape[0]
        entry_rows = np.repeat(np.arange(stop - start), np.diff(rows_v.indptr))
        cols = rows_v.indices
        counts = np.diff(col_index.indptr)[cols]
        positions = ragged_positions(col_index.indptr[cols].astype(np.int64), counts)
        mins = np.minimum(np.repeat(rows_v.data, counts), col_index.data[positions])
        flat = np.repeat(entry_rows, counts) * num_gallery + col_index.indices[positions]
        # Sum the minima per (query, gallery) pair: sort keys (pair << 32 | minimum's bits), so
        # the sparse support is never spread over a dense array.
        keys = (flat << 32) | mins.astype(np.float32).view(np.uint32).astype(np.int64)
        keys.sort()
        flat = keys >> 32
        first = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
        flat = flat[first]
        values = (keys & 0xFFFFFFFF).astype(np.uint32).view(np.float32).astype(np.float64)
        shared = np.add.reduceat(values, first) if len(first) else values
        jaccard = (1.0 - shared / (2.0 - shared)).astype(np.float32)
        row, col = np.divmod(flat, num_gallery)
        original = np.maximum(e[row, col] * factor[row, 0], np.float32(0.0))
        final[row, col] = (np.float32(1.0) - lam) * jaccard + original
        self.timings["jaccard_final_s"] += time.perf_counter() - started
        return final


def ragged_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), without a Python loop."""
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets
