"""The Triton side of the deployment package: a model repository's ``config.pbtxt`` (protobuf text
format of Triton's ModelConfig) from the exported ONNX's inputs and outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from reidpipe.errors import ReidpipeError

TRITON_DIR = "triton"
TRITON_CONFIG = "config.pbtxt"
TRITON_VERSION = "1"
TRITON_PLAN = "model.plan"
# Triton's model_config.proto DataType names for ONNX element types.
TRITON_DTYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as Triton sees it: dims without the batch axis, -1 variable."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def io_specs(model: onnx.ModelProto, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of ``model`` (read from ``path``), each with a symbolic batch axis."""

    def spec(value: onnx.ValueInfoProto, kind: str) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_DTYPES:
            raise ReidpipeError(
                f"{path}: {kind} {value.name!r} has ONNX element type "
                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which "
                "has no Triton data type"
            )
        dims = tensor.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            raise ReidpipeError(
                f"{path}: {kind} {value.name!r} has no symbolic batch axis; "
                "Triton's dynamic batching needs one (re-export with "
                "`reidpipe export-onnx`)"
            )
        return TensorSpec(
            value.name,
            TRITON_DTYPES[tensor.elem_type],
            tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]),
        )

    initializers = {t.name for t in model.graph.initializer}
    inputs = [spec(v, "input") for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v, "output") for v in model.graph.output]


def triton_config(
    name: str,
    platform: str,
    model_file: str,
    max_batch: int,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""

    def tensors(specs: Sequence[TensorSpec]) -> str:
        return ",\n".join(
            f'  {{\n    name: "{s.name}"\n    data_type: {s.data_type}\n'
            f"    dims: [ {', '.join(map(str, s.dims))} ]\n  }}"
            for s in specs
        )

    return (
        f'name: "{name}"\nplatform: "{platform}"\ndefault_model_filename: "{model_file}"\n'
        f"max_batch_size: {max_batch}\ninput [\n{tensors(inputs)}\n]\n"
        f"output [\n{tensors(outputs)}\n]\ndynamic_batching {{ }}\n"
    )
