"""Dataset fingerprints: which images a run used, and which published release they are.

A split's fingerprint is the sha256 of its images' sorted (path relative to the dataset folder,
size in bytes) list, one JSON line ``["rel/path.jpg", 1234]`` each, with its counts. It is read
from the split manifests (``reidpipe split``'s folder) plus one ``stat`` per image, so it is cheap
at any scale; the same files give the same hash wherever the dataset folder lies, and a renamed,
added, removed or resized file changes it.

The dataset's three splits are its train folder (the manifests' train, val_query and val_gallery
together: the held-out val images come from it), query and gallery. Their counts are compared
with the published statistics of the source (``dataset_registry``), and the folders the images
lie in tell the releases of one dataset apart: MSMT17's V1 (``train/``, ``test/``) from V2
(``mask_train_v2/``, ``mask_test_v2/``), CUHK03-NP's ``labeled/`` from ``detected/``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from reidpipe import market
from reidpipe.data.manifest import manifest_path, read_manifest
from reidpipe.data.split import SUMMARY_FILE
from reidpipe.dataset_registry import (
    CUHK03_STATS,
    CUHK03_VARIANTS,
    DISTRACTOR_PID,
    JUNK_PID,
    MSMT17_DIRS,
    SOURCES,
)
from reidpipe.errors import ReidpipeError
from reidpipe.json_files import read_json_file

# Each split of the dataset and the manifests that list its images.
DATASET_SPLITS = {
    "train": ("train", "val_query", "val_gallery"),
    "query": ("query",),
    "gallery": ("gallery",),
}


def _relative(path: str, dataset_dir: str, manifest: Path) -> str:
    try:
        return PurePath(path).relative_to(dataset_dir).as_posix()
    except ValueError:
        raise ReidpipeError(
            f"manifest {manifest}: image {path} is not inside the dataset folder "
            f"{dataset_dir} its split.json names; rerun `reidpipe split`"
        ) from None


def split_fingerprint(frame: pd.DataFrame, dataset_dir: str, manifest: Path) -> dict[str, Any]:
    """Counts, top folders and sha256 of one split's images (``frame``: manifest rows)."""
    entries = []
    for path in frame["path"]:
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ReidpipeError(
                f"image {path} of manifest {manifest} cannot be read "
                f"({exc.strerror}); the dataset changed since `reidpipe split`: "
                "rerun it"
            ) from None
        entries.append((_relative(path, dataset_dir, manifest), size))
    digest = hashlib.sha256()
    for rel, size in sorted(entries):
        digest.update((json.dumps([rel, size]) + "\n").encode("utf-8"))
    pids = frame["pid"]
    return {
        "images": len(frame),
        "ids": int(pids[pids > 0].nunique()),
        "junk": int((pids == JUNK_PID).sum()),
        "distractors": int((pids == DISTRACTOR_PID).sum()),
        "folders": sorted({rel.split("/")[0] for rel, _ in entries}),
        "sha256": digest.hexdigest(),
    }


def fingerprint_splits(split_dir: str | Path) -> dict[str, Any]:
    """The fingerprint of the dataset a split folder (``reidpipe split``'s) was made from: its
    source and folder, each dataset split's fingerprint, and the recognised release."""
    split_dir = Path(split_dir)
    summary_path = split_dir / SUMMARY_FILE
    summary = read_json_file(summary_path, " (run `reidpipe split` first)")
    if not isinstance(summary, dict) or not all(
        isinstance(summary.get(key), str) for key in ("source", "dataset_dir")
    ):
        raise ReidpipeError(
            f"{summary_path}: expected an object with text 'source' and "
            "'dataset_dir' (written by `reidpipe split`)"
        )
    source, dataset_dir = summary["source"], summary["dataset_dir"]
    splits = {}
    for name, manifests in DATASET_SPLITS.items():
        frame = pd.concat(
            [read_manifest(manifest_path(split_dir, m)) for m in manifests], ignore_index=True
        )
        splits[name] = split_fingerprint(frame, dataset_dir, manifest_path(split_dir, manifests[0]))
    return {
        "source": source,
        "dataset_dir": dataset_dir,
        "splits": splits,
        "version": recognise_version(source, splits),
    }


def _mismatches(
    splits: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, int]]
) -> list[str]:
    return [
        f"{split} {key} {splits[split][key]} (published {value})"
        for split, stats in published.items()
        for key, value in stats.items()
        if splits[split][key] != value
    ]


def _release(
    source: str, splits: Mapping[str, Mapping[str, Any]]
) -> tuple[str, Mapping[str, Mapping[str, int]], str] | str:
    """The release the source and folders name, its published statistics and what the folders
    showed; or why there is none."""
    if source == "market1501":
        return market.TOP_FOLDER, market.MARKET1501_STATS, ""
    if source == "msmt17":
        folders = (tuple(splits["train"]["folders"]), tuple(splits["query"]["folders"]))
        for version, (train_dir, test_dir) in MSMT17_DIRS.items():
            if folders == ((train_dir,), (test_dir,)):
                return (
                    version,
                    SOURCES[source].stats or {},
                    f" and the images lie in {train_dir}/ and {test_dir}/",
                )
        return f"MSMT17 images in folders {folders}, neither V1's nor V2's"
    if source == "cuhk03":
        variants = sorted({f for split in splits.values() for f in split["folders"]})
        if len(variants) == 1 and variants[0] in CUHK03_VARIANTS:
            return (
                f"{SOURCES[source].title} {variants[0]}",
                CUHK03_STATS[variants[0]],
                f" and the images lie in {variants[0]}/",
            )
        return f"CUHK03-NP images in folders {variants}, not one of {list(CUHK03_VARIANTS)}"
    spec = SOURCES.get(source)
    if spec is None or spec.stats is None:
        return f"data.source {source!r} has no published release to compare with" + (
            " (generated by `reidpipe synth`)" if source == "synthetic" else ""
        )
    return spec.title, spec.stats, ""


def recognise_version(source: str, splits: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``recognised``, the release's ``name`` (None when not recognised) and the ``reason``."""
    release = _release(source, splits)
    if isinstance(release, str):
        return {"recognised": False, "name": None, "reason": release}
    name, published, folders = release
    differ = _mismatches(splits, published)
    if differ:
        return {"recognised": False, "name": None, "reason": f"not {name}: " + "; ".join(differ)}
    return {
        "recognised": True,
        "name": name,
        "reason": f"every published count of {name} matches{folders}",
    }
