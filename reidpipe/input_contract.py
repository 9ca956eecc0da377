"""The input contract shared by extraction, ONNX export, TensorRT and deployment packages.

One preprocessing for every consumer: bilinear resize to (input_height, input_width), pixels to
0-1 (or 0-255), ``(pixel - mean * scale) / std`` with the mean in 0-1 units, RGB or BGR, NCHW
float32. An exported ONNX model carries the same contract in its metadata (``reidpipe.*`` keys),
so nothing normalises twice (fast-reid #147) and ``extract --onnx`` can read it back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from PIL import Image

from reidpipe.errors import ReidpipeError
from reidpipe.images import decode_file

# annotations only: shared modules sit below params (tests/unit/shared/test_imports.py)
if TYPE_CHECKING:
    from reidpipe.params import ArchConfig, ExtractParams

# A model call over a preprocessed batch: N x 3 x H x W float32 in, N x D features out.
Forward = Callable[[np.ndarray], np.ndarray]
META_PREFIX = "reidpipe."


@dataclass(frozen=True)
class Preprocess:
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"
    input_scale: int = 1

    @classmethod
    def from_params(cls, arch: ArchConfig, extract: ExtractParams) -> Preprocess:
        return cls(
            height=arch.model.input_height,
            width=arch.model.input_width,
            mean=tuple(arch.dataset.pixel_mean),
            std=tuple(arch.dataset.pixel_std),
            channel_order=extract.channel_order,
            input_scale=extract.input_scale,
        )


def preprocess_image(image: Image.Image, pre: Preprocess) -> np.ndarray:
    """One PIL image -> a 3 x H x W float32 array as the model expects it."""
    resized = image.convert("RGB").resize((pre.width, pre.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32)
    if pre.input_scale == 1:
        pixels = pixels / 255.0
    # The mean is given in 0-1 units and scaled to the input range; the std is a plain divisor,
    # since scaling it too would make 0-255 input identical to 0-1 input. So a model that takes
    # raw 0-255 pixels uses mean 0, std 1; a Caffe-style one its mean and std 1.
    pixels = (pixels - np.asarray(pre.mean, np.float32) * np.float32(pre.input_scale)) / np.asarray(
        pre.std, np.float32
    )
    if pre.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)


def load_image(path: str | Path, pre: Preprocess) -> np.ndarray:
    with decode_file(path) as image:
        return preprocess_image(image, pre)


def contract_metadata(pre: Preprocess, arch: str, embedding_dim: int) -> dict[str, str]:
    """The input contract as ONNX metadata (string values)."""
    return {
        f"{META_PREFIX}arch": arch,
        f"{META_PREFIX}input_layout": "NCHW float32",
        f"{META_PREFIX}input_height": str(pre.height),
        f"{META_PREFIX}input_width": str(pre.width),
        f"{META_PREFIX}channel_order": pre.channel_order,
        f"{META_PREFIX}input_scale": str(pre.input_scale),
        f"{META_PREFIX}pixel_mean": json.dumps(list(pre.mean)),
        f"{META_PREFIX}pixel_std": json.dumps(list(pre.std)),
        f"{META_PREFIX}preprocessing": (
            f"resize to {pre.height}x{pre.width} (bilinear), {pre.channel_order}, pixels / "
            f"{255 // pre.input_scale} then (x - mean * {pre.input_scale}) / std; the graph "
            "does not normalise"
        ),
        f"{META_PREFIX}embedding_dim": str(embedding_dim),
        f"{META_PREFIX}embedding_normalised": "false",
    }


def read_input_contract(path: str | Path) -> Preprocess:
    """The preprocessing an ONNX model from ``export-onnx`` expects, read from its metadata."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, OSError, ...
        raise ReidpipeError(f"{path} is not a readable ONNX model: {exc}") from None
    meta = {
        p.key[len(META_PREFIX) :]: p.value
        for p in model.metadata_props
        if p.key.startswith(META_PREFIX)
    }
    try:
        return Preprocess(
            height=int(meta["input_height"]),
            width=int(meta["input_width"]),
            mean=tuple(json.loads(meta["pixel_mean"])),
            std=tuple(json.loads(meta["pixel_std"])),
            channel_order=meta["channel_order"],
            input_scale=int(meta["input_scale"]),
        )
    except (KeyError, ValueError) as exc:
        raise ReidpipeError(
            f"{path} has no complete reidpipe input contract in its metadata "
            f"({exc!r}); export it with `reidpipe export-onnx`"
        ) from None
