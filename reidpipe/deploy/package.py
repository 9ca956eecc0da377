"""Deployment package per architecture: a Triton model repository and a DeepStream NvDCF ReID
section, both derived from the exported ONNX (tensor names, dims, types) and its input contract.

Triton: ``triton/<arch>/config.pbtxt`` + ``triton/<arch>/1/model.onnx`` served by the ONNX
Runtime backend, or by the TensorRT backend from ``model.plan`` when ``build-trt`` built an
engine (its optimisation profile ends at ``deploy.max_batch``, Triton's ``max_batch_size``).

DeepStream's tracker preprocesses ``y = netScaleFactor * (pixel - offsets[c])`` on 0-255 pixels
in the network's channel order; our contract is ``y = (pixel * k - mean[c] * input_scale) /
std[c]`` with ``k = 1/255`` for 0-1 input (1 for 0-255), so ``offsets = 255 * mean`` and
``netScaleFactor = k / std``. DeepStream has one scale for all channels: when the per-channel
``k / std`` differ, the package's DeepStream ONNX multiplies each channel by its own scale first
(``deploy.deepstream_fold_normalisation``; refused when that is off) and netScaleFactor is 1.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from reidpipe import atomic
from reidpipe.deploy.onnx_io import EMBED_LIMIT_BYTES, model_files, save_onnx
from reidpipe.errors import ReidpipeError
from reidpipe.filenames import (
    INT8_FILE,
    ONNX_FILE,
    PACKAGE_MANIFEST_FILE,
    PARITY_FILE,
    TRT_ENGINE_FILE,
    TRT_STATUS_FILE,
)
from reidpipe.input_contract import META_PREFIX, Preprocess, contract_metadata, read_input_contract
from reidpipe.json_files import read_json_file
from reidpipe.params import DeployParams, Params

README_FILE = "README.md"
TRITON_DIR = "triton"
TRITON_CONFIG = "config.pbtxt"
TRITON_VERSION = "1"
TRITON_PLAN = "model.plan"
DEEPSTREAM_DIR = "deepstream"
DEEPSTREAM_CONFIG = "deepstream_reid.yml"
# Enumerations of the NvMultiObjectTracker ReID section (gst-nvtracker docs, "Object Re-ID").
DEEPSTREAM_NETWORK_MODE = {"fp32": 0, "fp16": 1, "int8": 2}
DEEPSTREAM_COLOR_FORMAT = {"RGB": 0, "BGR": 1}
DEEPSTREAM_NCHW = 0
FOLD_SCALE_NAME = "deepstream_channel_scale"
# Triton's model_config.proto DataType names for ONNX element types.
TRITON_DTYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as Triton sees it: dims without the batch axis, -1 variable."""
    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class DeepStreamInput:
    """DeepStream's preprocessing for a contract, in the network's channel order."""
    offsets: tuple[float, ...]
    net_scale_factor: float
    channel_scale: tuple[float, ...] | None   # per-channel factors folded into the graph


def io_specs(model: onnx.ModelProto, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of ``model`` (read from ``path``), each with a symbolic batch axis."""
    def spec(value: onnx.ValueInfoProto, kind: str) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_DTYPES:
            raise ReidpipeError(f"{path}: {kind} {value.name!r} has ONNX element type "
                                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which "
                                "has no Triton data type")
        dims = tensor.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            raise ReidpipeError(f"{path}: {kind} {value.name!r} has no symbolic batch axis; "
                                "Triton's dynamic batching needs one (re-export with "
                                "`reidpipe export-onnx`)")
        return TensorSpec(value.name, TRITON_DTYPES[tensor.elem_type],
                          tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]))

    initializers = {t.name for t in model.graph.initializer}
    inputs = [spec(v, "input") for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v, "output") for v in model.graph.output]


def triton_config(name: str, platform: str, model_file: str, max_batch: int,
                  inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    def tensors(specs: Sequence[TensorSpec]) -> str:
        return ",\n".join(
            f'  {{\n    name: "{s.name}"\n    data_type: {s.data_type}\n'
            f'    dims: [ {", ".join(map(str, s.dims))} ]\n  }}' for s in specs)

    return (f'name: "{name}"\nplatform: "{platform}"\ndefault_model_filename: "{model_file}"\n'
            f"max_batch_size: {max_batch}\ninput [\n{tensors(inputs)}\n]\n"
            f"output [\n{tensors(outputs)}\n]\ndynamic_batching {{ }}\n")


def deepstream_input(pre: Preprocess, fold: bool) -> DeepStreamInput:
    """offsets / netScaleFactor for ``pre``; the per-channel scale to fold when the std differs
    per channel (ReidpipeError when ``fold`` is off)."""
    order = [0, 1, 2] if pre.channel_order == "RGB" else [2, 1, 0]   # mean/std are RGB-ordered
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
            "package's DeepStream ONNX, or train with one std for all channels")
    return DeepStreamInput(offsets, 1.0, scales)


def folded_contract(pre: Preprocess) -> Preprocess:
    """The contract of a graph with the channel scale folded in: 0-255 pixels minus 255 * mean."""
    return Preprocess(height=pre.height, width=pre.width, mean=pre.mean, std=(1.0, 1.0, 1.0),
                      channel_order=pre.channel_order, input_scale=255)


def fold_channel_scale(model: onnx.ModelProto, scale: Sequence[float],
                       pre: Preprocess) -> onnx.ModelProto:
    """A copy of ``model`` whose input is first multiplied per channel by ``scale`` (network
    channel order), with the contract metadata rewritten to match."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    source = graph.input[0].name
    scaled = f"{source}_{FOLD_SCALE_NAME}"
    for node in graph.node:
        node.input[:] = [scaled if name == source else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(
        np.asarray(scale, dtype=np.float32).reshape(1, -1, 1, 1), FOLD_SCALE_NAME))
    graph.node.insert(0, helper.make_node("Mul", [source, FOLD_SCALE_NAME], [scaled],
                                          name=FOLD_SCALE_NAME))
    meta = {p.key: p.value for p in folded.metadata_props}
    meta.update(contract_metadata(folded_contract(pre), meta.get(f"{META_PREFIX}arch", ""),
                                  int(meta.get(f"{META_PREFIX}embedding_dim", "0"))))
    meta[f"{META_PREFIX}folded_channel_scale"] = json.dumps(list(scale))
    del folded.metadata_props[:]
    for key, value in meta.items():
        folded.metadata_props.add(key=key, value=value)
    return folded


def deepstream_section(pre: Preprocess, ds: DeepStreamInput, embedding_dim: int,
                       deploy: DeployParams, onnx_file: str) -> dict[str, Any]:
    """The ``ReID:`` section of an NvDCF tracker config."""
    return {"ReID": {
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
    }}


def _place(source: Path, target: Path) -> None:
    """Hard-link (same file system: no second copy of the weights) or copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _deepstream_source(onnx_dir: Path, parity: dict[str, Any], precision: str) -> Path:
    if precision != "int8":
        return onnx_dir / ONNX_FILE
    int8 = parity.get("int8") or {}
    if int8.get("status") != "passed":
        raise ReidpipeError(f"deploy.precision is int8 but {onnx_dir} has no {INT8_FILE}: "
                            f"{int8.get('reason') or 'export.int8 is off'}")
    return onnx_dir / INT8_FILE


def package(arch: str, onnx_dir: str | Path, trt_dir: str | Path, out_dir: str | Path,
            deploy: DeployParams, embed_limit: int = EMBED_LIMIT_BYTES) -> dict[str, Any]:
    """Write ``out_dir`` (Triton repository, DeepStream section, README, package.json)."""
    onnx_dir, trt_dir, out_dir = Path(onnx_dir), Path(trt_dir), Path(out_dir)
    parity, trt = (read_json_file(path, " (run the stage that writes it first)")
                   for path in (onnx_dir / PARITY_FILE, trt_dir / TRT_STATUS_FILE))
    pre = read_input_contract(onnx_dir / ONNX_FILE)
    model = onnx.load(str(onnx_dir / ONNX_FILE), load_external_data=False)
    inputs, outputs = io_specs(model, onnx_dir / ONNX_FILE)
    if len(inputs) != 1 or len(outputs) != 1 or len(outputs[0].dims) != 1:
        raise ReidpipeError(f"{onnx_dir / ONNX_FILE}: expected one image input and one N x D "
                            f"output, got inputs {inputs} and outputs {outputs}")
    embedding_dim = outputs[0].dims[0]
    ds = deepstream_input(pre, deploy.deepstream_fold_normalisation)
    ds_source = _deepstream_source(onnx_dir, parity, deploy.precision)
    engine = trt_dir / TRT_ENGINE_FILE if trt.get("status") == "built" else None

    with atomic.atomic_dir(out_dir) as tmp:
        version = tmp / TRITON_DIR / arch / TRITON_VERSION
        for file in model_files(onnx_dir / ONNX_FILE):
            _place(file, version / file.name)
        if engine is not None:
            _place(engine, version / TRITON_PLAN)
        platform, model_file = (("tensorrt_plan", TRITON_PLAN) if engine is not None
                                else ("onnxruntime_onnx", ONNX_FILE))
        atomic.write_text(tmp / TRITON_DIR / arch / TRITON_CONFIG, triton_config(
            arch, platform, model_file, deploy.max_batch, inputs, outputs))

        ds_dir = tmp / DEEPSTREAM_DIR
        ds_dir.mkdir()
        if ds.channel_scale is None:
            for file in model_files(ds_source):
                _place(file, ds_dir / file.name)
        else:
            folded = fold_channel_scale(onnx.load(str(ds_source)), ds.channel_scale, pre)
            save_onnx(folded, ds_dir / ds_source.name, embed_limit)
        section = deepstream_section(pre, ds, embedding_dim, deploy, ds_source.name)
        atomic.write_yaml(ds_dir / DEEPSTREAM_CONFIG, section)

        manifest = {
            "arch": arch,
            "contract": {"input": {"name": inputs[0].name, "shape": ["batch", *inputs[0].dims],
                                   "dtype": inputs[0].data_type, "height": pre.height,
                                   "width": pre.width, "channel_order": pre.channel_order,
                                   "input_scale": pre.input_scale, "mean": list(pre.mean),
                                   "std": list(pre.std)},
                         "output": {"name": outputs[0].name, "shape": ["batch", embedding_dim],
                                    "dtype": outputs[0].data_type, "l2_normalised": False}},
            "triton": {"model": arch, "platform": platform, "model_file": model_file,
                       "max_batch_size": deploy.max_batch, "dynamic_batching": True},
            "deepstream": {"config": f"{DEEPSTREAM_DIR}/{DEEPSTREAM_CONFIG}",
                           "onnx": f"{DEEPSTREAM_DIR}/{ds_source.name}",
                           "folded_channel_scale": (list(ds.channel_scale)
                                                    if ds.channel_scale is not None else None),
                           **section["ReID"]},
            "tensorrt": {"status": trt.get("status"), "reason": trt.get("reason"),
                         "engine": engine is not None},
            "int8": {"status": (parity.get("int8") or {}).get("status", "disabled"),
                     "reason": (parity.get("int8") or {}).get("reason")},
        }
        atomic.write_text(tmp / README_FILE, package_readme(manifest))
        atomic.write_json(tmp / PACKAGE_MANIFEST_FILE, manifest)
    return manifest


def package_readme(manifest: dict[str, Any]) -> str:
    """The package's README: the input contract and how to serve the model."""
    arch, contract = manifest["arch"], manifest["contract"]
    inp, out = contract["input"], contract["output"]
    ds, triton = manifest["deepstream"], manifest["triton"]
    scale = ("pixels / 255, then" if inp["input_scale"] == 1 else "pixels in 0-255, then")
    fold = ("" if ds["folded_channel_scale"] is None else
            f" Its per-channel std cannot be one netScaleFactor, so `{ds['onnx']}` multiplies "
            f"channel c by {ds['folded_channel_scale']} first and netScaleFactor is 1.")
    engine = ("`model.plan` (TensorRT engine from `build-trt`, served by the TensorRT backend; "
              "it runs only on the GPU model and TensorRT version it was built with)"
              if triton["platform"] == "tensorrt_plan" else
              f"`model.onnx` (ONNX Runtime backend; TensorRT: {manifest['tensorrt']['status']}"
              f"{' - ' + manifest['tensorrt']['reason'] if manifest['tensorrt']['reason'] else ''})")
    return f"""# {arch}: deployment package

Written by `reidpipe package`; every value below is read from the exported ONNX and its
`reidpipe.*` metadata.

## Input contract
- input `{inp['name']}`: {inp['dtype']}, shape {' x '.join(map(str, inp['shape']))} (NCHW),
  {inp['channel_order']}
- preprocessing: resize to {inp['height']} x {inp['width']} (bilinear, aspect ratio not kept),
  {scale} `(x - mean * {inp['input_scale']}) / std` per channel with mean {inp['mean']} and
  std {inp['std']} (RGB order), then channels in {inp['channel_order']} order
- output `{out['name']}`: {out['dtype']}, shape {' x '.join(map(str, out['shape']))}, **not**
  L2-normalised:
  normalise before cosine / dot-product matching (the graph never normalises)

## Triton
`{TRITON_DIR}/` is a model repository with one model, `{triton['model']}`, served from
{engine}; dynamic batching up to {triton['max_batch_size']} images.

    tritonserver --model-repository $PWD/{TRITON_DIR}

Send the preprocessed batch as `{inp['name']}` and read `{out['name']}`.

## DeepStream (NvDCF / NvDeepSORT tracker)
`{ds['config']}` is the `ReID:` section of a tracker config: merge it into your
`config_tracker_NvDCF_*.yml`. DeepStream computes `netScaleFactor * (pixel - offsets)` on 0-255
pixels: offsets {ds['offsets']}, netScaleFactor {ds['netScaleFactor']}, colorFormat
{ds['colorFormat']}, networkMode {ds['networkMode']}, addFeatureNormalization 1.{fold}
Paths are relative to the config file; DeepStream releases that resolve them against the
working directory need absolute paths. DeepStream builds `{ds['modelEngineFile']}` on first use.

## INT8
{manifest['int8']['status']}{': ' + manifest['int8']['reason'] if manifest['int8']['reason'] else ''}
"""


def package_stage(params: Params, arch: str, onnx_dir: str | Path, trt_dir: str | Path,
                  out_dir: str | Path) -> dict[str, Any]:
    """``reidpipe package`` for one architecture."""
    params.arch(arch)  # an unknown name fails here, naming the defined ones
    return package(arch, onnx_dir, trt_dir, out_dir, params.deploy)
