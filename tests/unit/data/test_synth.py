"""The synthetic dataset: Market layout and protocol invariants, determinism, learnability."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import ROOT

from reidpipe.cli import common_parser
from reidpipe.cli import synth as synth_cli
from reidpipe.data.synth import MARKER_FILE, SynthSummary, generate_synthetic_market
from reidpipe.data.validate import validate_dataset
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import OUTPUT_MARKER_FILE
from reidpipe.market import (
    DISTRACTOR_PID,
    GALLERY_DIR,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    JUNK_PID,
    NUM_CAMERAS,
    QUERY_DIR,
    TRAIN_DIR,
    MarketName,
    parse_name,
)

PARAMS = ROOT / "params.yaml"
FOLDERS = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR)


def names(root: Path, folder: str) -> list[MarketName]:
    parsed = [parse_name(p.name) for p in sorted((root / folder).iterdir())]
    assert None not in parsed
    return parsed  # type: ignore[return-value]


def file_bytes(root: Path) -> dict[str, bytes]:
    """Each file's bytes, but the output marker (the same text in every folder a stage writes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != OUTPUT_MARKER_FILE
    }


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SynthSummary]:
    """The demo size (``data.synthetic_ids`` = 60)."""
    out = tmp_path_factory.mktemp("synth") / "market"
    return out, generate_synthetic_market(out, num_ids=60, seed=0, workers=2)


def test_layout_names_and_image_format(default_set: tuple[Path, SynthSummary]) -> None:
    root, summary = default_set
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*FOLDERS, MARKER_FILE, OUTPUT_MARKER_FILE]
    )
    record = json.loads((root / MARKER_FILE).read_text())
    assert record["num_ids"] == 60 and record["gallery_images"] == summary.gallery_images
    counts = {folder: len(names(root, folder)) for folder in FOLDERS}
    assert counts == {
        TRAIN_DIR: summary.train_images,
        QUERY_DIR: summary.query_images,
        GALLERY_DIR: summary.gallery_images,
    }
    all_names = [n for folder in FOLDERS for n in names(root, folder)]
    assert {n.camid for n in all_names} == set(range(1, NUM_CAMERAS + 1))
    for path in root.rglob("*.jpg"):
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (IMAGE_WIDTH, IMAGE_HEIGHT))
    # The shared validator accepts it too.
    report = validate_dataset(root)
    assert report.valid, report.problems[:5]


def test_demo_size(default_set: tuple[Path, SynthSummary]) -> None:
    _, summary = default_set
    assert (summary.train_ids, summary.test_ids) == (30, 30)
    assert 15 <= summary.train_images / summary.train_ids <= 25
    assert 1 <= summary.query_images / summary.test_ids <= 6


def test_junk_and_distractors_only_in_gallery(default_set: tuple[Path, SynthSummary]) -> None:
    root, summary = default_set
    gallery = [n.pid for n in names(root, GALLERY_DIR)]
    assert gallery.count(JUNK_PID) == summary.junk > 0
    assert gallery.count(DISTRACTOR_PID) == summary.distractors > 0
    # Market's gallery: ~14% distractors, ~19% junk.
    assert 0.08 < summary.distractors / len(gallery) < 0.2
    assert 0.12 < summary.junk / len(gallery) < 0.26
    for folder in (TRAIN_DIR, QUERY_DIR):
        assert all(n.pid > 0 for n in names(root, folder))


def test_identities_split_like_market(default_set: tuple[Path, SynthSummary]) -> None:
    root, summary = default_set
    train = {n.pid for n in names(root, TRAIN_DIR)}
    query = {n.pid for n in names(root, QUERY_DIR)}
    gallery = {n.pid for n in names(root, GALLERY_DIR)} - {JUNK_PID, DISTRACTOR_PID}
    assert len(train) == summary.train_ids and len(query) == summary.test_ids
    assert not train & (query | gallery)
    assert query == gallery

    gallery_cams: dict[int, set[int]] = defaultdict(set)
    for n in names(root, GALLERY_DIR):
        gallery_cams[n.pid].add(n.camid)
    per_camera: dict[tuple[int, int], int] = defaultdict(int)
    for n in names(root, QUERY_DIR):
        assert gallery_cams[n.pid] - {n.camid}, f"query {n} has no cross-camera gallery match"
        per_camera[(n.pid, n.camid)] += 1
    assert set(per_camera.values()) <= {1, 2}
    # Each test identity is queried from every camera it was seen by.
    for pid in query:
        assert {c for p, c in per_camera if p == pid} == gallery_cams[pid]


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    first = generate_synthetic_market(tmp_path / "a", num_ids=10, seed=3, workers=1)
    second = generate_synthetic_market(tmp_path / "b", num_ids=10, seed=3, workers=2)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert first.train_images == second.train_images
    generate_synthetic_market(tmp_path / "c", num_ids=10, seed=4, workers=2)
    other = file_bytes(tmp_path / "c")
    mine = file_bytes(tmp_path / "a")
    assert other.keys() != mine.keys()
    assert not set(other.values()) & set(mine.values())


# sha256 over (path, bytes) of every file of the demo's set (60 ids, seed 0), with this
# repository's locked Pillow and NumPy.
DEMO_SET_DIGEST = "93e0ab42efbf2bd735c97fe744d06b33b660dc75fd5eea075adb8a36e6244572"


def test_the_demo_set_keeps_its_bytes(default_set: tuple[Path, SynthSummary]) -> None:
    """The demo metrics (README) are measured on these images: a change to the drawing code that
    moves one pixel must be a decision (new digest, new demo numbers), not an accident."""
    digest = hashlib.sha256()
    for name, data in file_bytes(default_set[0]).items():
        digest.update(name.encode() + b"\0" + data)
    assert digest.hexdigest() == DEMO_SET_DIGEST


def test_existing_dataset_is_rebuilt_atomically(tmp_path: Path) -> None:
    out = tmp_path / "market"
    generate_synthetic_market(out, num_ids=6, seed=1, workers=1)
    (out / TRAIN_DIR / "0001_c1s1_000001_01.jpg").write_bytes(b"stale")
    generate_synthetic_market(out, num_ids=6, seed=2, workers=1)
    rebuilt = file_bytes(out)
    generate_synthetic_market(tmp_path / "fresh", num_ids=6, seed=2, workers=1)
    assert rebuilt == file_bytes(tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "market"]


def test_refuses_to_replace_other_folders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ReidpipeError, match="not a synthetic dataset"):
        generate_synthetic_market(tmp_path, num_ids=6, seed=0, workers=1)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    # A real download has the layout but no marker: never replaced.
    real = tmp_path / "Market-1501-v15.09.15"
    for folder in FOLDERS:
        (real / folder).mkdir(parents=True)
    with pytest.raises(ReidpipeError, match="not a synthetic dataset"):
        generate_synthetic_market(real, num_ids=6, seed=0, workers=1)
    with pytest.raises(ReidpipeError, match="workers: got 0"):
        generate_synthetic_market(tmp_path / "new", num_ids=6, seed=0, workers=0)
    for bad in (3, 10_000):
        with pytest.raises(ReidpipeError, match=f"synthetic ids: got {bad}"):
            generate_synthetic_market(tmp_path / "new", num_ids=bad, seed=0, workers=1)
    assert not (tmp_path / "new").exists()


def band_colour_histograms(root: Path, folder: str) -> tuple[np.ndarray, list[MarketName]]:
    """Colour histograms of 8 horizontal bands of the image centre, after a grey-world
    normalisation that cancels each camera's gain (a classic hand-made ReID descriptor)."""
    parsed = names(root, folder)
    images = np.stack(
        [
            np.asarray(Image.open(root / folder / p.name), dtype=np.float32)
            for p in sorted((root / folder).iterdir())
        ]
    )[:, :, 20:44]
    images = images / images.mean(axis=(1, 2), keepdims=True) * 128
    levels = np.clip(images // 64, 0, 3).astype(np.int64)
    bins = levels[..., 0] * 16 + levels[..., 1] * 4 + levels[..., 2]
    bands = bins.reshape(len(images), 8, -1)
    hist = (
        np.stack([np.stack([np.bincount(band, minlength=64) for band in image]) for image in bands])
        .reshape(len(images), -1)
        .astype(np.float64)
    )
    return hist / hist.sum(axis=1, keepdims=True), parsed


def test_identity_is_learnable_but_not_trivial(default_set: tuple[Path, SynthSummary]) -> None:
    root, _ = default_set
    query, query_names = band_colour_histograms(root, QUERY_DIR)
    gallery, gallery_names = band_colour_histograms(root, GALLERY_DIR)
    g_pid = np.array([n.pid for n in gallery_names])
    g_cam = np.array([n.camid for n in gallery_names])
    hits, chance = [], []
    for feature, q in zip(query, query_names):
        keep = (g_pid != JUNK_PID) & ~((g_pid == q.pid) & (g_cam == q.camid))
        distance = np.abs(gallery[keep] - feature).sum(axis=1)
        hits.append(g_pid[keep][np.argmin(distance)] == q.pid)
        chance.append(np.mean(g_pid[keep] == q.pid))
    rank1 = float(np.mean(hits))
    assert rank1 > 8 * float(np.mean(chance))
    assert rank1 < 0.9


def run_cli(argv: list[str]) -> int:
    """Parse with the synth subcommand alone (the full CLI would import every stage)."""
    parser = argparse.ArgumentParser()
    synth_cli.register(parser.add_subparsers(), common_parser())
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_reads_defaults_from_params(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="reidpipe")
    out = tmp_path / "market"
    assert (
        run_cli(
            [
                "synth",
                "--out",
                str(out),
                "--params",
                str(PARAMS),
                "--set",
                "data.synthetic_ids=6",
                "--set",
                "data.synthetic_seed=5",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "3 train ids" in caplog.text
    caplog.clear()
    generate_synthetic_market(tmp_path / "direct", num_ids=6, seed=5, workers=1)
    assert file_bytes(out) == file_bytes(tmp_path / "direct")
    # --ids/--seed win over the params.
    assert (
        run_cli(
            [
                "synth",
                "--out",
                str(out),
                "--params",
                str(PARAMS),
                "--ids",
                "8",
                "--seed",
                "5",
                "--set",
                "data.synthetic_ids=6",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "4 train ids" in caplog.text
    with pytest.raises(ReidpipeError, match="data.synthetic_ids = 2 is out of range"):
        run_cli(["synth", "--out", str(out), "--params", str(PARAMS), "--ids", "2"])
