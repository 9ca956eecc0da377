"""The deployment package: Triton's config read back with Triton's own protobuf definitions and
checked against the ONNX as ONNX Runtime sees it; the DeepStream section checked by
preprocessing images the way DeepStream's tracker does and comparing with the pipeline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from google.protobuf import text_format
from PIL import Image
from support import ROOT
from support.model_card import cli_args, run_records, write_run_records
from torch import nn
from tritonclient.grpc import model_config_pb2

from reidpipe.cli import main
from reidpipe.data.fingerprint import fingerprint_splits
from reidpipe.data.manifest import read_split
from reidpipe.deploy.deepstream import DEEPSTREAM_CONFIG, DEEPSTREAM_DIR, deepstream_input
from reidpipe.deploy.export_onnx import export_onnx
from reidpipe.deploy.package import README_FILE, package
from reidpipe.deploy.tensorrt_build import build_trt
from reidpipe.deploy.triton import TRITON_CONFIG, TRITON_DIR, TRITON_PLAN
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.extract import embed
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import (
    INT8_FILE,
    MODEL_CARD_JSON,
    MODEL_CARD_MARKDOWN,
    ONNX_FILE,
    PACKAGE_MANIFEST_FILE,
    TRT_ENGINE_FILE,
    TRT_STATUS_FILE,
)
from reidpipe.input_contract import Preprocess
from reidpipe.params import load_params
from reidpipe.report.document import Paragraph
from reidpipe.report.render import render_html
from reidpipe.report.sections import _package_blocks

DEMO = [str(ROOT / "params.yaml"), str(ROOT / "config" / "demo.yaml")]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Triton's DataType names for ONNX Runtime's type strings (written out here, independently).
ORT_TO_TRITON = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


@pytest.fixture(scope="module")
def params():
    base = load_params(DEMO)
    return dataclasses.replace(
        base, export=dataclasses.replace(base.export, fp16=False, int8=False)
    )


@pytest.fixture(scope="module")
def record_files(params, splits, tmp_path_factory) -> dict[str, Path]:
    return write_run_records(tmp_path_factory.mktemp("records"), splits, params, "resnet_demo")


@pytest.fixture(scope="module")
def records(record_files):
    return run_records(record_files)


RECIPE = {"name": "tiny", "source": "user-defined (params archs.tiny)", "published": False}


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 24),
    ).eval()


def exported(params, splits, root: Path, pre: Preprocess, export=None) -> tuple[Path, Path]:
    """A real export-onnx folder and a real build-trt folder (skipped here: no TensorRT)."""
    onnx_dir, trt_dir = root / "onnx", root / "tensorrt"
    export_onnx(
        net(),
        pre,
        "tiny",
        splits,
        onnx_dir,
        export or params.export,
        params.evaluate,
        batch_size=16,
    )
    build_trt("tiny", onnx_dir, splits, trt_dir, params.deploy, params.evaluate, batch_size=16)
    return onnx_dir, trt_dir


def deepstream_embeddings(section: dict, folder: Path, paths: list[str]) -> np.ndarray:
    """What DeepStream's tracker computes, from its config alone: resize to inferDims, channels
    per colorFormat, netScaleFactor * (pixel - offsets), the ONNX, L2 normalisation."""
    reid = section["ReID"]
    channels, height, width = reid["inferDims"]
    batch = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(
                image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR),
                dtype=np.float32,
            )
        if reid["colorFormat"] == 1:
            pixels = pixels[:, :, ::-1]
        pixels = reid["netScaleFactor"] * (pixels - np.asarray(reid["offsets"], np.float32))
        batch.append(pixels.transpose(2, 0, 1))
    session = ort.InferenceSession(str(folder / reid["onnxFile"]))
    out = session.run(None, {session.get_inputs()[0].name: np.stack(batch).astype(np.float32)})[0]
    assert reid["addFeatureNormalization"] == 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_tao_deployable_values():
    """TAO's ResNet deployable: offsets [123.675, 116.28, 103.53], netScaleFactor 0.01735207."""
    ds = deepstream_input(Preprocess(256, 128, IMAGENET_MEAN, (0.226,) * 3), fold=False)
    assert ds.offsets == (123.675, 116.28, 103.53) and ds.channel_scale is None
    assert ds.net_scale_factor == pytest.approx(0.01735207, abs=5e-9)
    bgr = deepstream_input(Preprocess(256, 128, IMAGENET_MEAN, (0.226,) * 3, "BGR"), fold=False)
    assert bgr.offsets == (103.53, 116.28, 123.675)  # offsets follow the network's channels


def test_per_channel_std_is_refused_without_folding():
    with pytest.raises(
        ReidpipeError,
        match=r"DeepStream takes one netScaleFactor but pixel_std "
        r"\[0.229, 0.224, 0.225\].*deploy\.deepstream_fold_"
        "normalisation: true",
    ):
        deepstream_input(Preprocess(256, 128, IMAGENET_MEAN, IMAGENET_STD), fold=False)


def test_triton_repository_parses_with_tritons_protobuf(params, splits, record_files, tmp_path):
    pre = Preprocess(32, 16, (0.5,) * 3, (0.5,) * 3)
    onnx_dir, trt_dir = exported(params, splits, tmp_path, pre)
    out = tmp_path / "deploy"
    assert (
        main(
            [
                "package",
                "--params",
                *DEMO,
                "--arch",
                "resnet_demo",
                "--onnx-dir",
                str(onnx_dir),
                "--trt-dir",
                str(trt_dir),
                *cli_args(record_files),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    model_dir = out / TRITON_DIR / "resnet_demo"
    config = text_format.Parse(
        (model_dir / TRITON_CONFIG).read_text(), model_config_pb2.ModelConfig()
    )
    assert config.name == "resnet_demo" and config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == ONNX_FILE
    assert config.max_batch_size == params.deploy.max_batch > 0
    assert config.HasField("dynamic_batching")
    served = model_dir / "1" / ONNX_FILE
    assert served.read_bytes() == (onnx_dir / ONNX_FILE).read_bytes()
    session = ort.InferenceSession(str(served))
    for declared, actual in (
        (config.input, session.get_inputs()),
        (config.output, session.get_outputs()),
    ):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, value in zip(declared, actual):
            assert model_config_pb2.DataType.Name(tensor.data_type) == ORT_TO_TRITON[value.type]
            assert isinstance(value.shape[0], str)  # dynamic batch, left out of Triton's dims
            assert list(tensor.dims) == value.shape[1:]
    assert list(config.input[0].dims) == [3, 32, 16] and list(config.output[0].dims) == [24]
    manifest = json.loads((out / PACKAGE_MANIFEST_FILE).read_text())
    assert (
        manifest["tensorrt"]["status"]
        == json.loads((trt_dir / TRT_STATUS_FILE).read_text())["status"]
    )
    readme = (out / README_FILE).read_text()
    for fact in (
        "input `input`: TYPE_FP32, shape batch x 3 x 32 x 16",
        "[0.5, 0.5, 0.5]",
        "RGB",
        "output `embedding`: TYPE_FP32, shape batch x 24",
        "**not**\n  L2-normalised",
        "tritonserver --model-repository",
    ):
        assert fact in readme
    card = json.loads((out / MODEL_CARD_JSON).read_text())
    assert card["architecture"]["recipe"] == {
        "name": "resnet_demo",
        "published": False,
        "source": "user-defined (params archs.resnet_demo)",
    }
    assert (out / MODEL_CARD_MARKDOWN).read_text().startswith("# Model card: resnet_demo\n")


CARD_SECTIONS = [
    "model_overview",
    "architecture",
    "training_data",
    "evaluation_data",
    "metrics",
    "open_set_verification",
    "inference_and_deployment",
    "environment",
    "limitations",
    "ethical_considerations",
]


def test_package_writes_the_model_card(params, splits, record_files, records, tmp_path):
    """The card's sections, each with the values of the files it was built from; without
    verification figures it says so, and the README recommends no threshold."""
    onnx_dir, trt_dir = exported(
        params, splits, tmp_path, Preprocess(32, 16, (0.5,) * 3, (0.5,) * 3)
    )
    out = tmp_path / "deploy"
    package("tiny", onnx_dir, trt_dir, out, params.deploy, records, RECIPE)
    card = json.loads((out / MODEL_CARD_JSON).read_text())
    assert list(card) == CARD_SECTIONS
    markdown = (out / MODEL_CARD_MARKDOWN).read_text()
    for heading in (
        "Model overview",
        "Architecture",
        "Training data",
        "Evaluation data and protocol",
        "Metrics",
        "Open-set verification",
        "Inference and deployment formats",
        "Environment",
        "Limitations",
        "Ethical considerations",
    ):
        assert f"\n## {heading}\n" in markdown

    config = yaml.safe_load(record_files["config"].read_text())
    arch = card["architecture"]
    assert (arch["backbone"], arch["feat_dim"], arch["bnneck"], arch["input"]) == (
        config["model"]["backbone"],
        24,
        config["model"]["neck"] == "bnneck",
        {
            "channels": 3,
            "height": config["model"]["input_height"],
            "width": config["model"]["input_width"],
        },
    )
    assert arch["recipe"] == RECIPE and arch["pretrained_weights"] == "none"
    assert card["environment"] == config["environment"]

    test_set = fingerprint_splits(splits)
    assert card["evaluation_data"]["dataset"] == test_set
    trained = card["training_data"]["sources"]["market1501"]
    assert trained["fingerprint"] == test_set
    assert trained["train_images"] == len(read_split(splits, "train"))
    assert test_set["splits"]["train"]["sha256"] in markdown
    assert test_set["splits"]["gallery"]["sha256"] in markdown
    assert f"unrecognised ({test_set['version']['reason']})" in markdown
    assert card["training_data"]["validation"]["valid"] is True

    metrics = json.loads(record_files["metrics"].read_text())
    assert card["metrics"]["reranked"]["mAP"] == metrics["reranked"]["mAP"]
    assert "| plain | 41.2 | 23.2 | 47.2 | 68.8 | 80.0 | 86.4 |" in markdown
    assert "| reranked | 45.8 |" in markdown
    assert card["evaluation_data"]["re_ranking"] == {"k1": 20, "k2": 6, "lambda_value": 0.3}

    parity = json.loads((onnx_dir / "parity.json").read_text())
    fp32 = card["inference_and_deployment"]["formats"]["onnx_fp32"]
    assert fp32["min_cosine"] == min(r["min_cosine"] for r in parity["batch_parity"])
    assert fp32["retrieval_delta_points"] == parity["retrieval"]["delta_points"]
    assert (
        card["inference_and_deployment"]["formats"]["tensorrt"]["status"]
        == json.loads((trt_dir / TRT_STATUS_FILE).read_text())["status"]
    )

    verification = json.loads(record_files["verification"].read_text())
    recommended = card["open_set_verification"]["recommended"]
    assert (recommended["far"], recommended["threshold"]) == (1e-3, 0.2468)
    assert len(card["open_set_verification"]["operating_points"]) == len(
        verification["operating_points"]
    )
    readme = (out / README_FILE).read_text()
    assert (
        "is <= 0.2468 (FAR 0.001 on the test set: 33.0% of true pairs accepted, achieved "
        "FAR 0.00056, 100.0% of open-set queries rejected)"
    ) in readme
    assert "| 0.0001 | none: 1800 impostor pairs: too few | - | - | - |" in markdown
    manifest = json.loads((out / PACKAGE_MANIFEST_FILE).read_text())
    assert manifest["model_card"] == {"markdown": MODEL_CARD_MARKDOWN, "json": MODEL_CARD_JSON}
    linked = _package_blocks(manifest, "../results/tiny/deploy")[0].text  # the report's link
    assert (
        "Model card: [MODEL_CARD.md](../results/tiny/deploy/MODEL_CARD.md) "
        "([JSON](../results/tiny/deploy/model_card.json))"
    ) in linked
    assert '<a href="../results/tiny/deploy/MODEL_CARD.md">MODEL_CARD.md</a>' in render_html(
        "r", [Paragraph(linked)], tmp_path
    )

    without = run_records({k: v for k, v in record_files.items() if k != "verification"})
    package("tiny", onnx_dir, trt_dir, tmp_path / "plain", params.deploy, without, RECIPE)
    card = json.loads((tmp_path / "plain" / MODEL_CARD_JSON).read_text())
    assert list(card) == CARD_SECTIONS and card["open_set_verification"] is None
    assert "Not measured" in (tmp_path / "plain" / MODEL_CARD_MARKDOWN).read_text()
    assert (
        "Recommended: none: `reidpipe evaluate` measured no verification figures"
        in (tmp_path / "plain" / README_FILE).read_text()
    )


def test_built_engine_is_served_as_model_plan(params, splits, records, tmp_path):
    """When build-trt built an engine, Triton serves it with the TensorRT backend."""
    pre = Preprocess(32, 16, (0.5,) * 3, (0.5,) * 3)
    onnx_dir, trt_dir = exported(params, splits, tmp_path, pre)
    status = json.loads((trt_dir / TRT_STATUS_FILE).read_text())
    (trt_dir / TRT_STATUS_FILE).write_text(json.dumps({**status, "status": "built"}))
    (trt_dir / TRT_ENGINE_FILE).write_bytes(b"serialized engine bytes")
    out = tmp_path / "deploy"
    package("tiny", onnx_dir, trt_dir, out, params.deploy, records, RECIPE)
    config = text_format.Parse(
        (out / TRITON_DIR / "tiny" / TRITON_CONFIG).read_text(), model_config_pb2.ModelConfig()
    )
    assert (config.platform, config.default_model_filename) == ("tensorrt_plan", TRITON_PLAN)
    assert (
        out / TRITON_DIR / "tiny" / "1" / TRITON_PLAN
    ).read_bytes() == b"serialized engine bytes"

    (trt_dir / TRT_STATUS_FILE).write_text('{"status": "built"')  # a truncated status
    with pytest.raises(ReidpipeError, match=f"{TRT_STATUS_FILE} is not valid JSON"):
        package("tiny", onnx_dir, trt_dir, tmp_path / "deploy2", params.deploy, records, RECIPE)


@pytest.mark.parametrize(
    "pre, folded",
    [
        (Preprocess(32, 16, IMAGENET_MEAN, IMAGENET_STD), True),
        (Preprocess(32, 16, (0.5,) * 3, (0.5,) * 3), False),
        (Preprocess(32, 16, IMAGENET_MEAN, IMAGENET_STD, channel_order="BGR"), True),
        (Preprocess(32, 16, IMAGENET_MEAN, (1.0,) * 3, input_scale=255), False),  # Caffe-style
    ],
    ids=["imagenet", "uniform-std", "bgr", "0-255"],
)
def test_deepstream_preprocessing_gives_the_pipelines_embeddings(
    params, splits, records, tmp_path, pre, folded
):
    onnx_dir, trt_dir = exported(params, splits, tmp_path, pre)
    out = tmp_path / "deploy"
    package("tiny", onnx_dir, trt_dir, out, params.deploy, records, RECIPE)
    ds_dir = out / DEEPSTREAM_DIR
    section = yaml.safe_load((ds_dir / DEEPSTREAM_CONFIG).read_text())
    reid = section["ReID"]
    assert reid["inferDims"] == [3, 32, 16] and reid["reidFeatureSize"] == 24
    assert reid["batchSize"] == params.deploy.max_batch
    assert reid["workspaceSize"] == params.deploy.workspace_mib
    assert reid["networkMode"] == 1 and reid["keepAspc"] == 0 and reid["inputOrder"] == 0
    assert reid["colorFormat"] == (1 if pre.channel_order == "BGR" else 0)
    manifest = json.loads((out / PACKAGE_MANIFEST_FILE).read_text())
    assert (manifest["deepstream"]["folded_channel_scale"] is not None) == folded
    if folded:
        assert reid["netScaleFactor"] == 1.0
    paths = list(read_split(splits, "query")["path"])
    pipeline = embed(onnx_forward(onnx_dir / ONNX_FILE, pre, "cpu")[0], paths, pre, 16)
    deepstream = deepstream_embeddings(section, ds_dir, paths)
    assert (deepstream * pipeline).sum(1).min() >= 0.9999


def test_int8_precision_uses_the_int8_graph(params, splits, records, tmp_path):
    pre = Preprocess(32, 16, IMAGENET_MEAN, IMAGENET_STD)
    export = dataclasses.replace(
        params.export,
        int8=True,
        int8_calibration_images=16,
        int8_min_cosine=0.5,
        int8_max_metric_delta=100.0,
    )
    onnx_dir, trt_dir = exported(params, splits, tmp_path, pre, export)
    deploy = dataclasses.replace(params.deploy, precision="int8")
    out = tmp_path / "deploy"
    package("tiny", onnx_dir, trt_dir, out, deploy, records, RECIPE)
    section = yaml.safe_load((out / DEEPSTREAM_DIR / DEEPSTREAM_CONFIG).read_text())
    assert section["ReID"]["networkMode"] == 2 and section["ReID"]["onnxFile"] == INT8_FILE
    paths = list(read_split(splits, "query")["path"])
    pipeline = embed(onnx_forward(onnx_dir / INT8_FILE, pre, "cpu")[0], paths, pre, 16)
    deepstream = deepstream_embeddings(section, out / DEEPSTREAM_DIR, paths)
    assert (deepstream * pipeline).sum(1).min() >= 0.999  # INT8: one rounding step apart

    (onnx_dir / INT8_FILE).unlink()
    parity = json.loads((onnx_dir / "parity.json").read_text())
    parity["int8"] = {**parity["int8"], "status": "failed", "reason": "INT8 gate failed: X"}
    (onnx_dir / "parity.json").write_text(json.dumps(parity))
    with pytest.raises(
        ReidpipeError, match="precision is int8 but .* has no model_int8.onnx: INT8 gate failed: X"
    ):
        package("tiny", onnx_dir, trt_dir, tmp_path / "deploy2", deploy, records, RECIPE)
    assert not (tmp_path / "deploy2").exists()
