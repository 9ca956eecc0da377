"""The references tests compare against, written from their sources' definitions."""

from __future__ import annotations

import numpy as np

# The schedule ``bot_lr`` computes, as train.optim keys
BOT_LR_OPTIM = {
    "name": "SGD",
    "base_lr": 1e-3,
    "lr_steps": [3],
    "gamma": 0.5,
    "warmup_epochs": 2,
    "warmup_factor": 0.1,
    "warmup_method": "linear",
}


def bot_lr(epoch: int, base: float = 1e-3) -> float:
    """BoT's WarmupMultiStepLR at epoch start: factor 0.1, 2 warmup epochs, x0.5 from epoch 3."""
    warm = 0.1 * (1 - epoch / 2) + epoch / 2 if epoch < 2 else 1.0
    return base * warm * 0.5 ** (epoch >= 3)


def dense_re_ranking(
    query: np.ndarray,
    gallery: np.ndarray,
    k1: int,
    k2: int,
    lambda_value: float,
    dtype: type = np.float64,
) -> np.ndarray:
    """The paper's definition on dense N x N arrays, one item at a time (the oracle; slow)."""
    feats = np.concatenate([query, gallery]).astype(dtype)
    n, num_query = len(feats), len(query)
    sq = (feats * feats).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * feats @ feats.T, 0)
    dist /= dist.max(axis=1, keepdims=True)
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, :k]
        return np.array([j for j in forward if i in rank[j, :k]], dtype=np.int64)

    half = int(np.around(k1 / 2.0)) + 1
    v = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        r = reciprocal(i, k1 + 1)
        expansion = list(r)
        for candidate in r:
            cand = reciprocal(candidate, half)
            if len(np.intersect1d(cand, r)) > 2.0 / 3.0 * len(cand):
                expansion.extend(cand)
        expansion = np.unique(np.array(expansion, dtype=np.int64))
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    # Jaccard through the inverted index (items with a non-zero in each column), as in the paper.
    rows, cols = np.nonzero(v)
    by_col = np.argsort(cols, kind="stable")
    inverted = np.split(rows[by_col], np.cumsum(np.bincount(cols, minlength=n))[:-1])
    jaccard = np.zeros((num_query, n), dtype=dtype)
    for i in range(num_query):
        shared = np.zeros(n, dtype=dtype)
        for j in np.flatnonzero(v[i]):
            shared[inverted[j]] += np.minimum(v[i, j], v[inverted[j], j])
        jaccard[i] = 1 - shared / (2 - shared)
    final = (1 - lambda_value) * jaccard + lambda_value * dist[:num_query]
    return final[:, num_query:]
