"""Dataset fingerprints on real image trees, release recognition against the published facts, and
the parts of the model card that do not need an export (recipe, threshold); the package's card
itself is checked in test_package."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from support.market_fixtures import make_tiny_market, write_jpeg

from reidpipe import market
from reidpipe.data.fingerprint import fingerprint_splits, recognise_version
from reidpipe.data.split import make_split
from reidpipe.dataset_registry import (
    CUHK03_STATS,
    MSMT17_DIRS,
    MSMT17_STATS,
    dataset_source,
)
from reidpipe.deploy.model_card import recipe_record, recommended_threshold, threshold_text
from reidpipe.errors import ReidpipeError
from reidpipe.params import Params
from reidpipe.params.sections.archs import ArchRecipe


def split_of(dataset: Path, out: Path, source=None) -> dict:
    make_split(dataset, out, val_ids=1, seed=0, source=source)
    return fingerprint_splits(out)


def hashes(fingerprint: dict) -> dict[str, str]:
    return {name: split["sha256"] for name, split in fingerprint["splits"].items()}


def test_fingerprint_follows_the_files_not_the_folder(tmp_path):
    first = make_tiny_market(tmp_path / "a" / "Market")
    print_a = split_of(first, tmp_path / "splits_a")
    assert {
        n: (s["images"], s["ids"], s["junk"], s["distractors"])
        for n, s in print_a["splits"].items()
    } == {"train": (36, 6, 0, 0), "query": (4, 4, 0, 0), "gallery": (10, 4, 1, 1)}
    assert print_a["source"] == "market1501" and print_a["dataset_dir"] == str(first)

    # The same files elsewhere (another folder, another val split): the same fingerprint.
    second = tmp_path / "b" / "elsewhere"
    shutil.copytree(first, second)
    make_split(second, tmp_path / "splits_b", val_ids=2, seed=5)
    assert hashes(fingerprint_splits(tmp_path / "splits_b")) == hashes(print_a)

    # One byte more in one gallery image: only the gallery's hash changes (no new split needed).
    image = sorted((second / market.GALLERY_DIR).iterdir())[0]
    image.write_bytes(image.read_bytes() + b"\0")
    changed = hashes(fingerprint_splits(tmp_path / "splits_b"))
    assert changed["gallery"] != print_a["splits"]["gallery"]["sha256"]
    assert {k: v for k, v in changed.items() if k != "gallery"} == {
        k: v for k, v in hashes(print_a).items() if k != "gallery"
    }

    # An extra query image: a new split lists it, and the query hash and count change.
    write_jpeg(first / market.QUERY_DIR / market.format_name(7, 2, 1, 11, 1), seed=99)
    extra = split_of(first, tmp_path / "splits_c")
    assert extra["splits"]["query"]["images"] == 5
    assert extra["splits"]["query"]["sha256"] != print_a["splits"]["query"]["sha256"]
    assert extra["splits"]["train"]["sha256"] == print_a["splits"]["train"]["sha256"]

    # A listed image that is gone is named, not skipped.
    image.unlink()
    with pytest.raises(ReidpipeError, match=f"image .*{image.name} of manifest .* cannot be read"):
        fingerprint_splits(tmp_path / "splits_b")


def test_tiny_market_is_not_the_release(tmp_path):
    version = split_of(make_tiny_market(tmp_path / "Market"), tmp_path / "splits")["version"]
    assert version == {
        "recognised": False,
        "name": None,
        "reason": "not Market-1501-v15.09.15: train images 36 (published 12936); train ids "
        "6 (published 751); query images 4 (published 3368); query ids 4 "
        "(published 750); gallery images 10 (published 19732); gallery junk 1 "
        "(published 3819); gallery distractors 1 (published 2793)",
    }


def counts(stats: dict, folders: dict[str, str]) -> dict:
    """A fingerprint's splits with the published ``stats`` as counts, in ``folders``."""
    return {
        split: {
            "images": 0,
            "ids": 0,
            "junk": 0,
            "distractors": 0,
            **stats.get(split, {}),
            "folders": [folders[split]],
            "sha256": "",
        }
        for split in ("train", "query", "gallery")
    }


def test_published_counts_are_recognised():
    market_splits = counts(
        {**market.MARKET1501_STATS, "gallery": {**market.MARKET1501_STATS["gallery"], "ids": 751}},
        market.SPLIT_DIRS,
    )
    assert recognise_version("market1501", market_splits) == {
        "recognised": True,
        "name": "Market-1501-v15.09.15",
        "reason": "every published count of Market-1501-v15.09.15 matches",
    }
    market_splits["gallery"]["junk"] = 3818
    assert recognise_version("market1501", market_splits)["reason"] == (
        "not Market-1501-v15.09.15: gallery junk 3818 (published 3819)"
    )

    for version, (train_dir, test_dir) in MSMT17_DIRS.items():
        found = recognise_version(
            "msmt17",
            counts(MSMT17_STATS, {"train": train_dir, "query": test_dir, "gallery": test_dir}),
        )
        assert (found["recognised"], found["name"]) == (True, version)
    mixed = counts(
        MSMT17_STATS, {"train": "train", "query": "mask_test_v2", "gallery": "mask_test_v2"}
    )
    assert recognise_version("msmt17", mixed)["reason"] == (
        "MSMT17 images in folders (('train',), ('mask_test_v2',)), neither V1's nor V2's"
    )

    for variant, stats in CUHK03_STATS.items():
        found = recognise_version("cuhk03", counts(stats, dict.fromkeys(stats, variant)))
        assert (found["recognised"], found["name"]) == (True, f"CUHK03-NP {variant}")
    # labeled's folder with detected's counts: not labeled
    swapped = recognise_version(
        "cuhk03", counts(CUHK03_STATS["detected"], dict.fromkeys(market.SPLIT_DIRS, "labeled"))
    )
    assert swapped["reason"] == (
        "not CUHK03-NP labeled: train images 7365 (published 7368); "
        "gallery images 5332 (published 5328)"
    )
    assert recognise_version("custom", counts({}, market.SPLIT_DIRS))["reason"] == (
        "data.source 'custom' has no published release to compare with"
    )


def test_msmt17_and_cuhk03_versions_from_their_folders(synthetic_layouts, tmp_path):
    msmt17 = synthetic_layouts["msmt17"][0]
    v1 = split_of(msmt17, tmp_path / "v1", dataset_source("msmt17"))
    assert v1["splits"]["train"]["folders"] == ["train"]
    assert v1["version"]["reason"].startswith("not MSMT17_V1: train images ")
    v2_dir = tmp_path / "msmt17_v2"
    shutil.copytree(msmt17, v2_dir)
    for old, new in zip(MSMT17_DIRS["MSMT17_V1"], MSMT17_DIRS["MSMT17_V2"]):
        (v2_dir / old).rename(v2_dir / new)
    v2 = split_of(v2_dir, tmp_path / "v2", dataset_source("msmt17"))
    assert v2["version"]["reason"].startswith("not MSMT17_V2: train images ")
    assert hashes(v2) != hashes(v1)  # the folder names are part of each relative path

    cuhk03 = synthetic_layouts["cuhk03"][0]
    for variant in ("labeled", "detected"):
        found = split_of(
            cuhk03, tmp_path / variant, dataset_source("cuhk03", cuhk03_variant=variant)
        )
        assert {f for s in found["splits"].values() for f in s["folders"]} == {variant}
        assert found["version"]["reason"].startswith(f"not CUHK03-NP {variant}: ")


def test_recipe_source():
    params = Params()  # the published recipes (params.yaml states the same)
    assert recipe_record(params, "resnet50") == {
        "name": "resnet50",
        "published": True,
        "source": "Bag of Tricks and a Strong Baseline for Deep Person Re-identification "
        "(Luo et al., CVPR workshops 2019)",
    }
    changed = dataclasses.replace(
        params,
        archs={
            **params.archs,
            "resnet50": dataclasses.replace(
                params.archs["resnet50"], model={"backbone": "resnet50.tv_in1k", "last_stride": 2}
            ),
        },
    )
    record = recipe_record(changed, "resnet50")
    assert not record["published"]
    assert record["differs_from_published"] == ["archs.resnet50.model.last_stride"]
    assert record["source"].endswith("changed in params: archs.resnet50.model.last_stride")
    own = dataclasses.replace(params, archs={"mine": ArchRecipe(model={"feat_dim": 256})})
    assert recipe_record(own, "mine") == {
        "name": "mine",
        "source": "user-defined (params archs.mine)",
        "published": False,
    }


def test_recommended_threshold_is_far_1e3():
    points = [
        {
            "far": 1e-2,
            "threshold": 0.5,
            "tar": 0.9,
            "far_achieved": 0.01,
            "no_match_accuracy": 0.4,
            "why_null": {},
        },
        {
            "far": 1e-3,
            "threshold": 0.25,
            "tar": 0.6,
            "far_achieved": 0.0009,
            "no_match_accuracy": 0.8,
            "why_null": {},
        },
    ]
    recommended = recommended_threshold({"distance": "cosine", "operating_points": points})
    assert (recommended["far"], recommended["threshold"]) == (1e-3, 0.25)
    assert threshold_text(recommended) == (
        "accept a match when the cosine distance (1 - cosine similarity) between the two "
        "embeddings is <= 0.25 (FAR 0.001 on the test set: 60.0% of true pairs accepted, "
        "achieved FAR 0.0009, 80.0% of open-set queries rejected)."
    )
    assert threshold_text(None).startswith("none: `reidpipe evaluate` measured no verification")
    with pytest.raises(ReidpipeError, match="lack the operating point at FAR 0.001"):
        recommended_threshold({"distance": "cosine", "operating_points": points[:1]})
