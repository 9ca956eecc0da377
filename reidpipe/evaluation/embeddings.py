"""The embeddings folder: the interface between extraction and evaluation.

Layout: ``query.npy`` and ``gallery.npy`` (float32, N x D, L2-normalised rows) with ``query.csv``
and ``gallery.csv`` (columns ``path,pid,camid``, one row per embedding, same order); optionally
``query.json`` and ``gallery.json`` in TAO's format ``[{"img_path": ..., "embedding": [...]}]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reidpipe import atomic
from reidpipe.data.manifest import read_table
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import EMBEDDING_SETS, embedding_array, embedding_table

COLUMNS = ["path", "pid", "camid"]


@dataclass
class EmbeddingSet:
    """Features (N x D float32) and their ``path,pid,camid`` rows."""

    features: np.ndarray
    meta: pd.DataFrame


@dataclass
class Embeddings:
    query: EmbeddingSet
    gallery: EmbeddingSet


def l2_normalise(features: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Rows divided by their L2 norms (float32); ``in_place`` reuses a float32 array."""
    norms = np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if in_place:
        features /= norms
        return features
    return (features / norms).astype(np.float32)


def _tao_records(subset: EmbeddingSet) -> list[dict[str, object]]:
    return [{"img_path": str(path), "embedding": row.tolist()}
            for path, row in zip(subset.meta["path"], subset.features)]


def write_embeddings(out_dir: str | Path, embeddings: Embeddings, tao_json: bool = False) -> None:
    """Write the folder atomically (it appears whole or not at all)."""
    with atomic.atomic_dir(out_dir) as tmp:
        for name in EMBEDDING_SETS:
            subset: EmbeddingSet = getattr(embeddings, name)
            np.save(tmp / embedding_array(name), np.ascontiguousarray(subset.features, dtype=np.float32))
            subset.meta[COLUMNS].to_csv(tmp / embedding_table(name), index=False)
            if tao_json:
                (tmp / f"{name}.json").write_text(json.dumps(_tao_records(subset)) + "\n",
                                                  encoding="utf-8")


def _read_set(folder: Path, name: str) -> EmbeddingSet:
    npy, csv = folder / embedding_array(name), folder / embedding_table(name)
    for path in (npy, csv):
        if not path.is_file():
            expected = ", ".join(f(s) for s in EMBEDDING_SETS for f in (embedding_array, embedding_table))
            raise ReidpipeError(f"embeddings folder {folder}: {path.name} is missing "
                                f"(expected {expected})")
    try:
        features = np.load(npy, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ReidpipeError(f"{npy} is not a readable .npy array: {exc}") from None
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise ReidpipeError(f"{npy}: expected a 2-D float array (N x D), got shape "
                            f"{features.shape} dtype {features.dtype}")
    meta = read_table(csv, COLUMNS, "embeddings metadata")
    if len(meta) != len(features):
        raise ReidpipeError(f"{csv} has {len(meta)} rows but {npy} has {len(features)}; they "
                            "must describe the same images in the same order")
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ReidpipeError(f"{npy}: {len(bad)} row(s) hold NaN or inf, first row {bad[0]} "
                            f"({meta['path'].iloc[bad[0]]})")
    return EmbeddingSet(features=features.astype(np.float32, copy=False), meta=meta[COLUMNS])


def read_embeddings(folder: str | Path) -> Embeddings:
    """Read and check an embeddings folder; every problem is a ReidpipeError naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReidpipeError(f"embeddings folder {folder} does not exist (run `reidpipe extract`)")
    query, gallery = (_read_set(folder, name) for name in EMBEDDING_SETS)
    if len(query.features) == 0:
        raise ReidpipeError(f"{folder / embedding_array('query')} holds no query embeddings")
    if len(gallery.features) == 0:
        raise ReidpipeError(f"{folder / embedding_array('gallery')} holds no gallery embeddings")
    if query.features.shape[1] != gallery.features.shape[1]:
        raise ReidpipeError(f"embeddings folder {folder}: query dimension "
                            f"{query.features.shape[1]} != gallery dimension "
                            f"{gallery.features.shape[1]}")
    return Embeddings(query=query, gallery=gallery)
