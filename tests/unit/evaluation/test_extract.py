"""Extraction with real JPEG files, real ONNX exports and ONNX Runtime, against the torch model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from support import ROOT

from reidpipe.cli import main
from reidpipe.data.manifest import write_manifest
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.embeddings import read_embeddings
from reidpipe.evaluation.extract import embed, image_sets_from_dataset, torch_forward
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.input_contract import Preprocess, preprocess_image
from reidpipe.market import format_name

HEIGHT, WIDTH = 32, 16
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RGB01 = Preprocess(HEIGHT, WIDTH, MEAN, STD)


class TinyNet(torch.nn.Module):
    """Not mirror-symmetric, so flip averaging changes its features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6 * 4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, (2, 2)).flatten(1))


class BgrScaledNet(torch.nn.Module):
    """The same network behind an input of raw BGR 0-255 pixels (normalisation in the graph)."""

    def __init__(self, net: TinyNet) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.flip(1) / 255.0 - self.mean) / self.std)


@pytest.fixture(scope="module")
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def onnx_models(net: TinyNet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    example = torch.randn(4, 3, HEIGHT, WIDTH)
    batch = torch.export.Dim("batch", min=1, max=1024)
    paths = {
        "dynamic": folder / "dynamic.onnx",
        "fixed": folder / "fixed.onnx",
        "bgr255": folder / "bgr255.onnx",
    }
    torch.onnx.export(
        net, (example,), paths["dynamic"], input_names=["images"], dynamic_shapes={"x": {0: batch}}
    )
    torch.onnx.export(net, (example,), paths["fixed"], input_names=["images"])
    torch.onnx.export(
        BgrScaledNet(net).eval(),
        (example,),
        paths["bgr255"],
        input_names=["images"],
        dynamic_shapes={"x": {0: batch}},
    )
    return paths


def write_jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(8, 4, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((64, 128), Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=90)


@pytest.fixture(scope="module")
def market_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Market-1501-layout folder: 4 queries and 7 gallery images (one junk, one distractor)."""
    root = tmp_path_factory.mktemp("market")
    names = {
        "query": [(1, 1), (2, 2), (3, 1), (4, 3)],
        "bounding_box_test": [(1, 2), (2, 1), (3, 3), (4, 1), (0, 2), (-1, 4), (2, 5)],
    }
    seed = 0
    for folder, ids in names.items():
        for frame, (pid, cam) in enumerate(ids):
            write_jpeg(root / folder / format_name(pid, cam, 1, frame, 1), seed)
            seed += 1
    return root


@pytest.fixture(scope="module")
def splits_dir(market_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("splits")
    sets = image_sets_from_dataset(market_dir)
    for name, frame in sets.items():
        write_manifest(frame.assign(seq=1, frame=range(len(frame))), out / f"{name}.csv")
    return out


def reference(net: torch.nn.Module, paths: list[str], flip: bool = False) -> np.ndarray:
    """Preprocessing done by hand with torch ops, then the torch model, then L2 normalisation."""
    images = []
    for path in paths:
        pixels = (
            np.asarray(
                Image.open(path).convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR),
                dtype=np.float32,
            )
            / 255.0
        )
        t = torch.from_numpy(pixels).permute(2, 0, 1)
        images.append((t - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1))
    batch = torch.stack(images)
    with torch.no_grad():
        feats = net(batch)
        if flip:
            feats = feats + net(batch.flip(3))
    return torch.nn.functional.normalize(feats, dim=1).numpy()


def run_extract(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "emb"
    params = ROOT / "params.yaml"
    code = main(
        [
            "extract",
            "--params",
            str(params),
            "--arch",
            "resnet50",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--set",
            f"model.input_height={HEIGHT}",
            "--set",
            f"model.input_width={WIDTH}",
            "--set",
            "extract.batch_size=3",
            "--set",
            "dataset.num_workers=2",
            *args,
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize("kind", ["dynamic", "fixed", "bgr255"])
def test_onnx_embeddings_equal_torch(
    kind: str, net: TinyNet, onnx_models: dict[str, Path], splits_dir: Path, tmp_path: Path
) -> None:
    extra = (
        [
            "--set",
            "extract.channel_order=BGR",
            "--set",
            "extract.input_scale=255",
            "--set",
            "dataset.pixel_mean=[0,0,0]",
            "--set",
            "dataset.pixel_std=[1,1,1]",
        ]
        if kind == "bgr255"
        else []
    )
    out = run_extract(
        tmp_path,
        "--onnx",
        str(onnx_models[kind]),
        "--splits",
        str(splits_dir),
        "--set",
        "extract.tao_json=true",
        *extra,
    )
    emb = read_embeddings(out)
    for subset, count in ((emb.query, 4), (emb.gallery, 7)):
        assert subset.features.shape == (count, 8) and subset.features.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(subset.features, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(
            subset.features, reference(net, list(subset.meta["path"])), atol=1e-5
        )
    assert emb.gallery.meta["pid"].tolist() == [-1, 0, 1, 2, 2, 3, 4]
    tao = json.loads((out / "gallery.json").read_text())
    assert [r["img_path"] for r in tao] == emb.gallery.meta["path"].tolist()
    np.testing.assert_allclose(
        np.array([r["embedding"] for r in tao]), emb.gallery.features, atol=1e-7
    )


def test_fixed_batch_is_discovered_and_padded(onnx_models: dict[str, Path]) -> None:
    forward, fixed = onnx_forward(onnx_models["fixed"], RGB01, device="cpu")
    assert fixed == 4
    _, dynamic = onnx_forward(onnx_models["dynamic"], RGB01, device="cpu")
    assert dynamic is None
    images = np.random.default_rng(0).normal(size=(6, 3, HEIGHT, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(forward(images)[4:], forward(images[4:]), atol=1e-6)
    assert forward(images).shape == (6, 8)


def test_flip_averaging_and_torch_path(
    net: TinyNet, onnx_models: dict[str, Path], splits_dir: Path, tmp_path: Path
) -> None:
    out = run_extract(
        tmp_path,
        "--onnx",
        str(onnx_models["dynamic"]),
        "--splits",
        str(splits_dir),
        "--set",
        "model.with_flip_feature=true",
    )
    emb = read_embeddings(out)
    paths = list(emb.query.meta["path"])
    flipped = reference(net, paths, flip=True)
    np.testing.assert_allclose(emb.query.features, flipped, atol=1e-5)
    assert np.abs(flipped - reference(net, paths)).max() > 1e-3
    torch_feats = embed(torch_forward(net, "cpu"), paths, RGB01, batch_size=3, flip=True)
    np.testing.assert_allclose(torch_feats, flipped, atol=1e-5)
    assert not (splits_dir / "query.json").exists() and not (out / "query.json").exists()


def test_dataset_mode_and_stray_files(
    market_dir: Path, onnx_models: dict[str, Path], tmp_path: Path
) -> None:
    out = run_extract(tmp_path, "--onnx", str(onnx_models["dynamic"]), "--dataset", str(market_dir))
    emb = read_embeddings(out)
    assert emb.query.meta["camid"].tolist() == [1, 2, 1, 3]
    stray = tmp_path / "stray"
    for sub in ("query", "bounding_box_test"):
        (stray / sub).mkdir(parents=True)
        for f in (market_dir / sub).iterdir():
            (stray / sub / f.name).write_bytes(f.read_bytes())
    (stray / "query" / "Thumbs.db").write_bytes(b"\0")
    assert len(image_sets_from_dataset(stray)["query"]) == 4
    (stray / "bounding_box_test" / "notes_c1.jpg").write_bytes(b"")
    with pytest.raises(ReidpipeError, match="notes_c1.jpg"):
        image_sets_from_dataset(stray)
    with pytest.raises(ReidpipeError, match="is not a Market-1501-layout dataset"):
        image_sets_from_dataset(stray / "query")


def test_preprocessing_values() -> None:
    pixels = np.array([[[255, 0, 51], [102, 204, 0]]], dtype=np.uint8)  # 1 x 2 RGB
    image = Image.fromarray(pixels)
    rgb = preprocess_image(image, Preprocess(1, 2, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5)))
    expected = (pixels.astype(np.float32) / 255.0 - 0.5) / np.array([0.5, 0.25, 0.5])
    np.testing.assert_allclose(rgb, expected.transpose(2, 0, 1), atol=1e-6)
    bgr = preprocess_image(image, Preprocess(1, 2, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5), "BGR", 255))
    caffe = (pixels.astype(np.float32) - 127.5) / np.array([0.5, 0.25, 0.5])
    np.testing.assert_allclose(bgr, caffe.transpose(2, 0, 1)[::-1], atol=1e-4)
    raw = preprocess_image(image, Preprocess(1, 2, (0, 0, 0), (1, 1, 1), "RGB", 255))
    np.testing.assert_allclose(raw, pixels.transpose(2, 0, 1).astype(np.float32))


def test_bad_inputs(onnx_models: dict[str, Path], splits_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReidpipeError, match=r"expects input shape .* axis 2 is 32, not 64"):
        onnx_forward(onnx_models["dynamic"], Preprocess(64, WIDTH, MEAN, STD), device="cpu")
    with pytest.raises(ReidpipeError, match="does not exist"):
        onnx_forward(tmp_path / "none.onnx", RGB01, device="cpu")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ReidpipeError, match="is not an ONNX model"):
        onnx_forward(garbage, RGB01, device="cpu")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"no jpeg")
    with pytest.raises(ReidpipeError, match="broken.jpg is a text file, not an image"):
        embed(torch_forward(TinyNet(), "cpu"), [str(broken)], RGB01, batch_size=2)
    frame = pd.read_csv(splits_dir / "query.csv")
    bad_splits = tmp_path / "splits"
    write_manifest(frame.iloc[:0], bad_splits / "query.csv")
    write_manifest(pd.read_csv(splits_dir / "gallery.csv"), bad_splits / "gallery.csv")
    code = main(
        [
            "extract",
            "--arch",
            "resnet50",
            "--onnx",
            str(onnx_models["dynamic"]),
            "--splits",
            str(bad_splits),
            "--out",
            str(tmp_path / "e"),
            "--set",
            f"model.input_height={HEIGHT}",
            "--set",
            f"model.input_width={WIDTH}",
            "--params",
            str(ROOT / "params.yaml"),
        ]
    )
    assert code == 2 and not (tmp_path / "e").exists()


def test_trained_model_folder(splits_dir: Path, tmp_path: Path) -> None:
    """``--model DIR`` loads the training stage's model.pt through reidpipe.model."""
    from reidpipe.params import load_params
    from reidpipe.training.model import MODEL_FILE, arch_to_dict, build_model

    params = ROOT / "params.yaml"
    overrides = [
        "model.backbone=resnet18",
        "model.pretrain_choice=''",
        "model.feat_dim=512",
        f"model.input_height={HEIGHT}",
        f"model.input_width={WIDTH}",
    ]
    cfg = load_params([params], overrides).arch("resnet50")
    torch.manual_seed(1)
    net = build_model(cfg.model, num_classes=5, weights=False).eval()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.save(
        {"state_dict": net.state_dict(), "arch": arch_to_dict(cfg), "num_classes": 5},
        model_dir / MODEL_FILE,
    )
    out = run_extract(
        tmp_path,
        "--model",
        str(model_dir),
        "--splits",
        str(splits_dir),
        *[a for o in overrides for a in ("--set", o)],
    )
    emb = read_embeddings(out)
    assert emb.query.features.shape == (4, 512)
    expected = reference(net, list(emb.gallery.meta["path"]))
    np.testing.assert_allclose(emb.gallery.features, expected, atol=1e-5)


def test_onnx_contract_that_differs_from_the_params_is_warned(tmp_path, caplog):
    from reidpipe.deploy.export_onnx import export_graph
    from reidpipe.evaluation.extract import model_forward
    from reidpipe.input_contract import contract_metadata
    from reidpipe.params import load_params

    root = ROOT
    arch = load_params(
        [root / "params.yaml"], ["model.input_height=32", "model.input_width=16"]
    ).arch("resnet50")
    params = load_params([root / "params.yaml"]).extract
    path = tmp_path / "m.onnx"
    export_graph(
        TinyNet().eval(),
        RGB01,
        path,
        opset=18,
        metadata=contract_metadata(Preprocess(HEIGHT, WIDTH, (0.5,) * 3, (0.5,) * 3), "tiny", 8),
    )
    model_forward(None, path, arch, params, "cpu")
    assert f"{path} expects" in caplog.text
    caplog.clear()
    export_graph(
        TinyNet().eval(),
        RGB01,
        path,
        opset=18,
        metadata=contract_metadata(Preprocess(HEIGHT, WIDTH, MEAN, STD), "tiny", 8),
    )
    model_forward(None, path, arch, params, "cpu")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_onnx_without_arch_takes_its_contract_else_the_shared_params(
    net: TinyNet, onnx_models: dict[str, Path], splits_dir: Path, tmp_path: Path
) -> None:
    """`extract --onnx FILE` needs no --arch: a reidpipe export's metadata gives the input (here
    32x16, unlike params.yaml's 256x128); a foreign ONNX file takes model.*/dataset.*."""
    from reidpipe.deploy.export_onnx import export_graph
    from reidpipe.input_contract import contract_metadata

    exported = tmp_path / "exported.onnx"
    export_graph(net, RGB01, exported, opset=18, metadata=contract_metadata(RGB01, "tiny", 8))
    params = str(ROOT / "params.yaml")
    runs = {
        "exported": (exported, []),
        "foreign": (
            onnx_models["dynamic"],
            ["--set", f"model.input_height={HEIGHT}", "--set", f"model.input_width={WIDTH}"],
        ),
    }
    for name, (model, extra) in runs.items():
        out = tmp_path / name
        assert (
            main(
                [
                    "extract",
                    "--params",
                    params,
                    "--onnx",
                    str(model),
                    "--splits",
                    str(splits_dir),
                    "--out",
                    str(out),
                    "--device",
                    "cpu",
                    *extra,
                ]
            )
            == 0
        )
        emb = read_embeddings(out)
        np.testing.assert_allclose(
            emb.gallery.features, reference(net, list(emb.gallery.meta["path"])), atol=1e-5
        )
