"""ONNX export: real exports of the demo architectures, real ONNX Runtime, real images."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support import ROOT
from torch import nn

from reidpipe.cli import main
from reidpipe.deploy.export_onnx import export_graph, export_onnx
from reidpipe.deploy.fp16 import FP16_KEEP_FP32_OPS
from reidpipe.deploy.onnx_io import check_onnx
from reidpipe.deploy.parity import batch_parity
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.extract import torch_forward
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import (
    FP16_FILE,
    INT8_FILE,
    ONNX_FILE,
    OUTPUT_MARKER_FILE,
    PARITY_FILE,
)
from reidpipe.input_contract import Preprocess, read_input_contract
from reidpipe.params import load_params
from reidpipe.training.model import MODEL_FILE, arch_to_dict, build_model

DEMO = [str(ROOT / "params.yaml"), str(ROOT / "config" / "demo.yaml")]


@pytest.fixture(scope="module")
def params():
    return load_params(DEMO)


def demo_net(params, arch: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(params.arch(arch).model, num_classes=10, weights=False).eval()


class TinyNet(nn.Module):
    """A small conv embedder for the fast edge-case tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, stride=2, padding=1)  # 3.5 kB: above the 1 kB inline limit
        self.norm = nn.LayerNorm(32)
        self.fc = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(torch.relu(self.conv(x)).mean(dim=(2, 3))))


class ExportOnlyBug(TinyNet):
    """Eager and exported graphs disagree: what a wrong export would look like."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return -out if torch.compiler.is_exporting() else out


class ExportReordersBatch(TinyNet):
    """The exported graph returns a batch's embeddings in reverse order: right at batch 1,
    assigned to the wrong images above it (wrong embeddings at batch > 1, torchreid #585)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out.flip(0) if torch.compiler.is_exporting() else out


class BakedBatch(TinyNet):
    """Reshapes with a fixed batch, like Swin's window_reverse with a constant batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).reshape(2, -1)


def check_folder(out: Path, report: dict, pre: Preprocess, params) -> None:
    assert json.loads((out / PARITY_FILE).read_text()) == report
    assert report["status"] == "passed"
    assert [r["batch_size"] for r in report["batch_parity"]] == [1, 7, 32]
    for row in report["batch_parity"]:
        assert row["max_abs_diff"] < 1e-4 and row["min_cosine"] > 0.99999
    retrieval = report["retrieval"]
    assert retrieval["num_query"] == 19 and retrieval["num_gallery"] == 108
    assert retrieval["delta_points"]["mAP"] <= params.export.max_metric_delta
    assert retrieval["delta_points"]["rank1"] <= params.export.max_metric_delta
    assert 0 < retrieval["onnx"]["mAP"] <= 1
    assert report["opset"] == params.export.opset
    assert read_input_contract(out / ONNX_FILE) == pre
    model = onnx.load(str(out / ONNX_FILE))
    assert model.opset_import[0].version == params.export.opset
    check_onnx(out / ONNX_FILE)
    # FP16: FP32 I/O, FP16 weights, runs in ONNX Runtime close to FP32
    half = onnx.load(str(out / FP16_FILE))
    assert {v.type.tensor_type.elem_type for v in [*half.graph.input, *half.graph.output]} == {
        onnx.TensorProto.FLOAT
    }
    assert {
        t.data_type
        for t in half.graph.initializer
        if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    } == {onnx.TensorProto.FLOAT16}
    assert [r["batch_size"] for r in report["fp16"]["batch_parity"]] == [1, 7, 32]
    for row in report["fp16"]["batch_parity"]:
        assert row["min_cosine"] > 0.999
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*report["files"], PARITY_FILE, OUTPUT_MARKER_FILE]
    )


def test_resnet_demo_via_cli(params, splits, tmp_path):
    net = demo_net(params, "resnet_demo")
    cfg = params.arch("resnet_demo")
    model_dir = tmp_path / "models" / "resnet_demo"
    model_dir.mkdir(parents=True)
    torch.save(
        {"state_dict": net.state_dict(), "arch": arch_to_dict(cfg), "num_classes": 10},
        model_dir / MODEL_FILE,
    )
    out = model_dir / "onnx"
    assert (
        main(
            [
                "export-onnx",
                "--params",
                *DEMO,
                "--arch",
                "resnet_demo",
                "--model",
                str(model_dir),
                "--splits",
                str(splits),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / PARITY_FILE).read_text())
    check_folder(out, report, Preprocess.from_params(cfg, params.extract), params)
    assert set(report["files"]) == {ONNX_FILE, FP16_FILE, INT8_FILE}  # 45 MB: weights embedded
    assert report["int8"]["status"] == "passed"  # default gates, on resnet18
    assert set(report["latency"]) == {"fp32", "fp16", "int8"}


def test_swin_demo_dynamic_batch(params, splits, tmp_path):
    cfg = params.arch("swin_demo")
    pre = Preprocess.from_params(cfg, params.extract)
    out = tmp_path / "onnx"
    # the default gates, INT8's included (min cosine 0.9997, mAP within 0.07 points here)
    report = export_onnx(
        demo_net(params, "swin_demo"),
        pre,
        "swin_demo",
        splits,
        out,
        params.export,
        params.evaluate,
        batch_size=64,
    )
    check_folder(out, report, pre, params)
    assert report["input"]["shape"][0] == "batch"
    assert report["input"]["pixel_mean"] == "[0.5, 0.5, 0.5]"
    assert report["int8"]["status"] == "passed"
    int8 = onnx.load(str(out / INT8_FILE))
    int8_producers = {o: n.op_type for n in int8.graph.node for o in n.output}
    matmuls = [n for n in int8.graph.node if n.op_type == "MatMul"]
    assert matmuls and all(
        int8_producers.get(i) == "DequantizeLinear" for n in matmuls for i in n.input
    )
    half = onnx.load(str(out / FP16_FILE))
    producers = {o: n for n in half.graph.node for o in n.output}
    norms = [n for n in half.graph.node if n.op_type in FP16_KEEP_FP32_OPS]
    assert norms
    for node in norms:  # LayerNorm computes in FP32: every float input cast to FLOAT
        source = producers[node.input[0]]
        assert source.op_type == "Cast" and source.attribute[0].i == onnx.TensorProto.FLOAT


def test_large_weights_go_to_side_file(params, splits, tmp_path):
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = tmp_path / "onnx"
    report = export_onnx(
        TinyNet().eval(),
        pre,
        "tiny",
        splits,
        out,
        params.export,
        params.evaluate,
        batch_size=16,
        embed_limit=0,
    )
    assert set(report["files"]) == {
        ONNX_FILE,
        ONNX_FILE + ".data",
        FP16_FILE,
        FP16_FILE + ".data",
        INT8_FILE,
        INT8_FILE + ".data",
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*report["files"], PARITY_FILE, OUTPUT_MARKER_FILE]
    )
    model = onnx.load(str(out / ONNX_FILE), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    for name in (FP16_FILE, INT8_FILE):
        forward, fixed = onnx_forward(out / name, pre, "cpu")
        assert fixed is None and forward(np.zeros((3, 3, 32, 16), np.float32)).shape == (3, 16)


def test_broken_export_fails_the_gate_and_leaves_no_onnx(params, splits, tmp_path):
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = tmp_path / "onnx"
    out.mkdir()
    (out / ONNX_FILE).write_bytes(b"stale model from an earlier run")
    (out / OUTPUT_MARKER_FILE).write_text("written by an earlier export")
    with pytest.raises(ReidpipeError, match=r"parity gate failed for tiny: batch 1: max abs diff"):
        export_onnx(
            ExportOnlyBug().eval(),
            pre,
            "tiny",
            splits,
            out,
            params.export,
            params.evaluate,
            batch_size=16,
        )
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnx.tmp")]


def test_export_that_changes_the_ranking_fails_the_metric_gate(params, splits, tmp_path):
    """With the per-batch gates opened wide, the mAP/rank-1 gate alone refuses an export whose
    embeddings come back for the wrong images of a batch, and leaves no folder."""
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = tmp_path / "onnx"
    lenient = dataclasses.replace(
        params.export, max_abs_diff=1e9, min_cosine=1e-9, fp16=False, int8=False
    )
    torch.manual_seed(0)
    with pytest.raises(ReidpipeError) as failed:
        export_onnx(
            ExportReordersBatch().eval(),
            pre,
            "tiny",
            splits,
            out,
            lenient,
            params.evaluate,
            batch_size=16,
        )
    message = str(failed.value)
    assert re.fullmatch(
        r"ONNX parity gate failed for tiny: mAP differs by \d+\.\d{3} points "
        r"\(torch \d+\.\d\d, onnx \d+\.\d\d\) > export.max_metric_delta 0.1"
        r"(; rank1 differs by .* > export.max_metric_delta 0.1)?",
        message,
    ), message
    assert not out.exists()


def test_perturbed_weight_shows_in_batch_parity(tmp_path):
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    net = TinyNet().eval()
    export_graph(net, pre, tmp_path / ONNX_FILE, opset=18, metadata={})
    images = np.random.default_rng(0).standard_normal((7, 3, 32, 16)).astype(np.float32)
    candidate, _ = onnx_forward(tmp_path / ONNX_FILE, pre, "cpu")
    assert (
        batch_parity(torch_forward(net, "cpu"), candidate, images, [1, 7])[1]["max_abs_diff"] < 1e-5
    )
    with torch.no_grad():
        net.fc.weight[0, 0] += 0.5
    rows = batch_parity(torch_forward(net, "cpu"), candidate, images, [1, 7])
    assert all(r["max_abs_diff"] > 1e-2 and r["min_cosine"] < 0.9999 for r in rows)


def test_fixed_batch_model_is_refused(tmp_path):
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    export_graph(BakedBatch().eval(), pre, tmp_path / ONNX_FILE, opset=18, metadata={})
    with pytest.raises(
        ReidpipeError, match="output 'embedding' has batch axis 2; expected a symbolic"
    ):
        check_onnx(tmp_path / ONNX_FILE)


def test_onnx_without_contract_is_named(tmp_path):
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    export_graph(TinyNet().eval(), pre, tmp_path / ONNX_FILE, opset=18, metadata={})
    with pytest.raises(ReidpipeError, match="no complete reidpipe input contract"):
        read_input_contract(tmp_path / ONNX_FILE)


def test_fp16_copy_is_gated(params, splits, tmp_path):
    """FP16 rounding keeps the cosine just below 1, so a gate of exactly 1 must fail the stage."""
    pre = Preprocess(height=32, width=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = tmp_path / "onnx"
    strict = dataclasses.replace(params.export, fp16_min_cosine=1.0)
    with pytest.raises(ReidpipeError, match="FP16 ONNX parity gate failed for tiny: min cosine"):
        export_onnx(
            TinyNet().eval(), pre, "tiny", splits, out, strict, params.evaluate, batch_size=16
        )
    assert not out.exists()
