"""ONNX export with parity gates: the trained network as ``model.onnx`` (+ ``model_fp16.onnx``,
``model_int8.onnx``).

The graph takes the *normalised* NCHW float32 batch (the preprocessing of ``reidpipe.input_contract``:
resize, pixels to 0-1, mean/std, RGB) and returns the raw embedding (N x D, not L2-normalised);
the graph itself never normalises, so consumers must not skip it nor do it twice (fast-reid #147).
That contract is written into the model's metadata (``reidpipe.*`` keys, see
:func:`read_input_contract`). The batch axis is symbolic and checked at several sizes: Swin's
window ops must not bake the export batch in (a fixed-batch `window_reverse` breaks dynamic-batch
ONNX).

Gates (``export.*``): per batch size the max abs difference and min cosine between ONNX Runtime
and PyTorch, and the query/gallery mAP and rank-1 of both within ``max_metric_delta`` points. The
output folder (model.onnx, its ``.onnx.data`` side file when the weights are too big to embed,
model_fp16.onnx, parity.json) appears only when every gate passed. The INT8 copy
(``reidpipe.deploy.int8``) has its own gate; failing it leaves only that file out, with the reason
in parity.json. parity.json also holds the ONNX Runtime latency of each precision.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from reidpipe import atomic
from reidpipe.data.manifest import read_split
from reidpipe.deploy.fp16 import FP16_KEEP_FP32_OPS, convert_fp16
from reidpipe.deploy.int8 import check_op_types, int8_variant
from reidpipe.deploy.onnx_io import (
    EMBED_LIMIT_BYTES,
    INPUT_NAME,
    OUTPUT_NAME,
    check_onnx,
    save_onnx,
)
from reidpipe.deploy.parity import (
    batch_parity,
    forward_latency,
    parity_images,
    retrieval_parity,
    strict_fp32,
)
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.extract import extract_embeddings, image_sets_from_splits, torch_forward
from reidpipe.evaluation.onnx_runtime import onnx_forward
from reidpipe.filenames import FP16_FILE, INT8_FILE, ONNX_FILE, PARITY_FILE
from reidpipe.input_contract import META_PREFIX, Forward, Preprocess, contract_metadata
from reidpipe.params import EvaluateParams, ExportParams, Params

log = logging.getLogger(__name__)



def export_graph(net: nn.Module, pre: Preprocess, path: Path, opset: int,
                 metadata: dict[str, str], embed_limit: int = EMBED_LIMIT_BYTES) -> list[Path]:
    """Export ``net`` (eval mode, on whatever device it is) with a dynamic batch axis; returns
    the files written."""
    net = net.eval()
    device = next(net.parameters(), torch.empty(0)).device
    example = torch.rand(2, 3, pre.height, pre.width, device=device)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            net, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # the exporter raises many error types; all mean "cannot export"
        raise ReidpipeError(f"torch.onnx.export failed for {type(net).__name__}: "
                            f"{type(exc).__name__}: {exc}") from None
    model = program.model_proto
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return save_onnx(model, path, embed_limit)


def _gate_failures(report: dict[str, Any], export: ExportParams) -> list[str]:
    failures = []
    for row in report["batch_parity"]:
        if not row["max_abs_diff"] <= export.max_abs_diff:
            failures.append(f"batch {row['batch_size']}: max abs diff {row['max_abs_diff']:.3g} "
                            f"> export.max_abs_diff {export.max_abs_diff}")
        if not row["min_cosine"] >= export.min_cosine:
            failures.append(f"batch {row['batch_size']}: min cosine {row['min_cosine']:.6f} "
                            f"< export.min_cosine {export.min_cosine}")
    for key, delta in report["retrieval"]["delta_points"].items():
        if not delta <= export.max_metric_delta:
            failures.append(f"{key} differs by {delta:.3f} points (torch "
                            f"{100 * report['retrieval']['torch'][key]:.2f}, onnx "
                            f"{100 * report['retrieval']['onnx'][key]:.2f}) > "
                            f"export.max_metric_delta {export.max_metric_delta}")
    return failures


def export_onnx(net: nn.Module, pre: Preprocess, arch: str, splits_dir: str | Path,
                out_dir: str | Path, export: ExportParams, evaluate: EvaluateParams,
                batch_size: int, flip: bool = False, device: str = "auto",
                embed_limit: int = EMBED_LIMIT_BYTES) -> dict[str, Any]:
    """Export ``net``, check it against PyTorch and write the folder; returns the parity report.

    A failed gate raises ReidpipeError and removes ``out_dir`` so no stale model passes for valid.
    """
    out_dir = Path(out_dir)
    if not export.parity_batch_sizes or min(export.parity_batch_sizes) < 1:
        raise ReidpipeError(f"export.parity_batch_sizes = {export.parity_batch_sizes}: expected "
                            "a non-empty list of positive batch sizes")
    if export.int8:
        check_op_types(export)   # before the export, which takes minutes on a big model
    sets = image_sets_from_splits(splits_dir)
    images = parity_images(list(sets["query"]["path"]), pre, max(export.parity_batch_sizes))
    net = net.eval()
    with strict_fp32():
        reference = torch_forward(net, device)
        embedding_dim = int(np.asarray(reference(images[:1])).shape[1])
        metadata = contract_metadata(pre, arch, embedding_dim)
        with atomic.atomic_dir(out_dir) as tmp:
            start = time.perf_counter()
            files = export_graph(net, pre, tmp / ONNX_FILE, export.opset, metadata, embed_limit)
            export_seconds = time.perf_counter() - start
            check_onnx(tmp / ONNX_FILE)
            candidate, _ = onnx_forward(tmp / ONNX_FILE, pre, device)
            report: dict[str, Any] = {
                "arch": arch, "opset": export.opset,
                "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                             "onnxruntime": _ort_version()},
                "input": {"name": INPUT_NAME, "shape": ["batch", 3, pre.height, pre.width],
                          **{k[len(META_PREFIX):]: v for k, v in metadata.items()}},
                "output": {"name": OUTPUT_NAME, "shape": ["batch", embedding_dim]},
                "export_seconds": round(export_seconds, 3),
                "gates": {"max_abs_diff": export.max_abs_diff, "min_cosine": export.min_cosine,
                          "max_metric_delta_points": export.max_metric_delta},
                "batch_parity": batch_parity(reference, candidate, images,
                                             export.parity_batch_sizes),
            }
            onnx_embeddings = extract_embeddings(candidate, sets, pre, batch_size, flip)
            report["retrieval"] = retrieval_parity(
                {"torch": extract_embeddings(reference, sets, pre, batch_size, flip),
                 "onnx": onnx_embeddings}, evaluate, flip)
            failures = _gate_failures(report, export)
            if failures:
                shutil.rmtree(out_dir, ignore_errors=True)
                raise ReidpipeError(f"ONNX parity gate failed for {arch}: " + "; ".join(failures))
            if export.fp16:
                files += convert_fp16(tmp / ONNX_FILE, tmp / FP16_FILE, embed_limit)
                check_onnx(tmp / FP16_FILE)
                half, _ = onnx_forward(tmp / FP16_FILE, pre, device)
                report["fp16"] = {"file": FP16_FILE, "fp32_ops": list(FP16_KEEP_FP32_OPS),
                                  "io_dtype": "float32", "min_cosine_gate": export.fp16_min_cosine,
                                  "batch_parity": batch_parity(candidate, half, images,
                                                               export.parity_batch_sizes)}
                bad = [row for row in report["fp16"]["batch_parity"]  # NaN (overflow) fails too
                       if not row["min_cosine"] >= export.fp16_min_cosine]
                if bad:
                    shutil.rmtree(out_dir, ignore_errors=True)
                    raise ReidpipeError(
                        f"FP16 ONNX parity gate failed for {arch}: min cosine "
                        f"{bad[0]['min_cosine']:.6f} at batch {bad[0]['batch_size']} < "
                        f"export.fp16_min_cosine {export.fp16_min_cosine}")
            else:
                report["fp16"] = None
            if export.int8:
                report["int8"], kept = int8_variant(
                    tmp / ONNX_FILE, candidate, onnx_embeddings, pre,
                    list(read_split(splits_dir, "train")["path"]), sets, images, export,
                    evaluate, batch_size, flip, device, embed_limit)
                files += kept
            else:
                report["int8"] = None
            report["latency"] = {
                name: forward_latency(forward, images, export.parity_batch_sizes)
                for name, forward in _precision_forwards(tmp, pre, device).items()}
            report["files"] = {p.name: p.stat().st_size for p in files}
            report["status"] = "passed"
            atomic.write_json(tmp / PARITY_FILE, report)
    return report


def _precision_forwards(folder: Path, pre: Preprocess, device: str) -> dict[str, Forward]:
    """ONNX Runtime forwards of the FP32, FP16 and INT8 files present in ``folder``."""
    names = {"fp32": ONNX_FILE, "fp16": FP16_FILE, "int8": INT8_FILE}
    return {precision: onnx_forward(folder / name, pre, device)[0]
            for precision, name in names.items() if (folder / name).is_file()}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def export_stage(params: Params, arch: str, model_dir: str | Path, splits_dir: str | Path,
                 out_dir: str | Path, device: str = "auto") -> dict[str, Any]:
    """``reidpipe export-onnx``: the trained model of ``model_dir`` to ``out_dir``."""
    from reidpipe.training.model import load_trained_model

    params.arch(arch)  # an unknown name fails here, naming the defined ones
    net, trained = load_trained_model(Path(model_dir))
    pre = Preprocess.from_params(trained, params.extract)
    configured = Preprocess.from_params(params.arch(arch), params.extract)
    if configured != pre:
        log.warning("params give input %s but %s was trained with %s; exporting with the trained "
                    "model's", configured, model_dir, pre)
    return export_onnx(net, pre, arch, splits_dir, out_dir, params.export_for(arch),
                       params.evaluate, params.extract.batch_size, flip=trained.model.with_flip_feature,
                       device=device)
