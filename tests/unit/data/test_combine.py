"""Merging the training sets of several sources: offsets, labels, val sets, and no test leak."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from reidpipe.data.combine import combine_splits
from reidpipe.data.manifest import manifest_path, read_split, write_manifest
from reidpipe.errors import ReidpipeError
from reidpipe.training.sampler import IdentityBatchSampler


def rows(folder, pids_cams):
    return pd.DataFrame(
        [
            (f"{folder}/{pid}_{cam}_{i}.jpg", pid, cam, 0, i)
            for i, (pid, cam) in enumerate(pids_cams)
        ],
        columns=["path", "pid", "camid", "seq", "frame"],
    )


def write_source(root, name, train, val_query, val_gallery, query, gallery):
    folder = root / name
    folder.mkdir()
    tables = {
        "train": rows(f"/data/{name}/train", train),
        "val_query": rows(f"/data/{name}/train", val_query),
        "val_gallery": rows(f"/data/{name}/train", val_gallery),
        "query": rows(f"/data/{name}/query", query),
        "gallery": rows(f"/data/{name}/gallery", gallery),
    }
    labels = {pid: i for i, pid in enumerate(sorted({p for p, _ in train}))}
    tables["train"]["label"] = tables["train"]["pid"].map(labels)
    for split, table in tables.items():
        write_manifest(table, manifest_path(folder, split))
    return folder


@pytest.fixture
def two_sources(tmp_path):
    a = write_source(
        tmp_path,
        "a",
        train=[(1, 1), (1, 2), (3, 1), (3, 2)],
        val_query=[(2, 1)],
        val_gallery=[(2, 2)],
        query=[(7, 1)],
        gallery=[(7, 2)],
    )
    # Source b numbers its people and cameras from 1 as well: they must not collide with a's.
    b = write_source(
        tmp_path,
        "b",
        train=[(1, 1), (1, 1), (2, 2), (2, 2), (5, 3), (5, 3)],
        val_query=[(4, 1)],
        val_gallery=[(4, 3)],
        query=[(9, 1)],
        gallery=[(9, 2)],
    )
    return {"a": a, "b": b}


def test_offsets_keep_sources_apart_and_are_recorded(two_sources, tmp_path):
    out = tmp_path / "combined"
    offsets = combine_splits(two_sources, out)
    # a uses pids up to 3 and cameras up to 2, so b starts after them.
    assert (offsets["a"].pid_offset, offsets["a"].camid_offset) == (0, 0)
    assert (offsets["b"].pid_offset, offsets["b"].camid_offset) == (3, 2)
    train = read_split(out, "train")
    assert sorted(set(zip(train["source"], train["pid"]))) == [
        ("a", 1),
        ("a", 3),
        ("b", 4),
        ("b", 5),
        ("b", 8),
    ]
    assert sorted(train[train["source"] == "b"]["camid"].unique()) == [3, 4, 5]
    # Labels 0..C-1 over the merged set, one per (source, person).
    assert sorted(train["label"].unique()) == list(range(5))
    assert train.groupby(["source", "pid"])["label"].nunique().eq(1).all()
    val = pd.concat([read_split(out, "val_query"), read_split(out, "val_gallery")])
    assert sorted(set(zip(val["source"], val["pid"]))) == [("a", 2), ("b", 7)]
    record = json.loads((out / "sources.json").read_text())
    assert record["sources"]["b"]["pid_offset"] == 3 and record["train_ids"] == 5
    assert not (out / "query.csv").exists()


def test_batches_draw_identities_from_every_source(two_sources, tmp_path):
    combine_splits(two_sources, tmp_path / "combined")
    train = read_split(tmp_path / "combined", "train")
    sampler = IdentityBatchSampler(train["label"].tolist(), batch_size=4, num_instances=2, seed=0)
    seen = {train["source"][i] for batch in sampler for i in batch}
    assert seen == {"a", "b"}


def test_test_images_never_enter_training(two_sources, tmp_path):
    # Source c's train folder is source a's gallery (a custom source pointed at the wrong folder).
    c = write_source(
        tmp_path,
        "c",
        train=[(1, 1), (1, 2)],
        val_query=[],
        val_gallery=[],
        query=[(3, 1)],
        gallery=[(3, 2)],
    )
    leaked = read_split(two_sources["a"], "gallery").assign(label=0)
    write_manifest(leaked, manifest_path(c, "train"))
    with pytest.raises(ReidpipeError, match="'c' holds 1 image.*gallery images of source 'a'"):
        combine_splits({**two_sources, "c": c}, tmp_path / "combined")
    assert not (tmp_path / "combined").exists()


def test_no_sources_is_refused(tmp_path):
    with pytest.raises(ReidpipeError, match="no training sources"):
        combine_splits({}, tmp_path / "out")
