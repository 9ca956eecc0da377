"""Items with identical features: found by hashing, then made to tie exactly in the neighbour
lists, as the definition's stable sort by (distance, index) has them."""

from __future__ import annotations

import numpy as np

from reidpipe.evaluation.arrays import ragged_positions
from reidpipe.evaluation.neighbours import NO_NEIGHBOUR
from reidpipe.evaluation.products import pair_distances


def duplicates(feats: np.ndarray) -> np.ndarray | None:
    """Each item's first item with identical features, or None when all differ.

    Candidates share an exact (wrapping integer) hash of a few columns; whole rows decide.
    """
    n, dim = feats.shape
    columns = np.unique(np.linspace(0, dim - 1, min(dim, 16)).astype(np.int64))
    bits = (feats[:, columns] + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    weights = np.random.default_rng(0).integers(1, 1 << 62, len(columns), dtype=np.uint64) | 1
    _, inverse, counts = np.unique(
        (bits * weights).sum(axis=1), return_inverse=True, return_counts=True
    )
    candidates = np.flatnonzero(counts[inverse.ravel()] > 1)
    if not len(candidates):
        return None
    rows = np.ascontiguousarray(feats[candidates] + np.float32(0.0))
    _, first, same = np.unique(
        rows.view(np.dtype((np.void, rows.itemsize * dim))).ravel(),
        return_index=True,
        return_inverse=True,
    )
    rep = np.arange(n)
    rep[candidates] = candidates[first[same.ravel()]]
    return rep if (rep != np.arange(n)).any() else None


def tie_duplicates(keys: np.ndarray, rep: np.ndarray, feats: np.ndarray) -> None:
    """Make identical features tie exactly, as in the definition (in place).

    Block products of identical features can differ in the last bit, which would order copies
    by rounding instead of index. Every list holding a copy gets all copies, each at the one
    distance ``pair_distances`` gives for (the row's first copy, the group's first copy);
    copies then take their first copy's list. Each such distance is computed once, so copies
    get bit-identical values.
    """
    n, k = keys.shape
    sizes = np.bincount(rep, minlength=n)
    members = np.argsort(rep, kind="stable")
    member_start = np.cumsum(sizes) - sizes
    items = keys & 0xFFFFFFFF
    grouped = (sizes[rep[items]] > 1) & (keys != NO_NEIGHBOUR)
    firsts = np.flatnonzero(rep == np.arange(n))
    fix = firsts[grouped[firsts].any(axis=1)]
    plain = ~grouped[fix] & (keys[fix] != NO_NEIGHBOUR)
    plain_row, plain_at = np.nonzero(plain)
    group_row, group_at = np.nonzero(grouped[fix])
    code = np.unique(group_row * n + rep[items[fix][group_row, group_at]])
    row, group = np.divmod(code, n)
    dist = pair_distances(feats, fix[row], group)
    count = sizes[group]
    copy = members[ragged_positions(member_start[group], count)]
    copy_keys = (
        np.repeat(dist + np.float32(0.0), count).view(np.int32).astype(np.int64) << 32 | copy
    )
    every_row = np.concatenate([plain_row, np.repeat(row, count)])
    every_key = np.concatenate([keys[fix][plain_row, plain_at], copy_keys])
    order = np.argsort(every_row, kind="stable")
    every_row, every_key = every_row[order], every_key[order]
    per_row = np.bincount(every_row, minlength=len(fix))
    table = np.full((len(fix), max(k, int(per_row.max()))), NO_NEIGHBOUR, dtype=np.int64)
    table[
        every_row, np.arange(len(every_row)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    ] = every_key
    table.sort(axis=1)
    keys[fix] = table[:, :k]
    copies = np.flatnonzero(rep != np.arange(n))
    keys[copies] = keys[rep[copies]]
