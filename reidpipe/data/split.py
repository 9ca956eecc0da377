"""Split manifests: train (relabelled), a held-out validation set, query and gallery.

The validation set holds out ``val_ids`` train identities chosen with a seeded generator and splits
each into a val-query (one image per camera) and a val-gallery, so in-training mAP follows the same
cross-camera protocol as the test set. Everything is deterministic given the dataset and the seed.
Every image is read and decoded first, with validation's check: a manifest lists only images
that `reidpipe validate` accepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reidpipe import atomic, images
from reidpipe.data.manifest import COLUMNS, manifest_path, write_manifest
from reidpipe.dataset_registry import DatasetSource, dataset_source
from reidpipe.errors import ReidpipeError

SUMMARY_FILE = "split.json"  # the row counts, the source and its dataset folder


def _split_frame(dataset_dir: Path, split: str, source: DatasetSource) -> pd.DataFrame:
    scan = source.scan(dataset_dir, split)
    bad = scan.misnamed + scan.missing
    if bad:
        raise ReidpipeError(
            f"{len(bad)} file(s) of {source.split_location(dataset_dir, split)} do not follow "
            f"{source.layout_spec.title} naming or are missing, e.g. {bad[0]}; run "
            "`reidpipe validate` first"
        )
    rows = [(str(path), n.pid, n.camid, n.seq, n.frame) for path, n in scan.images]
    return pd.DataFrame(rows, columns=COLUMNS)


def _check_images(frames: list[pd.DataFrame], dataset_dir: Path) -> None:
    """Only images validation accepts go into a manifest: each is read and decoded by the
    validator's own check, and the first it refuses stops the split with the same words."""
    paths = [Path(path) for frame in frames for path in frame["path"]]
    broken = [check for check in images.check_images(paths) if check.error]
    if broken:
        more = (
            f" ({len(broken) - 1} more unusable image(s) in {dataset_dir}: `reidpipe "
            "validate` lists them all)"
            if len(broken) > 1
            else ""
        )
        raise ReidpipeError(f"image {broken[0].path} {broken[0].error}{more}")


def _hold_out(train: pd.DataFrame, val_ids: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Choose ``val_ids`` identities seen by >= 2 cameras with more images than cameras (so at
    least one camera keeps a gallery image that another camera's query can match); one query
    per camera, the rest gallery."""
    per_pid = train.groupby("pid").agg(cams=("camid", "nunique"), images=("camid", "size"))
    ok = (per_pid["cams"] >= 2) & (per_pid["images"] > per_pid["cams"])
    eligible = np.sort(per_pid.index[ok].to_numpy())
    if val_ids > len(eligible):
        raise ReidpipeError(
            f"split.val_ids = {val_ids} but only {len(eligible)} train identities are seen by two or "
            "more cameras with more images than cameras; lower split.val_ids"
        )
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=val_ids, replace=False).tolist())
    held = train[train["pid"].isin(chosen)]
    # One random image per (pid, camera) becomes a query; a rank is drawn per row for determinism.
    order = held.assign(_draw=rng.random(len(held))).sort_values(["pid", "camid", "_draw"])
    is_query = ~order.duplicated(["pid", "camid"])
    # A query needs a gallery image of its identity from another camera.
    gallery_cams = order[~is_query].groupby("pid")["camid"].agg(set)
    has_match = [
        bool(gallery_cams.get(pid, set()) - {cam}) for pid, cam in zip(order["pid"], order["camid"])
    ]
    is_query &= pd.Series(has_match, index=order.index)
    val_query = order[is_query].drop(columns="_draw").sort_index()
    val_gallery = order[~is_query].drop(columns="_draw").sort_index()
    return val_query, val_gallery


def make_split(
    dataset_dir: str | Path,
    out_dir: str | Path,
    val_ids: int,
    seed: int,
    source: DatasetSource | None = None,
) -> dict[str, int]:
    """Write the five manifests of a dataset in ``source``'s layout (default Market-1501) into
    ``out_dir`` atomically; returns the row count of each."""
    dataset_dir = Path(dataset_dir)
    source = source or dataset_source("market1501")
    source.check_present(dataset_dir)
    train_all, query, gallery = (
        _split_frame(dataset_dir, split, source) for split in ("train", "query", "gallery")
    )
    if train_all.empty:
        raise ReidpipeError(f"{source.split_location(dataset_dir, 'train')} holds no images")
    _check_images([train_all, query, gallery], dataset_dir)
    val_query, val_gallery = _hold_out(train_all, val_ids, seed)
    held_pids = set(val_query["pid"]) | set(val_gallery["pid"])
    train = train_all[~train_all["pid"].isin(held_pids)].copy()
    if train.empty:
        raise ReidpipeError(f"split.val_ids = {val_ids} holds out every train identity; lower it")
    labels = {pid: label for label, pid in enumerate(sorted(train["pid"].unique()))}
    train["label"] = train["pid"].map(labels).astype(int)

    tables = {
        "train": train,
        "val_query": val_query,
        "val_gallery": val_gallery,
        "query": query,
        "gallery": gallery,
    }
    with atomic.atomic_dir(out_dir) as tmp:
        for name, table in tables.items():
            write_manifest(table.reset_index(drop=True), manifest_path(tmp, name))
        counts = {name: len(table) for name, table in tables.items()}
        summary = dict(
            counts,
            train_ids=len(labels),
            val_ids=len(held_pids),
            dataset_dir=str(dataset_dir),
            source=source.name,
            seed=seed,
        )
        atomic.write_json(Path(tmp) / SUMMARY_FILE, summary)
    return counts
