"""INT8 copy of an exported graph: ONNX Runtime static quantization (QDQ), gated on retrieval.

Weights are quantized per channel (signed, symmetric); activations get one scale per tensor,
calibrated on a seeded sample of *train* images (never query/gallery: the gate then measures on
images calibration did not see) with ``export.int8_calibration_method``: ``minmax`` or
``percentile`` (|x| clipped at ``export.int8_calibration_percentile``). By default Q/DQ pairs go
only on the inputs of ``export.int8_op_types`` (Conv, Gemm, MatMul: TensorRT's explicit
quantization placement); ``export.int8_quantize_outputs`` adds their outputs and ``[]`` op types
quantizes every op ONNX Runtime can (its own default placement). ``export.int8_activations``
picks the activation type: ``int8`` (symmetric, zero point 0) is what TensorRT's explicit
quantization takes; ``uint8`` (asymmetric) is ONNX Runtime's fast path on x86 CPUs without VNNI
(U8S8 kernels), which TensorRT cannot parse. The gate compares the INT8 graph with the FP32 one
under ONNX Runtime: lowest cosine per batch size, and plain mAP / rank-1 deltas in points. A
failed gate is not an error: the INT8 file is left out and the reason is recorded for the report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from reidpipe.deploy.onnx_io import EMBED_LIMIT_BYTES, save_onnx
from reidpipe.deploy.variants import Gate, Limit, Variant
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import INT8_FILE, ONNX_FILE
from reidpipe.input_contract import Preprocess, load_image
from reidpipe.params import ExportParams

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
    """A CalibrationDataReader yielding the preprocessed images in batches; ``set_range`` (in
    batches) lets ONNX Runtime collect one batch at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class ImageBatches(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = list(range(0, len(paths), CALIBRATION_BATCH))
            self.pending = iter(self.starts)

        def __len__(self) -> int:
            return len(self.starts)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pending = iter(self.starts[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.pending, None)
            if start is None:
                return None
            batch = paths[start : start + CALIBRATION_BATCH]
            return {input_name: np.stack([load_image(p, pre) for p in batch])}

    return ImageBatches()


def quantizable_op_types() -> set[str]:
    """The op types ONNX Runtime's static quantizer knows (QDQ and QOperator registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def check_op_types(export: ExportParams) -> None:
    """A misspelt op type would silently quantize nothing: refuse it, naming the known ones."""
    known = quantizable_op_types()
    unknown = [op for op in export.int8_op_types if op not in known]
    if unknown:
        raise ReidpipeError(
            f"params: export.int8_op_types has {unknown}, which ONNX Runtime's "
            f"quantizer does not know; expected some of {sorted(known)} or []"
        )


def quantize_int8(
    source: Path,
    target: Path,
    calibration: Sequence[str],
    pre: Preprocess,
    export: ExportParams,
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> list[Path]:
    """Write the QDQ INT8 copy of ``source`` calibrated on the images ``calibration`` as
    ``export.int8_*`` say; returns the files written. The contract metadata of ``source`` is
    carried over."""
    symmetric = export.int8_activations == "int8"
    op_types = list(export.int8_op_types) or sorted(quantizable_op_types())
    model = onnx.load(str(source), load_external_data=False)
    large = sum(t.ByteSize() for t in model.graph.initializer) > embed_limit
    result = _quantize_static(
        source,
        _reader(model.graph.input[0].name, calibration, pre),
        export,
        op_types,
        symmetric,
        large,
    )
    del result.metadata_props[:]
    result.metadata_props.extend(model.metadata_props)
    return save_onnx(result, target, embed_limit)


def _quantizer_options(
    export: ExportParams, op_types: list[str], symmetric: bool
) -> dict[str, Any]:
    """``extra_options`` of ONNX Runtime's ``quantize_static`` for ``export.int8_*``."""
    extra: dict[str, Any] = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        # Calibrate one reader batch at a time: the histogram of percentile calibration is
        # merged batch by batch instead of holding every activation of the whole sample (GBs
        # for ResNet-50 at 256x128). The loop behind this key is not MinMax-specific.
        "CalibStridedMinMax": 1,
        # Percentile calibration keeps that share of |x| when symmetric, of x (half the rest
        # cut from each tail) when not.
        "CalibTensorRangeSymmetric": symmetric,
    }
    if export.int8_calibration_method == "percentile":
        extra["CalibPercentile"] = export.int8_calibration_percentile
    if not export.int8_quantize_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = op_types
    return extra


def _quantize_static(
    source: Path,
    reader: Any,
    export: ExportParams,
    op_types: list[str],
    symmetric: bool,
    large: bool,
) -> onnx.ModelProto:
    """The QDQ model ONNX Runtime writes for ``source`` calibrated on ``reader``'s batches,
    loaded back from its scratch folder."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="reidpipe-int8-") as work:
        prepared = Path(work) / "prepared.onnx"
        quantized = Path(work) / "quantized.onnx"
        # Shape inference and constant folding first, as ONNX Runtime recommends: calibration
        # and the QDQ placement need every tensor's type and shape.
        quant_pre_process(str(source), str(prepared), save_as_external_data=large)
        # The histogram calibrators print progress on stdout; keep it out of the CLI's output.
        with contextlib.redirect_stdout(io.StringIO()) as chatter:
            quantize_static(
                str(prepared),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                op_types_to_quantize=op_types,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "percentile": CalibrationMethod.Percentile,
                }[export.int8_calibration_method],
                nodes_to_exclude=_output_nodes(onnx.load(str(prepared), load_external_data=False)),
                use_external_data_format=large,
                extra_options=_quantizer_options(export, op_types, symmetric),
            )
        log.debug("ONNX Runtime calibration: %s", chatter.getvalue())
        return onnx.load(str(quantized))


def _output_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes producing a graph output: kept in float, as rounding the embedding itself to one
    per-tensor 8-bit scale costs most of the INT8 error for little speed."""
    outputs = {v.name for v in model.graph.output}
    return [n.name for n in model.graph.node if outputs.intersection(n.output)]


def int8_variant(
    export: ExportParams,
    train_paths: Sequence[str],
    pre: Preprocess,
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> Variant:
    """The INT8 copy of the FP32 graph, calibrated on a seeded sample of ``train_paths`` and
    gated against the FP32 graph under ONNX Runtime (whose embeddings the FP32 gate extracted
    already). Optional: a failed quantization or gate leaves it out, the report saying why. A
    misspelt op type is refused here, before the FP32 export."""
    check_op_types(export)
    calibration = calibration_sample(
        list(train_paths), export.int8_calibration_images, export.int8_seed
    )

    def build(folder: Path) -> tuple[list[Path], dict[str, Any]]:
        return quantize_int8(
            folder / ONNX_FILE, folder / INT8_FILE, calibration, pre, export, embed_limit
        ), {}

    return Variant(
        name="int8",
        file=INT8_FILE,
        build=build,
        reference="fp32",
        required=False,
        build_failed="quantization failed",
        about=_int8_about(export, len(calibration)),
        gate=_int8_gate(export),
    )


def _int8_about(export: ExportParams, calibration_images: int) -> dict[str, Any]:
    """The report's description of ``model_int8.onnx``: format, schemes, calibration and
    placement."""
    return {
        "file": INT8_FILE,
        "format": "QDQ",
        "weights": "int8 per channel, symmetric",
        "activations": export.int8_activations,
        "activation_scheme": "symmetric" if export.int8_activations == "int8" else "asymmetric",
        "tensorrt_compatible": export.int8_activations == "int8",
        "calibration": {
            "method": export.int8_calibration_method,
            "images": calibration_images,
            "seed": export.int8_seed,
            "source": "train split",
            **(
                {"percentile": export.int8_calibration_percentile}
                if export.int8_calibration_method == "percentile"
                else {}
            ),
        },
        "quantized_ops": list(export.int8_op_types) or "all ONNX Runtime quantizes",
        "quantized_tensors": "inputs and outputs" if export.int8_quantize_outputs else "inputs",
    }


def _int8_gate(export: ExportParams) -> Gate:
    """The limits ``model_int8.onnx`` must meet against ``model.onnx``."""
    return Gate(
        title="INT8 gate failed",
        record={
            "gates": {
                "min_cosine": export.int8_min_cosine,
                "max_metric_delta_points": export.int8_max_metric_delta,
            }
        },
        rows=(
            Limit(
                "min_cosine",
                "export.int8_min_cosine",
                export.int8_min_cosine,
                "batch {batch_size}: min cosine {min_cosine:.5f} < {key} {limit}",
            ),
        ),
        metric_delta=Limit(
            "delta_points",
            "export.int8_max_metric_delta",
            export.int8_max_metric_delta,
            "{metric} differs by {delta:.3f} points (FP32 {reference:.2f}, "
            "INT8 {candidate:.2f}) > {key} {limit}",
        ),
        names=("onnx", "int8"),
    )
