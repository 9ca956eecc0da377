"""Verification figures: exact against a pair-by-pair brute-force definition, blocked equal to
unblocked, bounded memory, the open-set split and bad input.

Features are small integers (Euclidean) or +-0.25 entries of unit norm (cosine), so every
product is exact whatever the BLAS kernel or block height: distances are equal bit for bit in the
module and the brute force, and ties are common.
"""

from __future__ import annotations

import json
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.evaluate import plain_distance_rows, rank_queries
from reidpipe.evaluation.verification import (
    COSINE_RANGE,
    FARS,
    hold_out_identities,
    verification_figures,
)

ALL_FARS = (*FARS, 0.3)


def exact_features(rng: np.random.Generator, num: int, distance: str) -> np.ndarray:
    if distance == "cosine":
        return (rng.choice([-0.25, 0.25], size=(num, 16))).astype(np.float32)
    return rng.integers(-2, 3, size=(num, 6)).astype(np.float32)


def random_case(
    seed: int, distance: str, num_query: int = 40, num_gallery: int = 120, num_ids: int = 12
) -> dict[str, np.ndarray | str]:
    """Junk (-1) and distractor (0) ids on both sides, a few cameras, ids absent from the
    gallery and ids present only in a query's own camera."""
    rng = np.random.default_rng(seed)
    return dict(
        query=exact_features(rng, num_query, distance),
        gallery=exact_features(rng, num_gallery, distance),
        q_pids=rng.integers(-1, num_ids, num_query),
        q_cams=rng.integers(1, 4, num_query),
        g_pids=rng.integers(-1, num_ids - 2, num_gallery),
        g_cams=rng.integers(1, 4, num_gallery),
        distance=distance,
    )


def brute_force(
    query, gallery, q_pids, q_cams, g_pids, g_cams, distance, fars=ALL_FARS, num_bins=20
) -> dict:
    """The definitions, pair by pair, with distances in float64 rounded once to float32."""
    if distance == "cosine":
        q = query / np.linalg.norm(query.astype(np.float64), axis=1, keepdims=True)
        g = gallery / np.linalg.norm(gallery.astype(np.float64), axis=1, keepdims=True)
        dist = (1.0 - q @ g.T).astype(np.float32)
    else:
        diff = query.astype(np.float64)[:, None, :] - gallery[None, :, :]
        dist = np.sqrt((diff**2).sum(axis=2)).astype(np.float32)
    genuine, impostor, nearest, known, junk_queries = [], [], [], [], 0
    for i in range(len(query)):
        if q_pids[i] == -1:
            junk_queries += 1
            continue
        candidates = []
        for j in range(len(gallery)):
            if g_pids[j] == -1:
                continue
            if g_pids[j] == q_pids[i]:
                if q_pids[i] == 0 or g_cams[j] == q_cams[i]:
                    continue
                genuine.append(dist[i, j])
                candidates.append((dist[i, j], j, True))
            else:
                impostor.append(dist[i, j])
                candidates.append((dist[i, j], j, False))
        nearest.append(min(candidates) if candidates else None)
        known.append(any(c[2] for c in candidates))
    if distance == "cosine":
        low, high = COSINE_RANGE
    else:
        low, high = 0.0, float(max(genuine + impostor, default=0.0)) or 1.0
    scale = np.float32(num_bins / (high - low))

    def histogram(values):
        counts = [0] * num_bins
        for v in values:
            counts[min(max(int((v - np.float32(low)) * scale), 0), num_bins - 1)] += 1
        return counts

    open_set = [n for n, k in zip(nearest, known) if n is not None and not k]
    known_nearest = [n for n, k in zip(nearest, known) if k]
    points = []
    for far in fars:
        n = len(impostor)
        if n * Fraction(str(far)) < 1:
            points.append(
                dict(
                    far=far,
                    threshold=None,
                    tar=None,
                    far_achieved=None,
                    true_accepts=None,
                    false_accepts=None,
                    no_match_accuracy=None,
                    known_rank1_accepted=None,
                    why_null={
                        "threshold": f"{n} impostor pairs: FAR {far} needs at least "
                        f"{int(np.ceil(1 / Fraction(str(far))))}"
                    },
                )
            )
            continue
        # The largest float32 t with #{impostor <= t} <= far * n: just below an impostor value.
        values = np.array(impostor, dtype=np.float32)
        below = np.nextafter(np.unique(values), np.float32(-np.inf))
        t = max(c for c in below if np.count_nonzero(values <= c) <= n * Fraction(str(far)))
        true_accepts = np.count_nonzero(np.array(genuine, dtype=np.float32) <= t)
        false_accepts = np.count_nonzero(values <= t)
        why_null = {}
        if not genuine:
            why_null["tar"] = "no genuine pairs"
        if not open_set:
            why_null["no_match_accuracy"] = "no open-set queries"
        if not known_nearest:
            why_null["known_rank1_accepted"] = "no known queries"
        points.append(
            dict(
                far=far,
                threshold=float(t),
                tar=true_accepts / len(genuine) if genuine else None,
                far_achieved=false_accepts / n,
                true_accepts=int(true_accepts),
                false_accepts=int(false_accepts),
                no_match_accuracy=(
                    sum(c[0] > t for c in open_set) / len(open_set) if open_set else None
                ),
                known_rank1_accepted=(
                    sum(c[2] and c[0] <= t for c in known_nearest) / len(known_nearest)
                    if known_nearest
                    else None
                ),
                why_null=why_null,
            )
        )
    return dict(
        distance=distance,
        num_genuine_pairs=len(genuine),
        num_impostor_pairs=len(impostor),
        num_known_queries=len(known_nearest),
        num_open_set_queries=len(open_set),
        num_queries_without_candidates=sum(n is None for n in nearest),
        num_junk_queries=junk_queries,
        known_rank1=(
            sum(c[2] for c in known_nearest) / len(known_nearest) if known_nearest else None
        ),
        histogram_edges=np.linspace(low, high, num_bins + 1).tolist(),
        genuine_histogram=histogram(genuine),
        impostor_histogram=histogram(impostor),
        operating_points=points,
    )


def figures(case: dict, **kwargs) -> dict:
    result = verification_figures(**case, fars=ALL_FARS, num_bins=20, **kwargs).to_json()
    json.dumps(result, allow_nan=False)  # JSON-ready: no NaN, no NumPy scalars
    return result


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", range(4))
def test_equals_brute_force(seed: int, distance: str) -> None:
    case = random_case(seed, distance)
    result = figures(case)
    assert result == brute_force(**case)
    # The cases exercise what they are meant to: ties, open-set queries, distractors, junk.
    assert result["num_open_set_queries"] > 0 and result["num_junk_queries"] > 0
    assert any(
        p["threshold"] is not None and p["far_achieved"] < p["far"]
        for p in result["operating_points"]
    )  # ties at x(k+1), all rejected


def test_blocked_equals_unblocked() -> None:
    case = random_case(7, "cosine", num_query=30, num_gallery=90)
    whole = figures(case)
    for rows in (1, 2, 7):
        assert figures(case, block_rows=rows) == whole


def test_all_junk_queries() -> None:
    case = random_case(1, "euclidean")
    case["q_pids"] = np.full(len(case["q_pids"]), -1)
    result = figures(case)
    assert result == brute_force(**case)
    assert result["num_junk_queries"] == len(case["q_pids"])
    assert result["num_genuine_pairs"] == result["num_impostor_pairs"] == 0
    assert all(p["threshold"] is None for p in result["operating_points"])


def test_all_junk_gallery() -> None:
    case = random_case(2, "cosine")
    case["g_pids"] = np.full(len(case["g_pids"]), -1)
    result = figures(case)
    assert result == brute_force(**case)
    assert result["num_queries_without_candidates"] == (case["q_pids"] != -1).sum() > 0
    assert result["known_rank1"] is None


@pytest.mark.parametrize("num_impostors, has_threshold", [(999, False), (1000, True)])
def test_too_few_impostors(num_impostors: int, has_threshold: bool) -> None:
    """FAR 1e-3 needs 1,000 impostor pairs (one false accept allowed)."""
    rng = np.random.default_rng(3)
    case = dict(
        query=exact_features(rng, 1, "euclidean"),
        gallery=exact_features(rng, num_impostors + 1, "euclidean"),
        q_pids=np.array([1]),
        q_cams=np.array([1]),
        g_pids=np.r_[1, np.arange(2, num_impostors + 2)],
        g_cams=np.ones(num_impostors + 1, dtype=int) * 2,
        distance="euclidean",
    )
    result = figures(case)
    assert result == brute_force(**case)
    by_far = {p["far"]: p for p in result["operating_points"]}
    assert (by_far[1e-3]["threshold"] is not None) == has_threshold
    assert by_far[1e-4]["threshold"] is None
    assert by_far[1e-4]["why_null"] == {
        "threshold": f"{num_impostors} impostor pairs: FAR 0.0001 needs at least 10000"
    }


def test_known_rank1_is_the_rankings() -> None:
    """Known queries and their nearest candidate are the ranking's evaluated queries and rank 1."""
    case = random_case(5, "cosine")
    labelled = case["q_pids"] > 0
    for key in ("query", "q_pids", "q_cams"):
        case[key] = case[key][labelled]
    result = figures(case)
    ranking = rank_queries(
        plain_distance_rows(case["query"], case["gallery"], "cosine", "cpu"),
        len(case["query"]),
        case["q_pids"],
        case["q_cams"],
        case["g_pids"],
        case["g_cams"],
    )
    assert result["num_known_queries"] == (ranking.num_matches > 0).sum()
    assert result["known_rank1"] == ranking.cmc[0]


def test_hold_out_identities() -> None:
    case = random_case(4, "euclidean", num_query=60, num_gallery=200, num_ids=10)
    case["g_pids"] = np.random.default_rng(0).integers(1, 10, 200)  # every labelled id present
    split = hold_out_identities(case["q_pids"], case["g_pids"], fraction=0.5, seed=0)
    again = hold_out_identities(case["q_pids"], case["g_pids"], fraction=0.5, seed=0)
    assert split.unknown_pids.tolist() == again.unknown_pids.tolist()
    labelled = np.unique(case["q_pids"][case["q_pids"] > 0])
    assert len(split.unknown_pids) == round(0.5 * len(labelled))
    assert not np.isin(case["g_pids"][split.gallery_kept], split.unknown_pids).any()
    assert split.gallery_kept.sum() == (~np.isin(case["g_pids"], split.unknown_pids)).sum()
    case["gallery"] = case["gallery"][split.gallery_kept]
    for key in ("g_pids", "g_cams"):
        case[key] = case[key][split.gallery_kept]
    result = figures(case)
    assert result == brute_force(**case)
    unknown_queries = np.isin(case["q_pids"], split.unknown_pids)
    assert result["num_open_set_queries"] >= unknown_queries.sum() > 0
    assert (
        len(hold_out_identities(case["q_pids"], case["g_pids"], fraction=0.01, seed=0).unknown_pids)
        == 1
    )  # at least one
    with pytest.raises(
        ReidpipeError, match="evaluate.open_set_fraction 0: of 9 labelled query ids it holds out 0"
    ):
        hold_out_identities(case["q_pids"], case["g_pids"], fraction=0, seed=0)
    with pytest.raises(
        ReidpipeError,
        match="evaluate.open_set_fraction 0.1: of 1 labelled query "
        "ids it holds out 1; expected .* one kept",
    ):
        hold_out_identities(np.array([3, 3, -1, 0]), case["g_pids"], fraction=0.1, seed=0)


def _peak_bytes(case: dict, **kwargs) -> int:
    tracemalloc.start()
    try:
        verification_figures(**case, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_bounded_by_the_block() -> None:
    """2,000 x 6,000 distances (48 MB as one float32 matrix): in blocks of 16 rows, the peak is
    the fixed histograms (0.5 MB each, about 6 MB) and a few MB of block; in one block, several
    times the matrix (so the bound is a real check). One BLAS thread: many tiny products on a
    busy machine are otherwise slow."""
    rng = np.random.default_rng(0)
    case = dict(
        query=rng.standard_normal((2000, 32), dtype=np.float32),
        gallery=rng.standard_normal((6000, 32), dtype=np.float32),
        q_pids=rng.integers(1, 500, 2000),
        q_cams=rng.integers(1, 7, 2000),
        g_pids=rng.integers(-1, 500, 6000),
        g_cams=rng.integers(1, 7, 6000),
    )
    matrix = 2000 * 6000 * 4
    with threadpool_limits(limits=1, user_api="blas"):
        blocked, whole = _peak_bytes(case, block_rows=16), _peak_bytes(case, block_rows=2000)
    assert blocked < 12e6 and whole > 2 * matrix


def test_bad_input() -> None:
    case = random_case(0, "cosine", num_query=5, num_gallery=9)
    case["gallery"][3, 2] = np.nan
    with pytest.raises(
        ReidpipeError,
        match=r"distance of query 0 to gallery item 3 is nan; "
        "expected finite embeddings",
    ):
        verification_figures(**case)
    with pytest.raises(
        ReidpipeError,
        match=r"FARs \[0.01, 1.0\]: expected each in \(0, 1\), "
        r"got \[1.0\]",
    ):
        verification_figures(**random_case(0, "cosine"), fars=(0.01, 1.0))
    case = random_case(0, "cosine")
    case["q_pids"] = case["q_pids"][:-1]
    with pytest.raises(ReidpipeError, match="40 query and 120 gallery features but 39 and 120"):
        verification_figures(**case)
