"""ONNX export with parity gates: the trained network as ``model.onnx`` (+ ``model_fp16.onnx``,
``model_int8.onnx``).

The graph takes the *normalised* NCHW float32 batch (the preprocessing of
``reidpipe.input_contract``: resize, pixels to 0-1, mean/std, RGB) and returns the raw embedding
(N x D, not L2-normalised); the graph itself never normalises, so consumers must not skip it nor
do it twice (fast-reid #147).
That contract is written into the model's metadata (``reidpipe.*`` keys, see
:func:`read_input_contract`). The batch axis is symbolic and checked at several sizes: Swin's
window ops must not bake the export batch in (a fixed-batch `window_reverse` breaks dynamic-batch
ONNX).

The stage is one loop over its variants (``reidpipe.deploy.variants``), each built, then gated
by the same function against its reference:

- FP32 ``model.onnx`` against PyTorch: per batch size the max abs difference and min cosine, and
  the query/gallery mAP and rank-1 within ``export.max_metric_delta`` points;
- FP16 ``model_fp16.onnx`` (``reidpipe.deploy.fp16``) against FP32: min cosine per batch size;
- INT8 ``model_int8.onnx`` (``reidpipe.deploy.int8``) against FP32 under ONNX Runtime: min cosine
  per batch size and the metric deltas, on the FP32 gate's embeddings.

The output folder (model.onnx, its ``.onnx.data`` side file when the weights are too big to
embed, model_fp16.onnx, parity.json) appears only when the FP32 and FP16 gates passed. INT8 is
optional: failing its build or gate leaves only that file out, with the reason in parity.json.
parity.json also holds the ONNX Runtime latency of each precision.
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
from reidpipe.deploy.fp16 import fp16_variant
from reidpipe.deploy.int8 import int8_variant
from reidpipe.deploy.onnx_io import (
    EMBED_LIMIT_BYTES,
    INPUT_NAME,
    OUTPUT_NAME,
    save_onnx,
)
from reidpipe.deploy.parity import forward_latency, parity_images, strict_fp32
from reidpipe.deploy.variants import Bench, Gate, Limit, Variant, build_and_gate
from reidpipe.errors import ReidpipeError
from reidpipe.evaluation.extract import image_sets_from_splits, torch_forward
from reidpipe.filenames import ONNX_FILE, PARITY_FILE
from reidpipe.input_contract import META_PREFIX, Preprocess, contract_metadata
from reidpipe.params import EvaluateParams, ExportParams, Params

log = logging.getLogger(__name__)


def export_graph(
    net: nn.Module,
    pre: Preprocess,
    path: Path,
    opset: int,
    metadata: dict[str, str],
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> list[Path]:
    """Export ``net`` (eval mode, on whatever device it is) with a dynamic batch axis; returns
    the files written."""
    net = net.eval()
    device = next(net.parameters(), torch.empty(0)).device
    example = torch.rand(2, 3, pre.height, pre.width, device=device)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many error types; all mean "cannot export"
        raise ReidpipeError(
            f"torch.onnx.export failed for {type(net).__name__}: {type(exc).__name__}: {exc}"
        ) from None
    model = program.model_proto
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    return save_onnx(model, path, embed_limit)


def fp32_variant(
    net: nn.Module,
    pre: Preprocess,
    arch: str,
    export: ExportParams,
    metadata: dict[str, str],
    embedding_dim: int,
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> Variant:
    """``net`` exported as ``model.onnx``, gated against PyTorch: per batch size the max abs
    difference and lowest cosine, and the mAP / rank-1 deltas in points."""

    def build(folder: Path) -> tuple[list[Path], dict[str, Any]]:
        start = time.perf_counter()
        files = export_graph(net, pre, folder / ONNX_FILE, export.opset, metadata, embed_limit)
        return files, {"export_seconds": round(time.perf_counter() - start, 3)}

    return Variant(
        name="fp32",
        file=ONNX_FILE,
        build=build,
        reference="torch",
        about=_fp32_about(pre, arch, export, metadata, embedding_dim),
        gate=_fp32_gate(arch, export),
    )


def _fp32_about(
    pre: Preprocess, arch: str, export: ExportParams, metadata: dict[str, str], embedding_dim: int
) -> dict[str, Any]:
    """The report's description of ``model.onnx``: versions, input contract, output shape."""
    return {
        "arch": arch,
        "opset": export.opset,
        "versions": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": _ort_version(),
        },
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, pre.height, pre.width],
            **{k[len(META_PREFIX) :]: v for k, v in metadata.items()},
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", embedding_dim]},
    }


def _fp32_gate(arch: str, export: ExportParams) -> Gate:
    """The limits ``model.onnx`` must meet against PyTorch."""
    return Gate(
        title=f"ONNX parity gate failed for {arch}",
        record={
            "gates": {
                "max_abs_diff": export.max_abs_diff,
                "min_cosine": export.min_cosine,
                "max_metric_delta_points": export.max_metric_delta,
            }
        },
        rows=(
            Limit(
                "max_abs_diff",
                "export.max_abs_diff",
                export.max_abs_diff,
                "batch {batch_size}: max abs diff {max_abs_diff:.3g} > {key} {limit}",
            ),
            Limit(
                "min_cosine",
                "export.min_cosine",
                export.min_cosine,
                "batch {batch_size}: min cosine {min_cosine:.6f} < {key} {limit}",
            ),
        ),
        metric_delta=Limit(
            "delta_points",
            "export.max_metric_delta",
            export.max_metric_delta,
            "{metric} differs by {delta:.3f} points (torch {reference:.2f}, "
            "onnx {candidate:.2f}) > {key} {limit}",
        ),
        names=("torch", "onnx"),
    )


def export_variants(
    net: nn.Module,
    pre: Preprocess,
    arch: str,
    splits_dir: str | Path,
    export: ExportParams,
    embedding_dim: int,
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> list[Variant]:
    """FP32, then the FP16 and INT8 copies ``export`` asks for, both built from the FP32 file
    and gated against it."""
    metadata = contract_metadata(pre, arch, embedding_dim)
    variants = [fp32_variant(net, pre, arch, export, metadata, embedding_dim, embed_limit)]
    if export.fp16:
        variants.append(fp16_variant(arch, export, embed_limit))
    if export.int8:
        variants.append(
            int8_variant(export, list(read_split(splits_dir, "train")["path"]), pre, embed_limit)
        )
    return variants


def export_onnx(
    net: nn.Module,
    pre: Preprocess,
    arch: str,
    splits_dir: str | Path,
    out_dir: str | Path,
    export: ExportParams,
    evaluate: EvaluateParams,
    batch_size: int,
    flip: bool = False,
    device: str = "auto",
    embed_limit: int = EMBED_LIMIT_BYTES,
) -> dict[str, Any]:
    """Export ``net``, build and gate each variant in turn and write the folder; returns the
    parity report.

    A required variant's failed gate raises ReidpipeError and removes ``out_dir`` so no stale
    model passes for valid.
    """
    out_dir = Path(out_dir)
    _check_parity_batch_sizes(export)
    sets = image_sets_from_splits(splits_dir)
    images = parity_images(list(sets["query"]["path"]), pre, max(export.parity_batch_sizes))
    net = net.eval()
    with strict_fp32():
        bench = Bench(
            pre,
            images,
            export.parity_batch_sizes,
            sets,
            evaluate,
            batch_size,
            flip,
            device,
            forwards={"torch": torch_forward(net, device)},
        )
        embedding_dim = int(np.asarray(bench.forwards["torch"](images[:1])).shape[1])
        # built before the export, which takes minutes on a big model: bad INT8 settings fail now
        variants = export_variants(net, pre, arch, splits_dir, export, embedding_dim, embed_limit)
        return _write_gated_variants(variants, bench, out_dir)


def _check_parity_batch_sizes(export: ExportParams) -> None:
    if not export.parity_batch_sizes or min(export.parity_batch_sizes) < 1:
        raise ReidpipeError(
            f"export.parity_batch_sizes = {export.parity_batch_sizes}: expected "
            "a non-empty list of positive batch sizes"
        )


def _write_gated_variants(variants: list[Variant], bench: Bench, out_dir: Path) -> dict[str, Any]:
    """Build and gate each variant in turn into the folder that becomes ``out_dir`` with
    ``parity.json``; returns the parity report. A required variant's failed gate removes
    ``out_dir`` and raises."""
    entries: dict[str, dict[str, Any]] = {}
    files: list[Path] = []
    with atomic.atomic_dir(out_dir) as tmp:
        for variant in variants:
            entries[variant.name], kept, failure = build_and_gate(variant, tmp, bench)
            if failure is not None:
                shutil.rmtree(out_dir, ignore_errors=True)
                raise ReidpipeError(failure)
            files += kept
        report = _parity_report(entries, variants, bench, files)
        atomic.write_json(tmp / PARITY_FILE, report)
    return report


def _parity_report(
    entries: dict[str, dict[str, Any]], variants: list[Variant], bench: Bench, files: list[Path]
) -> dict[str, Any]:
    """parity.json: the FP32 gate's entries at the top, FP16's and INT8's under their names,
    the ONNX Runtime latency of each precision and the size of each file."""
    return {
        **entries["fp32"],
        "fp16": entries.get("fp16"),
        "int8": entries.get("int8"),
        "latency": {
            v.name: forward_latency(bench.forwards[v.name], bench.images, bench.batch_sizes)
            for v in variants
            if v.name in bench.forwards
        },
        "files": {p.name: p.stat().st_size for p in files},
        "status": "passed",
    }


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def export_stage(
    params: Params,
    arch: str,
    model_dir: str | Path,
    splits_dir: str | Path,
    out_dir: str | Path,
    device: str = "auto",
) -> dict[str, Any]:
    """``reidpipe export-onnx``: the trained model of ``model_dir`` to ``out_dir``."""
    from reidpipe.training.model import load_trained_model

    params.arch(arch)  # an unknown name fails here, naming the defined ones
    net, trained = load_trained_model(Path(model_dir))
    pre = Preprocess.from_params(trained, params.extract)
    configured = Preprocess.from_params(params.arch(arch), params.extract)
    if configured != pre:
        log.warning(
            "params give input %s but %s was trained with %s; exporting with the trained model's",
            configured,
            model_dir,
            pre,
        )
    return export_onnx(
        net,
        pre,
        arch,
        splits_dir,
        out_dir,
        params.export_for(arch),
        params.evaluate,
        params.extract.batch_size,
        flip=trained.model.with_flip_feature,
        device=device,
    )
