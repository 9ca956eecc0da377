"""The embeddings folder: the interface between extraction and evaluation.

Layout: ``query.npy`` and ``gallery.npy`` (float32, N x D, L2-normalised rows) with ``query.csv``
and ``gallery.csv`` (columns ``path,pid,camid``, one row per embedding, same order); optionally
``query.json`` and ``gallery.json`` in TAO's format ``[{"img_path": ..., "embedding": [...]}]``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from reidpipe import atomic
from reidpipe.data.manifest import read_table
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import EMBEDDING_SETS, embedding_array, embedding_table
from reidpipe.regular_file import NotRegularFile, open_regular, require_regular

COLUMNS = ["path", "pid", "camid"]
ZIP_MAGIC = b"PK\x03\x04"  # what np.savez writes
# Embeddings all within this fraction of their length of one vector have collapsed (a trained
# model's normalised embeddings lie tenths apart).
COLLAPSE_TOLERANCE = 1e-3
_COLLAPSE_BLOCK = 4096
# The .npy versions a float array can have (3.0 only differs for non-Latin-1 field names).
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


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


def collapse_warning(embeddings: Embeddings) -> str | None:
    """A warning when every query and gallery embedding is (nearly) the same vector, or zero:
    the distances are then ties or rounding noise, and the metrics say nothing about the model.
    Rows are compared with the first one, a block at a time (no N x D copy)."""
    sets = [s.features for s in (embeddings.query, embeddings.gallery) if len(s.features)]
    if not sets or sum(map(len, sets)) < 2:
        return None
    reference = sets[0][0].astype(np.float64)
    scale = spread = 0.0
    for features in sets:
        for start in range(0, len(features), _COLLAPSE_BLOCK):
            block = features[start : start + _COLLAPSE_BLOCK].astype(np.float64)
            scale = max(scale, float(np.linalg.norm(block, axis=1).max()))
            spread = max(spread, float(np.linalg.norm(block - reference, axis=1).max()))
    if spread > COLLAPSE_TOLERANCE * scale:
        return None
    count = sum(map(len, sets))
    what = (
        "all zero"
        if scale == 0
        else (
            "the same vector"
            if spread == 0
            else f"the same vector to within {spread / scale:.1e} of their length"
        )
    )
    return (
        f"embeddings collapsed: the {count} query and gallery embeddings are {what}, so "
        "their distances are ties or rounding noise and the metrics do not measure the "
        "model; check its weights (trained? loaded?) and its input settings"
    )


def _tao_records(subset: EmbeddingSet) -> list[dict[str, object]]:
    return [
        {"img_path": str(path), "embedding": row.tolist()}
        for path, row in zip(subset.meta["path"], subset.features)
    ]


def write_embeddings(out_dir: str | Path, embeddings: Embeddings, tao_json: bool = False) -> None:
    """Write the folder atomically (it appears whole or not at all)."""
    with atomic.atomic_dir(out_dir) as tmp:
        for name in EMBEDDING_SETS:
            subset: EmbeddingSet = getattr(embeddings, name)
            np.save(
                tmp / embedding_array(name), np.ascontiguousarray(subset.features, dtype=np.float32)
            )
            subset.meta[COLUMNS].to_csv(tmp / embedding_table(name), index=False)
            if tao_json:
                (tmp / f"{name}.json").write_text(
                    json.dumps(_tao_records(subset)) + "\n", encoding="utf-8"
                )


def _npy_header(
    handle: BinaryIO, npy: Path, expected: str
) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from the header of the open file ``npy`` (nothing else
    is read): a zip (an .npz) or any other non-.npy content is named as such."""
    start = handle.read(6)
    handle.seek(0)
    if start.startswith(ZIP_MAGIC):
        raise ReidpipeError(
            f"{npy} is a zip archive (an .npz saved under a .npy name?), not a "
            f".npy array; {expected}"
        )
    try:
        version = np.lib.format.read_magic(handle)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version[0]}.{version[1]}")
        return read_header(handle)
    except (ValueError, SyntaxError, EOFError) as exc:
        raise ReidpipeError(
            f"{npy} is not a .npy array (first bytes {start.hex(' ')}: {exc}); {expected}"
        ) from None


def _read_array(npy: Path, csv: Path, rows: int) -> np.ndarray:
    """The N x D float array of ``npy``, checked before any memory is set aside for it: a regular
    file in .npy format whose header (shape, dtype) matches its size and ``csv``'s ``rows``."""
    expected = f"expected the {rows} x D float32 array `reidpipe extract` writes"
    try:
        with open_regular(npy) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise ReidpipeError(f"{npy} is empty (0 bytes); {expected}")
            shape, fortran_order, dtype = _npy_header(handle, npy, expected)
            if len(shape) != 2 or dtype.kind != "f":
                raise ReidpipeError(
                    f"{npy}: expected a 2-D float array (N x D), got shape {shape} dtype {dtype}"
                )
            if shape[1] == 0:
                raise ReidpipeError(
                    f"{npy} holds {shape[0]} x 0 embeddings (no feature "
                    f"dimension); {expected} with D >= 1"
                )
            data_bytes, held = math.prod(shape) * dtype.itemsize, size - handle.tell()
            if held != data_bytes:
                raise ReidpipeError(
                    f"{npy}: its header claims a {shape[0]} x {shape[1]} {dtype} array "
                    f"({data_bytes:,} bytes of data) but the file holds {held:,}; it is cut "
                    "short or not one whole .npy array"
                )
            if shape[0] != rows:
                raise ReidpipeError(
                    f"{csv} has {rows} rows but {npy} has {shape[0]}; they must "
                    "describe the same images in the same order"
                )
            features = np.fromfile(handle, dtype=dtype, count=shape[0] * shape[1])
    except NotRegularFile as exc:
        raise ReidpipeError(f"{npy} is {exc.kind}, not a .npy file; {expected}") from None
    except OSError as exc:
        raise ReidpipeError(f"{npy} cannot be read: {exc}") from None
    if features.size != shape[0] * shape[1]:  # cut short while it was being read
        raise ReidpipeError(f"{npy} changed while it was read; run `reidpipe extract` again")
    return features.reshape(shape, order="F" if fortran_order else "C")


def _read_set(folder: Path, name: str) -> EmbeddingSet:
    npy, csv = folder / embedding_array(name), folder / embedding_table(name)
    for path in (npy, csv):
        if not path.exists():
            expected = ", ".join(
                f(s) for s in EMBEDDING_SETS for f in (embedding_array, embedding_table)
            )
            raise ReidpipeError(
                f"embeddings folder {folder}: {path.name} is missing (expected {expected})"
            )
    try:
        require_regular(csv)
    except NotRegularFile as exc:
        raise ReidpipeError(f"{csv} is {exc.kind}, not a CSV file") from None
    meta = read_table(csv, COLUMNS, "embeddings metadata")
    features = _read_array(npy, csv, len(meta))
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ReidpipeError(
            f"{npy}: {len(bad)} row(s) hold NaN or inf, first row {bad[0]} "
            f"({meta['path'].iloc[bad[0]]})"
        )
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
        raise ReidpipeError(
            f"embeddings folder {folder}: query dimension "
            f"{query.features.shape[1]} != gallery dimension "
            f"{gallery.features.shape[1]}"
        )
    return Embeddings(query=query, gallery=gallery)
