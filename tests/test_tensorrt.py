"""build-trt: the parts that need no GPU for real (profile, plan, skip/required/off, status file);
the engine build itself runs only where TensorRT and a CUDA device are present."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from reidpipe.cli import main
from reidpipe.deploy.export_onnx import export_onnx
from reidpipe.deploy.tensorrt_build import (
    CACHE_FILE,
    _engine_parity,
    build_plan,
    build_trt,
    latency_batch_sizes,
    profile_shapes,
    unavailable_reason,
)
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import (
    FP16_FILE,
    INT8_FILE,
    ONNX_FILE,
    TRT_ENGINE_FILE,
    TRT_STATUS_FILE,
)
from reidpipe.input_contract import Preprocess
from reidpipe.params import DeployParams, load_params

ROOT = Path(__file__).resolve().parents[1]
DEMO = [str(ROOT / "params.yaml"), str(ROOT / "config" / "demo.yaml")]
REASON = unavailable_reason()
needs_trt = pytest.mark.skipif(REASON is not None, reason=f"needs TensorRT and CUDA: {REASON}")
needs_no_trt = pytest.mark.skipif(
    REASON is None, reason="TensorRT and a CUDA device are present: the skip path cannot happen")
PRE = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.fixture(scope="module")
def params():
    return load_params(DEMO)


@pytest.fixture(scope="module")
def onnx_dir(params, splits, tmp_path_factory) -> Path:
    """A real export-onnx folder of a small conv net."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 16)).eval()
    out = tmp_path_factory.mktemp("export") / "onnx"
    export_onnx(net, PRE, "tiny", splits, out, params.export, params.evaluate, batch_size=32)
    return out


def test_profile_shapes_follow_deploy_params():
    shapes = profile_shapes(DeployParams(min_batch=1, opt_batch=16, max_batch=64),
                            Preprocess(height=128, width=64, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert shapes == {"min": [1, 3, 128, 64], "opt": [16, 3, 128, 64], "max": [64, 3, 128, 64]}
    with pytest.raises(ReidpipeError, match="min_batch <= opt_batch <= max_batch, got 8/4/64"):
        profile_shapes(DeployParams(min_batch=8, opt_batch=4, max_batch=64), PRE)


def test_latency_sizes_stay_inside_the_profile():
    deploy = DeployParams(min_batch=2, opt_batch=16, max_batch=32)
    assert latency_batch_sizes(deploy) == [2, 16, 32]
    assert latency_batch_sizes(deploy, [1, 7, 32, 64]) == [2, 7, 16, 32]


def test_build_plan_per_tensorrt_version():
    # TensorRT 10 (BuilderFlag.FP16 exists): FP32 graph + flag; 11: the FP16 graph, no flag;
    # INT8 on both: the QDQ graph, strongly typed, no precision flag (explicit quantization)
    assert build_plan(True, "fp16") == (ONNX_FILE, True, False)
    assert build_plan(False, "fp16") == (FP16_FILE, False, False)
    assert build_plan(True, "fp32") == (ONNX_FILE, False, False)
    assert build_plan(False, "fp32") == (ONNX_FILE, False, False)
    assert build_plan(True, "int8") == (INT8_FILE, False, True)
    assert build_plan(False, "int8") == (INT8_FILE, False, True)


@needs_no_trt
def test_auto_without_tensorrt_writes_skipped_status(onnx_dir, splits, tmp_path):
    out = tmp_path / "tensorrt"
    assert main(["build-trt", "--params", *DEMO, "--arch", "resnet_demo", "--onnx-dir",
                 str(onnx_dir), "--splits", str(splits), "--out", str(out)]) == 0
    status = json.loads((out / TRT_STATUS_FILE).read_text())
    assert status["status"] == "skipped" and status["mode"] == "auto"
    assert status["reason"] == REASON
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "tensorrt not importable: No module named 'tensorrt'" in status["reason"]
        assert status["versions"]["tensorrt"] is None
    if not torch.cuda.is_available():
        assert "no CUDA device" in status["reason"]
    assert status["latency"] == [] and status["parity"] is None and status["files"] == {}
    assert [p.name for p in out.iterdir()] == [TRT_STATUS_FILE]


@needs_no_trt
def test_required_fails_with_the_reason(onnx_dir, splits, tmp_path, capsys):
    out = tmp_path / "tensorrt"
    assert main(["build-trt", "--params", *DEMO, "--set", "deploy.tensorrt=required", "--arch",
                 "resnet_demo", "--onnx-dir", str(onnx_dir), "--splits", str(splits),
                 "--out", str(out)]) == 2
    assert f"deploy.tensorrt is 'required' but {REASON}" in capsys.readouterr().err
    assert not out.exists()


def test_off_writes_disabled_status_without_inputs(params, tmp_path):
    deploy = dataclasses.replace(params.deploy, tensorrt="off")
    status = build_trt("resnet_demo", tmp_path / "missing", tmp_path / "missing", tmp_path / "t",
                       deploy, params.evaluate, batch_size=32)
    assert json.loads((tmp_path / "t" / TRT_STATUS_FILE).read_text()) == status
    assert status["status"] == "disabled" and status["reason"] == "deploy.tensorrt is 'off'"


def test_missing_onnx_folder_is_named(params, splits, tmp_path):
    with pytest.raises(ReidpipeError, match=r"missing/parity.json does not exist"):
        build_trt("resnet_demo", tmp_path / "missing", splits, tmp_path / "t", params.deploy,
                  params.evaluate, batch_size=32)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engine_parity_block(onnx_dir, splits, params, precision):
    """An engine's parity block, with ONNX Runtime on the graph the engine would be built from
    standing in for the TensorRT runner (that needs CUDA): the same embeddings give zero deltas
    and cosine 1; an INT8 engine is compared with the INT8 graph."""
    reference = INT8_FILE if precision == "int8" else ONNX_FILE
    runner, _ = onnx_forward(onnx_dir / reference, PRE)
    deploy = dataclasses.replace(params.deploy, precision=precision)
    parity = _engine_parity(runner, onnx_dir, PRE, splits, deploy, params.evaluate,
                            batch_size=32, flip=False)
    assert parity["reference"] == f"onnxruntime {reference}"
    retrieval = parity["retrieval"]
    assert retrieval["delta_points"] == {"mAP": 0.0, "rank1": 0.0}
    assert retrieval["min_cosine"] > 1 - 1e-6
    assert set(retrieval) >= {"onnxruntime", "tensorrt", "num_query", "num_gallery"}


@needs_trt
def test_real_engine_build_swin(params, splits, tmp_path):
    torch.manual_seed(0)
    net = timm.create_model("swin_tiny_patch4_window7_224", img_size=(128, 64), embed_dim=32,
                            depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_classes=0).eval()
    pre = Preprocess(height=128, width=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    export_onnx(net, pre, "swin_demo", splits, tmp_path / "onnx", params.export, params.evaluate,
                batch_size=64)
    out = tmp_path / "tensorrt"
    status = build_trt("swin_demo", tmp_path / "onnx", splits, out, params.deploy,
                       params.evaluate, batch_size=64)
    assert status["status"] == "built" and status["timing_cache_reused"] is False
    assert {p.name for p in out.iterdir()} == {TRT_STATUS_FILE, TRT_ENGINE_FILE, CACHE_FILE}
    assert [r["batch_size"] for r in status["latency"]] == [1, 16, 64]
    assert status["parity"]["retrieval"]["delta_points"]["mAP"] <= params.deploy.max_metric_delta
    assert min(r["min_cosine"] for r in status["parity"]["batch_parity"]) > 0.99
    again = build_trt("swin_demo", tmp_path / "onnx", splits, out, params.deploy,
                      params.evaluate, batch_size=64)
    assert again["timing_cache_reused"] is True
