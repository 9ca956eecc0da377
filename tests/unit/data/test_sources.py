"""The dataset registry: each source's file names, layout and statistics, and the synthetic data
written in each layout (checked against the layouts as the datasets' releases describe them)."""

from __future__ import annotations

import json
import typing

import pytest

from reidpipe.dataset_registry import (
    CUHK03_STATS,
    MSMT17_TEST_PID_BASE,
    SOURCE_NAMES,
    SOURCES,
    SPLITS,
    SYNTH_LAYOUTS,
    ImageName,
    dataset_source,
    parse_cuhk03,
    parse_custom,
    parse_duke,
    parse_market,
    parse_msmt17,
)
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import OUTPUT_MARKER_FILE
from reidpipe.params.sections.data import LayoutName, SourceName


def test_file_names_of_each_dataset():
    # Examples as each dataset's release names its files.
    assert parse_market("0002_c1s1_000451_03.jpg") == ImageName(2, 1, 1, 451)
    assert parse_market("-1_c3s2_012345_01.jpg").pid == -1
    assert parse_duke("0001_c2_f0046182.jpg") == ImageName(1, 2, 0, 46182)
    assert parse_duke("0001_c2s1_046182_01.jpg") is None
    assert parse_cuhk03("0013_c2_5.png") == ImageName(13, 2, 0, 5)
    assert parse_cuhk03("0013_c3_5.png") is None  # a camera pair has cameras 1 and 2
    assert parse_msmt17("0000_000_01_0303morning_0015_0.jpg") == (0, ImageName(0, 1, 0, 15))
    assert parse_msmt17("0012_021_15_0303afternoon_0936_1.jpg")[1].camid == 15
    # Custom data: Market names keep their fields; TAO-style names need only PID_cCAM.
    assert parse_custom("0002_c1s1_000451_03.jpg") == ImageName(2, 1, 1, 451)
    assert parse_custom("0042_c12_anything.png") == ImageName(42, 12, 0, 0)
    assert parse_custom("-1_c1_7.jpg").pid == -1
    assert parse_custom("x0042_c1.jpg") is None and parse_custom("0042_c1.txt") is None


def test_official_statistics():
    """The numbers of the dataset papers and the public loaders (GUIDE 1, 4b)."""
    assert SOURCES["dukemtmc"].stats["gallery"] == {"images": 17661, "ids": 1110}
    assert SOURCES["msmt17"].stats["train"] == {"images": 30248 + 2373, "ids": 1041}
    assert SOURCES["msmt17"].cameras == 15 and SOURCES["dukemtmc"].cameras == 8
    assert CUHK03_STATS["detected"]["gallery"]["images"] == 5332
    assert dataset_source("cuhk03", cuhk03_variant="labeled").stats["gallery"]["images"] == 5328


def test_choices_that_do_not_apply_are_refused():
    with pytest.raises(ReidpipeError, match="unknown dataset source 'viper'"):
        dataset_source("viper")
    with pytest.raises(ReidpipeError, match="variant 'both'"):
        dataset_source("cuhk03", cuhk03_variant="both")
    with pytest.raises(ReidpipeError, match="custom only"):
        dataset_source("dukemtmc", split_dirs={"train": "x"})
    with pytest.raises(ReidpipeError, match="unknown split"):
        dataset_source("custom", split_dirs={"test": "x"})
    with pytest.raises(ReidpipeError, match="synthetic layout 'viper'"):
        dataset_source("synthetic", synthetic_layout="viper")


def test_missing_layout_names_the_expected_folders(tmp_path):
    with pytest.raises(ReidpipeError, match="mask_train_v2"):
        dataset_source("msmt17").scan(tmp_path, "train")
    with pytest.raises(ReidpipeError, match="detected/bounding_box_train/"):
        dataset_source("cuhk03", cuhk03_variant="detected").scan(tmp_path, "query")


@pytest.fixture
def layouts(synthetic_layouts):
    return synthetic_layouts


def test_each_synthetic_layout_is_what_its_dataset_looks_like(layouts):
    duke, _ = layouts["dukemtmc"]
    assert {p.name for p in duke.iterdir()} >= {"bounding_box_train", "query", "bounding_box_test"}
    assert all(parse_duke(p.name) for p in (duke / "query").iterdir())
    msmt, _ = layouts["msmt17"]
    for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
        for line in (msmt / name).read_text().splitlines():
            rel, label = line.split(" ")
            folder = "train" if name in ("list_train.txt", "list_val.txt") else "test"
            assert (msmt / folder / rel).is_file()
            assert rel.split("/")[0] == f"{int(label):04d}"
    cuhk, _ = layouts["cuhk03"]
    for variant in ("labeled", "detected"):
        names = [p.name for p in (cuhk / variant / "bounding_box_test").iterdir()]
        assert names and all(parse_cuhk03(n) for n in names)
    custom, _ = layouts["custom"]
    assert sorted(p.name for p in custom.iterdir()) == sorted(
        [OUTPUT_MARKER_FILE, "query", "synthetic.json", "test", "train"]
    )
    assert json.loads((msmt / "synthetic.json").read_text())["layout"] == "msmt17"


def test_scans_see_the_same_people_in_every_layout(layouts):
    """The layouts differ in names only: per split, the images of real people are the same."""
    market_dir, market = layouts["market1501"]
    reference = dataset_source("market1501")
    people = {
        split: sorted(n.camid for _, n in reference.scan(market_dir, split).images if n.pid > 0)
        for split in SPLITS
    }
    for layout in SYNTH_LAYOUTS:
        folder, summary = layouts[layout]
        source = dataset_source("synthetic", synthetic_layout=layout)
        for split in SPLITS:
            scan = source.scan(folder, split)
            assert not scan.misnamed and not scan.missing
            real = [n for _, n in scan.images if n.pid > 0]
            if layout == "cuhk03":
                assert {n.camid for n in real} <= {1, 2}
            elif layout == "dukemtmc" and split == "gallery":
                # Market's distractors become gallery-only identities; junk is dropped.
                assert len(real) == len(people[split]) + market.distractors
                continue
            else:
                assert sorted(n.camid for n in real) == people[split], (layout, split)
            assert len(real) == len(people[split])
        if layout == "msmt17":
            assert min(n.pid for _, n in source.scan(folder, "query").images) > MSMT17_TEST_PID_BASE
        assert summary.train_images == len(people["train"])


def test_params_offer_exactly_the_registrys_sources_and_layouts():
    assert typing.get_args(SourceName) == SOURCE_NAMES
    assert typing.get_args(LayoutName) == SYNTH_LAYOUTS
