"""Market-1501 evaluation: CMC, mAP and mINP, plain and after k-reciprocal re-ranking.

Protocol (GUIDE §2): for each query, gallery items with the same pid and the same camera and all
junk (pid -1) are removed; distractors (pid 0) stay as negatives; queries left without a true match
are skipped and counted. Ranks are 1-based positions in that filtered ranking. Distance ties are
broken by gallery order (a stable sort). AP is non-interpolated (mean precision at each true match,
as BoT, torchreid, fast-reid and TAO) or, as an option, the original MATLAB code's trapezoidal AP.

Queries are processed a chunk at a time from a callable that yields their distance rows, so no
query x gallery matrix is ever held whole, plain or re-ranked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from reidpipe import atomic
from reidpipe.data.market import JUNK_PID
from reidpipe.devices import resolve_device
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import Embeddings, l2_normalise
from reidpipe.evaluation.rerank import KReciprocalReRanker, squared_distances
from reidpipe.params import EvaluateParams, ReRankingParams

DistanceRows = Callable[[int, int], np.ndarray]
REPORTED_RANKS = (1, 5, 10, 20)
_CHUNK_ELEMENTS = 1 << 23


@dataclass
class Ranking:
    """Per-query results; skipped queries (no true match) have num_matches 0, AP/INP NaN."""

    ap: np.ndarray
    inp: np.ndarray
    first_hit: np.ndarray     # 1-based rank of the first true match, 0 when skipped
    num_matches: np.ndarray
    top: np.ndarray           # gallery indices of the filtered top-k, -1 where fewer remain
    cmc: np.ndarray           # fraction of evaluated queries with a hit within rank r (r = 1..)


def _argsort_rows(dist: np.ndarray) -> np.ndarray:
    """Row-wise argsort equal to a stable sort, via one SIMD sort of unique int64 keys.

    A float32's bits, sign-corrected, order like the float; with the column index in the low 32
    bits every key is unique, so equal distances come out in gallery order.
    """
    bits = (np.ascontiguousarray(dist, dtype=np.float32) + np.float32(0.0)).view(np.int32)
    monotonic = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    keys = (monotonic.astype(np.int64) << 32) | np.arange(dist.shape[1], dtype=np.int64)
    keys.sort(axis=1)
    return keys & 0xFFFFFFFF


def _rank_chunk(dist: np.ndarray, q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray,
                g_cams: np.ndarray, ap_method: str, top_k: int) -> tuple[np.ndarray, ...]:
    order = _argsort_rows(dist)
    pids, cams = g_pids[order], g_cams[order]
    match = pids == q_pids[:, None]
    keep = ~((match & (cams == q_cams[:, None])) | (pids == JUNK_PID))
    good = match & keep
    position = np.cumsum(keep, axis=1, dtype=np.int32)   # 1-based rank among kept items
    hits = np.cumsum(good, axis=1, dtype=np.int32)
    num_matches = hits[:, -1].copy()   # a view would keep the whole chunk alive
    rows = np.arange(len(dist))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(good, hits / position, 0.0)
        if ap_method == "trapezoidal":
            # Average of the precision just before and at each hit (1 before the first kept item).
            previous = np.where(position > 1, (hits - 1) / np.maximum(position - 1, 1), 1.0)
            precision = np.where(good, (precision + previous) / 2.0, 0.0)
        ap = precision.sum(axis=1) / num_matches
        first = position[rows, good.argmax(axis=1)]
        last = position[rows, good.shape[1] - 1 - good[:, ::-1].argmax(axis=1)]
        inp = num_matches / last
    valid = num_matches > 0
    first = np.where(valid, first, 0)
    top = np.full((len(dist), top_k), -1, dtype=np.int64)
    r, c = np.nonzero(keep & (position <= top_k))
    top[r, position[r, c] - 1] = order[r, c]
    return np.where(valid, ap, np.nan), np.where(valid, inp, np.nan), first, num_matches, top


def rank_queries(distance_rows: DistanceRows, num_queries: int, q_pids: np.ndarray,
                 q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray,
                 ap_method: str = "non_interpolated", max_rank: int = 50,
                 top_k: int = 10) -> Ranking:
    """Rank every query's gallery and score it; ``distance_rows(a, b)`` gives rows a..b-1."""
    if ap_method not in ("non_interpolated", "trapezoidal"):
        raise ReidpipeError(f"evaluate.ap_method {ap_method!r}: expected non_interpolated or "
                            "trapezoidal")
    q_pids, q_cams = np.asarray(q_pids), np.asarray(q_cams)
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(g_pids)))
    parts = []
    for start in range(0, num_queries, step):
        stop = min(start + step, num_queries)
        parts.append(_rank_chunk(distance_rows(start, stop), q_pids[start:stop],
                                 q_cams[start:stop], g_pids, g_cams, ap_method, top_k))
    ap, inp, first, num_matches, top = (np.concatenate(p) for p in zip(*parts))
    evaluated = first[num_matches > 0]
    cmc = np.array([(evaluated <= r).mean() if len(evaluated) else 0.0
                    for r in range(1, max_rank + 1)])
    return Ranking(ap=ap, inp=inp, first_hit=first, num_matches=num_matches, top=top, cmc=cmc)


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


def plain_distance_rows(query: np.ndarray, gallery: np.ndarray, distance: str,
                        device: torch.device) -> DistanceRows:
    """Cosine (1 - cos) or Euclidean distance rows, computed on demand."""
    if distance not in ("cosine", "euclidean"):
        raise ReidpipeError(f"evaluate.distance {distance!r}: expected cosine or euclidean")
    if distance == "cosine":
        query, gallery = l2_normalise(query), l2_normalise(gallery)
    q = torch.from_numpy(query).to(device)
    g = torch.from_numpy(gallery).to(device)
    q_sq, g_sq = (q * q).sum(dim=1), (g * g).sum(dim=1)

    def rows(start: int, stop: int) -> np.ndarray:
        if distance == "cosine":
            return (1.0 - q[start:stop] @ g.T).cpu().numpy()
        return squared_distances(q[start:stop], g, q_sq[start:stop], g_sq).sqrt_().cpu().numpy()

    return rows


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, object]]
    cmc: pd.DataFrame
    per_query: pd.DataFrame


def _top_text(top: np.ndarray) -> list[str]:
    return [" ".join(str(i) for i in row if i >= 0) for row in top]


def evaluate_embeddings(embeddings: Embeddings, evaluate: EvaluateParams,
                        re_ranking: ReRankingParams, top_k: int = 10,
                        device: str = "auto") -> Evaluation:
    """Plain and (if enabled) re-ranked metrics, CMC curve and per-query table."""
    dev = resolve_device(device)
    q, g = embeddings.query, embeddings.gallery
    ids = (q.meta["pid"].to_numpy(), q.meta["camid"].to_numpy(), g.meta["pid"].to_numpy(),
           g.meta["camid"].to_numpy())
    rankings = {"plain": rank_queries(
        plain_distance_rows(q.features, g.features, evaluate.distance, dev), len(q.features),
        *ids, ap_method=evaluate.ap_method, max_rank=evaluate.max_rank, top_k=top_k)}
    if not (rankings["plain"].num_matches > 0).any():
        raise ReidpipeError(f"none of the {len(q.features)} queries has a true match in the "
                            "gallery (same pid, another camera); check the query/gallery sets")
    if re_ranking.re_ranking:
        # Re-ranking works on squared Euclidean distances of the features the plain ranking used.
        feats = [l2_normalise(x) if evaluate.distance == "cosine" else x
                 for x in (q.features, g.features)]
        ranker = KReciprocalReRanker(*feats, k1=re_ranking.k1, k2=re_ranking.k2,
                                     lambda_value=re_ranking.lambda_value, device=device)
        rankings["reranked"] = rank_queries(
            ranker.distances, len(q.features), *ids, ap_method=evaluate.ap_method,
            max_rank=evaluate.max_rank, top_k=top_k)
    metrics: dict[str, dict[str, object]] = {}
    cmc = pd.DataFrame({"rank": np.arange(1, evaluate.max_rank + 1)})
    per_query = pd.DataFrame({"path": q.meta["path"], "pid": ids[0], "camid": ids[1],
                              "num_matches": rankings["plain"].num_matches})
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
            ranking.num_matches == 0)
        per_query[f"top_{name}"] = _top_text(ranking.top)
    return Evaluation(metrics=metrics, cmc=cmc, per_query=per_query)


def write_evaluation(result: Evaluation, metrics_path: str | Path, cmc_path: str | Path | None,
                     per_query_path: str | Path | None) -> None:
    atomic.write_json(metrics_path, result.metrics)
    if cmc_path is not None:
        with atomic.atomic_path(cmc_path) as tmp:
            result.cmc.to_csv(tmp, index=False)
    if per_query_path is not None:
        with atomic.atomic_path(per_query_path) as tmp:
            result.per_query.to_csv(tmp, index=False)
