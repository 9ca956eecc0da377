"""Parity between a reference forward and a candidate (ONNX Runtime, FP16, TensorRT): per batch
size and on retrieval metrics, shared by the ONNX and TensorRT gates."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import Embeddings
from reidpipe.evaluation.evaluate import evaluate_embeddings
from reidpipe.input_contract import Forward, Preprocess, load_image
from reidpipe.params import EvaluateParams, ReRankingParams

LATENCY_REPEATS = 3


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def parity_images(paths: Sequence[str], pre: Preprocess, count: int) -> np.ndarray:
    """``count`` preprocessed images from ``paths``, cycling when there are fewer."""
    if not paths:
        raise ReidpipeError("no images to check parity on: the query manifest is empty")
    return np.stack([load_image(paths[i % len(paths)], pre) for i in range(count)])


def batch_parity(
    reference: Forward, candidate: Forward, images: np.ndarray, batch_sizes: Sequence[int]
) -> list[dict[str, Any]]:
    """Candidate at each batch size (first ``b`` images) against the reference run once on all
    images, so a batch-dependent candidate (baked batch, torchreid #585) shows up."""
    expected = np.asarray(reference(images), dtype=np.float32)
    rows = []
    for size in batch_sizes:
        got = np.asarray(candidate(np.ascontiguousarray(images[:size])), dtype=np.float32)
        if got.shape != expected[:size].shape:
            raise ReidpipeError(
                f"batch {size}: output shape {got.shape}, expected {expected[:size].shape}"
            )
        cos = cosine_rows(got, expected[:size])
        rows.append(
            {
                "batch_size": int(size),
                "max_abs_diff": float(np.abs(got - expected[:size]).max()),
                "min_cosine": float(cos.min()),
                "mean_cosine": float(cos.mean()),
            }
        )
    return rows


def forward_latency(
    forward: Forward, images: np.ndarray, batch_sizes: Sequence[int], repeats: int = LATENCY_REPEATS
) -> list[dict[str, float]]:
    """Median wall time of ``forward`` on the first ``b`` images, per batch size, after one
    warm-up call."""
    rows = []
    for size in batch_sizes:
        batch = np.ascontiguousarray(images[:size])
        forward(batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(batch)
            times.append((time.perf_counter() - start) * 1000.0)
        median = statistics.median(times)
        rows.append(
            {
                "batch_size": int(size),
                "median_ms": round(median, 3),
                "images_per_second": round(size * 1000.0 / median, 1),
            }
        )
    return rows


def retrieval(embeddings: Embeddings, evaluate: EvaluateParams) -> dict[str, float]:
    """Plain (not re-ranked) mAP and rank-1 as fractions."""
    metrics = evaluate_embeddings(
        embeddings, evaluate, ReRankingParams(re_ranking=False), device="cpu"
    ).metrics["plain"]
    return {"mAP": float(metrics["mAP"]), "rank1": float(metrics["rank1"])}


def metric_deltas(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Absolute differences in points (percent)."""
    return {key: abs(a[key] - b[key]) * 100.0 for key in a}


def retrieval_parity(
    emb: dict[str, Embeddings], evaluate: EvaluateParams, flip: bool
) -> dict[str, Any]:
    """Query/gallery mAP and R1 of a reference's and a candidate's embeddings of the same images
    (in that order), their deltas in points and the lowest cosine between the two embeddings of
    an image. The caller extracts them (``extract_embeddings``), so an embedding set serves
    several gates."""
    (ref, reference), (cand, _) = emb.items()
    scores = {name: retrieval(e, evaluate) for name, e in emb.items()}
    return {
        "num_query": len(reference.query.features),
        "num_gallery": len(reference.gallery.features),
        "flip": flip,
        **scores,
        "delta_points": metric_deltas(scores[ref], scores[cand]),
        "min_cosine": float(
            min(
                cosine_rows(getattr(emb[ref], s).features, getattr(emb[cand], s).features).min()
                for s in ("query", "gallery")
            )
        ),
    }


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """No TF32 on CUDA while comparing: TF32 alone can exceed a 1e-3 gate."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
