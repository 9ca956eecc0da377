"""Market-1501 evaluation: CMC, mAP and mINP, plain and after k-reciprocal re-ranking.

Protocol (Zheng et al., ICCV 2015, and its evaluation code): for each query, gallery items with
the same pid and the same camera and all junk (pid -1) are removed; distractors (pid 0) stay as
negatives; queries left without a true match are skipped and counted. Ranks are 1-based positions in that filtered ranking. Distance ties are
broken by gallery order (a stable sort). AP is non-interpolated (mean precision at each true match,
as BoT, torchreid, fast-reid and TAO) or, as an option, the original MATLAB code's trapezoidal AP.

Queries are processed a chunk at a time from a callable that yields their distance rows, so no
query x gallery matrix is ever held whole, plain or re-ranked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from reidpipe import atomic
from reidpipe.devices import usable_cpus
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.arrays import ragged_positions
from reidpipe.evaluation.embeddings import Embeddings, collapse_warning, l2_normalise
from reidpipe.evaluation.products import gemm_operand, products
from reidpipe.evaluation.rerank import KReciprocalReRanker, QueryStripHook
from reidpipe.market import JUNK_PID
from reidpipe.params import EvaluateParams, ReRankingParams

log = logging.getLogger(__name__)

DistanceRows = Callable[[int, int], np.ndarray]
REPORTED_RANKS = (1, 5, 10, 20)
_CHUNK_ELEMENTS = 1 << 23
_CORES = usable_cpus()
_WORKERS = min(2, _CORES)  # chunks scored at once (memory grows with it)


@dataclass
class Ranking:
    """Per-query results; skipped queries (no true match) have num_matches 0, AP/INP NaN."""

    ap: np.ndarray
    inp: np.ndarray
    first_hit: np.ndarray  # 1-based rank of the first true match, 0 when skipped
    num_matches: np.ndarray
    top: np.ndarray  # gallery indices of the filtered top-k, -1 where fewer remain
    cmc: np.ndarray  # fraction of evaluated queries with a hit within rank r (r = 1..)


class _Protocol:
    """What each query keeps and matches, from pids and cameras alone.

    Junk never ranks, so its columns are dropped once (``columns``: the kept gallery indices, or
    None when there is no junk). Per query: its true matches (same pid, another camera) in CSR
    form, and how many same-pid same-camera items it removes besides.
    """

    def __init__(
        self, q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray
    ) -> None:
        q_pids, q_cams = np.asarray(q_pids), np.asarray(q_cams)
        g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
        kept = g_pids != JUNK_PID
        self.columns = None if kept.all() else np.flatnonzero(kept)
        if self.columns is not None:
            g_pids, g_cams = g_pids[self.columns], g_cams[self.columns]
        self.q_pids, self.q_cams, self.g_pids, self.g_cams = q_pids, q_cams, g_pids, g_cams
        by_pid = np.argsort(g_pids, kind="stable")
        first = np.searchsorted(g_pids[by_pid], q_pids, side="left")
        same_pid = np.searchsorted(g_pids[by_pid], q_pids, side="right") - first
        cols = by_pid[ragged_positions(first, same_pid)]
        rows = np.repeat(np.arange(len(q_pids)), same_pid)
        good = g_cams[cols] != q_cams[rows]
        self.num_matches = np.bincount(rows[good], minlength=len(q_pids))
        self.match_ptr = np.concatenate([[0], np.cumsum(self.num_matches)])
        self.match_cols = cols[good]
        self.same_camera = np.bincount(rows[~good], minlength=len(q_pids))


def _monotonic_bits(values: np.ndarray) -> np.ndarray:
    """Codes in [0, 2**32) that order like the float32 values (-0.0 equal to 0.0)."""
    bits = (values.astype(np.float32, copy=False) + np.float32(0.0)).view(np.int32)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64) + (1 << 31)


def _candidates(
    dist: np.ndarray, start: int, protocol: _Protocol, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of the entries that can matter to queries [start, start + len(dist)): those
    at or below each row's distance to its last true match and, for rows where that leaves fewer
    than ``top_k`` kept items, at or below the distance of its ``top_k``-th kept item."""
    num, num_gallery = dist.shape
    queries = slice(start, start + num)
    num_matches = protocol.num_matches[queries]
    ptr = protocol.match_ptr[start : start + num + 1]
    match_rows = np.repeat(np.arange(num), num_matches)
    bound = np.full(num, -np.inf, dtype=np.float32)
    with_match = np.flatnonzero(num_matches)
    if len(with_match):
        values = dist[match_rows, protocol.match_cols[ptr[0] : ptr[-1]]]
        bound[with_match] = np.maximum.reduceat(values, (ptr[:-1] - ptr[0])[with_match])
    rows, cols = np.divmod(np.flatnonzero(dist <= bound[:, None]), num_gallery)
    if top_k > 0:
        # A row whose bound leaves fewer than top_k kept items: also bound by its
        # (top_k + removed)-th smallest distance, which lies at or after its top_k-th kept item.
        removed = protocol.same_camera[queries]
        short = np.flatnonzero(np.bincount(rows, minlength=num) - removed < top_k)
        if len(short):
            kth = min(num_gallery, top_k + int(removed[short].max())) - 1
            wider = np.maximum(bound[short], np.partition(dist[short], kth, axis=1)[:, kth])
            extra_rows, extra_cols = np.divmod(
                np.flatnonzero(dist[short] <= wider[:, None]), num_gallery
            )
            keep = ~np.isin(rows, short)
            rows = np.concatenate([rows[keep], short[extra_rows]])
            cols = np.concatenate([cols[keep], extra_cols])
    return rows, cols


def _rank_chunk(
    dist: np.ndarray, start: int, protocol: _Protocol, ap_method: str, top_k: int
) -> tuple[np.ndarray, ...]:
    """Score queries [start, start + len(dist)) on their (junk-free) distance rows.

    Only the kept items ranked up to a query's last true match, and its first ``top_k``, matter:
    they are the entries at or below a per-row bound, found with one comparison pass, then sorted
    by (row, distance, index) as packed int64 keys. The rest of a row is never sorted.
    """
    num, num_gallery = dist.shape
    queries = slice(start, start + num)
    num_matches = protocol.num_matches[queries]
    rows, cols = _candidates(dist, start, protocol, top_k)
    q_pids, q_cams = protocol.q_pids[queries], protocol.q_cams[queries]
    same_camera = (protocol.g_pids[cols] == q_pids[rows]) & (protocol.g_cams[cols] == q_cams[rows])
    rows, cols = rows[~same_camera], cols[~same_camera]
    col_bits = max(1, (num_gallery - 1).bit_length())
    keys = (
        (rows.astype(np.int64) << (32 + col_bits))
        | (_monotonic_bits(dist[rows, cols]) << col_bits)
        | cols
    )
    keys.sort()
    rows, cols = keys >> (32 + col_bits), keys & ((1 << col_bits) - 1)
    good = protocol.g_pids[cols] == q_pids[rows]
    sizes = np.bincount(rows, minlength=num)
    row_start = np.cumsum(sizes) - sizes
    position = np.arange(len(rows)) - row_start[rows] + 1  # 1-based rank among kept items
    hits_so_far = np.cumsum(good)
    hits = hits_so_far - np.concatenate([[0], hits_so_far])[row_start][rows]
    good_rows, good_position, good_hits = rows[good], position[good], hits[good]
    precision = good_hits / good_position
    if ap_method == "trapezoidal":
        # Average of the precision just before and at each hit (1 before the first kept item).
        previous = np.where(
            good_position > 1, (good_hits - 1) / np.maximum(good_position - 1, 1), 1.0
        )
        precision = (precision + previous) / 2.0
    valid = num_matches > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.bincount(good_rows, weights=precision, minlength=num) / num_matches
    first = np.zeros(num, dtype=np.int64)
    last = np.ones(num, dtype=np.int64)
    hit_rows, at = np.unique(good_rows, return_index=True)
    first[hit_rows] = good_position[at]
    last[hit_rows] = good_position[at + num_matches[hit_rows] - 1]
    top = np.full((num, top_k), -1, dtype=np.int64)
    shown = position <= top_k
    gallery_index = cols if protocol.columns is None else protocol.columns[cols]
    top[rows[shown], position[shown] - 1] = gallery_index[shown]
    return (
        np.where(valid, ap, np.nan),
        np.where(valid, num_matches / last, np.nan),
        first,
        num_matches,
        top,
    )


class _Scores:
    """Per-query scores gathered chunk by chunk (in query order) into a Ranking."""

    def __init__(
        self,
        q_pids: np.ndarray,
        q_cams: np.ndarray,
        g_pids: np.ndarray,
        g_cams: np.ndarray,
        ap_method: str,
        top_k: int,
    ) -> None:
        if ap_method not in ("non_interpolated", "trapezoidal"):
            raise ReidpipeError(
                f"evaluate.ap_method {ap_method!r}: expected non_interpolated or trapezoidal"
            )
        self.protocol = _Protocol(q_pids, q_cams, g_pids, g_cams)
        self.ap_method, self.top_k = ap_method, top_k
        self._parts: list[tuple[np.ndarray, ...]] = []

    def score(self, start: int, dist: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        """Scores of queries [start, start + len(dist)) from their distance rows to the whole
        gallery (touches no state: chunks can be scored in parallel)."""
        if self.protocol.columns is not None:
            dist = dist[:, self.protocol.columns]
        dist = np.asarray(dist, dtype=np.float32)
        # Packed sort keys hold the row above 32 distance bits and the column index.
        col_bits = max(1, (dist.shape[1] - 1).bit_length())
        step = 1 << max(0, 31 - col_bits)
        return [
            _rank_chunk(
                dist[first : first + step], start + first, self.protocol, self.ap_method, self.top_k
            )
            for first in range(0, len(dist), step)
        ]

    def add(self, start: int, dist: np.ndarray) -> None:
        """Score the next chunk of queries (chunks must come in query order)."""
        self.add_parts(self.score(start, dist))

    def add_parts(self, parts: list[tuple[np.ndarray, ...]]) -> None:
        self._parts += parts

    def ranking(self, max_rank: int) -> Ranking:
        ap, inp, first, num_matches, top = (np.concatenate(p) for p in zip(*self._parts))
        evaluated = first[num_matches > 0]
        cmc = np.array(
            [(evaluated <= r).mean() if len(evaluated) else 0.0 for r in range(1, max_rank + 1)]
        )
        return Ranking(ap=ap, inp=inp, first_hit=first, num_matches=num_matches, top=top, cmc=cmc)


def rank_queries(
    distance_rows: DistanceRows,
    num_queries: int,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    ap_method: str = "non_interpolated",
    max_rank: int = 50,
    top_k: int = 10,
    chunk_rows: int | None = None,
) -> Ranking:
    """Rank every query's gallery and score it; ``distance_rows(a, b)`` gives rows a..b-1,
    ``chunk_rows`` at a time (default: about ``_CHUNK_ELEMENTS`` distances)."""
    scores = _Scores(q_pids, q_cams, g_pids, g_cams, ap_method, top_k)
    step = chunk_rows or max(1, _CHUNK_ELEMENTS // max(1, len(g_pids)))

    def score(start: int) -> list[tuple[np.ndarray, ...]]:
        return scores.score(start, distance_rows(start, min(start + step, num_queries)))

    # NumPy releases the GIL in its array loops, so chunks overlap on the cores; each chunk's
    # products get the cores' share of the BLAS threads (more would only wait for each other).
    with (
        threadpool_limits(limits=max(1, _CORES // _WORKERS), user_api="blas"),
        ThreadPoolExecutor(max_workers=_WORKERS) as pool,
    ):
        for parts in pool.map(score, range(0, num_queries, step)):
            scores.add_parts(parts)
    return scores.ranking(max_rank)


def summarise(ranking: Ranking) -> dict[str, float | int]:
    """mAP, mINP and rank-1/5/10/20 as fractions over evaluated queries; skipped ones counted."""
    valid = ranking.num_matches > 0
    first = ranking.first_hit[valid]
    summary: dict[str, float | int] = {
        "mAP": float(ranking.ap[valid].mean()),
        "mINP": float(ranking.inp[valid].mean()),
    }
    for r in REPORTED_RANKS:
        summary[f"rank{r}"] = float((first <= r).mean())
    summary["num_queries"] = int(valid.sum())
    summary["num_skipped"] = int((~valid).sum())
    return summary


def _check_distance(distance: str) -> None:
    if distance not in ("cosine", "euclidean"):
        raise ReidpipeError(f"evaluate.distance {distance!r}: expected cosine or euclidean")


def plain_distances(
    product: np.ndarray,
    q_sq: np.ndarray,
    g_sq: np.ndarray,
    distance: str,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Cosine (1 - cos, features L2-normalised) or Euclidean distances from the feature products
    ``q @ g.T`` and squared norms, into ``out`` or a new array (``product`` is left alone)."""
    if distance == "cosine":
        return np.subtract(np.float32(1.0), product, out=out)
    out = np.multiply(product, np.float32(-2.0), out=out)
    out += g_sq[None, :]
    out += q_sq[:, None]
    np.maximum(out, np.float32(0.0), out=out)
    return np.sqrt(out, out=out)


def plain_distance_rows(
    query: np.ndarray, gallery: np.ndarray, distance: str, device: str
) -> DistanceRows:
    """Cosine (1 - cos) or Euclidean distance rows, computed on demand; the products on
    ``device`` (NumPy's BLAS on CPU, faster here than torch's)."""
    _check_distance(distance)
    if distance == "cosine":
        query, gallery = l2_normalise(query), l2_normalise(gallery)
    query = np.ascontiguousarray(query, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    q_sq, g_sq = ((x * x).sum(axis=1) for x in (query, gallery))
    q, g = gemm_operand(query, device), gemm_operand(gallery, device)

    def rows(start: int, stop: int) -> np.ndarray:
        return plain_distances(products(q[start:stop], g), q_sq[start:stop], g_sq, distance)

    return rows


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, object]]
    cmc: pd.DataFrame
    per_query: pd.DataFrame
    warnings: list[str] = field(default_factory=list)  # metrics.json's "warnings", when any
    # verification.json (``verification.open_set_verification``), when asked for
    verification: dict[str, object] | None = None


def _top_text(top: np.ndarray) -> list[str]:
    return [" ".join(map(str, row[row >= 0].tolist())) for row in top]


def _plain_strip_scorer(plain: _Scores, distance: str) -> QueryStripHook:
    """The re-ranker's ``on_query_strip``: each query x gallery strip of its all-pairs pass,
    scored for the plain ranking."""
    buffer = np.empty(0, dtype=np.float32)

    def score_strip(
        start: int, stop: int, product: np.ndarray, q_sq: np.ndarray, g_sq: np.ndarray
    ) -> None:
        # Strips come one at a time, so one buffer serves all (no fresh pages per strip).
        nonlocal buffer
        if buffer.size < product.size:
            buffer = np.empty(product.size, dtype=np.float32)
        out = buffer[: product.size].reshape(product.shape)
        plain.add(start, plain_distances(product, q_sq, g_sq, distance, out))

    return score_strip


def _rerank_features(embeddings: Embeddings, distance: str) -> np.ndarray:
    """Query then gallery features as the plain ranking compares them: re-ranking works on
    their squared Euclidean distances."""
    feats = np.concatenate([embeddings.query.features, embeddings.gallery.features]).astype(
        np.float32, copy=False
    )
    if distance == "cosine":
        feats = l2_normalise(feats, in_place=True)
    return feats


def _rankings_with_reranking(
    embeddings: Embeddings,
    plain: _Scores,
    ids: tuple[np.ndarray, ...],
    evaluate: EvaluateParams,
    re_ranking: ReRankingParams,
    top_k: int,
    device: str,
) -> dict[str, Ranking]:
    """The plain ranking, scored from the re-ranker's strips, and the re-ranked one."""
    num_queries = len(embeddings.query.features)
    # Only the ranker holds the features: nothing else needs them
    ranker = KReciprocalReRanker(
        _rerank_features(embeddings, evaluate.distance),
        num_queries,
        k1=re_ranking.k1,
        k2=re_ranking.k2,
        lambda_value=re_ranking.lambda_value,
        device=device,
        on_query_strip=_plain_strip_scorer(plain, evaluate.distance),
    )
    return {
        "plain": plain.ranking(evaluate.max_rank),
        "reranked": rank_queries(
            ranker.distances,
            num_queries,
            *ids,
            ap_method=evaluate.ap_method,
            max_rank=evaluate.max_rank,
            top_k=top_k,
            chunk_rows=ranker.chunk_size(),
        ),
    }


def evaluate_embeddings(
    embeddings: Embeddings,
    evaluate: EvaluateParams,
    re_ranking: ReRankingParams,
    top_k: int = 10,
    device: str = "auto",
) -> Evaluation:
    """Plain and (if enabled) re-ranked metrics, CMC curve and per-query table.

    With re-ranking, the plain ranking is scored from the query x gallery strips of the
    re-ranker's all-pairs pass, so the query x gallery product is computed once.
    """
    _check_distance(evaluate.distance)
    warnings = [w for w in (collapse_warning(embeddings),) if w]
    for warning in warnings:
        log.warning(warning)
    q, g = embeddings.query, embeddings.gallery
    ids = (
        q.meta["pid"].to_numpy(),
        q.meta["camid"].to_numpy(),
        g.meta["pid"].to_numpy(),
        g.meta["camid"].to_numpy(),
    )
    plain = _Scores(*ids, ap_method=evaluate.ap_method, top_k=top_k)
    if not (plain.protocol.num_matches > 0).any():
        raise ReidpipeError(
            f"none of the {len(q.features)} queries has a true match in the "
            "gallery (same pid, another camera); check the query/gallery sets"
        )
    if re_ranking.re_ranking:
        rankings = _rankings_with_reranking(
            embeddings, plain, ids, evaluate, re_ranking, top_k, device
        )
    else:
        rankings = {
            "plain": rank_queries(
                plain_distance_rows(q.features, g.features, evaluate.distance, device),
                len(q.features),
                *ids,
                ap_method=evaluate.ap_method,
                max_rank=evaluate.max_rank,
                top_k=top_k,
            )
        }
    return _evaluation(rankings, q.meta["path"], ids, evaluate, re_ranking, warnings)


def _evaluation(
    rankings: dict[str, Ranking],
    query_paths: pd.Series,
    ids: tuple[np.ndarray, ...],
    evaluate: EvaluateParams,
    re_ranking: ReRankingParams,
    warnings: list[str],
) -> Evaluation:
    """The metrics, CMC curve and per-query table of the rankings (``plain`` first)."""
    metrics: dict[str, dict[str, object]] = {}
    cmc = pd.DataFrame({"rank": np.arange(1, evaluate.max_rank + 1)})
    per_query = pd.DataFrame(
        {
            "path": query_paths,
            "pid": ids[0],
            "camid": ids[1],
            "num_matches": rankings["plain"].num_matches,
        }
    )
    for name, ranking in rankings.items():
        block: dict[str, object] = dict(summarise(ranking))
        block.update(ap_method=evaluate.ap_method, distance=evaluate.distance)
        if name == "reranked":
            block.update(k1=re_ranking.k1, k2=re_ranking.k2, lambda_value=re_ranking.lambda_value)
        metrics[name] = block
        cmc[name] = ranking.cmc
        per_query[f"ap_{name}"] = ranking.ap
        per_query[f"inp_{name}"] = ranking.inp
        per_query[f"first_hit_{name}"] = pd.Series(ranking.first_hit, dtype="Int64").mask(
            ranking.num_matches == 0
        )
        per_query[f"top_{name}"] = _top_text(ranking.top)
    return Evaluation(metrics=metrics, cmc=cmc, per_query=per_query, warnings=warnings)


def write_evaluation(
    result: Evaluation,
    metrics_path: str | Path,
    cmc_path: str | Path | None,
    per_query_path: str | Path | None,
    verification_path: str | Path | None = None,
) -> None:
    """The metrics and the other files asked for, as one unit: all replaced, or none."""
    metrics = {**result.metrics, **({"warnings": result.warnings} if result.warnings else {})}
    writers: dict[str | Path, Callable[[Path], object]] = {
        metrics_path: lambda tmp: tmp.write_text(atomic.json_text(metrics), encoding="utf-8")
    }
    if cmc_path is not None:
        writers[cmc_path] = lambda tmp: result.cmc.to_csv(tmp, index=False)
    if per_query_path is not None:
        writers[per_query_path] = lambda tmp: result.per_query.to_csv(tmp, index=False)
    if verification_path is not None:
        if result.verification is None:
            raise ReidpipeError(f"{verification_path}: no verification figures were computed")
        writers[verification_path] = lambda tmp: tmp.write_text(
            atomic.json_text(result.verification), encoding="utf-8"
        )
    atomic.write_files(writers)
