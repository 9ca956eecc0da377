"""INT8 copy of an exported graph: ONNX Runtime static quantization (QDQ), gated on retrieval.

Weights are quantized per channel (signed, symmetric); activations get one scale per tensor from
MinMax calibration on a seeded sample of *train* images (never query/gallery: the gate then
measures on images calibration did not see). ``export.int8_activations`` picks the activation
type: ``int8`` (symmetric, zero point 0) is what TensorRT's explicit quantization takes;
``uint8`` (asymmetric) is ONNX Runtime's fast path on x86 CPUs without VNNI (U8S8 kernels), which
TensorRT cannot parse. The gate compares the INT8 graph with the FP32 one under ONNX Runtime:
lowest cosine per batch size, and plain mAP / rank-1 deltas in points. A failed gate is not an
error: the INT8 file is left out and the reason is recorded for the report.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import pandas as pd

from reidpipe.deploy.onnx_io import EMBED_LIMIT_BYTES, check_onnx, model_files, save_onnx
from reidpipe.deploy.parity import batch_parity, retrieval_parity
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import INT8_FILE
from reidpipe.input_contract import Forward, Preprocess, load_image
from reidpipe.params import EvaluateParams, ExportParams

log = logging.getLogger(__name__)

# Calibration runs the augmented graph this many images at a time; MinMax keeps only per-batch
# minima and maxima, so memory does not grow with the sample.
CALIBRATION_BATCH = 16


def calibration_sample(paths: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` paths drawn without replacement with ``seed`` (all of them when fewer), in a
    stable order so the same split and seed give the same calibration."""
    if not paths:
        raise ReidpipeError("no train images to calibrate INT8 on: the train manifest is empty")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    return [paths[i] for i in sorted(picked)]


def _reader(input_name: str, paths: Sequence[str], pre: Preprocess) -> Any:
    """A CalibrationDataReader yielding the preprocessed images in batches."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageBatches(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(paths), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.starts, None)
            if start is None:
                return None
            batch = paths[start:start + CALIBRATION_BATCH]
            return {input_name: np.stack([load_image(p, pre) for p in batch])}

    return ImageBatches()


def quantize_int8(source: Path, target: Path, calibration: Sequence[str], pre: Preprocess,
                  activations: str, embed_limit: int = EMBED_LIMIT_BYTES) -> list[Path]:
    """Write the QDQ INT8 copy of ``source`` calibrated on the images ``calibration``; returns
    the files written. The contract metadata of ``source`` is carried over."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source), load_external_data=False)
    input_name = model.graph.input[0].name
    large = sum(t.ByteSize() for t in model.graph.initializer) > embed_limit
    with tempfile.TemporaryDirectory(prefix="reidpipe-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "quantized.onnx"
        # Shape inference and constant folding first, as ONNX Runtime recommends: calibration
        # and the QDQ placement need every tensor's type and shape.
        quant_pre_process(str(source), str(prepared), save_as_external_data=large)
        quantize_static(
            str(prepared), str(quantized), _reader(input_name, calibration, pre),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_output_nodes(onnx.load(str(prepared), load_external_data=False)),
            use_external_data_format=large,
            extra_options={"ActivationSymmetric": activations == "int8",
                           "WeightSymmetric": True})
        result = onnx.load(str(quantized))
    del result.metadata_props[:]
    result.metadata_props.extend(model.metadata_props)
    return save_onnx(result, target, embed_limit)


def _output_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes producing a graph output: kept in float, as rounding the embedding itself to one
    per-tensor 8-bit scale costs most of the INT8 error for little speed."""
    outputs = {v.name for v in model.graph.output}
    return [n.name for n in model.graph.node if outputs.intersection(n.output)]


def _gate_failures(entry: dict[str, Any], export: ExportParams) -> list[str]:
    failures = [f"batch {row['batch_size']}: min cosine {row['min_cosine']:.5f} < "
                f"export.int8_min_cosine {export.int8_min_cosine}"
                for row in entry["batch_parity"] if not row["min_cosine"] >= export.int8_min_cosine]
    retrieval = entry["retrieval"]
    for key, delta in retrieval["delta_points"].items():
        if not delta <= export.int8_max_metric_delta:
            failures.append(f"{key} differs by {delta:.3f} points (FP32 "
                            f"{100 * retrieval['onnx'][key]:.2f}, INT8 "
                            f"{100 * retrieval['int8'][key]:.2f}) > export.int8_max_metric_delta "
                            f"{export.int8_max_metric_delta}")
    return failures


def int8_variant(source: Path, reference: Forward, pre: Preprocess, train_paths: Sequence[str],
                 sets: dict[str, pd.DataFrame], images: np.ndarray, export: ExportParams,
                 evaluate: EvaluateParams, batch_size: int, flip: bool, device: str = "auto",
                 embed_limit: int = EMBED_LIMIT_BYTES) -> tuple[dict[str, Any], list[Path]]:
    """Quantize the FP32 graph ``source`` into ``INT8_FILE`` next to it and gate it against
    ``reference`` (``source`` under ONNX Runtime); returns the report entry and the files kept
    (none when the gate failed: the entry's ``reason`` says why)."""
    calibration = calibration_sample(list(train_paths), export.int8_calibration_images,
                                     export.int8_seed)
    entry: dict[str, Any] = {
        "file": INT8_FILE, "format": "QDQ", "weights": "int8 per channel, symmetric",
        "activations": export.int8_activations,
        "activation_scheme": "symmetric" if export.int8_activations == "int8" else "asymmetric",
        "tensorrt_compatible": export.int8_activations == "int8",
        "calibration": {"method": "minmax", "images": len(calibration), "seed": export.int8_seed,
                        "source": "train split"},
        "gates": {"min_cosine": export.int8_min_cosine,
                  "max_metric_delta_points": export.int8_max_metric_delta},
    }
    target = source.with_name(INT8_FILE)
    try:
        files = quantize_int8(source, target, calibration, pre,
                              export.int8_activations, embed_limit)
        check_onnx(target)
        candidate, _ = onnx_forward(target, pre, device)
    except Exception as exc:  # onnxruntime's quantizer raises untyped errors; INT8 stays optional
        _remove(target)
        log.warning("INT8 quantization failed: %s: %s", type(exc).__name__, exc)
        return {**entry, "status": "failed",
                "reason": f"quantization failed: {type(exc).__name__}: {exc}"}, []
    entry["batch_parity"] = batch_parity(reference, candidate, images, export.parity_batch_sizes)
    entry["retrieval"] = retrieval_parity(sets, pre, batch_size, flip, evaluate,
                                          {"onnx": reference, "int8": candidate})
    failures = _gate_failures(entry, export)
    if failures:
        _remove(target)
        reason = "INT8 gate failed: " + "; ".join(failures)
        log.warning("%s; no %s written", reason, INT8_FILE)
        return {**entry, "status": "failed", "reason": reason}, []
    return {**entry, "status": "passed", "reason": None}, files


def _remove(path: Path) -> None:
    for file in model_files(path):
        file.unlink(missing_ok=True)
