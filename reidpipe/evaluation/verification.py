"""Verification figures a deployment needs: genuine and impostor distance distributions, the true
accept rate (TAR) at fixed false accept rates (FAR) with the threshold of each, and how queries
whose identity is absent from the gallery ("open-set" queries) fare against those thresholds.

Distances are the ranking's own (``evaluate.plain_distance_rows``: 1 - cos on L2-normalised
features, or Euclidean on the features as they are). Pairs follow the standard protocol's
exclusions (``evaluate``), so that a threshold is set on exactly the pairs the ranking scores:

* a junk query (pid -1) is not scored, nor is any pair with a junk gallery item: a junk box may
  show anyone, so its pairs are neither genuine nor impostor;
* genuine: same pid (a labelled one, >= 1), another camera;
* excluded: same pid and same camera (the protocol removes them: a same-camera match is not the
  cross-camera question) and, for a distractor query (pid 0), every distractor gallery item
  (distractors are people outside the labelled ids, but two of them may be the same person);
* impostor: every other pair: another pid, same camera or not, distractor gallery items included
  (they are certainly not a labelled query's person, and the protocol keeps them as negatives).

A query's candidates are its genuine and impostor items; its nearest one is what an "is this
anyone in the gallery?" decision looks at (ties broken by gallery order, as the ranking does).
Known queries have at least one genuine pair (the ranking's evaluated queries); open-set queries
are labelled queries with none (their id is absent from the gallery, or only in their own camera)
and distractor queries. Queries without any candidate are counted apart.

Thresholds, for a target FAR f over the N impostor distances x(1) <= ... <= x(N): a pair is
accepted when its distance is <= t, FAR(t) = #{x <= t} / N, and t_f is the largest float32 with
FAR(t_f) <= f: with k = floor(f N) false accepts allowed, t_f is the float32 just below x(k+1)
(every impostor tied with x(k+1) is rejected, so the achieved FAR may be below f; it is reported).
When k = 0 (fewer than 1/f impostor pairs) there is no meaningful threshold and none is given.

Memory: query x gallery distances are computed a block of query rows at a time and never held
whole. The thresholds are exact order statistics found by a two-pass radix selection on the
float32 bit patterns (pass 1: histogram of the upper 16 bits; pass 2: of the lower 16 bits within
the bin that holds x(k+1)), so nothing grows with the number of pairs: the peak is the features
(plus the normalised copy cosine makes), about 25 bytes per entry of one block (``block_rows`` x
gallery; the default block of ~4M entries takes ~110 MB, measured with tracemalloc at Market
scale), 65,536-bin histograms (0.5 MB each, 2 + 2 per FAR) and a few arrays of one entry per
query or gallery item. The price is computing the distances twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import ceil

import numpy as np

from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.arrays import ragged_positions
from reidpipe.evaluation.embeddings import Embeddings
from reidpipe.evaluation.evaluate import plain_distance_rows
from reidpipe.market import DISTRACTOR_PID, JUNK_PID
from reidpipe.params import EvaluateParams

FARS = (1e-2, 1e-3, 1e-4)
NUM_BINS = 100
COSINE_RANGE = (0.0, 2.0)  # 1 - cos lies in [0, 2]
_BLOCK_ELEMENTS = 1 << 22  # distances of one block of query rows
_RADIX = 1 << 16
_INF_BIN = 0xFF80  # upper 16 bits of +inf's order code: where excluded entries go


@dataclass
class OperatingPoint:
    """One target FAR. Counts are of pairs (accepted: distance <= threshold); ``why_null`` says
    why a field is None (under "threshold" when there is none, which nulls every field after)."""

    far: float
    threshold: float | None
    tar: float | None
    far_achieved: float | None
    true_accepts: int | None
    false_accepts: int | None
    no_match_accuracy: float | None  # open-set queries whose nearest candidate is rejected
    known_rank1_accepted: float | None  # known queries whose nearest is a true match, accepted
    why_null: dict[str, str]


@dataclass
class Verification:
    """Everything JSON-ready (``to_json``); histogram bin i holds edges[i] <= d < edges[i + 1],
    the first bin also what lies below, the last also what lies at or above its upper edge."""

    distance: str
    num_genuine_pairs: int
    num_impostor_pairs: int
    num_known_queries: int
    num_open_set_queries: int
    num_queries_without_candidates: int
    num_junk_queries: int
    known_rank1: float | None  # the ranking's rank-1, over the known queries
    histogram_edges: list[float]
    genuine_histogram: list[int]
    impostor_histogram: list[int]
    operating_points: list[OperatingPoint]

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass
class OpenSetSplit:
    unknown_pids: np.ndarray  # sorted
    gallery_kept: np.ndarray  # bool per gallery item: False for the unknown ids' images


def hold_out_identities(
    q_pids: np.ndarray, g_pids: np.ndarray, fraction: float, seed: int
) -> OpenSetSplit:
    """Make open-set queries where a test set has none: a seeded choice of round(fraction x the
    labelled query ids), at least one when fraction > 0 (a tiny test set still gets some),
    becomes unknown, and their gallery images are to be dropped."""
    q_pids = np.asarray(q_pids)
    labelled = np.unique(q_pids[q_pids > DISTRACTOR_PID])
    count = max(1, round(fraction * len(labelled))) if fraction > 0 else 0
    if not 0 < count < len(labelled):
        raise ReidpipeError(
            f"evaluate.open_set_fraction {fraction}: of {len(labelled)} labelled query ids it "
            f"holds out {count}; expected at least one held out and one kept (0 holds none out)"
        )
    unknown = np.sort(np.random.default_rng(seed).choice(labelled, size=count, replace=False))
    return OpenSetSplit(unknown_pids=unknown, gallery_kept=~np.isin(np.asarray(g_pids), unknown))


def _order_codes(values: np.ndarray) -> np.ndarray:
    """uint32 codes that order like the float32 values (-0.0 as 0.0; +inf above every finite)."""
    bits = (values + np.float32(0.0)).view(np.int32)
    flip = bits >> 31
    flip |= np.int32(-(1 << 31))
    bits ^= flip
    return bits.view(np.uint32)


def _code_value(code: int) -> np.float32:
    bits = code ^ 0x80000000 if code >= 0x80000000 else ~code & 0xFFFFFFFF
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


class _Pairs:
    """Which pairs are genuine, excluded or impostor, from pids and cameras alone (junk already
    dropped on both sides); a block's same-pid entries are found through the pid-sorted gallery."""

    def __init__(
        self, q_pids: np.ndarray, q_cams: np.ndarray, g_pids: np.ndarray, g_cams: np.ndarray
    ) -> None:
        self.q_pids, self.q_cams, self.g_pids, self.g_cams = q_pids, q_cams, g_pids, g_cams
        self.by_pid = np.argsort(g_pids, kind="stable")
        self.sorted_pids = g_pids[self.by_pid]

    def same_pid(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row in block, gallery column, genuine?) of each same-pid pair of the block's queries."""
        pids = self.q_pids[start:stop]
        first = np.searchsorted(self.sorted_pids, pids, side="left")
        count = np.searchsorted(self.sorted_pids, pids, side="right") - first
        cols = self.by_pid[ragged_positions(first, count)]
        rows = np.repeat(np.arange(stop - start), count)
        genuine = (pids[rows] != DISTRACTOR_PID) & (self.g_cams[cols] != self.q_cams[start + rows])
        return rows, cols, genuine


def _histogram_bins(values: np.ndarray, low: float, high: float, num_bins: int) -> np.ndarray:
    """Plot bin of each value (below ``low`` to the first, at or above ``high`` to the last)."""
    scaled = values - np.float32(low)
    scaled *= np.float32(num_bins / (high - low))
    np.clip(scaled, 0, num_bins - 1, out=scaled)
    return scaled.astype(np.intp)


class _Blocks:
    """Query-row blocks of distances with excluded pairs set to +inf, for either pass."""

    def __init__(
        self,
        query: np.ndarray,
        gallery: np.ndarray,
        pairs: _Pairs,
        scored: np.ndarray,
        columns: np.ndarray | None,
        distance: str,
        device: str,
        block_rows: int,
    ) -> None:
        self.rows = plain_distance_rows(query, gallery, distance, device)
        self.pairs, self.scored, self.columns = pairs, scored, columns
        self.num_queries, self.block_rows = len(query), block_rows

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
        """(start, stop, distances, rows and columns of the genuine pairs) per block."""
        for start in range(0, self.num_queries, self.block_rows):
            stop = min(start + self.block_rows, self.num_queries)
            dist = self.rows(start, stop)
            if self.columns is not None:
                dist = np.take(dist, self.columns, axis=1)
            finite = np.isfinite(dist)
            if not finite.all():
                row, col = np.argwhere(~finite)[0]
                item = col if self.columns is None else self.columns[col]
                raise ReidpipeError(
                    f"verification: the distance of query {self.scored[start + row]} to gallery "
                    f"item {item} is {dist[row, col]}; expected finite embeddings"
                )
            del finite
            rows, cols, genuine = self.pairs.same_pid(start, stop)
            dist[rows[~genuine], cols[~genuine]] = np.inf
            yield start, stop, dist, rows[genuine], cols[genuine]


def _nearest(
    dist: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's smallest candidate distance (+inf without any) and whether that candidate
    (the first in gallery order among ties, as in the ranking) is a true match."""
    if dist.shape[1] == 0:
        return np.full(len(dist), np.inf, dtype=np.float32), np.zeros(len(dist), dtype=bool)
    best = np.argmin(dist, axis=1)
    nearest = dist[np.arange(len(dist)), best]
    return nearest, np.isfinite(nearest) & (g_pids[best] == q_pids)


@dataclass
class _FirstPass:
    impostor_high: np.ndarray  # impostor pairs per upper 16 bits of the order code
    genuine_high: np.ndarray
    nearest: np.ndarray  # per scored query
    nearest_genuine: np.ndarray
    known: np.ndarray  # has a genuine pair
    largest: float  # largest genuine or impostor distance, when asked for


def _first_pass(blocks: _Blocks, pairs: _Pairs, with_largest: bool) -> _FirstPass:
    num_queries = len(pairs.q_pids)
    result = _FirstPass(
        np.zeros(_RADIX, dtype=np.int64),
        np.zeros(_RADIX, dtype=np.int64),
        np.full(num_queries, np.inf, dtype=np.float32),
        np.zeros(num_queries, dtype=bool),
        np.zeros(num_queries, dtype=bool),
        0.0,
    )
    for start, stop, dist, rows, cols in blocks:
        result.nearest[start:stop], result.nearest_genuine[start:stop] = _nearest(
            dist, pairs.q_pids[start:stop], pairs.g_pids
        )
        genuine = dist[rows, cols]
        result.known[start + rows] = True
        result.genuine_high += np.bincount(_order_codes(genuine) >> 16, minlength=_RADIX)
        dist[rows, cols] = np.inf
        result.impostor_high += np.bincount((_order_codes(dist) >> 16).ravel(), minlength=_RADIX)
        if with_largest:
            result.largest = max(
                result.largest,
                float(genuine.max(initial=0.0)),
                float(np.max(dist, where=~np.isinf(dist), initial=0.0)),
            )
    result.impostor_high[_INF_BIN] = 0
    return result


def _selection_targets(
    impostor_high: np.ndarray, fars: Sequence[float]
) -> tuple[dict[float, tuple[int, int]], dict[float, str]]:
    """For each FAR with a threshold: the upper 16 bits of x(k+1) and its rank among the
    impostors sharing them; for the others, why there is none."""
    cumulative = np.cumsum(impostor_high)
    total = int(cumulative[-1])
    targets: dict[float, tuple[int, int]] = {}
    why_none: dict[float, str] = {}
    for far in fars:
        exact = Fraction(repr(far))  # the FAR as written, not its binary neighbour
        allowed = int(total * exact)
        if allowed < 1:
            why_none[far] = f"{total} impostor pairs: FAR {far} needs at least {ceil(1 / exact)}"
            continue
        upper = int(np.searchsorted(cumulative, allowed + 1))
        targets[far] = (upper, allowed + 1 - (int(cumulative[upper - 1]) if upper else 0))
    return targets, why_none


@dataclass
class _SecondPass:
    impostor_low: dict[int, np.ndarray]  # per target upper bits: counts per lower 16 bits
    genuine_low: dict[int, np.ndarray]
    genuine_plot: np.ndarray
    impostor_plot: np.ndarray


def _second_pass(
    blocks: _Blocks, uppers: set[int], plot_range: tuple[float, float], num_bins: int
) -> _SecondPass:
    result = _SecondPass(
        {u: np.zeros(_RADIX, dtype=np.int64) for u in uppers},
        {u: np.zeros(_RADIX, dtype=np.int64) for u in uppers},
        np.zeros(num_bins, dtype=np.int64),
        np.zeros(num_bins, dtype=np.int64),
    )
    for _start, _stop, dist, rows, cols in blocks:
        genuine = dist[rows, cols]
        result.genuine_plot += np.bincount(
            _histogram_bins(genuine, *plot_range, num_bins), minlength=num_bins
        )
        dist[rows, cols] = np.inf
        result.impostor_plot += np.bincount(
            _histogram_bins(dist, *plot_range, num_bins).ravel(), minlength=num_bins
        )
        result.impostor_plot[-1] -= np.count_nonzero(np.isinf(dist))  # excluded and genuine
        if not uppers:
            continue
        genuine_codes, codes = _order_codes(genuine), _order_codes(dist)
        genuine_upper, upper_codes = genuine_codes >> 16, codes >> 16
        for upper in uppers:
            result.impostor_low[upper] += np.bincount(
                codes[upper_codes == upper] & 0xFFFF, minlength=_RADIX
            )
            result.genuine_low[upper] += np.bincount(
                genuine_codes[genuine_upper == upper] & 0xFFFF, minlength=_RADIX
            )
    return result


def _operating_point(
    far: float, target: tuple[int, int], first: _FirstPass, second: _SecondPass
) -> OperatingPoint:
    upper, rank = target
    low_cumulative = np.cumsum(second.impostor_low[upper])
    lower = int(np.searchsorted(low_cumulative, rank))
    # Impostors below x(k+1): the whole upper bins below, then the lower bins below in its own.
    false_accepts = int(first.impostor_high[:upper].sum()) + int(
        low_cumulative[lower - 1] if lower else 0
    )
    true_accepts = int(first.genuine_high[:upper].sum()) + int(
        second.genuine_low[upper][:lower].sum()
    )
    threshold = np.nextafter(_code_value(upper << 16 | lower), np.float32(-np.inf))
    num_genuine, num_impostors = int(first.genuine_high.sum()), int(first.impostor_high.sum())
    known, open_set = first.known, ~first.known & np.isfinite(first.nearest)
    why_null = {}
    if not num_genuine:
        why_null["tar"] = "no genuine pairs"
    if not open_set.any():
        why_null["no_match_accuracy"] = "no open-set queries"
    if not known.any():
        why_null["known_rank1_accepted"] = "no known queries"
    return OperatingPoint(
        far=far,
        threshold=float(threshold),
        tar=true_accepts / num_genuine if num_genuine else None,
        far_achieved=false_accepts / num_impostors,
        true_accepts=true_accepts,
        false_accepts=false_accepts,
        no_match_accuracy=(
            float(np.mean(first.nearest[open_set] > threshold)) if open_set.any() else None
        ),
        known_rank1_accepted=(
            float(np.mean(first.nearest_genuine[known] & (first.nearest[known] <= threshold)))
            if known.any()
            else None
        ),
        why_null=why_null,
    )


def _check_inputs(
    num_query: int, num_gallery: int, q_pids: np.ndarray, g_pids: np.ndarray, fars: Sequence[float]
) -> None:
    """One pid per feature on each side, and each FAR strictly between 0 and 1."""
    if num_query != len(q_pids) or num_gallery != len(g_pids):
        raise ReidpipeError(
            f"verification: {num_query} query and {num_gallery} gallery "
            f"features but {len(q_pids)} and {len(g_pids)} pids"
        )
    bad = [f for f in fars if not 0 < f < 1]
    if bad:
        raise ReidpipeError(f"verification FARs {list(fars)}: expected each in (0, 1), got {bad}")


def _no_threshold(far: float, why: str) -> OperatingPoint:
    """A target FAR too small for the impostor pairs there are: every figure null, and why."""
    return OperatingPoint(far, None, None, None, None, None, None, None, {"threshold": why})


def _verification(
    distance: str,
    first: _FirstPass,
    second: _SecondPass,
    plot_range: tuple[float, float],
    num_bins: int,
    points: list[OperatingPoint],
    num_junk_queries: int,
) -> Verification:
    """The counts of the first pass, the plot histograms of the second and the operating points."""
    known = first.known
    return Verification(
        distance=distance,
        num_genuine_pairs=int(first.genuine_high.sum()),
        num_impostor_pairs=int(first.impostor_high.sum()),
        num_known_queries=int(known.sum()),
        num_open_set_queries=int((~known & np.isfinite(first.nearest)).sum()),
        num_queries_without_candidates=int((~np.isfinite(first.nearest)).sum()),
        num_junk_queries=num_junk_queries,
        known_rank1=float(first.nearest_genuine[known].mean()) if known.any() else None,
        histogram_edges=np.linspace(*plot_range, num_bins + 1).tolist(),
        genuine_histogram=second.genuine_plot.tolist(),
        impostor_histogram=second.impostor_plot.tolist(),
        operating_points=points,
    )


def verification_figures(
    query: np.ndarray,
    gallery: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    g_pids: np.ndarray,
    g_cams: np.ndarray,
    distance: str = "cosine",
    fars: Sequence[float] = FARS,
    num_bins: int = NUM_BINS,
    block_rows: int | None = None,
    device: str = "cpu",
) -> Verification:
    """Genuine/impostor histograms, TAR and threshold at each FAR, and open-set figures (see
    the module docstring for the definitions), ``block_rows`` query rows at a time (default:
    about 4M distances a block)."""
    q_pids, q_cams = np.asarray(q_pids), np.asarray(q_cams)
    g_pids, g_cams = np.asarray(g_pids), np.asarray(g_cams)
    _check_inputs(len(query), len(gallery), q_pids, g_pids, fars)
    scored = np.flatnonzero(q_pids != JUNK_PID)
    kept = g_pids != JUNK_PID
    if len(scored) < len(q_pids):
        query = query[scored]
    pairs = _Pairs(q_pids[scored], q_cams[scored], g_pids[kept], g_cams[kept])
    step = block_rows or max(1, _BLOCK_ELEMENTS // max(1, int(kept.sum())))
    columns = None if kept.all() else np.flatnonzero(kept)
    blocks = _Blocks(query, gallery, pairs, scored, columns, distance, device, step)
    first = _first_pass(blocks, pairs, with_largest=distance != "cosine")
    targets, why_none = _selection_targets(first.impostor_high, fars)
    plot_range = COSINE_RANGE if distance == "cosine" else (0.0, first.largest or 1.0)
    second = _second_pass(blocks, {upper for upper, _ in targets.values()}, plot_range, num_bins)
    points = [
        _operating_point(far, targets[far], first, second)
        if far in targets
        else _no_threshold(far, why_none[far])
        for far in fars
    ]
    return _verification(
        distance, first, second, plot_range, num_bins, points, len(q_pids) - len(scored)
    )


def open_set_verification(
    embeddings: Embeddings, evaluate: EvaluateParams, device: str = "cpu"
) -> dict[str, object]:
    """``evaluate``'s verification.json: the figures with ``evaluate.open_set_fraction`` of the
    query ids held out (``evaluate.open_set_seed``; their gallery images dropped, for these
    figures only), and which ids those were."""
    q, g = embeddings.query, embeddings.gallery
    q_pids, g_pids = q.meta["pid"].to_numpy(), g.meta["pid"].to_numpy()
    g_cams = g.meta["camid"].to_numpy()
    gallery, held_out = g.features, np.empty(0, dtype=q_pids.dtype)
    if evaluate.open_set_fraction > 0:
        split = hold_out_identities(
            q_pids, g_pids, evaluate.open_set_fraction, evaluate.open_set_seed
        )
        held_out = split.unknown_pids
        gallery = gallery[split.gallery_kept]
        g_pids, g_cams = g_pids[split.gallery_kept], g_cams[split.gallery_kept]
    figures = verification_figures(
        q.features,
        gallery,
        q_pids,
        q.meta["camid"].to_numpy(),
        g_pids,
        g_cams,
        distance=evaluate.distance,
        device=device,
    )
    return {
        "open_set_fraction": evaluate.open_set_fraction,
        "open_set_seed": evaluate.open_set_seed,
        "held_out_pids": held_out.tolist(),
        "gallery_images_held_out": len(g.features) - len(gallery),
        **figures.to_json(),
    }
