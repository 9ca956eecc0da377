"""``deploy``: the TensorRT engine, its gate and the DeepStream/Triton package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from reidpipe.params.sections.setting import setting


@dataclass
class DeployParams:
    tensorrt: Literal["auto", "required", "off"] = setting("auto")
    min_batch: int = setting(1, ge=1)
    opt_batch: int = setting(16, ge=1)
    max_batch: int = setting(64, ge=1)
    precision: Literal["fp16", "fp32", "int8"] = setting(
        "fp16", doc="int8 builds from export's INT8 ONNX (explicit quantization)"
    )
    workspace_mib: int = setting(4096, ge=64)
    max_metric_delta: float = setting(0.3, ge=0, doc="mAP/R1 gate in points vs ONNX Runtime")
    deepstream_reid_type: int = setting(
        2, ge=0, le=3, doc="NvDCF reidType: 0 none, 1 DeepSORT, 2 re-association, 3 both"
    )
    deepstream_history_size: int = setting(100, ge=1, doc="NvDCF reidHistorySize")
    deepstream_fold_normalisation: bool = setting(
        True, doc="fold a per-channel std into the DeepStream ONNX (DeepStream has one scale)"
    )
