"""INT8 export: real ONNX Runtime static quantization of small conv nets on real images, checked
against the definition of symmetric per-channel quantization and the gate."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from support import ROOT
from torch import nn

from reidpipe.data.manifest import read_split
from reidpipe.deploy import variants
from reidpipe.deploy.export_onnx import export_onnx
from reidpipe.deploy.int8 import calibration_sample, quantize_int8
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.extract import extract_embeddings
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import INT8_FILE, ONNX_FILE, PARITY_FILE
from reidpipe.input_contract import Preprocess, load_image, read_input_contract
from reidpipe.params import ExportParams, load_params

DEMO = [str(ROOT / "params.yaml"), str(ROOT / "config" / "demo.yaml")]
PRE = Preprocess(height=32, width=16, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def params():
    """Demo params with the default gates (conv_net's INT8 copy: min cosine 0.99999, mAP within
    0.05 points), no FP16 copy and a small calibration sample."""
    base = load_params(DEMO)
    return dataclasses.replace(
        base, export=dataclasses.replace(base.export, fp16=False, int8_calibration_images=24)
    )


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 4, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 12),
    ).eval()


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_calibration_sample_is_seeded_and_bounded():
    paths = [f"img{i}.jpg" for i in range(50)]
    first = calibration_sample(paths, 10, seed=3)
    assert first == calibration_sample(paths, 10, seed=3)
    assert len(set(first)) == 10 and set(first) <= set(paths)
    assert first != calibration_sample(paths, 10, seed=4)
    assert calibration_sample(paths, 500, seed=0) == paths
    with pytest.raises(ReidpipeError, match="train manifest is empty"):
        calibration_sample([], 5, seed=0)


def test_int8_copy_is_per_channel_symmetric_qdq_and_gated(params, splits, tmp_path, monkeypatch):
    extracted = []

    def counting(forward, *args, **kwargs):
        extracted.append(forward)
        return extract_embeddings(forward, *args, **kwargs)

    monkeypatch.setattr(variants, "extract_embeddings", counting)
    out = tmp_path / "onnx"
    report = export_onnx(
        conv_net(), PRE, "tiny", splits, out, params.export, params.evaluate, batch_size=16
    )
    # torch, ONNX Runtime FP32 and INT8 once each: the INT8 gate reuses the FP32 gate's
    # ONNX Runtime embeddings as its reference
    assert len(extracted) == len(set(extracted)) == 3
    int8 = report["int8"]
    assert int8["retrieval"]["onnx"] == report["retrieval"]["onnx"]
    assert int8["status"] == "passed" and int8["reason"] is None
    assert int8["calibration"] == {
        "method": "percentile",
        "percentile": 99.99,
        "images": 24,
        "seed": 0,
        "source": "train split",
    }
    assert int8["quantized_ops"] == ["Conv", "Gemm", "MatMul"]
    assert set(report["files"]) == {ONNX_FILE, INT8_FILE}
    assert json.loads((out / PARITY_FILE).read_text())["int8"] == int8
    for row in int8["batch_parity"]:
        assert params.export.int8_min_cosine <= row["min_cosine"] < 1.0
    for key in ("mAP", "rank1"):
        assert int8["retrieval"]["delta_points"][key] <= params.export.int8_max_metric_delta
    assert set(report["latency"]) == {"fp32", "int8"}
    assert read_input_contract(out / INT8_FILE) == PRE

    model = onnx.load(str(out / INT8_FILE))
    values = initializers(model)
    fp32 = initializers(onnx.load(str(out / ONNX_FILE)))
    convs = [w for w in fp32.values() if w.ndim == 4]
    dequant = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    weight_dq = [
        n for n in dequant if values.get(n.input[0]) is not None and values[n.input[0]].ndim == 4
    ]
    assert len(weight_dq) == len(convs) == 1
    for node, original in zip(
        sorted(weight_dq, key=lambda n: values[n.input[0]].shape[0]),
        sorted(convs, key=lambda w: w.shape[0]),
    ):
        q, scale = values[node.input[0]], values[node.input[1]]
        assert q.dtype == np.int8 and scale.shape == (original.shape[0],)  # one per channel
        assert not values[node.input[2]].any()  # zero point 0
        # Symmetric per-channel definition: scale_c = max|w_c| / 127, w ~ q * scale within
        # half a step (ONNX Runtime's symmetric range is [-127, 127]).
        peak = np.abs(original).reshape(len(original), -1).max(1)
        np.testing.assert_allclose(scale, peak / 127.0, rtol=1e-5)
        step = scale.reshape(-1, 1, 1, 1)
        assert np.all(np.abs(q * step - original) <= step / 2 + 1e-7)
    producers = {o: n for n in model.graph.node for o in n.output}
    last = producers[model.graph.output[0].name]  # the embedding itself stays in float
    assert last.op_type == "Gemm" and all(
        producers[name].op_type != "DequantizeLinear" for name in last.input if name in producers
    )
    activations = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert activations
    for node in activations:  # int8 activations, zero point 0: what TensorRT takes
        zero = values[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any()


def test_uint8_activations_are_asymmetric(params, splits, tmp_path):
    export = dataclasses.replace(params.export, int8_activations="uint8")
    report = export_onnx(
        conv_net(), PRE, "tiny", splits, tmp_path / "onnx", export, params.evaluate, batch_size=16
    )
    assert report["int8"]["status"] == "passed"
    assert report["int8"]["tensorrt_compatible"] is False
    model = onnx.load(str(tmp_path / "onnx" / INT8_FILE))
    values = initializers(model)
    zeros = [values[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert zeros and all(z.dtype == np.uint8 for z in zeros)
    assert any(z.any() for z in zeros)  # a zero point away from 0: asymmetric ranges
    forward, _ = onnx_forward(tmp_path / "onnx" / INT8_FILE, PRE, "cpu")
    assert forward(np.zeros((3, 3, 32, 16), np.float32)).shape == (3, 12)


def test_failed_int8_gate_leaves_no_file_and_says_why(params, splits, tmp_path):
    """INT8 rounding keeps the cosine below 1, so a gate of exactly 1 must fail; the FP32
    export still stands."""
    strict = dataclasses.replace(params.export, int8_min_cosine=1.0)
    out = tmp_path / "onnx"
    report = export_onnx(
        conv_net(), PRE, "tiny", splits, out, strict, params.evaluate, batch_size=16
    )
    assert report["status"] == "passed"
    assert report["int8"]["status"] == "failed"
    assert report["int8"]["reason"].startswith("INT8 gate failed: batch 1: min cosine")
    assert "export.int8_min_cosine 1.0" in report["int8"]["reason"]
    assert not (out / INT8_FILE).exists()
    assert set(report["files"]) == {ONNX_FILE} and set(report["latency"]) == {"fp32"}


def test_int8_copy_that_changes_the_ranking_fails_the_metric_gate(params, splits, tmp_path):
    """Activations clipped at their 60th percentile keep every embedding within cosine 0.9 of
    FP32 but move a query's first hit: the rank-1 gate, not the cosine one, leaves the INT8
    copy out."""
    export = dataclasses.replace(
        params.export, int8_calibration_percentile=60.0, int8_min_cosine=0.9
    )
    out = tmp_path / "onnx"
    report = export_onnx(
        conv_net(), PRE, "tiny", splits, out, export, params.evaluate, batch_size=16
    )
    int8 = report["int8"]
    assert int8["status"] == "failed"
    assert all(row["min_cosine"] >= export.int8_min_cosine for row in int8["batch_parity"])
    assert re.fullmatch(
        r"INT8 gate failed: rank1 differs by \d+\.\d{3} points \(FP32 "
        r"\d+\.\d\d, INT8 \d+\.\d\d\) > export.int8_max_metric_delta 1.0",
        int8["reason"],
    ), int8["reason"]
    assert not (out / INT8_FILE).exists() and set(report["files"]) == {ONNX_FILE}


def test_int8_engine_needs_tensorrt_compatible_activations():
    with pytest.raises(
        ReidpipeError,
        match="deploy.precision int8 builds from export's INT8 ONNX with int8 activations.*'uint8'",
    ):
        load_params(DEMO, ["deploy.precision=int8", "export.int8_activations=uint8"])
    assert load_params(DEMO, ["deploy.precision=int8"]).deploy.precision == "int8"


# --------------------------------------------------------------------- calibration and placement


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The FP32 graph of conv_net, exported by the pipeline's own exporter."""
    from reidpipe.deploy.export_onnx import export_graph
    from reidpipe.input_contract import contract_metadata

    path = tmp_path_factory.mktemp("tiny") / ONNX_FILE
    export_graph(conv_net(), PRE, path, 18, contract_metadata(PRE, "tiny", 12))
    return path


def quantized(source: Path, target: Path, calibration: list[str], **settings) -> onnx.ModelProto:
    quantize_int8(source, target, calibration, PRE, dataclasses.replace(ExportParams(), **settings))
    return onnx.load(str(target))


def input_quantizer(model: onnx.ModelProto) -> tuple[float, int]:
    """Scale and zero point of the QuantizeLinear applied to the graph input."""
    values = initializers(model)
    node = next(
        n
        for n in model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[0] == model.graph.input[0].name
    )
    return float(values[node.input[1]]), int(values[node.input[2]])


def test_calibration_methods_reach_onnx_runtime_as_defined(splits, tiny_onnx, tmp_path):
    """The scale ONNX Runtime puts on the input tensor (the only activation of conv_net it
    quantizes) against the definitions, computed here from the calibration images themselves:
    symmetric int8 over [-127, 127] gives scale = range / 127, where the range is max |x| for
    MinMax and the p-th percentile of |x| for percentile calibration (to within one bin of its
    2048-bin histogram over [0, max |x|]); asymmetric uint8 MinMax maps [min(x, 0), max(x, 0)]
    onto [0, 255]."""
    calibration = calibration_sample(list(read_split(splits, "train")["path"]), 24, 0)
    pixels = np.stack([load_image(p, PRE) for p in calibration])
    peak = float(np.abs(pixels).max())

    scale, zero = input_quantizer(
        quantized(
            tiny_onnx, tmp_path / "minmax.onnx", calibration, int8_calibration_method="minmax"
        )
    )
    assert zero == 0
    np.testing.assert_allclose(scale, peak / 127.0, rtol=1e-5)

    clips = {}
    for percentile in (99.0, 99.99):
        clips[percentile], zero = input_quantizer(
            quantized(
                tiny_onnx,
                tmp_path / f"p{percentile}.onnx",
                calibration,
                int8_calibration_method="percentile",
                int8_calibration_percentile=percentile,
            )
        )
        expected = float(np.percentile(np.abs(pixels), percentile))
        assert zero == 0 and clips[percentile] <= scale * (1 + 1e-6)  # never wider than MinMax
        assert abs(clips[percentile] * 127.0 - expected) <= peak / 2048 * 1.01
    # the 99th percentile of these images lies well inside max |x|: the clip is really applied
    assert np.percentile(np.abs(pixels), 99.0) < 0.95 * peak and clips[99.0] < 0.95 * scale

    scale, zero = input_quantizer(
        quantized(
            tiny_onnx,
            tmp_path / "uint8.onnx",
            calibration,
            int8_calibration_method="minmax",
            int8_activations="uint8",
        )
    )
    low, high = min(float(pixels.min()), 0.0), max(float(pixels.max()), 0.0)
    np.testing.assert_allclose(scale, (high - low) / 255.0, rtol=1e-5)
    assert zero == round(-low / scale)

    # uint8 percentile: half the excluded share cut from each tail of x (not of |x|), within a
    # bin of the 2048-bin histogram over [-max |x|, max |x|] at each end
    clipped, zero = input_quantizer(
        quantized(
            tiny_onnx,
            tmp_path / "uint8_p99.onnx",
            calibration,
            int8_activations="uint8",
            int8_calibration_method="percentile",
            int8_calibration_percentile=99.0,
        )
    )
    low = min(float(np.percentile(pixels, 0.5)), 0.0)
    high = max(float(np.percentile(pixels, 99.5)), 0.0)
    assert abs(clipped * 255.0 - (high - low)) <= 2 * (2 * peak / 2048) * 1.01
    assert clipped < scale * 0.95  # narrower than uint8 MinMax's


def test_default_placement_quantizes_only_the_inputs_of_the_listed_ops(splits, tiny_onnx, tmp_path):
    """TensorRT's placement: every DequantizeLinear feeds a Conv (the embedding's Gemm stays
    float), nothing follows the Conv's output; with outputs on, the Conv's output is quantized;
    with every op type, the ReLU's output too."""
    calibration = calibration_sample(list(read_split(splits, "train")["path"]), 8, 0)

    def consumers(model: onnx.ModelProto) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {}
        for node in model.graph.node:
            for name in node.input:
                users.setdefault(name, []).append(node.op_type)
        return users

    def quantized_op_outputs(model: onnx.ModelProto) -> set[str]:
        producers = {o: n.op_type for n in model.graph.node for o in n.output}
        return {
            producers[n.input[0]]
            for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] in producers
        }

    default = quantized(tiny_onnx, tmp_path / "default.onnx", calibration)
    users = consumers(default)
    dequant = [n for n in default.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dequant) == 3  # the image, the Conv weight and its (int32) bias
    assert all(users[n.output[0]] == ["Conv"] for n in dequant)
    assert quantized_op_outputs(default) == set()

    outputs = quantized(
        tiny_onnx, tmp_path / "outputs.onnx", calibration, int8_quantize_outputs=True
    )
    assert quantized_op_outputs(outputs) == {"Conv"}

    everything = quantized(
        tiny_onnx, tmp_path / "all.onnx", calibration, int8_op_types=[], int8_quantize_outputs=True
    )
    assert {"Conv", "Relu"} <= quantized_op_outputs(everything)


def test_unknown_op_type_is_refused_naming_the_key(params, splits, tmp_path):
    export = dataclasses.replace(params.export, int8_op_types=["Conv", "Convolution"])
    with pytest.raises(ReidpipeError, match=r"export.int8_op_types has \['Convolution'\]"):
        export_onnx(
            conv_net(),
            PRE,
            "tiny",
            splits,
            tmp_path / "onnx",
            export,
            params.evaluate,
            batch_size=16,
        )


def test_onnx_runtime_sessions_run_exact_integer_kernels(tmp_path):
    """x at the top of uint8 (q = 255, scale 1/255) times int8 weights at 127 (scale 1/127):
    by the Q/DQ definition each of the 48 products is 1.0, so every output is 48. ONNX
    Runtime's U8S8 kernels on x86 CPUs without VNNI add pairs of 255 * 127 products into a
    saturating 16-bit lane (32,767 < 64,770) and return about 24.3; reidpipe's sessions must
    not. (On CPUs with VNNI both give 48; the test then checks the plain definition.)"""
    from onnx import TensorProto, helper

    def constant(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value, name)

    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("QuantizeLinear", ["flat", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["output"]),
        ],
        "saturation",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 8])],
        [
            constant("wq", np.full((48, 8), 127, np.int8)),
            constant("xs", np.array(1 / 255, np.float32)),
            constant("xz", np.array(0, np.uint8)),
            constant("ws", np.array(1 / 127, np.float32)),
            constant("wz", np.array(0, np.int8)),
        ],
    )
    path = tmp_path / "saturation.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    forward, _ = onnx_forward(
        path, Preprocess(height=4, width=4, mean=(0.5,) * 3, std=(0.5,) * 3), "cpu"
    )
    np.testing.assert_allclose(forward(np.ones((2, 3, 4, 4), np.float32)), 48.0, rtol=1e-5)


def test_export_settings_per_architecture(tmp_path):
    """archs.<name>.export overrides export keys for that architecture only; bad overrides are
    refused naming the key, and so is the old home export.archs, naming the new one."""
    own = tmp_path / "own.yaml"
    own.write_text("pipeline: {archs: [net]}\narchs: {net: {}}\n")
    assert load_params([own]).export_for("net").int8_calibration_method == "percentile"
    assert load_params().export_for("swin_tiny").int8_calibration_method == "minmax"
    demo = load_params(DEMO)
    assert demo.export.int8_calibration_method == "percentile"
    assert demo.export_for("resnet_demo").int8_calibration_method == "percentile"
    assert demo.export_for("swin_demo").int8_calibration_method == "minmax"
    tuned = load_params(DEMO, ["archs.resnet_demo.export.int8_calibration_percentile=99.9"])
    assert tuned.export_for("resnet_demo").int8_calibration_percentile == 99.9
    assert tuned.export_for("swin_demo").int8_calibration_percentile == 99.99
    with pytest.raises(
        ReidpipeError,
        match=r"^params: key 'export.archs' has moved to "
        r"'archs.<name>.export'; move its entries there$",
    ):
        load_params(DEMO, ["export.archs.swin_demo.int8=false"])
    with pytest.raises(ReidpipeError, match="unknown key 'archs.swin_demo.export.int8_method'"):
        load_params(DEMO, ["archs.swin_demo.export.int8_method=minmax"])
    with pytest.raises(ReidpipeError, match="archs.swin_demo.export.int8_calibration_method"):
        load_params(DEMO, ["archs.swin_demo.export.int8_calibration_method=entropy"])
    with pytest.raises(
        ReidpipeError, match="for swin_demo export.int8 True, export.int8_activations 'uint8'"
    ):
        load_params(
            DEMO, ["deploy.precision=int8", "archs.swin_demo.export.int8_activations=uint8"]
        )
