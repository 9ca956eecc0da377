"""The k-reciprocal sets of the re-ranking definition, vectorised over the K-nearest array.

``R(i, k) = {j in N(i, k): i in N(j, k)}``; ``R*(i)`` is ``R(i, k1+1)`` plus, for every candidate
``c`` in it, ``R(c, round(k1/2)+1)`` when more than 2/3 of that set lies in ``R(i, k1+1)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from reidpipe.evaluation.arrays import in_chunks


def _reciprocal_mask(rank: np.ndarray, k: int) -> np.ndarray:
    """``mask[i, a]``: ``rank[i, a]`` (among i's k nearest) has i among its k nearest too."""
    n = len(rank)
    mask = np.empty((n, k), dtype=bool)

    def fill(start: int, stop: int) -> None:
        back = rank[rank[start:stop, :k], :k]
        mask[start:stop] = (back == np.arange(start, stop)[:, None, None]).any(axis=2)

    in_chunks(fill, n, k * k)
    return mask


def expanded_sets(rank: np.ndarray, k: int, k_half: int) -> sp.csr_matrix:
    """CSR pattern of R*(i): R(i, k) plus each candidate's R(c, k_half) lying more than 2/3 in
    R(i, k)."""
    n = len(rank)
    reciprocal = np.where(_reciprocal_mask(rank, k), rank[:, :k], -1)  # -1: not in R(i)
    half_mask = _reciprocal_mask(rank, k_half)
    half = np.where(half_mask, rank[:, :k_half], -2)  # -2 matches nothing
    half_size = half_mask.sum(axis=1)

    def members_of(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [start, stop): each row's member count and the members, row after row."""
        cand = reciprocal[start:stop]
        valid = cand >= 0
        safe = np.where(valid, cand, 0)
        cand_half = half[safe]  # (rows, k, k_half)
        inside = (cand_half[..., None] == cand[:, None, None, :]).any(axis=3).sum(axis=2)
        accepted = valid & (3 * inside > 2 * half_size[safe])
        members = np.concatenate(
            [cand, np.where(accepted[..., None], cand_half, -1).reshape(len(cand), -1)], axis=1
        )
        members.sort(axis=1)
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        return keep.sum(axis=1), members[keep]

    counts, parts = zip(*in_chunks(members_of, n, k * k_half * k))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    indices = np.concatenate(parts).astype(np.int32)
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n, n))
