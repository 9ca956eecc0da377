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

How it scales, every step exact (the ranker here, each part in its module):

* One pass over the all-pairs distances computes each unordered pair once (the product is
  symmetric): row block I against the columns from I's first item on, in float32 GEMM blocks, each
  block feeding the neighbour lists of its rows and of its columns. Only the K nearest of every
  item and the row maxima survive (``neighbours``: keys ``distance bits << 32 | index``, so ties
  go by index like a stable sort, merged a block at a time). One worker per core multiplies and
  selects blocks (single-threaded BLAS each: a two-threaded GEMM beside the selection lost CPU
  time to its threads waiting for each other); the merges follow block order.
* The query x gallery strips of that pass go to a hook as they complete (the plain evaluation) and
  are kept for the final ``lambda d`` term (``spill``: in memory, or when too large in an unlinked
  temporary file written while the pass computes and read ahead while the Jaccard term computes).
  The pass is the only all-pairs product (``products``).
* Identical features are found by hashing and made to tie exactly (``duplicates``).
* R, R* and the expansion are vectorised over the K-nearest array (``reciprocal_sets``); V is a
  ``scipy.sparse`` CSR matrix (about k1 to 1.5 k1 non-zeros a row) whose distances come from the
  pass when the entry is among the K nearest, else from one dot product. V stays float32: the
  widely copied code stores it in float16, which flips some top-1s.
* The Jaccard term is computed for query rows only, a chunk at a time, through an inverted index
  (CSC of the gallery rows of V).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from reidpipe.devices import usable_cpus
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.arrays import in_chunks, ragged_positions
from reidpipe.evaluation.duplicates import duplicates, tie_duplicates
from reidpipe.evaluation.neighbours import Nearest, Selection, key_distances
from reidpipe.evaluation.products import gemm_operand, pair_distances, products
from reidpipe.evaluation.reciprocal_sets import expanded_sets
from reidpipe.evaluation.spill import QueryRows

QueryStripHook = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray], None]
"""Receives (first query, end query, query x gallery feature products, the queries' and the
gallery's squared norms) as the pass makes them; it must neither keep nor modify the products."""

_BLOCK_ELEMENTS = 1 << 22  # entries of one distance block (16 MiB of float32)
_STRIP_ELEMENTS = 1 << 24  # entries of one query x gallery strip (64 MiB of float32)


class KReciprocalReRanker:
    """Runs the all-pairs pass and prepares V once, then gives re-ranked query x gallery
    distances a chunk of queries at a time.

    ``features`` holds the queries first, then the gallery (float32; used without a copy when
    already float32 and contiguous). ``on_query_strip`` receives each query x gallery block of
    feature products before it becomes distances.
    """

    def __init__(
        self,
        features: np.ndarray,
        num_query: int,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        device: str = "auto",
        on_query_strip: QueryStripHook | None = None,
    ) -> None:
        if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
            raise ReidpipeError(
                f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1; "
                f"got k1={k1}, k2={k2}, lambda_value={lambda_value}"
            )
        self.lambda_value = float(lambda_value)
        self.num_query = num_query
        self.feats = np.ascontiguousarray(features, dtype=np.float32)
        self._gemm_feats = gemm_operand(self.feats, device)
        n = len(self.feats)
        self.num_gallery = n - num_query
        self._copy_of = duplicates(self.feats)
        self.sq = np.einsum("ij,ij->i", self.feats, self.feats, dtype=np.float64).astype(np.float32)
        self._gallery_copies = None
        if self._copy_of is not None:
            self.sq = self.sq[self._copy_of]
            # In the query x gallery strips a copy's column is its first gallery copy's column.
            first_in_gallery = np.full(n, n)
            np.minimum.at(first_in_gallery, self._copy_of[num_query:], np.arange(num_query, n))
            source = first_in_gallery[self._copy_of[num_query:]] - num_query
            copies = np.flatnonzero(source != np.arange(self.num_gallery))
            self._gallery_copies = (copies, source[copies])
        k = min(k1 + 1, n)
        k_half = min(round(k1 / 2) + 1, n)
        k_qe = min(k2, n)
        self.query_rows = QueryRows(num_query, self.num_gallery)
        nearest = self._all_pairs(max(k, k_qe), on_query_strip)
        if self._copy_of is not None:
            tie_duplicates(nearest.keys, self._copy_of, self.feats)
            nearest.min_e = nearest.min_e[self._copy_of]
        rank = (nearest.keys & 0xFFFFFFFF).astype(np.int32)
        row_max = nearest.row_max()
        # All-identical features give a zero row; any positive divisor leaves that row all 0.
        self.row_max = np.where(row_max > 0, row_max, np.float32(1.0))
        pattern = expanded_sets(rank, k, k_half)
        v = self._weights(pattern, rank, key_distances(nearest.keys))
        if k_qe > 1:
            qe = sp.csr_matrix(
                (
                    np.full(n * k_qe, 1.0 / k_qe, dtype=np.float32),
                    (np.repeat(np.arange(n), k_qe), rank[:, :k_qe].ravel()),
                ),
                shape=(n, n),
            )
            v = (qe @ v).tocsr()
        v.sort_indices()
        self.v_query = v[:num_query]
        self.v_gallery_by_col = v[num_query:].tocsc()
        self.v_gallery_by_col.sort_indices()

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

    def _pass_blocks(self) -> list[tuple[int, int, int, int]]:
        """Every block of the pass (upper block triangle) as (first row, end row, first column,
        end column), in merge order: query row blocks (one strip high), then gallery ones."""
        n, nq = len(self.feats), self.num_query
        query_height = max(1, _STRIP_ELEMENTS // max(1, n - nq))
        gallery_height = max(1, int(_BLOCK_ELEMENTS**0.5))
        row_blocks = [(s, min(s + query_height, nq)) for s in range(0, nq, query_height)] + [
            (s, min(s + gallery_height, n)) for s in range(nq, n, gallery_height)
        ]
        return [
            (start, stop, first, end)
            for start, stop in row_blocks
            for first, end in self._blocks(start, stop)
        ]

    def _all_pairs(self, k: int, on_query_strip: QueryStripHook | None) -> Nearest:
        """The one pass over all pairs: neighbours, maxima, strips.

        One worker per core computes a block's product (single-threaded BLAS) and selects its
        candidates; this thread merges them in block order. Each worker multiplies into its
        own reused buffer, which spares the kernel a fresh mapping and its page faults per
        block. A query x gallery strip is only multiplied by a worker: this thread hands its
        products to the hook, then selects it and keeps it.
        """
        nq = self.num_query
        nearest = Nearest(len(self.feats), k)
        half = self.sq / np.float32(2.0)
        blocks = self._pass_blocks()

        def kept(block: tuple[int, int, int, int]) -> bool:  # a query x gallery strip
            return block[1] <= nq and block[2] == nq

        size = max([(b[1] - b[0]) * (b[3] - b[2]) for b in blocks if not kept(b)], default=0)
        local = threading.local()

        def work(index: int) -> np.ndarray | Selection:
            """The block's products (a strip) or its selection."""
            start, stop, first, end = block = blocks[index]
            rows, cols = self._gemm_feats[start:stop], self._gemm_feats[first:end]
            if kept(block):
                return products(rows, cols)
            if not hasattr(local, "buffer"):
                local.buffer = np.empty(size, dtype=np.float32)
            out = local.buffer[: (stop - start) * (end - first)].reshape(stop - start, end - first)
            return nearest.select(
                products(rows, cols, out),
                half[start:stop],
                half[first:end],
                start,
                first,
                columns=first >= stop,
            )

        workers = usable_cpus()
        blas = (
            threadpool_limits(limits=1, user_api="blas")
            if isinstance(self._gemm_feats, np.ndarray)
            else nullcontext()
        )
        with blas, ThreadPoolExecutor(max_workers=workers) as pool:
            # Blocks are merged in order, and a query x gallery strip takes a worker as long as
            # several blocks: twice the workers in flight (and one) keep the others busy
            # behind it.
            ahead = 2 * workers + 1
            pending = deque(pool.submit(work, i) for i in range(min(len(blocks), ahead)))
            for index, (start, _stop, first, _end) in enumerate(blocks):
                result = pending.popleft().result()
                if index + ahead < len(blocks):
                    pending.append(pool.submit(work, index + ahead))
                if not isinstance(result, Selection):
                    result = self._take_strip(nearest, half, blocks[index], result, on_query_strip)
                nearest.absorb(result, start, first)
        self.query_rows.finish_writes()
        return nearest

    def _take_strip(
        self,
        nearest: Nearest,
        half: np.ndarray,
        block: tuple[int, int, int, int],
        strip: np.ndarray,
        on_query_strip: QueryStripHook | None,
    ) -> Selection:
        """A query x gallery strip of products, on the merging thread: copies' columns set, the
        products handed to the hook, then turned into ``-d/2``, selected and kept."""
        start, stop, first, end = block
        if self._gallery_copies is not None:
            strip[:, self._gallery_copies[0]] = strip[:, self._gallery_copies[1]]
        if on_query_strip is not None:
            on_query_strip(start, stop, strip, self.sq[start:stop], self.sq[first:end])
        selection = nearest.select(
            strip, half[start:stop], half[first:end], start, first, columns=True
        )
        self.query_rows.put(start, strip)
        return selection

    def _weights(
        self, pattern: sp.csr_matrix, rank: np.ndarray, nearest_dist: np.ndarray
    ) -> sp.csr_matrix:
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

        in_chunks(fill, len(cols), 4 * rank.shape[1])
        missing = np.flatnonzero(~found)
        pairs = rows[missing], cols[missing].astype(np.int64)
        if self._copy_of is None:
            dist[missing] = pair_distances(self.feats, *pairs)
        else:  # identical features: one computation per pair of first copies
            code, at = np.unique(
                self._copy_of[pairs[0]] * n + self._copy_of[pairs[1]], return_inverse=True
            )
            dist[missing] = pair_distances(self.feats, *np.divmod(code, n))[at.ravel()]
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
        lam = np.float32(self.lambda_value)
        factor = (np.float32(-2.0) * lam / self.row_max[start:stop])[:, None]
        e = self.query_rows.get(start, stop)
        final = np.multiply(e, factor)  # lambda d / row max (d = -2 e)
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
        return final
