import json

import pandas as pd
import pytest
from support.market_fixtures import make_tiny_market

from reidpipe.data.manifest import SPLITS, read_split
from reidpipe.data.split import make_split
from reidpipe.errors import ReidpipeError


@pytest.fixture
def dataset(tmp_path):
    return make_tiny_market(tmp_path / "ds", train_ids=8)


def test_manifests(dataset, tmp_path):
    out = tmp_path / "splits"
    counts = make_split(dataset, out, val_ids=3, seed=0)
    tables = {s: read_split(out, s) for s in SPLITS}
    assert counts == {s: len(t) for s, t in tables.items()}
    train, vq, vg = tables["train"], tables["val_query"], tables["val_gallery"]
    val_pids = set(vq["pid"]) | set(vg["pid"])
    assert len(val_pids) == 3 and not val_pids & set(train["pid"])
    assert len(train) + len(vq) + len(vg) == 48
    assert sorted(train["label"].unique()) == list(range(5))
    assert (train.groupby("pid")["label"].nunique() == 1).all()
    # every val query has its identity in the val gallery under another camera
    for pid, cam in zip(vq["pid"], vq["camid"]):
        assert ((vg["pid"] == pid) & (vg["camid"] != cam)).any()
    assert len(tables["query"]) == 4 and len(tables["gallery"]) == 10
    assert set(tables["gallery"]["pid"]) >= {-1, 0}
    assert all(pd.io.common.file_exists(p) for p in tables["gallery"]["path"])
    assert json.loads((out / "split.json").read_text())["val_ids"] == 3


def test_deterministic_and_seeded(dataset, tmp_path):
    make_split(dataset, tmp_path / "a", val_ids=3, seed=7)
    make_split(dataset, tmp_path / "b", val_ids=3, seed=7)
    for split in SPLITS:
        assert (tmp_path / "a" / f"{split}.csv").read_bytes() == (
            tmp_path / "b" / f"{split}.csv"
        ).read_bytes()
    chosen = set()
    for seed in range(5):
        make_split(dataset, tmp_path / f"s{seed}", val_ids=3, seed=seed)
        chosen.add(tuple(sorted(set(read_split(tmp_path / f"s{seed}", "val_query")["pid"]))))
    assert len(chosen) > 1, "the seed does not change the held-out identities"


def test_too_many_val_ids(dataset, tmp_path):
    with pytest.raises(ReidpipeError, match="split.val_ids = 20"):
        make_split(dataset, tmp_path / "s", val_ids=20, seed=0)
    assert not (tmp_path / "s").exists()


def test_identities_with_one_image_per_camera_are_not_held_out(tmp_path):
    """Such an identity could give no val query (each image would be a query with no match)."""
    root = tmp_path / "ds"
    make_tiny_market(root, train_ids=4)
    for path in (root / "bounding_box_train").glob("0001_*"):
        if (
            path.name.endswith("_000102_01.jpg")
            or path.name.endswith("_000202_01.jpg")
            or path.name.endswith("_000302_01.jpg")
        ):
            path.unlink()  # pid 1 keeps one image in each of its 3 cameras
    for seed in range(6):
        make_split(root, tmp_path / f"s{seed}", val_ids=3, seed=seed)
        vq = read_split(tmp_path / f"s{seed}", "val_query")
        assert 1 not in set(vq["pid"]) and len(set(vq["pid"])) == 3
    with pytest.raises(ReidpipeError, match="split.val_ids = 4"):
        make_split(root, tmp_path / "all", val_ids=4, seed=0)
