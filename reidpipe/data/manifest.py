"""Split manifests: one CSV per split, the interface between data and model stages.

Columns: ``path`` (image file, as reachable from the working directory), ``pid``, ``camid``,
``seq``, ``frame``; train additionally ``label`` (pids relabelled 0..C-1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reidpipe import atomic
from reidpipe.errors import ReidpipeError

SPLITS = ("train", "val_query", "val_gallery", "query", "gallery")
COLUMNS = ["path", "pid", "camid", "seq", "frame"]
TRAIN_COLUMNS = COLUMNS + ["label"]
_INT_COLUMNS = ["pid", "camid", "seq", "frame", "label"]


def manifest_path(split_dir: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise ReidpipeError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(split_dir) / f"{split}.csv"


def read_table(path: str | Path, columns: list[str], what: str = "table") -> pd.DataFrame:
    """Read an image table (manifest or embeddings metadata): ``path`` as text, the required
    ``columns`` present, the id columns integers (also when the table has no rows)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"path": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ReidpipeError(f"{what} {path} is not a readable CSV: {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ReidpipeError(f"{what} {path} lacks columns {missing}; expected at least {columns}")
    present = [c for c in _INT_COLUMNS if c in frame.columns]
    if frame.empty:  # header only (e.g. val splits with split.val_ids = 0)
        return frame.astype({c: "int64" for c in present})
    for column in present:
        if not pd.api.types.is_integer_dtype(frame[column]):
            raise ReidpipeError(f"{what} {path}: column {column!r} must hold integers")
    return frame


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest, checking its columns; raises ReidpipeError naming the file."""
    if not Path(path).is_file():
        raise ReidpipeError(f"manifest {path} does not exist (run `reidpipe split` first)")
    return read_table(path, COLUMNS, "manifest")


def read_split(split_dir: str | Path, split: str) -> pd.DataFrame:
    path = manifest_path(split_dir, split)
    if split != "train":
        return read_manifest(path)
    if not path.is_file():
        raise ReidpipeError(f"manifest {path} does not exist (run `reidpipe split` first)")
    return read_table(path, TRAIN_COLUMNS, "manifest")


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
