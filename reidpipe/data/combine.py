"""The training set of one or more sources: their train and held-out val manifests, merged.

Each source's split (``split``) keeps its own person and camera numbers; here source k's are moved
past those of sources 0..k-1 (its offsets, recorded in ``sources.json`` and in the manifests'
``source`` column), so no two sources share an identity or a camera, and the labels are
renumbered 0..C-1 over the merged set. The P x K sampler then draws identities from every
source. Each source keeps its own held-out val identities.

Only train and val manifests are read: query and gallery never enter training. Beyond that, an
image that is a query or gallery image of any listed source (two sources over the same folders,
a custom source pointing into another dataset's test folders) is refused, unlike torchreid's
``combineall``, which merged the test identities into training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reidpipe import atomic
from reidpipe.data.manifest import (
    manifest_path,
    read_manifest,
    read_split,
    write_manifest,
)
from reidpipe.errors import ReidpipeError

TRAIN_SPLITS = ("train", "val_query", "val_gallery")
TEST_SPLITS = ("query", "gallery")
SOURCES_FILE = "sources.json"
SOURCE_COLUMN = "source"
SHOWN = 5


@dataclass(frozen=True)
class SourceOffsets:
    pid_offset: int
    camid_offset: int
    train_ids: int
    train_images: int
    val_images: int


def _real_paths(frame: pd.DataFrame) -> set[str]:
    return {os.path.realpath(p) for p in frame["path"]}


def _check_no_test_images(train_like: dict[str, pd.DataFrame], tests: dict[str, set[str]]) -> None:
    for name, frame in train_like.items():
        mine = _real_paths(frame)
        for test_name, test_paths in tests.items():
            leaked = sorted(mine & test_paths)
            if leaked:
                raise ReidpipeError(
                    f"training source {name!r} holds {len(leaked)} image(s) that are query or "
                    f"gallery images of source {test_name!r}, e.g. {leaked[:SHOWN]}; a test split "
                    "must never enter training (check each source's data.dataset_dir and "
                    "data.split_dirs)"
                )


def combine_splits(
    split_dirs: Mapping[str, str | Path], out_dir: str | Path
) -> dict[str, SourceOffsets]:
    """Merge the train/val manifests of ``split_dirs`` (source name -> split folder, in order)
    into ``out_dir`` atomically; returns each source's offsets."""
    if not split_dirs:
        raise ReidpipeError("no training sources: data.train_sources names none")
    frames = {name: _read_train_splits(folder) for name, folder in split_dirs.items()}
    tests = {name: _test_image_paths(folder) for name, folder in split_dirs.items()}
    _check_no_test_images(
        {name: pd.concat(list(parts.values())) for name, parts in frames.items()}, tests
    )
    tables, offsets = _shift_sources(frames, split_dirs)
    train_ids = _add_labels(tables["train"])
    _write_combined(out_dir, tables, offsets, split_dirs, train_ids)
    return offsets


def _read_train_splits(folder: str | Path) -> dict[str, pd.DataFrame]:
    """A source's train and val manifests, by split name."""
    return {
        split: (
            read_split(folder, split)
            if split == "train"
            else read_manifest(manifest_path(folder, split))
        )
        for split in TRAIN_SPLITS
    }


def _test_image_paths(folder: str | Path) -> set[str]:
    """The real paths of a source's query and gallery images."""
    return set().union(
        *(_real_paths(read_manifest(manifest_path(folder, split))) for split in TEST_SPLITS)
    )


def _shift_sources(
    frames: dict[str, dict[str, pd.DataFrame]], split_dirs: Mapping[str, str | Path]
) -> tuple[dict[str, pd.DataFrame], dict[str, SourceOffsets]]:
    """Each split's rows of all sources, each source's person and camera numbers moved past
    those of the sources before it (labels dropped, a source column added); and the offsets."""
    merged: dict[str, list[pd.DataFrame]] = {split: [] for split in TRAIN_SPLITS}
    offsets: dict[str, SourceOffsets] = {}
    pid_offset = camid_offset = 0
    for name, parts in frames.items():
        rows = pd.concat(list(parts.values()))
        if (rows["pid"] <= 0).any():
            raise ReidpipeError(
                f"source {name!r}: its train/val manifests hold junk or distractor "
                f"ids (pid <= 0) in {split_dirs[name]}; rerun `reidpipe split`"
            )
        for split, frame in parts.items():
            shifted = frame.drop(columns=["label"], errors="ignore").assign(
                pid=frame["pid"] + pid_offset, camid=frame["camid"] + camid_offset
            )
            shifted.insert(len(shifted.columns), SOURCE_COLUMN, name)
            merged[split].append(shifted)
        offsets[name] = SourceOffsets(
            pid_offset=pid_offset,
            camid_offset=camid_offset,
            train_ids=int(parts["train"]["pid"].nunique()),
            train_images=len(parts["train"]),
            val_images=len(parts["val_query"]) + len(parts["val_gallery"]),
        )
        pid_offset += int(rows["pid"].max()) if len(rows) else 0
        camid_offset += int(rows["camid"].max()) if len(rows) else 0
    tables = {split: pd.concat(parts, ignore_index=True) for split, parts in merged.items()}
    return tables, offsets


def _add_labels(train: pd.DataFrame) -> int:
    """Number the identities of ``train`` 0..C-1 (a ``label`` column, in pid order); returns C."""
    labels = {pid: label for label, pid in enumerate(sorted(train["pid"].unique()))}
    train.insert(len(train.columns), "label", train["pid"].map(labels).astype(int))
    return len(labels)


def _write_combined(
    out_dir: str | Path,
    tables: dict[str, pd.DataFrame],
    offsets: dict[str, SourceOffsets],
    split_dirs: Mapping[str, str | Path],
    train_ids: int,
) -> None:
    """The merged manifests and ``SOURCES_FILE``, written into ``out_dir`` all or nothing."""
    train = tables["train"]
    with atomic.atomic_dir(out_dir) as tmp:
        for split, table in tables.items():
            write_manifest(table, manifest_path(tmp, split))
        atomic.write_json(
            Path(tmp) / SOURCES_FILE,
            {
                "sources": {
                    name: {**vars(o), "splits": str(split_dirs[name])}
                    for name, o in offsets.items()
                },
                "train_ids": train_ids,
                "train_images": len(train),
            },
        )
