"""ONNX Runtime inference over the input contract: any ONNX re-identification model (ours, TAO's
deployable ReIdentificationNet, a torchreid export) as a numpy forward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reidpipe.errors import ReidpipeError
from reidpipe.input_contract import Forward, Preprocess


def check_onnx_file(path: Path) -> None:
    """One clear error when ``path`` is not an ONNX model file (before ONNX Runtime's own)."""
    import onnx
    from google.protobuf.message import DecodeError

    if path.is_dir():
        raise ReidpipeError(f"ONNX model {path} is a directory, not a model file")
    if not path.is_file():
        raise ReidpipeError(f"ONNX model {path} does not exist")
    if path.stat().st_size == 0:
        raise ReidpipeError(f"ONNX model {path} is empty (0 bytes)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ReidpipeError(
            f"ONNX model {path} is not an ONNX model (its bytes do not parse as one: {exc})"
        ) from None
    if not model.graph.node:
        raise ReidpipeError(f"ONNX model {path} is not an ONNX model (no graph in it)")


def session_options() -> Any:
    """ONNX Runtime session options for every reidpipe session: exact integer kernels.

    On x86 CPUs without VNNI, ONNX Runtime's U8S8 kernels add pairs of 8-bit products into a
    saturating 16-bit lane; ``session.x64quantprecision`` makes it use U8U8 kernels, which do
    not saturate (slower; no effect on FP32 graphs nor on CPUs with VNNI). Measured on the demo
    Swin's INT8 graph here (AVX2, no VNNI): min cosine to FP32 0.979 without, 0.997 with it,
    which equals the Q/DQ graph computed in float.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    return options


def onnx_forward(
    model_path: str | Path, pre: Preprocess, device: str = "auto"
) -> tuple[Forward, int | None]:
    """An ONNX Runtime forward and the model's fixed batch size (None when dynamic).

    The input name and shape come from the model. A fixed batch is fed at exactly that size,
    padding the last batch with zeros.
    """
    import onnxruntime as ort

    model_path = Path(model_path)
    check_onnx_file(model_path)
    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device.startswith("cuda"):
        raise ReidpipeError(
            f"device {device!r} requested but ONNX Runtime has no CUDA provider "
            f"(available: {available})"
        )
    try:
        session = ort.InferenceSession(str(model_path), session_options(), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
        raise ReidpipeError(f"ONNX model {model_path} cannot be loaded: {exc}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ReidpipeError(
            f"ONNX model {model_path}: expected one N x C x H x W input, got "
            f"{[(i.name, i.shape) for i in inputs]}"
        )
    if inputs[0].type != "tensor(float)":
        raise ReidpipeError(
            f"ONNX model {model_path} takes {inputs[0].type} input "
            f"{inputs[0].name!r}, but the input contract feeds float32 "
            "(tensor(float)); export the model with a float32 input"
        )
    name, shape = inputs[0].name, inputs[0].shape
    expected = [3, pre.height, pre.width]
    for axis, (have, want) in enumerate(zip(shape[1:], expected), start=1):
        if isinstance(have, int) and have != want:
            raise ReidpipeError(
                f"ONNX model {model_path} expects input shape {shape} but the params give "
                f"3 x {pre.height} x {pre.width} (model.input_height/input_width); axis {axis} "
                f"is {have}, not {want}"
            )
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None

    def forward(images: np.ndarray) -> np.ndarray:
        if fixed is None:
            return session.run(None, {name: images})[0]
        out = []
        for start in range(0, len(images), fixed):
            part = images[start : start + fixed]
            padded = np.zeros((fixed, *part.shape[1:]), dtype=np.float32)
            padded[: len(part)] = part
            out.append(session.run(None, {name: padded})[0][: len(part)])
        return np.concatenate(out)

    return forward, fixed
