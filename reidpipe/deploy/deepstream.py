"""The DeepStream side of the deployment package: the NvDCF tracker's ``ReID:`` section.

DeepStream's tracker preprocesses ``y = netScaleFactor * (pixel - offsets[c])`` on 0-255 pixels
in the network's channel order; our contract is ``y = (pixel * k - mean[c] * input_scale) /
std[c]`` with ``k = 1/255`` for 0-1 input (1 for 0-255), so ``offsets = 255 * mean`` and
``netScaleFactor = k / std``. DeepStream has one scale for all channels: when the per-channel
``k / std`` differ, the package's DeepStream ONNX multiplies each channel by its own scale first
(``channel_scale``; ``deploy.deepstream_fold_normalisation``, refused when that is off) and
netScaleFactor is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidpipe.errors import ReidpipeError
from reidpipe.input_contract import Preprocess
from reidpipe.params import DeployParams

DEEPSTREAM_DIR = "deepstream"
DEEPSTREAM_CONFIG = "deepstream_reid.yml"
# Enumerations of the NvMultiObjectTracker ReID section (gst-nvtracker docs, "Object Re-ID").
DEEPSTREAM_NETWORK_MODE = {"fp32": 0, "fp16": 1, "int8": 2}
DEEPSTREAM_COLOR_FORMAT = {"RGB": 0, "BGR": 1}
DEEPSTREAM_NCHW = 0


@dataclass(frozen=True)
class DeepStreamInput:
    """DeepStream's preprocessing for a contract, in the network's channel order."""

    offsets: tuple[float, ...]
    net_scale_factor: float
    channel_scale: tuple[float, ...] | None  # per-channel factors folded into the graph


def deepstream_input(pre: Preprocess, fold: bool) -> DeepStreamInput:
    """offsets / netScaleFactor for ``pre``; the per-channel scale to fold when the std differs
    per channel (ReidpipeError when ``fold`` is off)."""
    order = [0, 1, 2] if pre.channel_order == "RGB" else [2, 1, 0]  # mean/std are RGB-ordered
    unit = 1.0 / 255.0 if pre.input_scale == 1 else 1.0
    offsets = tuple(round(255.0 * pre.mean[c], 6) for c in order)
    scales = tuple(unit / pre.std[c] for c in order)
    if np.allclose(scales, scales[0], rtol=1e-6, atol=0.0):
        return DeepStreamInput(offsets, scales[0], None)
    if not fold:
        raise ReidpipeError(
            f"DeepStream takes one netScaleFactor but pixel_std {list(pre.std)} gives a "
            f"different scale per channel ({[round(s, 8) for s in scales]}); set "
            "deploy.deepstream_fold_normalisation: true to fold the per-channel scale into the "
            "package's DeepStream ONNX, or train with one std for all channels"
        )
    return DeepStreamInput(offsets, 1.0, scales)


def deepstream_section(
    pre: Preprocess, ds: DeepStreamInput, embedding_dim: int, deploy: DeployParams, onnx_file: str
) -> dict[str, Any]:
    """The ``ReID:`` section of an NvDCF tracker config."""
    return {
        "ReID": {
            "reidType": deploy.deepstream_reid_type,
            "batchSize": deploy.max_batch,
            "workspaceSize": deploy.workspace_mib,
            "reidFeatureSize": embedding_dim,
            "reidHistorySize": deploy.deepstream_history_size,
            "inferDims": [3, pre.height, pre.width],
            "networkMode": DEEPSTREAM_NETWORK_MODE[deploy.precision],
            "inputOrder": DEEPSTREAM_NCHW,
            "colorFormat": DEEPSTREAM_COLOR_FORMAT[pre.channel_order],
            "offsets": list(ds.offsets),
            "netScaleFactor": round(ds.net_scale_factor, 10),
            # The contract resizes without keeping the aspect ratio (a plain bilinear resize).
            "keepAspc": 0,
            # The graph returns the raw embedding (contract: not L2-normalised).
            "addFeatureNormalization": 1,
            "onnxFile": onnx_file,
            "modelEngineFile": f"{Path(onnx_file).stem}_b{deploy.max_batch}_{deploy.precision}.engine",
        }
    }
