"""build-trt: profile, plan, skip/required/off and the status file without TensorRT; the build,
inference, latency, timing cache and parity gate on a fake TensorRT (tests/support/fake_tensorrt.py);
a real engine where TensorRT and a CUDA device are present."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
from support import ROOT
from support.fake_tensorrt import DataType, FakeTensorRT, TimingCache
from torch import nn

from reidpipe.cli import main
from reidpipe.deploy import tensorrt_build
from reidpipe.deploy.export_onnx import export_onnx
from reidpipe.deploy.onnx_io import INPUT_NAME
from reidpipe.deploy.tensorrt_build import (
    CACHE_FILE,
    build_plan,
    build_trt,
    latency_batch_sizes,
    profile_shapes,
    unavailable_reason,
)
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    FP16_FILE,
    INT8_FILE,
    ONNX_FILE,
    OUTPUT_MARKER_FILE,
    TRT_ENGINE_FILE,
    TRT_STATUS_FILE,
)
from reidpipe.input_contract import Preprocess
from reidpipe.params import DeployParams, load_params

DEMO = [str(ROOT / "params.yaml"), str(ROOT / "config" / "demo.yaml")]
REASON = unavailable_reason()
needs_trt = pytest.mark.skipif(REASON is not None, reason=f"needs TensorRT and CUDA: {REASON}")
needs_no_trt = pytest.mark.skipif(
    REASON is None, reason="TensorRT and a CUDA device are present: the skip path cannot happen"
)
PRE = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)


@pytest.fixture(scope="module")
def params():
    return load_params(DEMO)


@pytest.fixture(scope="module")
def onnx_dir(params, splits, tmp_path_factory) -> Path:
    """A real export-onnx folder of a small conv net."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 16),
    ).eval()
    out = tmp_path_factory.mktemp("export") / "onnx"
    export_onnx(net, PRE, "tiny", splits, out, params.export, params.evaluate, batch_size=32)
    return out


def test_profile_shapes_follow_deploy_params():
    shapes = profile_shapes(
        DeployParams(min_batch=1, opt_batch=16, max_batch=64),
        Preprocess(height=128, width=64, mean=(0.5,) * 3, std=(0.5,) * 3),
    )
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
    assert build_cli(onnx_dir, splits, out) == 0
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
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER_FILE, TRT_STATUS_FILE]


@needs_no_trt
def test_required_fails_with_the_reason(onnx_dir, splits, tmp_path, capsys):
    out = tmp_path / "tensorrt"
    assert build_cli(onnx_dir, splits, out, "deploy.tensorrt=required") == 2
    assert f"deploy.tensorrt is 'required' but {REASON}" in capsys.readouterr().err
    assert not out.exists()


def test_off_writes_disabled_status_without_inputs(params, tmp_path):
    deploy = dataclasses.replace(params.deploy, tensorrt="off")
    status = build_trt(
        "resnet_demo",
        tmp_path / "missing",
        tmp_path / "missing",
        tmp_path / "t",
        deploy,
        params.evaluate,
        batch_size=32,
    )
    assert json.loads((tmp_path / "t" / TRT_STATUS_FILE).read_text()) == status
    assert status["status"] == "disabled" and status["reason"] == "deploy.tensorrt is 'off'"


def test_missing_onnx_folder_is_named(params, splits, tmp_path):
    with pytest.raises(ReidpipeError, match=r"missing/parity.json does not exist"):
        build_trt(
            "resnet_demo",
            tmp_path / "missing",
            splits,
            tmp_path / "t",
            params.deploy,
            params.evaluate,
            batch_size=32,
        )


# ------------------------------------------------------------------ the stage on a fake TensorRT
# tests/support/fake_tensorrt.py stands in for TensorRT 10/11 and a CUDA device: the stage builds, runs,
# times and gates an "engine" that is the parsed ONNX graph under ONNX Runtime, fed through the
# same raw tensor addresses as a real one.


@pytest.fixture()
def fake_trt(monkeypatch) -> Callable[..., FakeTensorRT]:
    """Installs a FakeTensorRT with the given behaviour for the test; returns it."""
    monkeypatch.setattr(tensorrt_build, "LATENCY_WARMUP", 1)
    monkeypatch.setattr(tensorrt_build, "LATENCY_ITERATIONS", 3)
    return lambda **behaviour: FakeTensorRT(**behaviour).install(monkeypatch)


def build_cli(onnx_dir: Path, splits: Path, out: Path, *settings: str) -> int:
    sets = [arg for setting in settings for arg in ("--set", setting)]
    return main(
        [
            "build-trt",
            "--params",
            *DEMO,
            *sets,
            "--arch",
            "resnet_demo",
            "--onnx-dir",
            str(onnx_dir),
            "--splits",
            str(splits),
            "--out",
            str(out),
        ]
    )


def test_fp16_engine_on_tensorrt10_is_built_timed_checked_and_cached(
    onnx_dir, splits, params, tmp_path, fake_trt
):
    fake = fake_trt()
    out = tmp_path / "tensorrt"
    assert build_cli(onnx_dir, splits, out, "deploy.tensorrt=required") == 0
    status = json.loads((out / TRT_STATUS_FILE).read_text())
    shapes = profile_shapes(params.deploy, PRE)
    (build,) = fake.builds
    assert build == {
        "onnx": ONNX_FILE,
        "strongly_typed": False,
        "fp16_flag": True,
        "workspace_bytes": params.deploy.workspace_mib << 20,
        "profiles": [{INPUT_NAME: [shapes["min"], shapes["opt"], shapes["max"]]}],
        "timing_cache": True,
    }
    assert status["status"] == "built" and status["reason"] is None
    assert status["versions"]["tensorrt"] == "10.0.0 (fake)"
    assert status["versions"]["cuda_device"] == fake.device
    assert (status["onnx"], status["builder_fp16_flag"], status["strongly_typed"]) == (
        ONNX_FILE,
        True,
        False,
    )
    assert status["profile"] == {"input": "batch x 3 x H x W", **shapes}
    assert [row["batch_size"] for row in status["latency"]] == [1, 16, 64]
    assert all(row["median_ms"] > 0 for row in status["latency"])
    assert status["files"] == {
        p.name: p.stat().st_size
        for p in out.iterdir()
        if p.name not in (TRT_STATUS_FILE, OUTPUT_MARKER_FILE)
    }
    assert set(status["files"]) == {TRT_ENGINE_FILE, CACHE_FILE}
    assert status["timing_cache_reused"] is False
    parity = status["parity"]
    assert parity["reference"] == f"onnxruntime {ONNX_FILE}"
    assert [row["batch_size"] for row in parity["batch_parity"]] == [1, 16, 64]
    for row in parity["batch_parity"]:  # the engine's own FP16 outputs reached the check
        assert 0 < row["max_abs_diff"] < 1e-2 and row["min_cosine"] > 0.999
    retrieval = parity["retrieval"]
    assert retrieval["num_query"] == 19 and retrieval["num_gallery"] == 108
    assert all(d <= params.deploy.max_metric_delta for d in retrieval["delta_points"].values())

    # the next build seeds itself with the timing cache; one from another GPU is not accepted
    assert build_cli(onnx_dir, splits, out) == 0
    assert json.loads((out / TRT_STATUS_FILE).read_text())["timing_cache_reused"] is True
    (out / CACHE_FILE).write_bytes(TimingCache("another GPU").serialize())
    assert build_cli(onnx_dir, splits, out) == 0
    assert json.loads((out / TRT_STATUS_FILE).read_text())["timing_cache_reused"] is False


@pytest.mark.parametrize(
    "version, precision, plan",
    [
        (10, "fp32", (ONNX_FILE, False, False)),
        (10, "int8", (INT8_FILE, False, True)),
        (11, "fp16", (FP16_FILE, False, True)),  # TensorRT 11: every network is strongly typed
        (11, "int8", (INT8_FILE, False, True)),
    ],
)
def test_engine_is_built_from_the_graph_of_its_version_and_precision(
    onnx_dir, splits, params, tmp_path, fake_trt, version, precision, plan
):
    fake = fake_trt(version=version)
    deploy = dataclasses.replace(params.deploy, precision=precision)
    status = build_trt(
        "tiny", onnx_dir, splits, tmp_path / "t", deploy, params.evaluate, batch_size=32
    )
    (build,) = fake.builds
    assert (build["onnx"], build["fp16_flag"], build["strongly_typed"]) == plan
    assert status["onnx"] == plan[0]
    reference = INT8_FILE if precision == "int8" else ONNX_FILE
    assert status["parity"]["reference"] == f"onnxruntime {reference}"
    retrieval = status["parity"]["retrieval"]
    if plan[0] == reference:  # the engine runs the reference's own graph at full precision
        assert retrieval["delta_points"] == {"mAP": 0.0, "rank1": 0.0}
        assert retrieval["min_cosine"] > 1 - 1e-6
    else:  # TensorRT 11 FP16: the FP16 graph against the FP32 one
        assert retrieval["min_cosine"] > 0.999
        assert all(row["max_abs_diff"] > 0 for row in status["parity"]["batch_parity"])


def test_batches_below_the_profile_are_padded_to_its_min_batch(
    onnx_dir, splits, params, tmp_path, fake_trt
):
    """19 queries in chunks of 8 leave 3, below a min batch of 4, which an engine refuses: the
    chunk is padded to 4 and the padding's outputs dropped, so the embeddings stay exact."""
    fake_trt()
    deploy = dataclasses.replace(
        params.deploy, precision="fp32", min_batch=4, opt_batch=8, max_batch=8
    )
    status = build_trt(
        "tiny", onnx_dir, splits, tmp_path / "t", deploy, params.evaluate, batch_size=32
    )
    assert [row["batch_size"] for row in status["latency"]] == [4, 8]
    assert status["parity"]["retrieval"]["delta_points"] == {"mAP": 0.0, "rank1": 0.0}
    assert status["parity"]["retrieval"]["min_cosine"] > 1 - 1e-6


def test_engine_that_disagrees_with_onnx_runtime_fails_the_gate(
    onnx_dir, splits, params, tmp_path, fake_trt
):
    """An engine returning each batch's embeddings in the wrong order (a batch-1 check cannot
    see it) is refused on retrieval, and the folder of an earlier good build goes with it."""
    out = tmp_path / "tensorrt"
    fake_trt()
    assert build_cli(onnx_dir, splits, out) == 0 and (out / TRT_ENGINE_FILE).is_file()
    fake_trt(distort=lambda embeddings: embeddings[::-1])
    with pytest.raises(
        ReidpipeError,
        match=r"TensorRT parity gate failed for tiny: mAP differs "
        r"from ONNX Runtime by \d+\.\d{3} points.* > "
        r"deploy.max_metric_delta 0.3$",
    ):
        build_trt("tiny", onnx_dir, splits, out, params.deploy, params.evaluate, batch_size=32)
    assert not out.exists()


@pytest.mark.parametrize(
    "behaviour, settings, missing, message",
    [
        (
            {"unsupported_ops": frozenset({"Conv"})},
            [],
            None,
            r"TensorRT cannot parse \S+/model.onnx: In node 0: UNSUPPORTED_NODE: No importer registered "
            r"for op: Conv",
        ),
        (
            {"min_workspace_mib": 128},
            ["deploy.workspace_mib=64"],
            None,
            r"TensorRT failed to build an engine from \S+/model.onnx",
        ),
        (
            {"io_dtype": DataType.HALF},
            [],
            None,
            r"engine tensor 'input' is DataType.HALF; expected FP32 I/O",
        ),
        (
            {"version": 11},
            [],
            FP16_FILE,  # an export without the FP16 graph TensorRT 11 needs
            r"model_fp16.onnx does not exist; TensorRT 11.0.0 \(fake\) needs it for precision fp16",
        ),
        (
            {},
            ["deploy.min_batch=8", "deploy.opt_batch=4"],
            None,
            r"min_batch <= opt_batch <= max_batch, got 8/4/64",
        ),
    ],
)
def test_build_failures_are_one_line_naming_the_cause(
    onnx_dir, splits, tmp_path, fake_trt, capsys, behaviour, settings, missing, message
):
    fake_trt(**behaviour)
    onnx_copy = tmp_path / "onnx"
    shutil.copytree(onnx_dir, onnx_copy)
    if missing:
        (onnx_copy / missing).unlink()
    out = tmp_path / "tensorrt"
    assert build_cli(onnx_copy, splits, out, *settings) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


@needs_trt
def test_real_engine_build_swin(params, splits, tmp_path):
    torch.manual_seed(0)
    net = timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=(128, 64),
        embed_dim=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        num_classes=0,
    ).eval()
    pre = Preprocess(height=128, width=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    export_onnx(
        net,
        pre,
        "swin_demo",
        splits,
        tmp_path / "onnx",
        params.export,
        params.evaluate,
        batch_size=64,
    )
    out = tmp_path / "tensorrt"
    status = build_trt(
        "swin_demo", tmp_path / "onnx", splits, out, params.deploy, params.evaluate, batch_size=64
    )
    assert status["status"] == "built" and status["timing_cache_reused"] is False
    assert {p.name for p in out.iterdir()} == {
        TRT_STATUS_FILE,
        TRT_ENGINE_FILE,
        CACHE_FILE,
        OUTPUT_MARKER_FILE,
    }
    assert [r["batch_size"] for r in status["latency"]] == [1, 16, 64]
    assert status["parity"]["retrieval"]["delta_points"]["mAP"] <= params.deploy.max_metric_delta
    assert min(r["min_cosine"] for r in status["parity"]["batch_parity"]) > 0.99
    again = build_trt(
        "swin_demo", tmp_path / "onnx", splits, out, params.deploy, params.evaluate, batch_size=64
    )
    assert again["timing_cache_reused"] is True
