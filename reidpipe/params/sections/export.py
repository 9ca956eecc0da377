"""``export``: the ONNX export and the gates of its FP32, FP16 and INT8 variants, shared by every
architecture (``archs.<name>.export`` overrides them for one)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from reidpipe.params.sections.setting import setting


@dataclass
class ExportParams:
    opset: int = setting(18, ge=13)
    parity_batch_sizes: list[int] = setting([1, 7, 32])
    max_abs_diff: float = setting(1e-3, gt=0)
    min_cosine: float = setting(0.9999, gt=0, le=1)
    max_metric_delta: float = setting(0.1, ge=0, doc="mAP/R1 gate in points")
    fp16: bool = setting(True, doc="also write an FP16 ONNX for TensorRT")
    fp16_min_cosine: float = setting(0.999, gt=0, le=1, doc="gate of the FP16 ONNX against FP32")
    int8: bool = setting(True, doc="also write an INT8 (QDQ) ONNX, kept only when its gate passes")
    int8_calibration_images: int = setting(
        256, ge=1, doc="train images sampled for INT8 calibration"
    )
    int8_seed: int = setting(0, ge=0, doc="seed of the calibration sample")
    int8_activations: Literal["int8", "uint8"] = setting(
        "int8",
        doc="int8: symmetric, for TensorRT; uint8: ONNX Runtime's fast x86 CPU path, "
        "which TensorRT cannot build",
    )
    # Activation ranges: MinMax lets one outlier pixel of the calibration sample set a tensor's
    # whole 8-bit scale; clipping at a percentile of |x| keeps resolution for the bulk. Measured
    # on the demo models (README, Deploy): percentile 99.99 passes the gate on the ResNet where
    # MinMax loses 1.5 mAP points; ORT's entropy calibration is not offered (quantize_static fixes
    # its histogram at 128 bins = 128 quantized bins, so it returns MinMax's ranges).
    int8_calibration_method: Literal["minmax", "percentile"] = setting(
        "percentile",
        doc="activation ranges: minmax (calibration min/max) or percentile "
        "(clip |x| at int8_calibration_percentile)",
    )
    int8_calibration_percentile: float = setting(
        99.99, gt=50, le=100, doc="percentile of |activation| kept by percentile calibration"
    )
    # Where Q/DQ go. TensorRT's explicit-quantization placement (NVIDIA's QAT toolkit) quantizes
    # only the inputs of the compute-heavy ops; quantizing every op's output as well (ONNX
    # Runtime's default) rounds pre-ReLU tensors, residual sums, LayerNorm and Softmax to one
    # symmetric per-tensor scale each, which cost the demo models 2-3 mAP points.
    int8_op_types: list[str] = setting(
        ["Conv", "Gemm", "MatMul"],
        doc="ONNX op types quantized (weights per channel, input "
        "activations per tensor); [] = every op ONNX Runtime can quantize",
    )
    int8_quantize_outputs: bool = setting(
        False,
        doc="also quantize the outputs of int8_op_types (ONNX Runtime's default "
        "placement, which its CPU kernels need to fuse QLinearConv/QLinearMatMul)",
    )
    int8_min_cosine: float = setting(0.98, gt=0, le=1, doc="gate of the INT8 ONNX against FP32")
    int8_max_metric_delta: float = setting(1.0, ge=0, doc="INT8 mAP/R1 gate in points vs FP32")
    # One architecture's overrides of these keys live in its recipe, archs.<name>.export (the
    # keys a stage reads are tracked per arch, so they rerun that arch's export alone).
    MOVED_KEYS: ClassVar[dict[str, str]] = {"archs": "archs.<name>.export"}
