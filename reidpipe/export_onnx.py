"""ONNX export with parity gates: the trained network as ``model.onnx`` (+ ``model_fp16.onnx``).

The graph takes the *normalised* NCHW float32 batch (the preprocessing of ``reidpipe.extract``:
resize, pixels to 0-1, mean/std, RGB) and returns the raw embedding (N x D, not L2-normalised);
the graph itself never normalises, so consumers must not skip it nor do it twice (fast-reid #147).
That contract is written into the model's metadata (``reidpipe.*`` keys, see
:func:`read_input_contract`). The batch axis is symbolic and checked at several sizes: Swin's
window ops must not bake the export batch in (GUIDE §5).

Gates (``export.*``): per batch size the max abs difference and min cosine between ONNX Runtime
and PyTorch, and the query/gallery mAP and rank-1 of both within ``max_metric_delta`` points. The
output folder (model.onnx, its ``.onnx.data`` side file when the weights are too big to embed,
model_fp16.onnx, parity.json) appears only when every gate passed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from reidpipe import atomic
from reidpipe.embeddings import Embeddings
from reidpipe.errors import ReidpipeError
from reidpipe.evaluate import evaluate_embeddings
from reidpipe.extract import (Forward, Preprocess, extract_embeddings, image_sets_from_splits,
                              load_image, onnx_forward, torch_forward)
from reidpipe.params import EvaluateParams, ExportParams, Params, ReRankingParams

ONNX_FILE = "model.onnx"
FP16_FILE = "model_fp16.onnx"
PARITY_FILE = "parity.json"
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
DATA_SUFFIX = ".data"
# Weights up to this size are embedded in the .onnx file (protobuf caps a file at 2 GiB); larger
# ones go to ``<name>.onnx.data`` next to it.
EMBED_LIMIT_BYTES = 1 << 30
META_PREFIX = "reidpipe."
# Kept in FP32 in the FP16 graph: TensorRT warns that FP16 LayerNorm after attention overflows.
FP16_MAX = 65504.0
FP16_KEEP_FP32_OPS = ("LayerNormalization",)


# ------------------------------------------------------------------------------ input contract


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
            "does not normalise"),
        f"{META_PREFIX}embedding_dim": str(embedding_dim),
        f"{META_PREFIX}embedding_normalised": "false",
    }


def read_input_contract(path: str | Path) -> Preprocess:
    """The preprocessing an ONNX model from ``export-onnx`` expects, read from its metadata."""
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props
            if p.key.startswith(META_PREFIX)}
    try:
        return Preprocess(height=int(meta["input_height"]), width=int(meta["input_width"]),
                          mean=tuple(json.loads(meta["pixel_mean"])),
                          std=tuple(json.loads(meta["pixel_std"])),
                          channel_order=meta["channel_order"], input_scale=int(meta["input_scale"]))
    except (KeyError, ValueError) as exc:
        raise ReidpipeError(f"{path} has no complete reidpipe input contract in its metadata "
                            f"({exc!r}); export it with `reidpipe export-onnx`") from None


# ----------------------------------------------------------------------------------- ONNX files


def model_files(path: Path) -> list[Path]:
    """``path`` and its external-data side file when there is one."""
    side = path.with_name(path.name + DATA_SUFFIX)
    return [path, side] if side.is_file() else [path]


def save_onnx(model: onnx.ModelProto, path: Path,
              embed_limit: int = EMBED_LIMIT_BYTES) -> list[Path]:
    """Save with the weights embedded, or in ``<name>.onnx.data`` above ``embed_limit`` bytes."""
    weights = sum(t.ByteSize() for t in model.graph.initializer)
    if weights > embed_limit:
        onnx.save_model(model, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=path.name + DATA_SUFFIX,
                        size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return model_files(path)


def _check_dynamic_batch(model: onnx.ModelProto, path: Path) -> None:
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            if not dims or dims[0].HasField("dim_value"):
                fixed = dims[0].dim_value if dims else "none"
                raise ReidpipeError(f"{path}: {kind} {value.name!r} has batch axis {fixed}; "
                                    "expected a symbolic (dynamic) batch")


def check_onnx(path: Path) -> None:
    """onnx.checker on the file (side data included) and a symbolic batch on every I/O."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ReidpipeError(f"{path} fails onnx.checker: {exc}") from None
    _check_dynamic_batch(onnx.load(str(path), load_external_data=False), path)


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


def _half(tensor: onnx.TensorProto) -> onnx.TensorProto:
    values = np.clip(numpy_helper.to_array(tensor), -FP16_MAX, FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(values, tensor.name)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of the FP32 tensors of the graph (types from shape inference)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    values = [*graph.input, *graph.output, *graph.value_info]
    names = {v.name for v in values if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    return names | {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def _cast(source: str, target: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [target], name=f"{target}_cast", to=to)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of ``model`` with its FP32 inputs and outputs kept (cast at the edges) and
    the ops in ``FP16_KEEP_FP32_OPS`` computed in FP32."""
    FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    if model.functions or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                              for n in model.graph.node for a in n.attribute):
        raise ReidpipeError("FP16 conversion handles flat graphs only; this one has local "
                            "functions or subgraphs")
    floats = _float_tensors(model)
    half = onnx.ModelProto()
    half.CopyFrom(model)
    graph = half.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == FLOAT:
            graph.initializer[index].CopyFrom(_half(tensor))
    outputs = {v.name for v in graph.output if v.name in floats}
    renamed = {v.name: f"{v.name}_fp16" for v in graph.input if v.name in floats}
    nodes = [_cast(name, half_name, HALF) for name, half_name in renamed.items()]
    for number, node in enumerate(graph.node):
        originals = list(node.input)
        node.input[:] = [renamed.get(name, name) for name in originals]
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(_half(attr.t))
        keep = node.op_type in FP16_KEEP_FP32_OPS
        if keep:
            for index, name in enumerate(originals):
                if name in floats:
                    nodes.append(_cast(node.input[index], f"{name}_fp32_{number}", FLOAT))
                    node.input[index] = f"{name}_fp32_{number}"
        after = []
        for index, name in enumerate(node.output):
            if name not in floats:
                continue
            half_name = f"{name}_fp16" if name in outputs else name
            if keep:
                node.output[index] = f"{name}_fp32"
                after.append(_cast(node.output[index], half_name, HALF))
            else:
                node.output[index] = half_name
            if name in outputs:
                renamed[name] = half_name
                after.append(_cast(half_name, name, FLOAT))
        nodes += [node, *after]
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("value_info")
    return half


def convert_fp16(source: Path, target: Path, embed_limit: int = EMBED_LIMIT_BYTES) -> list[Path]:
    """Write the FP16 copy of ``source`` (see :func:`to_fp16`): TensorRT 11 takes precision from
    the graph."""
    return save_onnx(to_fp16(onnx.load(str(source))), target, embed_limit)


# ------------------------------------------------------------------------------------- parity


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                       1e-12)


def parity_images(paths: Sequence[str], pre: Preprocess, count: int) -> np.ndarray:
    """``count`` preprocessed images from ``paths``, cycling when there are fewer."""
    if not paths:
        raise ReidpipeError("no images to check parity on: the query manifest is empty")
    return np.stack([load_image(paths[i % len(paths)], pre) for i in range(count)])


def batch_parity(reference: Forward, candidate: Forward, images: np.ndarray,
                 batch_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Candidate at each batch size (first ``b`` images) against the reference run once on all
    images, so a batch-dependent candidate (baked batch, torchreid #585) shows up."""
    expected = np.asarray(reference(images), dtype=np.float32)
    rows = []
    for size in batch_sizes:
        got = np.asarray(candidate(np.ascontiguousarray(images[:size])), dtype=np.float32)
        if got.shape != expected[:size].shape:
            raise ReidpipeError(f"batch {size}: output shape {got.shape}, expected "
                                f"{expected[:size].shape}")
        cos = cosine_rows(got, expected[:size])
        rows.append({"batch_size": int(size),
                     "max_abs_diff": float(np.abs(got - expected[:size]).max()),
                     "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())})
    return rows


def retrieval(embeddings: Embeddings, evaluate: EvaluateParams) -> dict[str, float]:
    """Plain (not re-ranked) mAP and rank-1 as fractions."""
    metrics = evaluate_embeddings(embeddings, evaluate, ReRankingParams(re_ranking=False),
                                  device="cpu").metrics["plain"]
    return {"mAP": float(metrics["mAP"]), "rank1": float(metrics["rank1"])}


def metric_deltas(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Absolute differences in points (percent)."""
    return {key: abs(a[key] - b[key]) * 100.0 for key in a}


def retrieval_parity(sets: dict[str, pd.DataFrame], pre: Preprocess, batch_size: int,
                     flip: bool, evaluate: EvaluateParams,
                     forwards: dict[str, Forward]) -> dict[str, Any]:
    """Query/gallery mAP and R1 with a reference and a candidate forward (in that order), their
    deltas in points and the lowest cosine between the two embeddings of an image."""
    (ref, _), (cand, _) = forwards.items()
    emb = {name: extract_embeddings(forward, sets, pre, batch_size, flip)
           for name, forward in forwards.items()}
    scores = {name: retrieval(e, evaluate) for name, e in emb.items()}
    return {"num_query": len(sets["query"]), "num_gallery": len(sets["gallery"]), "flip": flip,
            **scores, "delta_points": metric_deltas(scores[ref], scores[cand]),
            "min_cosine": float(min(cosine_rows(getattr(emb[ref], s).features,
                                                getattr(emb[cand], s).features).min()
                                    for s in ("query", "gallery")))}


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """No TF32 on CUDA while comparing: TF32 alone can exceed a 1e-3 gate."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


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
            report["retrieval"] = retrieval_parity(
                sets, pre, batch_size, flip, evaluate, {"torch": reference, "onnx": candidate})
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
            report["files"] = {p.name: p.stat().st_size for p in files}
            report["status"] = "passed"
            atomic.write_json(tmp / PARITY_FILE, report)
    return report


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def export_stage(params: Params, arch: str, model_dir: str | Path, splits_dir: str | Path,
                 out_dir: str | Path, device: str = "auto") -> dict[str, Any]:
    """``reidpipe export-onnx``: the trained model of ``model_dir`` to ``out_dir``."""
    from reidpipe.model import load_trained_model

    params.arch(arch)  # an unknown name fails here, naming the defined ones
    net, trained = load_trained_model(Path(model_dir))
    pre = Preprocess.from_params(trained, params.extract)
    configured = Preprocess.from_params(params.arch(arch), params.extract)
    if configured != pre:
        print(f"export-onnx: warning: params give input {configured} but {model_dir} was trained "
              f"with {pre}; exporting with the trained model's", file=sys.stderr)
    return export_onnx(net, pre, arch, splits_dir, out_dir, params.export, params.evaluate,
                       params.extract.batch_size, flip=trained.model.with_flip_feature,
                       device=device)
