"""ONNX files: saving with embedded or side-file weights, and the checks every exported graph
passes (onnx.checker, a symbolic batch axis on every input and output)."""

from __future__ import annotations

from pathlib import Path

import onnx

from reidpipe.errors import ReidpipeError

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
DATA_SUFFIX = ".data"
# Weights up to this size are embedded in the .onnx file (protobuf caps a file at 2 GiB); larger
# ones go to ``<name>.onnx.data`` next to it.
EMBED_LIMIT_BYTES = 1 << 30


def model_files(path: Path) -> list[Path]:
    """``path`` and its external-data side file when there is one."""
    side = path.with_name(path.name + DATA_SUFFIX)
    return [path, side] if side.is_file() else [path]


def save_onnx(
    model: onnx.ModelProto, path: Path, embed_limit: int = EMBED_LIMIT_BYTES
) -> list[Path]:
    """Save with the weights embedded, or in ``<name>.onnx.data`` above ``embed_limit`` bytes."""
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    if weights > embed_limit:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + DATA_SUFFIX,
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))
    return model_files(path)


def _check_dynamic_batch(model: onnx.ModelProto, path: Path) -> None:
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            if not dims or dims[0].HasField("dim_value"):
                fixed = dims[0].dim_value if dims else "none"
                raise ReidpipeError(
                    f"{path}: {kind} {value.name!r} has batch axis {fixed}; "
                    "expected a symbolic (dynamic) batch"
                )


def check_onnx(path: Path) -> None:
    """onnx.checker on the file (side data included) and a symbolic batch on every I/O."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ReidpipeError(f"{path} fails onnx.checker: {exc}") from None
    _check_dynamic_batch(onnx.load(str(path), load_external_data=False), path)
