"""The FP16 copy of an exported graph, for TensorRT 11 (strongly typed: precision comes from the
graph). FP32 inputs and outputs are kept through casts at the edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from reidpipe.deploy.onnx_io import EMBED_LIMIT_BYTES, save_onnx
from reidpipe.deploy.variants import Gate, Limit, Variant
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import FP16_FILE, ONNX_FILE
from reidpipe.params import ExportParams

# Kept in FP32 in the FP16 graph: TensorRT warns that FP16 LayerNorm after attention overflows.
FP16_MAX = 65504.0
FP16_KEEP_FP32_OPS = ("LayerNormalization",)


def _half(tensor: onnx.TensorProto) -> onnx.TensorProto:
    values = np.clip(numpy_helper.to_array(tensor), -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(values, tensor.name)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the FP32 tensors of the graph (types from shape inference)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    values = [*graph.input, *graph.output, *graph.value_info]
    names = {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return names | {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def _cast(source: str, target: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [target], name=f"{target}_cast", to=to)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of ``model`` with its FP32 inputs and outputs kept (cast at the edges) and
    the ops in ``FP16_KEEP_FP32_OPS`` computed in FP32."""
    FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    if model.functions or any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in model.graph.node
        for a in n.attribute
    ):
        raise ReidpipeError(
            "FP16 conversion handles flat graphs only; this one has local functions or subgraphs"
        )
    floats = _float_tensors(model)
    half = onnx.ModelProto()
    half.CopyFrom(model)
    graph = half.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == FLOAT:
            graph.initializer[index].CopyFrom(_half(tensor))
    outputs = {v.name for v in graph.output if v.name in floats}
    renamed = {v.name: f"{v.name}_fp16" for v in graph.input if v.name in floats}
    nodes = [_cast(name, half_name, HALF) for name, half_name in renamed.items()]
    for number, node in enumerate(graph.node):
        originals = list(node.input)
        node.input[:] = [renamed.get(name, name) for name in originals]
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(_half(attr.t))
        keep = node.op_type in FP16_KEEP_FP32_OPS
        if keep:
            for index, name in enumerate(originals):
                if name in floats:
                    nodes.append(_cast(node.input[index], f"{name}_fp32_{number}", FLOAT))
                    node.input[index] = f"{name}_fp32_{number}"
        after = []
        for index, name in enumerate(node.output):
            if name not in floats:
                continue
            half_name = f"{name}_fp16" if name in outputs else name
            if keep:
                node.output[index] = f"{name}_fp32"
                after.append(_cast(node.output[index], half_name, HALF))
            else:
                node.output[index] = half_name
            if name in outputs:
                renamed[name] = half_name
                after.append(_cast(half_name, name, FLOAT))
        nodes += [node, *after]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("value_info")
    return half


def convert_fp16(source: Path, target: Path, embed_limit: int = EMBED_LIMIT_BYTES) -> list[Path]:
    """Write the FP16 copy of ``source`` (see :func:`to_fp16`): TensorRT 11 takes precision from
    the graph."""
    return save_onnx(to_fp16(onnx.load(str(source))), target, embed_limit)


def fp16_variant(arch: str, export: ExportParams, embed_limit: int = EMBED_LIMIT_BYTES) -> Variant:
    """The FP16 copy of the FP32 graph, gated against it under ONNX Runtime on the lowest cosine
    per batch size (``export.fp16_min_cosine``)."""

    def build(folder: Path) -> tuple[list[Path], dict[str, Any]]:
        return convert_fp16(folder / ONNX_FILE, folder / FP16_FILE, embed_limit), {}

    return Variant(
        name="fp16",
        file=FP16_FILE,
        build=build,
        reference="fp32",
        about={"file": FP16_FILE, "fp32_ops": list(FP16_KEEP_FP32_OPS), "io_dtype": "float32"},
        gate=Gate(
            title=f"FP16 ONNX parity gate failed for {arch}",
            record={"min_cosine_gate": export.fp16_min_cosine},
            rows=(
                Limit(
                    "min_cosine",
                    "export.fp16_min_cosine",
                    export.fp16_min_cosine,
                    "min cosine {min_cosine:.6f} at batch {batch_size} < {key} {limit}",
                ),
            ),
            first_miss_only=True,
        ),
    )
