"""k-reciprocal re-ranking (Zhong et al., CVPR 2017): the original definition, never dense N x N.

Definition (N = query + gallery items, d = squared Euclidean distance, each row divided by its
maximum over all N items):

* ``N(i, k)``: the k nearest items of i (i itself first);
  ``R(i, k) = {j in N(i, k): i in N(j, k)}``.
* ``R*(i)``: ``R(i, k1+1)`` plus, for every candidate ``c`` in it, ``R(c, round(k1/2)+1)`` when
  more than 2/3 of that set lies in ``R(i, k1+1)``. ``round`` is round-half-to-even, as NumPy's
  ``around`` in the original code.
* ``V[i, j] = exp(-d(i, j))`` on ``R*(i)``, rows normalised to sum 1; local query expansion replaces
  row i by the mean of the rows of its k2 nearest items (k2 = 1: none).
* ``jaccard(i, j) = 1 - sum(min(V_i, V_j)) / sum(max(V_i, V_j)) = 1 - m / (2 - m)``,
  ``final = (1 - lambda) jaccard + lambda d``, defined for query x gallery only.

What makes it scale: the only all-pairs work is the nearest-neighbour search, done on row chunks
of the distance matrix with ``torch.topk`` (on the GPU when present); V and the reciprocal sets are
sparse (``scipy.sparse`` CSR, about k1 to 1.5 k1 non-zeros a row); the Jaccard term is computed
for query rows only, a chunk of queries at a time, through an inverted index (CSC of the gallery
rows of V). V stays float32: the widely copied code stores it in float16, which flips some top-1s.
Neighbour ties are broken by index (a stable sort), which only matters for duplicate features.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from reidpipe.devices import resolve_device
from reidpipe.errors import ReidpipeError

_CHUNK_BYTES = 1 << 27  # working-set target of one chunk of a dense distance block


def squared_distances(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor,
                      b_sq: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` via the dot-product expansion, clamped at 0 against rounding."""
    dist = torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2.0)
    dist += a_sq.unsqueeze(1)
    return dist.clamp_min_(0.0)


def _stable_topk(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest per row, ordered by (distance, index) like a stable argsort.

    ``torch.topk`` picks arbitrarily among items tied at the k-th place, so rows with a tie
    across that boundary (duplicate features) are sorted whole with a stable sort instead.
    """
    if k >= dist.shape[1]:
        return torch.sort(dist, dim=1, stable=True).indices
    values, index = torch.topk(dist, k + 1, dim=1, largest=False, sorted=True)
    boundary_tie = values[:, k - 1] == values[:, k]
    values, index = values[:, :k], index[:, :k]
    by_index = torch.argsort(index, dim=1)
    values, index = values.gather(1, by_index), index.gather(1, by_index)
    index = index.gather(1, torch.sort(values, dim=1, stable=True).indices)
    if boundary_tie.any():
        rows = boundary_tie.nonzero().squeeze(1)
        index[rows] = torch.sort(dist[rows], dim=1, stable=True).indices[:, :k]
    return index


def _reciprocal(rank: np.ndarray, k: int) -> sp.csr_matrix:
    """CSR pattern of R(i, k): j among i's k nearest and i among j's k nearest."""
    n = rank.shape[0]
    rows = np.repeat(np.arange(n), k)
    knn = sp.csr_matrix((np.ones(n * k, dtype=np.float32), (rows, rank[:, :k].ravel())),
                        shape=(n, n))
    return knn.multiply(knn.T).tocsr()


def _ragged_positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each (s, c), without a Python loop."""
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets


class KReciprocalReRanker:
    """Prepares V once, then gives re-ranked query x gallery distances a chunk of queries at a time.

    ``timings`` accumulates seconds per phase (all-pairs product, top-k, sparse V, Jaccard + final)
    for the benchmark and logs.
    """

    def __init__(self, query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
                 lambda_value: float = 0.3, device: str = "auto") -> None:
        if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
            raise ReidpipeError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda_value <= 1; "
                                f"got k1={k1}, k2={k2}, lambda_value={lambda_value}")
        self.device = resolve_device(device)
        self.timings = {"product_s": 0.0, "topk_s": 0.0, "sparse_v_s": 0.0, "jaccard_final_s": 0.0}
        self.lambda_value = float(lambda_value)
        self.num_query = len(query)
        feats = torch.from_numpy(np.concatenate([query, gallery]).astype(np.float32, copy=False))
        self.feats = feats.to(self.device)
        self.sq = (self.feats * self.feats).sum(dim=1)
        n = len(feats)
        k = min(k1 + 1, n)
        k_half = min(round(k1 / 2) + 1, n)
        k_qe = min(k2, n)
        rank, self.row_max = self._neighbours(max(k, k_qe))
        started = time.perf_counter()
        reciprocal = _reciprocal(rank, k)
        expanded = self._expand(reciprocal, _reciprocal(rank, k_half))
        v = self._weights(expanded)
        if k_qe > 1:
            qe = sp.csr_matrix(
                (np.full(n * k_qe, 1.0 / k_qe, dtype=np.float32),
                 (np.repeat(np.arange(n), k_qe), rank[:, :k_qe].ravel())), shape=(n, n))
            v = (qe @ v).tocsr()
        v.sort_indices()
        self.v_query = v[: self.num_query]
        self.v_gallery_by_col = v[self.num_query:].tocsc()
        self.v_gallery_by_col.sort_indices()
        self.timings["sparse_v_s"] += time.perf_counter() - started

    def _neighbours(self, k: int) -> tuple[np.ndarray, torch.Tensor]:
        """The k nearest of every item (chunked all-pairs search) and each row's max distance."""
        n = len(self.feats)
        step = max(1, _CHUNK_BYTES // (4 * n))
        ranks, maxima = [], []
        for start in range(0, n, step):
            stop = min(start + step, n)
            started = time.perf_counter()
            dist = squared_distances(self.feats[start:stop], self.feats, self.sq[start:stop],
                                     self.sq)
            self._synchronise()
            between = time.perf_counter()
            maxima.append(dist.max(dim=1).values)
            ranks.append(_stable_topk(dist, k).cpu())
            self.timings["product_s"] += between - started
            self.timings["topk_s"] += time.perf_counter() - between
        row_max = torch.cat(maxima)
        # All-identical features give a zero row; any positive divisor leaves that row all 0.
        row_max = torch.where(row_max > 0, row_max, torch.ones_like(row_max))
        return torch.cat(ranks).numpy(), row_max

    def _synchronise(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def _expand(reciprocal: sp.csr_matrix, half: sp.csr_matrix) -> sp.csr_matrix:
        """R*(i): R(i) plus each candidate's half set overlapping R(i) by more than 2/3."""
        overlap = (reciprocal @ half.T).multiply(reciprocal).tocoo()
        half_size = np.diff(half.indptr)
        accepted = 3 * np.rint(overlap.data).astype(np.int64) > 2 * half_size[overlap.col]
        n = reciprocal.shape[0]
        chosen = sp.csr_matrix(
            (np.ones(int(accepted.sum()), dtype=np.float32),
             (overlap.row[accepted], overlap.col[accepted])), shape=(n, n))
        expanded = (reciprocal + chosen @ half).tocsr()
        expanded.sum_duplicates()
        expanded.sort_indices()
        return expanded

    def _weights(self, pattern: sp.csr_matrix) -> sp.csr_matrix:
        """V on the pattern of R*: exp(-normalised distance), each row normalised to sum 1."""
        rows = np.repeat(np.arange(pattern.shape[0]), np.diff(pattern.indptr))
        cols = pattern.indices
        weights = np.empty(len(cols), dtype=np.float32)
        step = max(1, _CHUNK_BYTES // (8 * self.feats.shape[1]))
        for start in range(0, len(cols), step):
            r = torch.from_numpy(rows[start:start + step]).to(self.device)
            c = torch.from_numpy(cols[start:start + step].astype(np.int64)).to(self.device)
            diff = self.feats[r] - self.feats[c]
            dist = (diff * diff).sum(dim=1) / self.row_max[r]
            weights[start:start + step] = torch.exp(-dist).cpu().numpy()
        sums = np.bincount(rows, weights=weights, minlength=pattern.shape[0])
        weights /= sums[rows].astype(np.float32)
        return sp.csr_matrix((weights, cols, pattern.indptr), shape=pattern.shape)

    def _jaccard(self, start: int, stop: int) -> np.ndarray:
        """Jaccard distances of queries [start, stop) to the gallery via the inverted index."""
        rows_v = self.v_query[start:stop]
        col_index = self.v_gallery_by_col
        num_gallery = col_index.shape[0]
        entry_rows = np.repeat(np.arange(stop - start), np.diff(rows_v.indptr))
        cols = rows_v.indices
        counts = np.diff(col_index.indptr)[cols]
        positions = _ragged_positions(col_index.indptr[cols].astype(np.int64), counts)
        mins = np.minimum(np.repeat(rows_v.data, counts), col_index.data[positions])
        flat = np.repeat(entry_rows, counts) * num_gallery + col_index.indices[positions]
        shared = np.bincount(flat, weights=mins, minlength=(stop - start) * num_gallery)
        shared = shared.reshape(stop - start, num_gallery)
        return (1.0 - shared / (2.0 - shared)).astype(np.float32)

    def chunk_size(self) -> int:
        return max(1, _CHUNK_BYTES // (8 * max(1, len(self.feats) - self.num_query)))

    def distances(self, start: int, stop: int) -> np.ndarray:
        """Final re-ranked distances of queries [start, stop) to the whole gallery (float32)."""
        started = time.perf_counter()
        q = self.feats[start:stop]
        g = self.feats[self.num_query:]
        original = squared_distances(q, g, self.sq[start:stop], self.sq[self.num_query:])
        original /= self.row_max[start:stop].unsqueeze(1)
        original = original.cpu().numpy()
        jaccard = self._jaccard(start, stop)
        final = (1.0 - self.lambda_value) * jaccard + self.lambda_value * original
        self.timings["jaccard_final_s"] += time.perf_counter() - started
        return final


def re_rank(query: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6,
            lambda_value: float = 0.3, device: str = "auto") -> np.ndarray:
    """The full query x gallery re-ranked distance matrix (for callers that want it whole)."""
    ranker = KReciprocalReRanker(query, gallery, k1, k2, lambda_value, device)
    step = ranker.chunk_size()
    return np.concatenate([ranker.distances(s, min(s + step, len(query)))
                           for s in range(0, len(query), step)])
