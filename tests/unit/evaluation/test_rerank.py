"""k-reciprocal re-ranking against a plain dense oracle written from the paper (Zhong et al.)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from support.references import dense_re_ranking
from threadpoolctl import threadpool_info

from reidpipe.errors import ReidpipeError
from reidpipe.evaluation import arrays, neighbours, products, rerank, spill
from reidpipe.evaluation.evaluate import rank_queries
from reidpipe.evaluation.rerank import KReciprocalReRanker


def re_rank(
    query: np.ndarray,
    gallery: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    device: str = "auto",
) -> np.ndarray:
    """The whole query x gallery re-ranked distance matrix, chunk by chunk as evaluate reads it."""
    ranker = KReciprocalReRanker(
        np.concatenate([query, gallery]), len(query), k1, k2, lambda_value, device
    )
    step = ranker.chunk_size()
    return np.concatenate(
        [ranker.distances(s, min(s + step, len(query))) for s in range(0, len(query), step)]
    )


def clustered(
    rng: np.random.Generator, num: int, dim: int, ids: int
) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(ids, dim))
    pids = rng.integers(0, ids, size=num)
    feats = centres[pids] + 0.7 * rng.normal(size=(num, dim))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    return feats.astype(np.float32), pids


CASES = [  # (seed, num_query, num_gallery, dim, k1, k2, lambda)
    (0, 12, 60, 8, 20, 6, 0.3),
    (1, 20, 90, 16, 20, 6, 0.3),
    (2, 15, 40, 4, 7, 3, 0.5),
    (3, 9, 70, 32, 20, 1, 0.3),
    (4, 25, 120, 8, 5, 2, 0.0),
    (5, 6, 10, 8, 20, 6, 0.3),  # k1 + 1 > N
    (6, 3, 4, 8, 30, 10, 0.3),  # k1 and k2 larger than the whole set
    (7, 10, 50, 3, 3, 8, 1.0),  # k2 > k1 + 1
    (8, 30, 150, 64, 10, 4, 0.3),
    (9, 1, 1, 4, 20, 6, 0.3),  # a single query and a single gallery item
]


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c[0]}" for c in CASES])
def test_matches_dense_oracle(case: tuple) -> None:
    seed, num_query, num_gallery, dim, k1, k2, lam = case
    rng = np.random.default_rng(seed)
    num = num_query + num_gallery
    feats, pids = clustered(rng, num, dim, max(2, num // 6))
    query, gallery = feats[:num_query], feats[num_query:]
    expected = dense_re_ranking(query, gallery, k1, k2, lam)
    got = re_rank(query, gallery, k1, k2, lam, device="cpu")
    assert got.shape == (num_query, num_gallery)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)

    q_pids, g_pids = pids[:num_query], pids[num_query:]
    q_cams = rng.integers(1, 4, size=num_query)
    g_cams = rng.integers(1, 4, size=num_gallery)
    ours = rank_queries(lambda s, e: got[s:e], num_query, q_pids, q_cams, g_pids, g_cams)
    oracle = rank_queries(lambda s, e: expected[s:e], num_query, q_pids, q_cams, g_pids, g_cams)
    np.testing.assert_allclose(ours.ap, oracle.ap, atol=1e-6)
    np.testing.assert_array_equal(ours.first_hit, oracle.first_hit)
    np.testing.assert_allclose(ours.inp, oracle.inp, atol=1e-6)


def test_many_seeds_metrics_agree() -> None:
    for seed in range(10, 30):
        rng = np.random.default_rng(seed)
        num_query, num_gallery = int(rng.integers(2, 20)), int(rng.integers(5, 80))
        k1, k2 = int(rng.integers(1, 25)), int(rng.integers(1, 8))
        feats, pids = clustered(rng, num_query + num_gallery, 8, 5)
        query, gallery = feats[:num_query], feats[num_query:]
        expected = dense_re_ranking(query, gallery, k1, k2, 0.3)
        got = re_rank(query, gallery, k1, k2, 0.3, device="cpu")
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5, err_msg=f"seed {seed}")


def test_chunks_agree_with_whole() -> None:
    rng = np.random.default_rng(42)
    feats, _ = clustered(rng, 200, 16, 20)
    ranker = KReciprocalReRanker(feats, 50, 20, 6, 0.3, device="cpu")
    whole = ranker.distances(0, 50)
    parts = np.concatenate([ranker.distances(s, min(s + 7, 50)) for s in range(0, 50, 7)])
    np.testing.assert_allclose(whole, parts, rtol=0, atol=1e-6)


def test_reranking_improves_clustered_retrieval() -> None:
    """On well-separated identities re-ranking must not lose the nearest true match."""
    rng = np.random.default_rng(3)
    feats, pids = clustered(rng, 300, 32, 15)
    query, gallery = feats[:40], feats[40:]
    final = re_rank(query, gallery, 20, 6, 0.3, device="cpu")
    top1 = pids[40:][final.argmin(axis=1)]
    assert (top1 == pids[:40]).mean() >= 0.95


def test_bad_parameters_are_errors() -> None:
    feats = np.eye(4, dtype=np.float32)
    with pytest.raises(ReidpipeError, match="k1 >= 1"):
        KReciprocalReRanker(feats, 2, k1=0)
    with pytest.raises(ReidpipeError, match="lambda_value"):
        KReciprocalReRanker(feats, 2, lambda_value=1.5)


def test_duplicate_features_do_not_break_it() -> None:
    """Exact duplicates tie in the neighbour search, also across the k-th place."""
    rng = np.random.default_rng(5)
    feats, _ = clustered(rng, 30, 8, 5)
    feats = np.concatenate([feats, feats[:10], np.repeat(feats[:1], 6, axis=0)])
    final = re_rank(feats[:12], feats[12:], 4, 3, 0.3, device="cpu")
    assert final.shape == (12, len(feats) - 12)
    # ties are broken by index, exactly as the oracle's stable argsort does
    np.testing.assert_allclose(
        final, dense_re_ranking(feats[:12], feats[12:], 4, 3, 0.3), atol=2e-5
    )


def _blas_threads() -> int:
    return max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks, strips and work chunks of a few entries, and every distance strip on disk: the
    blocked pass, the neighbour merges and the temporary file run as on MSMT17-sized sets."""
    monkeypatch.setattr(rerank, "_BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(rerank, "_STRIP_ELEMENTS", 300)
    monkeypatch.setattr(arrays, "WORK_ELEMENTS", 3000)
    monkeypatch.setattr(neighbours, "_SELECT_ELEMENTS", 16)
    monkeypatch.setattr(spill, "_KEEP_IN_MEMORY_BYTES", 0)


@pytest.mark.parametrize("seed", range(6))
def test_blocked_pass_matches_dense_oracle(tiny_blocks: None, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    num_query, num_gallery = int(rng.integers(5, 40)), int(rng.integers(20, 150))
    k1, k2 = int(rng.integers(1, 25)), int(rng.integers(1, 8))
    feats, pids = clustered(rng, num_query + num_gallery, 8, 6)
    if seed % 2:  # copies inside the gallery and across query and gallery, at the k-th place too
        copies = rng.integers(0, len(feats), 12)
        feats, pids = np.concatenate([feats, feats[copies]]), np.concatenate([pids, pids[copies]])
        num_gallery += len(copies)
    query, gallery = feats[:num_query], feats[num_query:]
    expected = dense_re_ranking(query, gallery, k1, k2, 0.3)
    ranker = KReciprocalReRanker(feats, num_query, k1, k2, 0.3, device="cpu")
    # rows in steps that do and do not line up with the stored strips (read-ahead and misses)
    for step in (ranker.chunk_size(), 3):
        got = np.concatenate(
            [ranker.distances(s, min(s + step, num_query)) for s in range(0, num_query, step)]
        )
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    q_cams, g_cams = rng.integers(1, 4, num_query), rng.integers(1, 4, num_gallery)
    ids = (pids[:num_query], q_cams, pids[num_query:], g_cams)
    oracle = rank_queries(lambda s, e: expected[s:e], num_query, *ids)
    # straight from the ranker, chunks scored in parallel while reading the file
    for ours in (
        rank_queries(lambda s, e: got[s:e], num_query, *ids),
        rank_queries(ranker.distances, num_query, *ids, chunk_rows=2),
    ):
        np.testing.assert_allclose(ours.ap, oracle.ap, atol=1e-6)
        np.testing.assert_array_equal(ours.first_hit, oracle.first_hit)
        np.testing.assert_array_equal(ours.top, oracle.top)


def test_products_on_torch_tensors_match_numpy() -> None:
    """The branch that runs the all-pairs products through torch (a CUDA device) on CPU."""
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
    np.testing.assert_allclose(
        products.products(torch.from_numpy(a), torch.from_numpy(b)),
        products.products(a, b),
        rtol=1e-6,
        atol=1e-6,
    )


def test_pass_on_torch_tensors_matches_dense_oracle(
    tiny_blocks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole pass as on a GPU (products through torch: fresh arrays, BLAS threads left
    alone), driven on CPU by handing the ranker torch tensors."""
    monkeypatch.setattr(rerank, "gemm_operand", lambda feats, device: torch.from_numpy(feats))
    rng = np.random.default_rng(21)
    feats, _ = clustered(rng, 80, 8, 6)
    expected = dense_re_ranking(feats[:15], feats[15:], 6, 3, 0.3)
    ranker = KReciprocalReRanker(feats, 15, 6, 3, 0.3, device="cpu")
    assert isinstance(ranker._gemm_feats, torch.Tensor)
    np.testing.assert_allclose(ranker.distances(0, 15), expected, rtol=0, atol=2e-5)


def test_full_disk_is_a_clear_error(tiny_blocks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill.os, "pwrite", no_space)
    feats, _ = clustered(np.random.default_rng(1), 40, 8, 5)
    with pytest.raises(ReidpipeError, match="temporary file .* No space left .* TMPDIR"):
        KReciprocalReRanker(feats, 10, 5, 2, 0.3, device="cpu")


def test_workers_ahead_of_slow_merges(tiny_blocks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers multiply and select blocks ahead of the merges (in their reused buffers, against
    bounds read before earlier blocks were merged) while this thread merges slowly; the result
    is still the definition's. BLAS runs single-threaded during the pass only."""
    absorb = neighbours.Nearest.absorb
    blas_threads = []

    def slow_absorb(self: neighbours.Nearest, *args: object) -> None:
        time.sleep(0.002)  # the workers run ahead meanwhile
        blas_threads.append(_blas_threads())
        absorb(self, *args)

    monkeypatch.setattr(neighbours.Nearest, "absorb", slow_absorb)
    monkeypatch.setattr(rerank, "usable_cpus", lambda: 3)
    before = _blas_threads()
    rng = np.random.default_rng(77)
    feats, _ = clustered(rng, 90, 8, 6)
    expected = dense_re_ranking(feats[:20], feats[20:], 6, 3, 0.3)
    np.testing.assert_allclose(
        re_rank(feats[:20], feats[20:], 6, 3, 0.3, device="cpu"), expected, rtol=0, atol=2e-5
    )
    assert blas_threads and set(blas_threads) == {1}
    assert _blas_threads() == before
